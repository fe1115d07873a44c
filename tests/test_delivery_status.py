"""What staff see of notification delivery: counts per update, and a paused transport."""

from __future__ import annotations

from datetime import UTC, timedelta

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from incidents import actions, notifications
from incidents.models import BreakerState, CircuitBreaker, Delivery, Message
from tests import factories

pytestmark = pytest.mark.django_db


def test_it_counts_each_updates_notifications_on_the_incident_page(staff: User, staff_client: Client) -> None:
    for address in ("a@example.com", "b@example.com", "c@example.com"):
        actions.confirm_subscription(actions.subscribe(email=address))
    incident = factories.declare(actor=staff)
    message = Message.objects.get(kind="incident_update")
    notifications.fan_out(message.pk)
    first, second, _ = Delivery.objects.filter(message=message).order_by("id")
    Delivery.objects.filter(pk=first.pk).update(status="sent")
    Delivery.objects.filter(pk=second.pk).update(status="failed")

    html = staff_client.get(f"/manage/incidents/{incident.pk}").content.decode()

    assert "Notifications: 1 sent · 1 pending · <strong>1 failed</strong>" in html


def test_it_warns_on_the_dashboard_when_a_transport_is_paused(staff_client: Client) -> None:
    CircuitBreaker.objects.create(
        transport="email",
        state=BreakerState.OPEN,
        consecutive_failures=5,
        retry_at=timezone.now() + timedelta(minutes=1),
        last_error="ConnectionRefusedError: [Errno 111] Connection refused",
    )

    html = staff_client.get("/manage/").content.decode()

    assert "Email notifications are paused</strong> after 5 failures in a row" in html
    assert "Connection refused" in html


def test_the_paused_notice_gives_the_time_of_the_next_real_try(staff: User, staff_client: Client) -> None:
    """The next try is the later of the breaker's cool-down and the first waiting row's own backoff (a
    review saw 'next try at 20:41' at 20:42: the row's backoff outlasted the cool-down)."""
    now = timezone.now()
    CircuitBreaker.objects.create(
        transport="email", state=BreakerState.OPEN, consecutive_failures=5, retry_at=now + timedelta(minutes=1)
    )
    html = staff_client.get("/manage/").content.decode()
    assert "Email notifications are paused" in html
    assert "next try" not in html  # nothing waits

    subscriber = actions.confirm_subscription(actions.subscribe(email="ann@example.com"))
    factories.declare(actor=staff)
    message = Message.objects.get(kind="incident_update")
    notifications.fan_out(message.pk)
    later = now + timedelta(minutes=10)
    Delivery.objects.filter(subscriber=subscriber, message=message).update(next_attempt_at=later)
    html = staff_client.get("/manage/").content.decode()
    assert f'next try at <time datetime="{later.astimezone(UTC).isoformat().replace("+00:00", "Z")}"' in html

    Delivery.objects.filter(subscriber=subscriber, message=message).update(next_attempt_at=now - timedelta(hours=1))
    CircuitBreaker.objects.filter(transport="email").update(retry_at=now - timedelta(seconds=5))
    assert "next try due now" in staff_client.get("/manage/").content.decode()


def test_mail_stopped_by_an_unsubscribe_is_not_counted_as_a_failure(staff: User, staff_client: Client) -> None:
    subscribers = [actions.confirm_subscription(actions.subscribe(email=f"{n}@example.com")) for n in "ab"]
    incident = factories.declare(actor=staff)
    notifications.fan_out(Message.objects.get(kind="incident_update").pk)
    actions.unsubscribe(subscribers[0])

    html = staff_client.get(f"/manage/incidents/{incident.pk}").content.decode()

    assert "Notifications: 0 sent · 1 pending · 0 failed · 1 stopped (unsubscribed)" in html


def test_no_paused_notice_for_a_webhook_host_nobody_uses_any_more(staff: User, staff_client: Client) -> None:
    hook, _ = actions.add_webhook(actor=staff, url="https://hooks.example.com/status")
    CircuitBreaker.objects.create(
        transport="webhook hooks.example.com", state=BreakerState.OPEN, consecutive_failures=5, last_error="HTTP 500"
    )
    assert "Webhooks to hooks.example.com are paused" in staff_client.get("/manage/").content.decode()

    actions.unsubscribe(hook)

    assert "Webhooks to hooks.example.com" not in staff_client.get("/manage/").content.decode()
