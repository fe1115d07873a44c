"""Webhook subscribers: Statuspage's webhook payloads, signed with HMAC-SHA256.

Each POST carries `X-Signalpost-Signature: t=<unix time>,v1=<hex>`, where hex is
HMAC-SHA256(webhook_secret, "<unix time>." + body). A receiver recomputes it, compares in constant
time and rejects old timestamps (verify() below does exactly that), so a captured request can be
neither forged nor replayed later.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import ssl
import time
import urllib.error
import urllib.request
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.utils import timezone

from incidents import netguard, notifications, public, statuspage_format
from incidents.models import Delivery, Incident, Message, MessageKind, Subscriber, SubscriberKind
from incidents.tokens import make_token

SIGNATURE_HEADER = "X-Signalpost-Signature"
TIMEOUT_SECONDS = 5
TOLERANCE_SECONDS = 300
WEBHOOK = "webhook"

log = logging.getLogger(__name__)


def sign(body: bytes, secret: str, timestamp: int) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(body: bytes, header: str, secret: str, *, now: float | None = None) -> bool:
    """What a receiver does: check the signature and that it is recent."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
    except (ValueError, KeyError):
        return False
    if abs((now or time.time()) - timestamp) > TOLERANCE_SECONDS:
        return False
    return hmac.compare_digest(sign(body, secret, timestamp), header)


WEBHOOK_KINDS = {
    MessageKind.INCIDENT_UPDATE,
    MessageKind.MAINTENANCE,
    MessageKind.POSTMORTEM,
    MessageKind.COMPONENT_UPDATE,
}


def freeze_body(message: Message) -> None:
    """Write the message's webhook body (all but "meta") as the page stands now, right after the change
    committed; a no-op without webhook subscribers. Two changes in one sweep (a window scheduled and
    started) then POST "scheduled" and "in_progress", not "in_progress" twice."""
    if message.kind not in WEBHOOK_KINDS:
        return
    if not Subscriber.objects.filter(kind=SubscriberKind.WEBHOOK, unsubscribed_at__isnull=True).exists():
        return
    body = json.dumps(shared_body(Message.objects.get(pk=message.pk)), separators=(",", ":"))
    Message.objects.filter(pk=message.pk, webhook_body="").update(webhook_body=body)


def body_bytes(delivery: Delivery) -> bytes:
    """The JSON POSTed for a delivery: its subscriber's "meta", then the body frozen at the change (or,
    for a message from before bodies were frozen, the body as the page stands now)."""
    meta = json.dumps({"meta": meta_for(delivery.subscriber)}, separators=(",", ":"))
    shared = delivery.message.webhook_body or json.dumps(shared_body(delivery.message), separators=(",", ":"))
    return f"{meta[:-1]},{shared[1:]}".encode()


def meta_for(subscriber: Subscriber) -> dict[str, str]:
    return {
        "unsubscribe": f"{settings.SITE_URL}/subscribe/unsubscribe/{make_token(subscriber, 'unsubscribe')}",
        "documentation": f"{settings.SITE_URL}/api/v2/summary.json",
    }


def shared_body(message: Message) -> dict[str, Any]:
    """Everything in a webhook body but the subscriber's "meta": the page's status and the incident,
    maintenance or component change, as they stand now."""
    components, statuses, rows = public.component_rows()
    open_impacts = list(Incident.objects.open().filter(published_at__isnull=False).values_list("impact", flat=True))
    status = public.overall_status([statuses[c.pk] for c in components if not c.is_group], open_impacts)
    body: dict[str, Any] = {
        "page": {
            "id": public.page_id(),
            "status_indicator": status["indicator"],
            "status_description": status["description"],
        },
    }
    if message.kind == MessageKind.COMPONENT_UPDATE and message.component_change is not None:
        change = message.component_change
        body["component_update"] = {
            "created_at": public.stamp(change.changed_at),
            "new_status": change.new_status,
            "old_status": change.old_status,
            "id": str(change.pk),
            "component_id": str(change.component_id),
        }
        body["component"] = statuspage_format.component(rows[change.component_id])
    elif message.incident is not None:
        body["incident"] = statuspage_format.incident(public.incident_row(message.incident))
    elif message.maintenance is not None:
        # Statuspage sends maintenance as an "incident" with its window.
        document_rows = {row["id"]: row for row in public.maintenance_rows([message.maintenance.pk])}
        body["incident"] = statuspage_format.maintenance(document_rows[message.maintenance.public_id])
    return body


class Gone(notifications.PermanentError):
    """The receiver answered 410 Gone: the webhook is no more, and is unsubscribed (as a hard bounce is)."""


class NotAllowed(notifications.PermanentError):
    """Not sent: the host resolves to an address webhooks may not reach (netguard)."""


class _GuardedHTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req: urllib.request.Request) -> Any:
        return self.do_open(netguard.GuardedHTTPConnection, req)


class _GuardedHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self) -> None:
        self.tls = ssl.create_default_context()  # certificates checked against the URL's host name
        super().__init__(context=self.tls)

    def https_open(self, req: urllib.request.Request) -> Any:
        return self.do_open(netguard.GuardedHTTPSConnection, req, context=self.tls)


def opener() -> urllib.request.OpenerDirector:
    """http and https only, connecting only where netguard allows, and following no redirect: a
    redirected POST would arrive as a GET without its body (and could point anywhere). No proxy from
    the environment either: a proxy would connect for us, past the address check."""
    director = urllib.request.OpenerDirector()
    for handler in (
        _GuardedHTTPHandler(),
        _GuardedHTTPSHandler(),
        urllib.request.HTTPDefaultErrorHandler(),
        urllib.request.HTTPErrorProcessor(),
    ):
        director.add_handler(handler)
    return director


def post(delivery: Delivery) -> None:
    """POST one delivery; raises notifications.TransientError or PermanentError (Gone for a 410) when it fails."""
    url = delivery.subscriber.webhook_url
    if not url.startswith(("https://", "http://")):  # checked when added; never open file: or other schemes
        raise notifications.PermanentError("the webhook URL is not http or https")
    body = body_bytes(delivery)
    request = urllib.request.Request(  # noqa: S310 - the scheme is checked above, and the opener has no other
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": f"Signalpost webhooks ({settings.SITE_URL})",
            SIGNATURE_HEADER: sign(body, delivery.subscriber.webhook_secret, int(time.time())),
        },
    )
    try:
        with opener().open(request, timeout=TIMEOUT_SECONDS) as response:
            response.read(1024)
    except urllib.error.HTTPError as error:
        with error:
            code, location = error.code, error.headers.get("Location", "")
        if 300 <= code < 400:
            # Retried like a 5xx (the receiver may be fixed within the attempts), and it counts against
            # the host's breaker; the reason says where it pointed, for staff to update the URL.
            target = f"to {location[:300]}" if location else "without a Location"
            raise notifications.TransientError(f"HTTP {code} redirect {target} (not followed)") from error
        if code == 410:
            raise Gone("HTTP 410 Gone") from error
        if 400 <= code < 500 and code not in (408, 425, 429):
            raise notifications.PermanentError(f"HTTP {code}") from error
        raise notifications.TransientError(f"HTTP {code}") from error
    except urllib.error.URLError as error:
        if isinstance(error.reason, netguard.PrivateAddress):  # nothing was sent: no retry would be allowed
            raise NotAllowed(f"not sent: {error.reason} (WEBHOOK_ALLOW_PRIVATE is off)") from error
        raise notifications.TransientError(f"{type(error).__name__}: {error}") from error
    except (TimeoutError, OSError) as error:
        raise notifications.TransientError(f"{type(error).__name__}: {error}") from error


def destination(subscriber: Subscriber) -> str:
    """The circuit breaker a webhook answers to: one per host, so a dead endpoint pauses only itself."""
    return destination_of(subscriber.webhook_url)


def destination_of(url: str) -> str:
    """The breaker's name for a webhook URL: 'webhook host' or 'webhook host:port'."""
    host = (urlsplit(url).hostname or "").lower()
    port = urlsplit(url).port
    return f"{WEBHOOK} {host}:{port}" if port else f"{WEBHOOK} {host}"


def send_webhook_batch(batch: notifications.Batch, now: datetime) -> tuple[int, int]:
    """POST each claimed delivery, each host behind its own breaker; returns (sent, not sent).

    A host whose breaker is open gets nothing: its rows go back to wait for the cool-down, without
    counting an attempt, and a failed probe counts none either. After a failure opens a host's
    breaker, the rest of the batch for that host waits too, while other hosts carry on. Whatever goes
    wrong with one row (any exception) fails or retries that row alone. A receiver that answers 410
    Gone is unsubscribed.
    """
    from incidents.actions import unsubscribe  # the write path imports this module

    sent = failed = 0
    allowed: dict[str, int] = {}  # per host: how many this batch may still send (a batch, a probe or none)
    probing: set[str] = set()  # hosts whose breaker is open: this batch may send them one probe
    gone: set[int] = set()  # subscribers unsubscribed by this batch (their other rows are failed already)
    for delivery in batch.deliveries:
        if not delivery.subscriber.is_active or delivery.subscriber_id in gone:
            notifications.mark_failed(delivery, batch.claim, "the subscriber left before it was sent")
            failed += 1
            continue
        try:
            host = destination(delivery.subscriber)
            if host not in allowed:
                allowed[host] = notifications.may_send(host, now)
                if allowed[host] == notifications.PROBE:
                    probing.add(host)
            if allowed[host] <= 0:
                notifications.mark_deferred(delivery, batch.claim, host, now)
                continue
            allowed[host] -= 1
            post(delivery)
        except Gone as error:
            notifications.mark_failed(delivery, batch.claim, str(error))
            notifications.record_success(host)  # the host answered: it is up
            unsubscribe(delivery.subscriber, at=now, bounce=f"the receiver answered {error}")
            gone.add(delivery.subscriber_id)
            failed += 1
        except NotAllowed as error:  # no request was made: the host's breaker hears nothing
            notifications.mark_failed(delivery, batch.claim, str(error))
            failed += 1
        except notifications.PermanentError as error:
            notifications.mark_failed(delivery, batch.claim, str(error))
            notifications.record_success(host)  # the host answered: it is up, this request was wrong
            failed += 1
        except notifications.TransientError as error:
            # A probe of a host taken for down that fails says the host is still down, nothing about
            # this row: it counts no attempt (as for email), so an outage of any length loses nothing.
            # Failures while the breaker is closed count: an endpoint that keeps failing while its host
            # answers gives up after DELIVERY_MAX_ATTEMPTS.
            notifications.mark_retry(delivery, batch.claim, str(error), now, counts=host not in probing)
            if notifications.record_failure(host, str(error), now):
                allowed[host] = 0
            failed += 1
        except Exception as error:  # building the body, a URL urllib cannot take, a bug: this row only
            log.exception("could not send webhook delivery %s", delivery.pk)
            notifications.mark_retry(delivery, batch.claim, f"could not send: {type(error).__name__}: {error}", now)
            failed += 1
        else:
            notifications.mark_sent(delivery, batch.claim, timezone.now())
            notifications.record_success(host)
            sent += 1
    return sent, failed
