"""Webhook subscribers: Statuspage's payloads, signed, delivered through the outbox to a real HTTP server."""

from __future__ import annotations

import contextlib
import json
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import StringIO
from typing import Any

import pytest
import time_machine
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone
from django.utils.html import escape

from incidents import actions, notifications, webhooks
from incidents.actions import ActionRefused
from incidents.models import Component, Delivery, Subscriber
from tests import factories
from tests.conftest import PUBLIC_ADDRESS

pytestmark = pytest.mark.django_db


@dataclass
class Receiver:
    url: str
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    status: int = 204
    headers: dict[str, str] = field(default_factory=dict)  # sent with every answer (Location, …)
    gets: list[str] = field(default_factory=list)  # paths requested with GET (a followed redirect)


@contextlib.contextmanager
def serving() -> Iterator[Receiver]:
    """A real HTTP server on 127.0.0.1 in a thread, answering every POST with `status` and `headers`."""
    state = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.requests.append((dict(self.headers), body))
            self.send_response(state.status)
            for name, value in state.headers.items():
                self.send_header(name, value)
            self.end_headers()

        def do_GET(self) -> None:
            state.gets.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/status"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def receiver(settings: Any) -> Iterator[Receiver]:
    """A local receiver, which webhooks may reach only with WEBHOOK_ALLOW_PRIVATE on (as a test's must)."""
    settings.WEBHOOK_ALLOW_PRIVATE = True
    with serving() as state:
        yield state


@pytest.fixture
def api(staff: User) -> Component:
    return factories.make_component(name="API", actor=staff)


def add_hook(staff: User, receiver: Receiver, **kwargs: Any) -> tuple[Subscriber, str]:
    return actions.add_webhook(actor=staff, url=receiver.url, **kwargs)


def deliver_after(callbacks: Callable[..., Any], action: Callable[[], Any]) -> None:
    with callbacks(execute=True):
        action()


def test_it_posts_signed_incident_payloads_in_statuspage_format(
    staff: User, api: Component, receiver: Receiver, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    _, secret = add_hook(staff, receiver)

    deliver_after(
        django_capture_on_commit_callbacks,
        lambda: factories.declare(actor=staff, title="API errors", components={api: "major_outage"}),
    )

    bodies = [json.loads(body) for _, body in receiver.requests]
    incident_posts = [b for b in bodies if "incident" in b]
    component_posts = [b for b in bodies if "component_update" in b]
    assert len(incident_posts) == 1 and len(component_posts) == 1
    post = incident_posts[0]
    assert set(post) == {"meta", "page", "incident"}
    assert set(post["meta"]) == {"unsubscribe", "documentation"}
    assert post["page"]["status_indicator"] == "critical"
    assert post["incident"]["name"] == "API errors"
    assert post["incident"]["incident_updates"][0]["body"] == "We are investigating elevated latency."
    assert "body_html" not in post["incident"]["incident_updates"][0]  # Statuspage's fields only
    change = component_posts[0]
    assert set(change) == {"meta", "page", "component_update", "component"}
    assert (change["component_update"]["old_status"], change["component_update"]["new_status"]) == (
        "operational",
        "major_outage",
    )
    assert change["component"]["name"] == "API"
    for headers, body in receiver.requests:
        assert headers["Content-Type"] == "application/json"
        assert webhooks.verify(body, headers[webhooks.SIGNATURE_HEADER], secret)
        assert not webhooks.verify(body + b" ", headers[webhooks.SIGNATURE_HEADER], secret)
        assert not webhooks.verify(body, headers[webhooks.SIGNATURE_HEADER], "another secret")


def test_it_rejects_an_old_signature() -> None:
    header = webhooks.sign(b"{}", "secret", 1_000_000)
    assert webhooks.verify(b"{}", header, "secret", now=1_000_000 + 60)
    assert not webhooks.verify(b"{}", header, "secret", now=1_000_000 + webhooks.TOLERANCE_SECONDS + 1)
    assert not webhooks.verify(b"{}", "t=abc,v1=00", "secret")


def test_it_honours_the_webhooks_components(
    staff: User, api: Component, receiver: Receiver, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    web = factories.make_component(name="Web", actor=staff)
    add_hook(staff, receiver, components=[web])

    deliver_after(
        django_capture_on_commit_callbacks,
        lambda: factories.declare(actor=staff, components={api: "partial_outage"}),
    )

    assert receiver.requests == []


@pytest.mark.parametrize(("status", "outcome"), [(400, "failed"), (404, "failed"), (500, "pending"), (429, "pending")])
def test_it_retries_only_what_may_succeed_later(
    staff: User,
    receiver: Receiver,
    status: int,
    outcome: str,
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    subscriber, _ = add_hook(staff, receiver)
    receiver.status = status

    deliver_after(django_capture_on_commit_callbacks, lambda: factories.declare(actor=staff))

    delivery = Delivery.objects.get(subscriber=subscriber)
    assert (delivery.status, delivery.attempts, delivery.last_error) == (outcome, 1, f"HTTP {status}")
    if outcome == "pending":
        assert delivery.next_attempt_at > delivery.created_at  # backed off


def test_a_dead_endpoint_opens_its_own_breaker_and_pauses_nobody_else(
    staff: User, receiver: Receiver, settings: Any, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    settings.BREAKER_THRESHOLD = 2
    dead, _ = actions.add_webhook(actor=staff, url="http://127.0.0.1:1/nobody-listens")
    live, _ = add_hook(staff, receiver)
    dead_host = webhooks.destination(dead)

    deliver_after(django_capture_on_commit_callbacks, lambda: factories.declare(actor=staff))  # 1st failure
    Delivery.objects.filter(subscriber=dead).update(next_attempt_at=timezone.now())  # skip the backoff
    notifications.deliver_due()  # 2nd failure: the dead host's breaker opens

    assert dead_host == "webhook 127.0.0.1:1"
    assert notifications.breaker(dead_host).state == "open"
    assert notifications.breaker(webhooks.destination(live)).state == "closed"
    assert notifications.breaker(notifications.EMAIL).state == "closed"
    assert len(receiver.requests) == 1  # the live endpoint got its update

    # While it is open, the dead host is not tried (no attempt counted) and waits for the cool-down,
    # and the live one goes on receiving.
    Delivery.objects.filter(subscriber=dead).update(next_attempt_at=timezone.now())
    attempts = Delivery.objects.get(subscriber=dead).attempts
    deliver_after(django_capture_on_commit_callbacks, lambda: factories.declare(actor=staff, title="Second"))
    row = Delivery.objects.filter(subscriber=dead).order_by("id").first()
    assert row is not None and row.attempts == attempts and row.status == "pending"
    assert row.next_attempt_at == notifications.breaker(dead_host).retry_at
    assert len(receiver.requests) == 2

    # After the cool-down exactly one probe goes out; it fails, and the breaker stays open. The host is
    # still down: that says nothing about the probed row, which counts no attempt.
    later = notifications.breaker(dead_host).retry_at
    assert later is not None
    Delivery.objects.filter(subscriber=dead).update(next_attempt_at=later)
    before = sorted(Delivery.objects.filter(subscriber=dead).values_list("attempts", flat=True))
    notifications.deliver_due(later)
    assert sorted(Delivery.objects.filter(subscriber=dead).values_list("attempts", flat=True)) == before
    assert notifications.breaker(dead_host).state == "open"
    next_probe = notifications.breaker(dead_host).retry_at
    assert next_probe is not None and next_probe > later  # probed: the next probe is a cool-down on


def test_a_receiver_down_longer_than_the_attempts_last_loses_nothing(
    staff: User, receiver: Receiver, settings: Any, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    # The full fault run: a receiver answering 500 for 60 s lost 2 webhooks ("gave up after 8 attempts"):
    # each failed probe of its open breaker used one of the probed row's attempts.
    settings.BREAKER_THRESHOLD = 1
    settings.DELIVERY_MAX_ATTEMPTS = 3
    hook, _ = add_hook(staff, receiver)
    host = webhooks.destination(hook)
    receiver.status = 500
    deliver_after(django_capture_on_commit_callbacks, lambda: factories.declare(actor=staff))
    assert notifications.breaker(host).state == "open"
    row = Delivery.objects.get(subscriber=hook)
    assert (row.status, row.attempts) == ("pending", 1)

    for _ in range(3 * settings.DELIVERY_MAX_ATTEMPTS):
        probe_at = notifications.breaker(host).retry_at
        assert probe_at is not None
        Delivery.objects.filter(pk=row.pk).update(next_attempt_at=probe_at)
        notifications.deliver_due(probe_at)
        row.refresh_from_db()
        assert (row.status, row.attempts) == ("pending", 1), row.last_error
    assert len(receiver.requests) == 1 + 3 * settings.DELIVERY_MAX_ATTEMPTS

    receiver.status = 200
    probe_at = notifications.breaker(host).retry_at
    assert probe_at is not None
    Delivery.objects.filter(pk=row.pk).update(next_attempt_at=probe_at)
    notifications.deliver_due(probe_at)
    row.refresh_from_db()
    assert row.status == "sent"
    assert notifications.breaker(host).state == "closed"


def test_an_endpoint_that_keeps_failing_while_its_host_answers_gives_up(
    staff: User, receiver: Receiver, settings: Any, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    # The breaker stays closed (the threshold is not reached): every failure counts, and the row gives up.
    settings.BREAKER_THRESHOLD = 100
    settings.DELIVERY_MAX_ATTEMPTS = 3
    hook, _ = add_hook(staff, receiver)
    receiver.status = 500
    deliver_after(django_capture_on_commit_callbacks, lambda: factories.declare(actor=staff))
    for _ in range(2):
        Delivery.objects.filter(subscriber=hook).update(next_attempt_at=timezone.now())
        notifications.deliver_due()

    row = Delivery.objects.get(subscriber=hook)
    assert (row.status, row.attempts, row.last_error) == ("failed", 3, "gave up after 3 attempts: HTTP 500")


def test_the_dashboard_names_the_paused_webhook_host(
    staff: User, client: Any, settings: Any, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    settings.BREAKER_THRESHOLD = 1
    settings.WEBHOOK_ALLOW_PRIVATE = True
    actions.add_webhook(actor=staff, url="http://127.0.0.1:1/nobody-listens")
    deliver_after(django_capture_on_commit_callbacks, lambda: factories.declare(actor=staff))

    client.force_login(staff)
    page = client.get("/manage/").content.decode()
    assert "Webhooks to 127.0.0.1:1 are paused" in page
    assert "Email notifications" not in page


def test_it_refuses_bad_webhooks(staff: User, outsider: User) -> None:
    with pytest.raises(ActionRefused, match="http or https") as refused:
        actions.add_webhook(actor=staff, url="file:///etc/passwd")
    assert refused.value.field == "url"
    with pytest.raises(ActionRefused, match="Only staff"):
        actions.add_webhook(actor=outsider, url="https://example.com/hook")


# --- redirects, 410 Gone, and what one row can do to the others --------------------------------------


def test_a_redirect_is_not_followed_and_fails_with_where_it_pointed(
    staff: User,
    receiver: Receiver,
    settings: Any,
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    """Before, urllib followed the 301 with a GET without the body, and the delivery was marked sent."""
    staff.is_superuser = True
    staff.save()
    hook, _ = add_hook(staff, receiver)
    with serving() as moved:
        receiver.status, receiver.headers = 301, {"Location": moved.url + "/new"}

        deliver_after(django_capture_on_commit_callbacks, lambda: factories.declare(actor=staff))

        assert moved.gets == [] and moved.requests == []  # nothing went where it pointed
    assert len(receiver.requests) == 1
    row = Delivery.objects.get(subscriber=hook)
    reason = f"HTTP 301 redirect to {moved.url}/new (not followed)"
    assert (row.status, row.attempts, row.last_error) == ("pending", 1, reason)  # retried, on its backoff
    assert row.next_attempt_at > row.created_at

    client = Client()
    client.force_login(staff)  # staff see why in the admin's outbox
    listed = client.get("/admin/incidents/delivery/?status=pending").content.decode()
    assert escape(reason) in listed


def test_a_webhook_that_answers_410_gone_is_unsubscribed(
    staff: User, receiver: Receiver, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    staff.is_superuser = True
    staff.save()
    hook, _ = add_hook(staff, receiver)
    receiver.status = 410

    deliver_after(django_capture_on_commit_callbacks, lambda: factories.declare(actor=staff))

    row = Delivery.objects.get(subscriber=hook)
    assert (row.status, row.attempts, row.last_error) == ("failed", 1, "HTTP 410 Gone")
    hook.refresh_from_db()
    assert hook.unsubscribed_at is not None and hook.bounced_at is not None
    assert hook.bounce_reason == "the receiver answered HTTP 410 Gone"
    assert notifications.breaker(webhooks.destination(hook)).consecutive_failures == 0  # the host is up

    deliver_after(django_capture_on_commit_callbacks, lambda: factories.declare(actor=staff, title="Second"))
    assert len(receiver.requests) == 1  # nothing more goes to it
    client = Client()
    client.force_login(staff)
    listed = client.get("/admin/incidents/subscriber/?bounced_at__isnull=False").content.decode()
    assert receiver.url in listed and "the receiver answered HTTP 410 Gone" in listed


def test_a_row_that_raises_fails_alone_and_the_batch_goes_on(
    staff: User, receiver: Receiver, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    """A port out of range made urlsplit raise ValueError, which left the whole batch held (the rows
    after it waited for the claim timeout, and came back with it)."""
    first, _ = add_hook(staff, receiver)
    broken = Subscriber.objects.create(  # from before URLs were checked: the action refuses it now
        kind="webhook", webhook_url="http://example.com:99999/hook", webhook_secret="s" * 64, secret="t" * 16,
        confirmed_at=timezone.now(),
    )  # fmt: skip
    last, _ = add_hook(staff, receiver)

    # The clock stands still: the broken row's backoff (full jitter, 0-30 s) may be under a second, and a
    # later pass in the same run would try it again on a slow machine.
    with time_machine.travel(timezone.now(), tick=False):
        deliver_after(django_capture_on_commit_callbacks, lambda: factories.declare(actor=staff))

    rows = {row.subscriber_id: row for row in Delivery.objects.all()}
    assert rows[first.pk].pk < rows[broken.pk].pk < rows[last.pk].pk  # one batch, the broken row between
    assert len(receiver.requests) == 2
    assert rows[first.pk].status == rows[last.pk].status == "sent"
    assert (rows[broken.pk].status, rows[broken.pk].attempts) == ("pending", 1)  # on its own backoff
    assert rows[broken.pk].last_error == "could not send: ValueError: Port out of range 0-65535"


# --- where webhooks may connect (SSRF) ---------------------------------------------------------------


PRIVATE_URLS = [
    ("http://127.0.0.1:6379/", "127.0.0.1 is not a public address"),
    ("http://localhost:8000/hook", "localhost resolves to 127.0.0.1, which is not a public address"),
    ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is not a public address"),  # cloud metadata
    ("http://10.0.0.5/hook", "10.0.0.5 is not a public address"),
    ("https://192.168.1.1/hook", "192.168.1.1 is not a public address"),
    ("http://172.16.0.1/hook", "172.16.0.1 is not a public address"),
    ("http://100.64.0.1/hook", "100.64.0.1 is not a public address"),  # carrier-grade NAT
    ("http://0.0.0.0/hook", "0.0.0.0 is not a public address"),
    ("http://[::1]/hook", "::1 is not a public address"),
    ("http://[fe80::1]/hook", "fe80::1 is not a public address"),
    ("http://[fd00::1]/hook", "fd00::1 is not a public address"),
    ("http://[::ffff:127.0.0.1]/hook", "::ffff:127.0.0.1 is not a public address"),
    # One private address among public ones is enough: a connection may go to any of them.
    ("https://mixed.example.com/hook", "mixed.example.com resolves to 10.1.2.3, which is not a public address"),
]


@pytest.mark.parametrize(("url", "reason"), PRIVATE_URLS)
def test_it_refuses_webhooks_to_private_addresses(
    staff: User, dns: dict[str, list[str]], url: str, reason: str
) -> None:
    dns["mixed.example.com"] = [PUBLIC_ADDRESS, "10.1.2.3"]

    with pytest.raises(ActionRefused) as refused:
        actions.add_webhook(actor=staff, url=url)

    assert refused.value.field == "url"
    assert refused.value.message.startswith(f"{reason}: webhooks may reach only public addresses")
    assert "WEBHOOK_ALLOW_PRIVATE=true" in refused.value.message
    with pytest.raises(CommandError, match=re.escape(reason)):
        call_command("add_webhook", url, "--by", "alice", stdout=StringIO(), stderr=StringIO())
    assert not Subscriber.objects.exists()


def test_it_takes_private_addresses_when_the_setting_allows_them(staff: User, settings: Any) -> None:
    settings.WEBHOOK_ALLOW_PRIVATE = True
    hook, _ = actions.add_webhook(actor=staff, url="http://10.0.0.5/hook")
    assert hook.webhook_url == "http://10.0.0.5/hook"


def test_it_refuses_a_host_that_does_not_resolve(staff: User, dns: dict[str, list[str]]) -> None:
    with pytest.raises(ActionRefused, match=r"Could not find the host nowhere\.invalid .*check the URL"):
        actions.add_webhook(actor=staff, url="https://nowhere.invalid/hook")


def test_a_host_that_turns_private_after_it_was_added_is_not_connected_to(
    staff: User,
    receiver: Receiver,
    settings: Any,
    dns: dict[str, list[str]],
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    """DNS rebinding: public when added, 127.0.0.1 (where our receiver stands in for Redis or an admin
    port) when sent. The request checks the addresses again and connects only to what it checked."""
    settings.WEBHOOK_ALLOW_PRIVATE = False
    port = receiver.url.split(":")[2].split("/")[0]
    hook, _ = actions.add_webhook(actor=staff, url=f"http://rebind.example.com:{port}/hooks/status")
    dns["rebind.example.com"] = ["127.0.0.1"]

    deliver_after(django_capture_on_commit_callbacks, lambda: factories.declare(actor=staff))

    assert receiver.requests == []
    row = Delivery.objects.get(subscriber=hook)
    assert (row.status, row.last_error) == (
        "failed",
        "not sent: rebind.example.com resolves to 127.0.0.1, which is not a public address "
        "(WEBHOOK_ALLOW_PRIVATE is off)",
    )
    assert notifications.breaker(webhooks.destination(hook)).consecutive_failures == 0  # nothing was tried


def test_a_request_goes_to_the_address_that_was_checked(
    staff: User, receiver: Receiver, dns: dict[str, list[str]], django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    """The connection is made to the resolved, checked address (not to whatever a second lookup gives):
    this name resolves only through the test's DNS, and the request arrives."""
    dns["hooks.internal.example.com"] = ["127.0.0.1"]
    port = receiver.url.split(":")[2].split("/")[0]
    actions.add_webhook(actor=staff, url=f"http://hooks.internal.example.com:{port}/hooks/status")

    deliver_after(django_capture_on_commit_callbacks, lambda: factories.declare(actor=staff))

    [(headers, _)] = [request for request in receiver.requests if b'"incident"' in request[1]]
    assert headers["Host"] == f"hooks.internal.example.com:{port}"


def test_it_adds_a_webhook_from_the_command_line(staff: User, api: Component) -> None:
    out, err = StringIO(), StringIO()
    call_command(
        "add_webhook", "https://example.com/hook", "--by", "alice", "--component", str(api.pk), stdout=out, stderr=err
    )

    subscriber = Subscriber.objects.get(kind="webhook")
    assert out.getvalue().strip() == subscriber.webhook_secret
    assert list(subscriber.components.all()) == [api]
    with pytest.raises(CommandError, match="Unknown component"):
        call_command("add_webhook", "https://example.com/hook", "--by", "alice", "--component", "999")


def test_staff_find_and_unsubscribe_a_webhook_in_the_admin(staff: User, client: Any) -> None:
    staff.is_superuser = True
    staff.save()
    hook, _ = actions.add_webhook(actor=staff, url="https://hooks.example.com/status")
    client.force_login(staff)

    listed = client.get("/admin/incidents/subscriber/?q=hooks.example.com")
    assert "https://hooks.example.com/status" in listed.content.decode()
    client.post("/admin/incidents/subscriber/", {"action": "unsubscribe", "_selected_action": [hook.pk]}, follow=True)
    hook.refresh_from_db()
    assert hook.unsubscribed_at is not None
    # Read-only otherwise: choices change on the subscriber's own page, never here.
    assert client.post(f"/admin/incidents/subscriber/{hook.pk}/change/", {}).status_code == 403
    assert client.post(f"/admin/incidents/subscriber/{hook.pk}/delete/", {"post": "yes"}).status_code == 403


def test_a_webhook_tells_the_state_of_its_change_not_of_its_sending(
    staff: User,
    api: Component,
    receiver: Receiver,
    django_capture_on_commit_callbacks: Callable[..., Any],
    settings: Any,
) -> None:
    """A window scheduled and started before the sweep sends anything (a review saw two identical
    'in_progress' POSTs and no 'scheduled'): each POST carries the state as its change committed."""
    from datetime import timedelta

    from django.utils import timezone

    from incidents import notifications
    from incidents.models import Message

    settings.DELIVER_EAGERLY = False  # nothing is sent in the request: the sweep sends both later
    add_hook(staff, receiver)
    with django_capture_on_commit_callbacks(execute=True):
        window = actions.schedule_maintenance(
            actor=staff,
            title="Upgrade",
            scheduled_for=timezone.now() + timedelta(minutes=5),
            scheduled_until=timezone.now() + timedelta(hours=1),
            components=[api],
        )
    with django_capture_on_commit_callbacks(execute=True):
        actions.start_maintenance(window, actor=staff)
    assert receiver.requests == []
    for message in Message.objects.filter(fanned_out_at__isnull=True):
        notifications.fan_out(message.pk)
    notifications.deliver_due()

    bodies = [json.loads(body) for _, body in receiver.requests]
    maintenance_posts = [b["incident"] for b in bodies if "incident" in b]
    assert [post["status"] for post in maintenance_posts] == ["scheduled", "in_progress"]
    assert [len(post["incident_updates"]) for post in maintenance_posts] == [1, 2]
    component_posts = [b for b in bodies if "component_update" in b]
    assert [b["component"]["status"] for b in component_posts] == ["under_maintenance"]
    assert all(set(b) == {"meta", "page", "incident"} or "component_update" in b for b in bodies)
