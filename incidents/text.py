"""What counts as saying something: text that shows nothing to a reader is blank, wherever it is typed
(the staff UI, the API, the admin).

str.strip() removes whitespace only. A zero-width space (U+200B), a Hangul filler (U+3164), a variation
selector (U+FE0F) or a blank braille pattern (U+2800) survive it and show nothing, so "\u200b" would
pass for a title and "EU\u200b" for a second region "EU".
"""

from __future__ import annotations

import unicodedata

# Spaces of every kind (Zs), control characters (Cc: tabs, newlines) and format characters (Cf: the
# zero-width space and joiners, the word joiner, a byte order mark, bidirectional marks, tag characters).
_INVISIBLE_CATEGORIES = frozenset({"Zs", "Cc", "Cf"})

# Unicode's Default_Ignorable_Code_Point ranges (DerivedCoreProperties.txt), which renderers draw as
# nothing, whatever their category (fillers are letters, variation selectors are marks), plus the blank
# braille pattern U+2800, a symbol that draws as an empty cell.
_IGNORABLE_RANGES = (
    (0x00AD, 0x00AD),  # soft hyphen
    (0x034F, 0x034F),  # combining grapheme joiner
    (0x061C, 0x061C),
    (0x115F, 0x1160),  # Hangul choseong and jungseong fillers
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),  # Mongolian variation selectors
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x206F),
    (0x2800, 0x2800),  # braille pattern blank
    (0x3164, 0x3164),  # Hangul filler
    (0xFE00, 0xFE0F),  # variation selectors
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),  # halfwidth Hangul filler
    (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),  # tags, variation selectors supplement
)


def is_invisible(char: str) -> bool:
    """True for one character that draws nothing: a space, a control or format character, a filler."""
    if char.isspace() or unicodedata.category(char) in _INVISIBLE_CATEGORIES:
        return True
    point = ord(char)
    return any(low <= point <= high for low, high in _IGNORABLE_RANGES)


def is_blank(text: str) -> bool:
    """True for text that shows nothing: empty, or only whitespace and invisible characters."""
    return all(is_invisible(char) for char in text)


def strip_invisible(text: str) -> str:
    """The text without the invisible characters at either end (str.strip() for what draws nothing)."""
    start, end = 0, len(text)
    while start < end and is_invisible(text[start]):
        start += 1
    while end > start and is_invisible(text[end - 1]):
        end -= 1
    return text[start:end]
