"""Emails to subscribers: text and HTML from templates, threaded per incident, one-click unsubscribe.

Every link is absolute (SITE_URL) and carries a signed token (incidents/tokens.py). Message-IDs are
deterministic, so a resend is recognisably the same email, and every email about an incident refers
to that incident's thread root, so mail clients group them.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from email.policy import SMTP as smtp_policy
from email.policy import Policy
from email.policy import default as default_policy
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.template.loader import render_to_string
from django.utils.html import escape

from incidents.markup import render_markdown
from incidents.models import Delivery, Message, MessageKind, Subscriber
from incidents.tokens import make_tokens

TEMPLATES = {
    MessageKind.CONFIRMATION: "confirmation",
    MessageKind.INCIDENT_UPDATE: "incident-update",
    MessageKind.MAINTENANCE: "maintenance",
    MessageKind.MAINTENANCE_REMINDER: "maintenance-reminder",
    MessageKind.POSTMORTEM: "postmortem",
}


def site_domain() -> str:
    return urlsplit(settings.SITE_URL).hostname or "localhost"


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


def thread_headers(message: Message, subscriber: Subscriber, *, root: bool | None = None) -> dict[str, str]:
    """Message-ID per (message, subscriber); emails about one incident or window share a thread root."""
    domain = site_domain()
    headers = {"Message-ID": f"<{message.key.replace(':', '.')}.{subscriber.pk}@{domain}>"}
    thread = None
    if message.incident_id:
        thread = f"<incident.{message.incident_id}.{subscriber.pk}@{domain}>"
    elif message.maintenance_id:
        thread = f"<maintenance.{message.maintenance_id}.{subscriber.pk}@{domain}>"
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
        context["update"] = message.maintenance_update
        context["maintenance_url"] = f"{settings.SITE_URL}/maintenance/{message.maintenance_id}"
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
    """

    def __init__(self) -> None:
        nonce = secrets.token_hex(8)
        self.slots = _Slots(*(f"signalpost-{nonce}-{name}" for name in ("email", "manage", "unsubscribe")))
        self._rendered: dict[int, Rendered] = {}
        self._roots: dict[int, bool] = {}

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
        email = StatusEmail(
            subject=rendered.subject,
            body=rendered.text,
            from_email=settings.DEFAULT_FROM_EMAIL,
            to=[subscriber.email],
            headers={
                **thread_headers(message, subscriber, root=self._root(message)),
                # RFC 8058: mail providers show an unsubscribe button that POSTs here, no login, one click.
                "List-Unsubscribe": f"<{subscriber_links['unsubscribe_url']}>",
                "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
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
