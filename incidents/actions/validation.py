"""Checks on what an action is given (customer share, regions, component statuses): a value that cannot
be kept is refused, naming its field, never cut or dropped."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from decimal import Decimal

from incidents.actions.errors import ActionRefused
from incidents.models import MAX_REGION_LENGTH, MAX_REGIONS, ComponentStatus
from incidents.text import is_invisible, strip_invisible


def clean_percent(value: Decimal | float | int | str | None) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        percent = Decimal(str(value))
    except ArithmeticError:
        raise ActionRefused("Customer share must be a number from 0 to 100.", field="customer_impact_percent") from None
    if not percent.is_finite() or percent < 0 or percent > 100:
        raise ActionRefused("Customer share must be a number from 0 to 100.", field="customer_impact_percent")
    return percent.quantize(Decimal("0.01"))


def clean_regions(regions: Iterable[str] | str | None) -> list[str]:
    """Regions without blanks or repeats (ignoring case and invisible characters: "US", "us" and
    "U\u200bS" are one region, spelled as first given); more than MAX_REGIONS, or one longer than
    MAX_REGION_LENGTH, is refused (naming it) rather than cut, so what was typed is never lost."""
    if regions is None:
        return []
    if isinstance(regions, str):
        regions = regions.split(",")
    cleaned: list[str] = []
    seen: set[str] = set()
    for region in regions:
        # Invisible characters at the ends go like spaces: "EU\u200b" is "EU", not a second region.
        # One spelling of each character: "Cafe\u0301" (e and a combining accent) is "Café" (NFC).
        region = unicodedata.normalize("NFC", strip_invisible(region))
        if len(region) > MAX_REGION_LENGTH:
            raise ActionRefused(
                f"A region may be at most {MAX_REGION_LENGTH} characters; “{region[:30]}…” has {len(region)}.",
                field="regions",
                code="too_long",
            )
        key = "".join(char for char in region if not is_invisible(char)).casefold()
        if region and key not in seen:
            seen.add(key)
            cleaned.append(region)
    if len(cleaned) > MAX_REGIONS:
        raise ActionRefused(
            f"At most {MAX_REGIONS} regions; {len(cleaned)} were given.", field="regions", code="too_many"
        )
    return cleaned


def check_component_status(status: str, field: str = "status") -> str:
    if status not in ComponentStatus.values:
        allowed = ", ".join(ComponentStatus.values)
        raise ActionRefused(f"Unknown component status {status!r}; use one of {allowed}.", field=field)
    return status
