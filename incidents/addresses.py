"""Which email addresses we take for subscribers and pages, and which ones the sender can send to at all.

Django's validate_email follows the RFC's grammar, and the grammar lets through addresses that nothing
downstream can use: `=?utf-8?q?p?=@example.test` is a valid dot-atom, but Python's header parser reads
it as an encoded word, and Django's SMTP backend refuses to send to it (ValueError). Sign-up is strict
(signup_problem); the sender checks only what it cannot send (sending_problem), for rows written before
sign-up was strict.
"""

from __future__ import annotations

from email.headerregistry import AddressHeader

from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from incidents.text import is_invisible

INVALID = "Enter a valid email address, like name@example.com."


def sending_problem(address: str) -> str | None:
    """Why Django's SMTP backend would refuse this address (what its prep_address checks, without
    making a backend), or why the address would not arrive as written; None when it can be sent to."""
    parsed = AddressHeader.value_parser(address)
    defects = sorted({str(defect) for defect in parsed.all_defects})
    if defects:
        return f"{address!r} is not an address the mail library can write ({'; '.join(defects)})"
    mailboxes = parsed.all_mailboxes
    if len(mailboxes) != 1:
        return f"{address!r} is not one address"
    local_part, _, domain = address.rpartition("@")
    mailbox = mailboxes[0]
    if not mailbox.local_part.isascii():
        return f"{address!r} has non-ASCII characters before the @"
    if mailbox.local_part != local_part or (mailbox.domain or "").lower() != domain.lower():
        return f"{address!r} would be sent to {mailbox.addr_spec!r}"  # decoded or rewritten by the parser
    return None


def signup_problem(address: str) -> str | None:
    """What is wrong with an address someone gives us, in words for them; None when we take it.

    On top of Django's validation: no encoded words (`=?…?=`), no quoted local parts, no IP literals,
    no invisible characters, no @localhost (or localhost.localdomain), and nothing the sender could not send to.
    """
    if any(is_invisible(char) for char in address):
        # A zero-width space in "ex\u200bample.com" passes Django's check (the domain is read as
        # international) and the mail library drops it: the address would not be the one typed.
        return "Enter the address without spaces or invisible characters (such as a zero-width space)."
    try:
        validate_email(address)
    except ValidationError:
        return INVALID
    local_part, _, domain = address.rpartition("@")
    domain = domain.lower().rstrip(".")
    if "=?" in address:
        return "Enter the address itself: “=?…?=” is an encoding for mail headers, not part of an address."
    if local_part.startswith('"'):
        return "Enter the address without quotation marks."
    if domain.startswith("["):
        return "Enter an address at a domain name, not at an IP address."
    if domain in ("localhost", "localhost.localdomain") or domain.endswith((".localhost", ".localdomain")):
        return "Enter an address on the internet: mail to localhost never leaves our own server."
    if sending_problem(address) is not None:
        return INVALID
    return None


def validate_signup_address(address: str) -> None:
    """signup_problem as a Django validator, for form fields."""
    problem = signup_problem(address)
    if problem is not None:
        raise ValidationError(problem, code="invalid")
