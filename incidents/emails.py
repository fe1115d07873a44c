"""Emails to subscribers: text and HTML from templates, threaded per incident, one-click unsubscribe.

Every link is absolute (SITE_URL) and carries a signed token (incidents/tokens.py). Message-IDs are
deterministic, so a resend is recognisably the same email, and every email about an incident refers
to that incident's thread root, so mail clients group them.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.template.loader import render_to_string

from incidents.models import Delivery, Message, MessageKind, Subscriber
from incidents.tokens import make_token

TEMPLATES = {
    MessageKind.CONFIRMATION: "confirmation",
    MessageKind.INCIDENT_UPDATE: "incident-update",
    MessageKind.MAINTENANCE: "maintenance",
    MessageKind.MAINTENANCE_REMINDER: "maintenance-reminder",
}


def site_domain() -> str:
    return urlsplit(settings.SITE_URL).hostname or "localhost"


def links(subscriber: Subscriber) -> dict[str, str]:
    base = settings.SITE_URL
    return {
        "confirm_url": f"{base}/subscribe/confirm/{make_token(subscriber, 'confirm')}",
        "manage_url": f"{base}/subscribe/manage/{make_token(subscriber, 'manage')}",
        "unsubscribe_url": f"{base}/subscribe/unsubscribe/{make_token(subscriber, 'unsubscribe')}",
    }


def thread_headers(message: Message, subscriber: Subscriber) -> dict[str, str]:
    """Message-ID per (message, subscriber); emails about one incident or window share a thread root."""
    domain = site_domain()
    headers = {"Message-ID": f"<{message.key.replace(':', '.')}.{subscriber.pk}@{domain}>"}
    root = None
    if message.incident_id:
        root = f"<incident.{message.incident_id}.{subscriber.pk}@{domain}>"
    elif message.maintenance_id:
        root = f"<maintenance.{message.maintenance_id}.{subscriber.pk}@{domain}>"
    if root:
        earlier = Message.objects.filter(id__lt=message.pk)
        if message.incident_id:
            earlier = earlier.filter(incident=message.incident_id, kind=MessageKind.INCIDENT_UPDATE)
        else:
            earlier = earlier.filter(maintenance=message.maintenance_id)
        is_first = not earlier.exists()
        if is_first:
            headers["Message-ID"] = root
        else:
            headers["In-Reply-To"] = root
            headers["References"] = root
    return headers


def context_for(delivery: Delivery) -> dict[str, Any]:
    message, subscriber = delivery.message, delivery.subscriber
    context: dict[str, Any] = {
        "site_name": settings.SITE_NAME,
        "site_url": settings.SITE_URL,
        "subscriber": subscriber,
        "message": message,
        **links(subscriber),
    }
    if message.incident_id:
        context["incident"] = message.incident
        context["update"] = message.incident_update
        context["incident_url"] = f"{settings.SITE_URL}/incidents/{message.incident_id}"
    if message.maintenance_id:
        context["maintenance"] = message.maintenance
        context["update"] = message.maintenance_update
        context["maintenance_url"] = f"{settings.SITE_URL}/maintenance/{message.maintenance_id}"
    return context


def build_email(delivery: Delivery) -> EmailMultiAlternatives:
    message, subscriber = delivery.message, delivery.subscriber
    name = TEMPLATES[MessageKind(message.kind)]
    context = context_for(delivery)
    subject = " ".join(render_to_string(f"emails/{name}-subject.txt", context).split())
    email = EmailMultiAlternatives(
        subject=subject,
        body=render_to_string(f"emails/{name}-body.txt", context),
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[subscriber.email],
        headers={
            **thread_headers(message, subscriber),
            # RFC 8058: mail providers show an unsubscribe button that POSTs here, no login, one click.
            "List-Unsubscribe": f"<{context['unsubscribe_url']}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            "Auto-Submitted": "auto-generated",
        },
    )
    email.attach_alternative(render_to_string(f"emails/{name}-body.html", context), "text/html")
    return email
