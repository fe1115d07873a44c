"""Emails to subscribers: text and HTML from templates, threaded per incident, one-click unsubscribe.

Every link is absolute (SITE_URL) and carries a signed token (incidents/tokens.py). Message-IDs are
deterministic, so a resend is recognisably the same email, and every email about an incident refers
to that incident's thread root, so mail clients group them.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from email.policy import SMTP as smtp_policy
from email.policy import Policy
from email.policy import default as default_policy
from email.utils import format_datetime
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.template.loader import render_to_string
from django.utils import timezone
from django.utils.html import escape
from django.utils.text import slugify

from incidents.markup import render_markdown
from incidents.models import Delivery, Message, MessageKind, Subscriber
from incidents.tokens import make_tokens

# RFC 5322's limit on a line, CRLF excluded (StatusEmail writes headers up to it, and a body with a longer
# line is quoted-printable).
MAX_LINE = 998
# An address the MIME machinery writes exactly as given: a dot-atom local part and an ASCII domain (no
# quoting, no IDNA, no encoded words). Anyone else's email is built whole, the slow and general way.
_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9_%+'-]+(?:\.[A-Za-z0-9_%+'-]+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_ENCODINGS = re.compile(rb"(?im)^Content-Transfer-Encoding:[ \t]*([^\s;]+)")

TEMPLATES = {
    MessageKind.CONFIRMATION: "confirmation",
    MessageKind.INCIDENT_UPDATE: "incident-update",
    MessageKind.MAINTENANCE: "maintenance",
    MessageKind.MAINTENANCE_REMINDER: "maintenance-reminder",
    MessageKind.POSTMORTEM: "postmortem",
}


def is_plain_address(address: str) -> bool:
    """Whether the MIME machinery writes this address exactly as given (and the sender can skip checking it)."""
    return _PLAIN_ADDRESS.fullmatch(address) is not None


def site_domain() -> str:
    return urlsplit(settings.SITE_URL).hostname or "localhost"


# RFC 5322's atext, and the space between words: a phrase of these needs no quoting.
_ATOM_PHRASE = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~ -]+")


def list_id() -> str:
    """RFC 2919's List-Id for every email to subscribers: 'Acme status updates <acme.status.acme.com>'.

    Mail clients and providers file and filter by it (and Gmail offers its unsubscribe for it). The
    identifier is the site name's slug under the site's host; a site on an IP address or localhost uses
    the namespace RFC 2919 keeps for lists without a domain (`.localhost`).
    """
    host = site_domain().lower().rstrip(".")
    label = slugify(settings.SITE_NAME) or "status"
    try:
        ipaddress.ip_address(host)
        namespace = "localhost"
    except ValueError:
        namespace = host if host != "localhost" and re.fullmatch(r"[a-z0-9.-]+", host) else "localhost"
    phrase = " ".join(f"{settings.SITE_NAME} status updates".split())
    if not _ATOM_PHRASE.fullmatch(phrase):
        if phrase.isascii():
            phrase = '"' + phrase.replace("\\", "\\\\").replace('"', '\\"') + '"'
        else:  # written as RFC 2047 encoded words by the email package; keep nothing that ends the phrase
            phrase = re.sub(r'["<>\\]', "", phrase)
    return f"{phrase} <{label}.{namespace}>"


def links(subscriber: Subscriber, *, confirm: bool = True) -> dict[str, str]:
    base = settings.SITE_URL
    purposes = ("manage", "unsubscribe", "confirm") if confirm else ("manage", "unsubscribe")
    return {
        f"{purpose}_url": f"{base}/subscribe/{purpose}/{token}"
        for purpose, token in make_tokens(subscriber, *purposes).items()
    }


def is_thread_root(message: Message) -> bool:
    """Whether this is the first email about its incident or maintenance window (one query)."""
    earlier = Message.objects.filter(id__lt=message.pk)
    if message.incident_id:
        earlier = earlier.filter(incident=message.incident_id, kind=MessageKind.INCIDENT_UPDATE)
    else:
        earlier = earlier.filter(maintenance=message.maintenance_id)
    return not earlier.exists()


def epoch(moment: datetime) -> int:
    """Seconds since 1970, for Message-IDs: row ids start again after a database reset or on a fresh
    install under the same SITE_URL, times do not, and mail providers drop a Message-ID seen before."""
    return int(moment.timestamp())


def thread_headers(message: Message, subscriber: Subscriber, *, root: bool | None = None) -> dict[str, str]:
    """Message-ID per (message, subscriber), the same if it is sent again; emails about one incident or
    window share a thread root."""
    domain = site_domain()
    headers = {"Message-ID": f"<{message.key.replace(':', '.')}.{epoch(message.created_at)}.{subscriber.pk}@{domain}>"}
    thread = None
    if message.incident is not None:
        thread = f"<incident.{message.incident_id}.{epoch(message.incident.declared_at)}.{subscriber.pk}@{domain}>"
    elif message.maintenance is not None:
        thread = (
            f"<maintenance.{message.maintenance_id}.{epoch(message.maintenance.created_at)}.{subscriber.pk}@{domain}>"
        )
    if thread:
        if root is None:
            root = is_thread_root(message)
        if root:
            headers["Message-ID"] = thread
        else:
            headers["In-Reply-To"] = thread
            headers["References"] = thread
    return headers


def context_for(message: Message, subscriber: Any, subscriber_links: dict[str, str]) -> dict[str, Any]:
    context: dict[str, Any] = {
        "site_name": settings.SITE_NAME,
        "site_url": settings.SITE_URL,
        "subscriber": subscriber,
        "message": message,
        **subscriber_links,
    }
    if message.incident_id:
        context["incident"] = message.incident
        context["incident_components"] = [str(c) for c in message.incident.components.all()] if message.incident else []
        context["update"] = message.incident_update
        context["incident_url"] = f"{settings.SITE_URL}/incidents/{message.incident_id}"
    if message.postmortem is not None:
        sections = list(message.postmortem.sections.filter(is_public=True).exclude(body=""))
        context["postmortem"] = message.postmortem
        context["sections"] = [
            {"title": s.get_key_display(), "body": s.body, "body_html": render_markdown(s.body)} for s in sections
        ]
    if message.maintenance_id:
        context["maintenance"] = message.maintenance
        context["maintenance_components"] = (
            [str(c) for c in message.maintenance.components.all()] if message.maintenance else []
        )
        context["update"] = message.maintenance_update
        public_id = message.maintenance.public_id if message.maintenance else ""
        context["maintenance_url"] = f"{settings.SITE_URL}/maintenance/{public_id}"
    return context


class StatusEmail(EmailMultiAlternatives):
    """Headers written as they are, up to RFC 5322's 998 characters a line.

    With the usual 78, Python folds a long unbroken header into RFC 2047 encoded words, and the
    List-Unsubscribe URL (longer than 78 with its token) would reach mail providers as
    `=?utf-8?q?=3Chttps=3A//…?=` instead of `<https://…>`, so they would not offer one-click unsubscribe.
    """

    _prepared: tuple[Policy[Any] | None, Any] | None = None

    def message(self, *, policy: Policy[Any] | None = default_policy) -> Any:
        if self._prepared is not None and self._prepared[0] is policy:
            return self._prepared[1]
        return super().message(policy=(policy or default_policy).clone(max_line_length=998))

    def prepare(self, policy: Policy[Any] | None = smtp_policy) -> None:
        """Build the MIME message now, as the backend will ask for it (the SMTP backend passes
        email.policy.SMTP), so that sending costs only the SMTP exchange: the batch sender builds each
        email while the database commits the previous one's mark. Not for an email changed afterwards."""
        self._prepared = None
        self._prepared = (policy, self.message(policy=policy))


@dataclass
class Rendered:
    subject: str
    text: str
    html: str


def render(message: Message, context: dict[str, Any]) -> Rendered:
    name = TEMPLATES[MessageKind(message.kind)]
    return Rendered(
        subject=" ".join(render_to_string(f"emails/{name}-subject.txt", context).split()),
        text=render_to_string(f"emails/{name}-body.txt", context),
        html=render_to_string(f"emails/{name}-body.html", context),
    )


@dataclass
class _Slots:
    """Stand-ins rendered in place of one subscriber's address and links, swapped per recipient.

    Each is letters, digits and dashes with a random part, so escaping leaves it alone and no update's
    text can contain it by accident.
    """

    email: str
    manage_url: str
    unsubscribe_url: str


class Composer:
    """Builds the emails of one batch. Each message's templates are rendered once, with stand-ins for
    the recipient's address and links, and whether it starts its thread is asked once; per recipient
    only the stand-ins are replaced (escaped for HTML) and the headers made. Confirmations, which are
    one per subscriber and say whether the address was already confirmed, are rendered whole.

    For an SMTP connection, `wire()` goes one step further (a mail merge): each message's whole MIME
    text is built once, stand-ins included, and each recipient's email is that text with their
    address, links, subscriber number and the date put in. Building a MIME message is most of what
    sending costs (about 3 ms of the 4 an email took here); the merge gives the same bytes (tested
    against `build()`, the boundary aside) wherever that is certain, and None where it is not, so the
    caller builds that one whole: an address Python would quote or encode, a part that is
    quoted-printable or base64, a line that would grow past 998 characters, a stand-in the MIME text
    does not carry as it was.
    """

    def __init__(self) -> None:
        self.nonce = secrets.token_hex(8)
        self.slots = _Slots(*(f"signalpost-{self.nonce}-{name}" for name in ("email", "manage", "unsubscribe")))
        self._rendered: dict[int, Rendered] = {}
        self._roots: dict[int, bool] = {}
        self._merged: dict[int, bytes | None] = {}
        self._stand_in = re.compile(rb"signalpost-" + self.nonce.encode() + rb"-([a-z]+)")

    def _shared(self, message: Message) -> Rendered:
        if message.pk not in self._rendered:
            stand_in = SimpleNamespace(email=self.slots.email, confirmed_at=None)
            slot_links = {"manage_url": self.slots.manage_url, "unsubscribe_url": self.slots.unsubscribe_url}
            self._rendered[message.pk] = render(message, context_for(message, stand_in, slot_links))
        return self._rendered[message.pk]

    def _root(self, message: Message) -> bool:
        if message.pk not in self._roots:
            self._roots[message.pk] = is_thread_root(message)
        return self._roots[message.pk]

    def build(self, delivery: Delivery) -> StatusEmail:
        message, subscriber = delivery.message, delivery.subscriber
        if message.kind == MessageKind.CONFIRMATION:
            subscriber_links = links(subscriber)
            rendered = render(message, context_for(message, subscriber, subscriber_links))
        else:
            subscriber_links = links(subscriber, confirm=False)
            shared = self._shared(message)
            values = {
                self.slots.email: subscriber.email,
                self.slots.manage_url: subscriber_links["manage_url"],
                self.slots.unsubscribe_url: subscriber_links["unsubscribe_url"],
            }
            rendered = Rendered(
                subject=_fill(shared.subject, values),
                text=_fill(shared.text, values),
                html=_fill(shared.html, {slot: escape(value) for slot, value in values.items()}),
            )
        return _email(message, subscriber, subscriber_links, rendered, root=self._root(message))

    def outgoing(self, delivery: Delivery, *, wire: bool) -> bytes | StatusEmail:
        """For an SMTP connection (`wire`), the bytes to send where the merge is certain; otherwise the
        email, its MIME message built already (`prepare`)."""
        if wire and (data := self.wire(delivery)) is not None:
            return data
        email = self.build(delivery)
        email.prepare()
        return email

    def wire(self, delivery: Delivery) -> bytes | None:
        """The email as it goes over SMTP (what the SMTP backend would send for `build()`), merged from
        its message's MIME text; None when only building it whole is certain to be right."""
        message, subscriber = delivery.message, delivery.subscriber
        if message.kind == MessageKind.CONFIRMATION or not is_plain_address(subscriber.email):
            return None
        template = self._template(message)
        if template is None:
            return None
        subscriber_links = links(subscriber, confirm=False)
        plain = {
            "email": subscriber.email,
            "manage": subscriber_links["manage_url"],
            "unsubscribe": subscriber_links["unsubscribe_url"],
        }
        values = {
            **plain,
            **{f"{name}html": escape(value) for name, value in plain.items()},
            "pk": str(subscriber.pk),
            "date": format_datetime(
                datetime.now(timezone.get_current_timezone() if settings.EMAIL_USE_LOCALTIME else UTC)
            ),
        }
        if not all(value.isascii() and value.isprintable() for value in values.values()):
            return None
        encoded = {name.encode(): value.encode() for name, value in values.items()}
        data = self._stand_in.sub(lambda match: encoded[match[1]], template)
        if max(map(len, data.split(b"\r\n"))) > MAX_LINE:
            return None  # Python would have made that part quoted-printable
        return data

    def _template(self, message: Message) -> bytes | None:
        """The message's whole MIME text (as email.policy.SMTP writes it) with stand-ins, or None if a
        stand-in does not come through it unchanged or a part is not plain 7bit/8bit text."""
        if message.pk in self._merged:
            return self._merged[message.pk]
        shared = self._shared(message)
        stand_in = self._stand_in.pattern.decode()
        rendered = Rendered(
            subject=shared.subject,
            text=shared.text,
            html=re.sub(stand_in, lambda match: f"{match[0]}html", shared.html),
        )
        person = SimpleNamespace(pk=f"signalpost-{self.nonce}-pk", email=self.slots.email)
        slot_links = {"manage_url": self.slots.manage_url, "unsubscribe_url": self.slots.unsubscribe_url}
        email = _email(message, person, slot_links, rendered, root=self._root(message))
        expected = [
            match[1]
            for text in (email.subject, email.body, rendered.html, *email.to, *email.extra_headers.values())
            for match in re.finditer(stand_in, text)
        ]
        whole: bytes = email.message(policy=smtp_policy).as_bytes()
        head, blank, body = whole.partition(b"\r\n\r\n")
        head, dates = re.subn(rb"(?m)^Date: [^\r\n]*", b"Date: signalpost-" + self.nonce.encode() + b"-date", head)
        data = head + blank + body
        found = [match[1].decode() for match in self._stand_in.finditer(data)]
        known = {"email", "manage", "unsubscribe", "emailhtml", "managehtml", "unsubscribehtml", "pk", "date"}
        certain = (
            dates == 1
            and sorted(found) == sorted([*expected, "date"])
            and set(found) <= known
            and all(cte.lower() in (b"7bit", b"8bit") for cte in _ENCODINGS.findall(data))
        )
        self._merged[message.pk] = data if certain else None
        return self._merged[message.pk]


def _email(
    message: Message, subscriber: Any, subscriber_links: dict[str, str], rendered: Rendered, *, root: bool
) -> StatusEmail:
    email = StatusEmail(
        subject=rendered.subject,
        body=rendered.text,
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[subscriber.email],
        headers={
            **thread_headers(message, subscriber, root=root),
            # RFC 8058: mail providers show an unsubscribe button that POSTs here, no login, one click.
            "List-Unsubscribe": f"<{subscriber_links['unsubscribe_url']}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            "List-Id": list_id(),
            "Auto-Submitted": "auto-generated",
        },
    )
    email.attach_alternative(rendered.html, "text/html")
    return email


def _fill(text: str, values: dict[str, str]) -> str:
    for slot, value in values.items():
        text = text.replace(slot, value)
    return text


def build_email(delivery: Delivery) -> EmailMultiAlternatives:
    """One email on its own (the batch sender keeps a Composer for the whole batch)."""
    return Composer().build(delivery)
