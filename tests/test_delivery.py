"""Email delivery against a real SMTP server (aiosmtpd): content, choices, batching, retries, the breaker.

Tasks run eagerly in-process (conftest); time is moved with time-machine. The real-worker and crash
tests are in tests/test_delivery_faults.py.
"""

from __future__ import annotations

import random
import re
import smtplib
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email import policy as email_policy
from typing import Any

import pytest
import time_machine
from django.conf import settings
from django.contrib.auth.models import User
from django.utils import timezone

from incidents import actions, addresses, emails, notifications, tasks
from incidents.models import (
    BreakerState,
    CircuitBreaker,
    Component,
    Delivery,
    DeliveryStatus,
    Incident,
    Message,
    MessageKind,
    Subscriber,
)
from incidents.notifications import EMAIL
from incidents.tokens import new_secret, read_token
from tests import factories
from tests.conftest import SMTP_SITE_URL, Subscribe
from tests.smtp import SmtpServer, text_and_html

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
SITE_URL = SMTP_SITE_URL  # the smtp fixture (conftest) sets it
CLAIM_TIMEOUT = timedelta(seconds=settings.DELIVERY_CLAIM_TIMEOUT_SECONDS)


@pytest.fixture(autouse=True)
def at_t0() -> Iterator[time_machine.Traveller]:
    """Every test runs at T0, for everything it creates: tests name times from T0 (claims, retries,
    breakers), and rows created at the real clock would be due before or after them depending on the
    day the suite runs."""
    with time_machine.travel(T0, tick=False) as traveller:
        yield traveller


# SMTPException is a subclass of OSError, and send_email_batch catches CONNECTION_ERRORS (OSError
# included) before smtplib.SMTPException: a refused recipient is taken for a dead connection.


@pytest.fixture
def run_on_commit(django_capture_on_commit_callbacks: Any) -> Callable[..., Any]:
    """Call an action and then what it queued on commit (the notify task, eagerly)."""

    def run(action: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        with django_capture_on_commit_callbacks(execute=True):
            return action(*args, **kwargs)

    return run


def subscribers(subscribe: Subscribe, *names: str) -> list[Subscriber]:
    return [subscribe(f"{name}@example.com") for name in names]


def delivery_to(subscriber: Subscriber, message: Message | None = None) -> Delivery:
    rows = Delivery.objects.filter(subscriber=subscriber)
    if message is not None:
        rows = rows.filter(message=message)
    return rows.get()


def last_update_message() -> Message:
    return Message.objects.filter(kind=MessageKind.INCIDENT_UPDATE).latest("id")


def token_in(url: str, purpose: str) -> str:
    match = re.fullmatch(rf"{re.escape(SITE_URL)}/subscribe/{purpose}/([^/\s>]+)", url)
    assert match, url
    return match.group(1)


def breaker() -> CircuitBreaker:
    return CircuitBreaker.objects.get_or_create(transport=EMAIL)[0]


# --- what a subscriber receives -----------------------------------------------------------------


def test_it_sends_a_confirmation_with_an_absolute_signed_link(
    smtp: SmtpServer, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        ann = actions.subscribe(email="ann@example.com")

    [email] = smtp.inbox("ann@example.com")
    assert email["Subject"] == "Confirm your subscription to Signalpost status updates"
    assert email["To"] == "ann@example.com"
    text, html = text_and_html(email)
    [link] = re.findall(rf"{re.escape(SITE_URL)}/subscribe/confirm/\S+", text)
    assert read_token(token_in(link, "confirm"), "confirm") == ann
    assert f'href="{link}"' in html
    # Not subscribed yet: neither part offers to change choices or unsubscribe, both say to ignore it.
    assert "/subscribe/manage/" not in text + html and "/subscribe/unsubscribe/" not in text + html
    assert "someone asked to subscribe ann@example.com" in html
    assert delivery_to(ann).status == DeliveryStatus.SENT


def test_it_sends_an_update_with_text_html_absolute_links_and_one_click_unsubscribe(
    smtp: SmtpServer, subscribe: Subscribe, run_on_commit: Callable[..., Any], staff: User
) -> None:
    ann = subscribe("ann@example.com")
    incident = run_on_commit(
        factories.declare, actor=staff, title="Queries are slow", message="We are **investigating** latency."
    )

    [email] = smtp.inbox("ann@example.com")
    assert email["Subject"] == "[Investigating] Queries are slow"
    assert email.get_content_type() == "multipart/alternative"
    assert email["Auto-Submitted"] == "auto-generated"
    text, html = text_and_html(email)
    incident_url = f"{SITE_URL}/incidents/{incident.pk}"
    assert incident_url in text
    assert f'href="{incident_url}"' in html
    assert "We are **investigating** latency." in text
    assert "<strong>investigating</strong>" in html
    assert all(href.startswith(f"{SITE_URL}/") for href in re.findall(r'href="([^"]*)"', html))

    # RFC 8058: a one-click unsubscribe URL, absolute, carrying a token for this subscriber.
    unsubscribe_url = email["List-Unsubscribe"].removeprefix("<").removesuffix(">")
    # On the wire as RFC 2369 has it, one line, not folded into RFC 2047 encoded words.
    [raw] = smtp.raw("ann@example.com")
    assert f"\r\nList-Unsubscribe: <{unsubscribe_url}>\r\n".encode() in raw
    assert read_token(token_in(unsubscribe_url, "unsubscribe"), "unsubscribe") == ann
    assert email["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert unsubscribe_url in text
    manage = re.findall(rf"{re.escape(SITE_URL)}/subscribe/manage/\S+", text)
    assert len(manage) == 1
    assert read_token(token_in(manage[0], "manage"), "manage") == ann

    row = delivery_to(ann, last_update_message())
    assert (row.status, row.attempts, row.claim, row.last_error) == (DeliveryStatus.SENT, 1, "", "")
    assert row.sent_at is not None


def test_subjects_and_component_lines_read_as_written(
    smtp: SmtpServer, subscribe: Subscribe, run_on_commit: Callable[..., Any], staff: User
) -> None:
    """Subjects are text, not HTML (no &amp;); an update names every affected component and, apart,
    what it changed; a maintenance email names its components (a review found a QuerySet's repr)."""
    subscribe("ann@example.com")
    group = factories.make_component(name="Query API", is_group=True, actor=staff)
    us = factories.make_component(name="US", group=group, actor=staff)
    eu = factories.make_component(name="EU", group=group, actor=staff)
    title = "Störung: customers' dashboards won't load <EU> & \"US\""
    incident = run_on_commit(
        factories.declare, actor=staff, title=title, components={us: "partial_outage", eu: "operational"}
    )
    run_on_commit(
        actions.post_update,
        incident,
        actor=staff,
        body="EU is slow too.",
        public_status="identified",
        components={eu: "degraded_performance"},
    )
    run_on_commit(
        actions.schedule_maintenance,
        actor=staff,
        title="Upgrade & <restart>",
        scheduled_for=timezone.now() + timedelta(days=1),
        scheduled_until=timezone.now() + timedelta(days=1, hours=1),
        components=[us, eu],
        message="Brief.",
    )

    first, second, window = smtp.inbox("ann@example.com")
    assert first["Subject"] == f"[Investigating] {title}"
    assert second["Subject"] == f"[Identified] {title}"
    assert window["Subject"] == "[Maintenance scheduled] Upgrade & <restart>"
    text, html = text_and_html(second)
    assert "Affected components: Query API - US, Query API - EU" in text
    assert "Changed in this update: Query API - EU (degraded performance)" in text
    assert "Affected components: Query API - US, Query API - EU" in html
    text, html = text_and_html(window)
    assert "Components: Query API - US, Query API - EU" in text
    assert "QuerySet" not in text
    assert "Query API - US, Query API - EU" in html


def test_updates_of_one_incident_are_threaded(
    smtp: SmtpServer, subscribe: Subscribe, run_on_commit: Callable[..., Any], staff: User
) -> None:
    ann = subscribe("ann@example.com")
    incident = run_on_commit(factories.declare, actor=staff, title="Queries are slow")
    run_on_commit(actions.post_update, incident, actor=staff, body="Found it.", public_status="identified")
    run_on_commit(actions.post_update, incident, actor=staff, body="Fix deployed.", public_status="monitoring")
    other = run_on_commit(factories.declare, actor=staff, title="Logins fail")

    first, second, third, unrelated = smtp.inbox("ann@example.com")
    root = f"<incident.{incident.pk}.{int(incident.declared_at.timestamp())}.{ann.pk}@status.example.com>"
    assert first["Message-ID"] == root
    assert first["In-Reply-To"] is None
    for reply in (second, third):
        assert reply["In-Reply-To"] == root
        assert reply["References"] == root
    ids = {email["Message-ID"] for email in (first, second, third, unrelated)}
    assert len(ids) == 4
    assert second["Subject"] == "[Identified] Queries are slow"
    assert (
        unrelated["Message-ID"]
        == f"<incident.{other.pk}.{int(other.declared_at.timestamp())}.{ann.pk}@status.example.com>"
    )
    assert unrelated["References"] is None


def test_message_ids_do_not_repeat_after_a_database_reset(
    smtp: SmtpServer, subscribe: Subscribe, staff: User, django_capture_on_commit_callbacks: Any
) -> None:
    """A reset database (or a fresh install on the same SITE_URL) numbers incidents, messages and
    subscribers from 1 again; mail providers silently drop a Message-ID they have seen. The ids carry
    the incident's and the message's times, so the same numbers at another time give other ids."""
    ann = subscribe("ann@example.com")
    with django_capture_on_commit_callbacks(execute=False):
        incident = factories.declare(actor=staff)
        actions.post_update(incident, actor=staff, body="Found it.", public_status="identified")
    reply = last_update_message()
    before = emails.thread_headers(reply, ann, root=False)
    assert reply.incident is not None
    reply.created_at += timedelta(days=30)  # the same numbers, a month later
    reply.incident.declared_at += timedelta(days=30)
    after = emails.thread_headers(reply, ann, root=False)
    assert before["Message-ID"] != after["Message-ID"]
    assert before["In-Reply-To"] != after["In-Reply-To"]


def test_a_batch_renders_once_and_gives_each_subscriber_exactly_their_own_email(
    smtp: SmtpServer, subscribe: Subscribe, staff: User, django_capture_on_commit_callbacks: Any
) -> None:
    # Addresses that HTML-escaping changes, and an update whose text is full of markup.
    people = [subscribe("o'brien@example.com"), subscribe("a&b@example.com"), subscribe("plain@example.com")]
    with django_capture_on_commit_callbacks(execute=False):
        factories.declare(
            actor=staff, title='<Queries> & "exports" are slow', message="Use the <b>CSV</b> export & wait."
        )
    message = last_update_message()
    notifications.fan_out(message.pk)
    composer = emails.Composer()
    for person in people:
        delivery = Delivery.objects.select_related("message", "subscriber").get(message=message, subscriber=person)
        composed = composer.build(delivery)
        # What rendering the templates whole for this one subscriber gives.
        whole = emails.render(message, emails.context_for(message, person, emails.links(person, confirm=False)))
        assert composed.subject == whole.subject
        assert composed.body == whole.text
        assert composed.alternatives[0][0] == whole.html
        assert composer.slots.email not in composed.body + whole.html
        assert person.email in composed.body
    assert len(composer._rendered) == 1  # rendered once for the three


BOUNDARY = re.compile(rb'boundary="([^"]+)"')


def as_sent(email: emails.StatusEmail) -> bytes:
    """What Django's SMTP backend sends for an email, with its random MIME boundary made a fixed one."""
    data = email.message(policy=email_policy.SMTP).as_bytes()
    [boundary] = set(BOUNDARY.findall(data))
    return data.replace(boundary, b"BOUNDARY")


def merged(composer: emails.Composer, delivery: Delivery) -> bytes | None:
    data = composer.wire(delivery)
    if data is None:
        return None
    [boundary] = set(BOUNDARY.findall(data))
    return data.replace(boundary, b"BOUNDARY")


def test_the_mail_merge_gives_the_bytes_of_each_email_built_whole(
    smtp: SmtpServer, subscribe: Subscribe, staff: User, django_capture_on_commit_callbacks: Any
) -> None:
    """The merged email is byte for byte what building it whole and sending it through Django's SMTP
    backend gives (the boundary aside), for a thread's first email and a reply, a maintenance window,
    addresses with tags and apostrophes, text and an address that HTML escaping changes, and 8-bit text;
    addresses Python would quote or encode are left to the whole build."""
    plain = [subscribe("ann@example.com"), subscribe("o'brien+status@Mail.Example.COM"), subscribe("x@a-b.example")]
    whole_only = [subscribe("a&b@example.com"), subscribe("x=y{z}@example.com"), subscribe("ann@bücher.example")]
    with django_capture_on_commit_callbacks(execute=False):
        incident = factories.declare(
            actor=staff, title="Queries — “slow” & <odd>", message="Ünïcode, **markup**, & a <b>tag</b>."
        )
        actions.post_update(incident, actor=staff, body="Still slow; o'brien+status@Mail.Example.COM knows.")
        actions.schedule_maintenance(
            actor=staff,
            title="Database upgrade",
            scheduled_for=T0 + timedelta(days=1),
            scheduled_until=T0 + timedelta(days=1, hours=1),
            message="Brief read-only period.",
        )
    messages = list(Message.objects.exclude(kind=MessageKind.CONFIRMATION).order_by("id"))
    assert [m.kind for m in messages] == [
        MessageKind.INCIDENT_UPDATE,
        MessageKind.INCIDENT_UPDATE,
        MessageKind.MAINTENANCE,
    ]
    composer = emails.Composer()
    with time_machine.travel(T0, tick=False):  # the Date header, which the merge writes per email
        for message in messages:
            notifications.fan_out(message.pk)
            for person in plain + whole_only:
                delivery = Delivery.objects.select_related("message", "subscriber").get(
                    message=message, subscriber=person
                )
                if person in whole_only:
                    assert composer.wire(delivery) is None
                    assert isinstance(composer.outgoing(delivery, wire=True), emails.StatusEmail)
                    continue
                assert merged(composer, delivery) == as_sent(composer.build(delivery)), (message.kind, person.email)
                assert isinstance(composer.outgoing(delivery, wire=True), bytes)
                assert isinstance(composer.outgoing(delivery, wire=False), emails.StatusEmail)
    assert b"Content-Transfer-Encoding: 8bit" in composer._merged[messages[0].pk]  # type: ignore[operator]


def test_the_mail_merge_leaves_what_it_cannot_be_sure_of_to_the_whole_build(
    smtp: SmtpServer, subscribe: Subscribe, staff: User, django_capture_on_commit_callbacks: Any
) -> None:
    ann = subscribe("ann@example.com")
    with django_capture_on_commit_callbacks(execute=False):
        # A line longer than 998 characters: Python makes the text part quoted-printable.
        factories.declare(actor=staff, title="Long", message="word " * 300)
    message = last_update_message()
    notifications.fan_out(message.pk)
    delivery = Delivery.objects.select_related("message", "subscriber").get(message=message, subscriber=ann)
    composer = emails.Composer()
    assert composer.wire(delivery) is None
    assert b"quoted-printable" in as_sent(composer.build(delivery))

    # A line that only a long address pushes past 998 characters: 900 characters and the address (the
    # templates put none on a line that long, so the test puts one into the rendered text).
    bob = subscribe(f"{'a' * 60}@{'b' * 60}.example.com")
    with django_capture_on_commit_callbacks(execute=False):
        factories.declare(actor=staff, title="Nearly long")
    message = last_update_message()
    notifications.fan_out(message.pk)
    short, long = (
        Delivery.objects.select_related("message", "subscriber").get(message=message, subscriber=person)
        for person in (ann, bob)
    )
    composer = emails.Composer()
    shared = composer._shared(message)
    text = shared.text + "x" * 900 + " " + composer.slots.email + "\n"
    composer._rendered[message.pk] = emails.Rendered(shared.subject, text, shared.html)
    assert composer.wire(short) is not None
    assert composer.wire(long) is None
    assert b"quoted-printable" in as_sent(composer.build(long))


def test_merged_emails_arrive_over_smtp_as_whole_ones_do(
    smtp: SmtpServer, subscribe: Subscribe, run_on_commit: Callable[..., Any], staff: User
) -> None:
    """Through the SMTP backend, the merged and the whole-built email of one update read the same to
    the receiving server, each with its own address, links and Message-ID."""
    ann, odd = subscribe("ann@example.com"), subscribe("a&b@example.com")  # merged; built whole
    run_on_commit(factories.declare, actor=staff, title="Queries are slow")
    [ann_email], [odd_email] = smtp.inbox("ann@example.com"), smtp.inbox("a&b@example.com")
    for email, person in ((ann_email, ann), (odd_email, odd)):
        assert email["To"] == person.email
        incident = last_update_message().incident
        assert incident is not None
        assert email["Message-ID"] == (
            f"<incident.{incident.pk}.{int(incident.declared_at.timestamp())}.{person.pk}@status.example.com>"
        )
        unsubscribe = email["List-Unsubscribe"].removeprefix("<").removesuffix(">")
        assert read_token(token_in(unsubscribe, "unsubscribe"), "unsubscribe") == person
        text, _ = text_and_html(email)
        assert person.email in text
        assert unsubscribe in text
    assert sorted(ann_email.keys()) == sorted(odd_email.keys())


def test_unconfirmed_addresses_get_only_the_confirmation(
    smtp: SmtpServer,
    subscribe: Subscribe,
    run_on_commit: Callable[..., Any],
    staff: User,
    django_capture_on_commit_callbacks: Any,
) -> None:
    subscribe("ann@example.com")
    with django_capture_on_commit_callbacks(execute=True):
        bob = actions.subscribe(email="bob@example.com")
    run_on_commit(factories.declare, actor=staff)

    assert [e["Subject"] for e in smtp.inbox("bob@example.com")] == [
        "Confirm your subscription to Signalpost status updates"
    ]
    assert len(smtp.inbox("ann@example.com")) == 1
    assert not Delivery.objects.filter(subscriber=bob, message__kind=MessageKind.INCIDENT_UPDATE).exists()


def test_internal_updates_are_never_sent(
    smtp: SmtpServer, subscribe: Subscribe, run_on_commit: Callable[..., Any], staff: User
) -> None:
    subscribe("ann@example.com")
    quiet = run_on_commit(factories.declare, actor=staff, title="Quietly slow", is_public=False)
    run_on_commit(actions.post_update, quiet, actor=staff, body="Still looking (internal).", is_public=False)
    loud = run_on_commit(factories.declare, actor=staff, title="Queries are slow")
    run_on_commit(actions.post_update, loud, actor=staff, body="Paged the DBA.", is_public=False)

    assert [e["Subject"] for e in smtp.inbox("ann@example.com")] == ["[Investigating] Queries are slow"]
    assert Message.objects.filter(kind=MessageKind.INCIDENT_UPDATE).count() == 1


# --- choices ------------------------------------------------------------------------------------


@pytest.fixture
def api_and_web(staff: User) -> tuple[Component, Component]:
    return factories.make_component(name="API", actor=staff), factories.make_component(name="Web", actor=staff)


def test_component_choices_are_honoured(
    smtp: SmtpServer,
    subscribe: Subscribe,
    run_on_commit: Callable[..., Any],
    staff: User,
    api_and_web: tuple[Component, Component],
) -> None:
    api, web = api_and_web
    subscribe("all@example.com")
    subscribe("api@example.com", all_components=False, components=[api])
    subscribe("web@example.com", all_components=False, components=[web])
    subscribe("both@example.com", all_components=False, components=[api, web])

    run_on_commit(factories.declare, actor=staff, title="API errors", components={api: "partial_outage"})

    assert sorted(smtp.copies()) == ["all@example.com", "api@example.com", "both@example.com"]
    assert smtp.copies()["both@example.com"] == 1  # matched twice by its components, sent once


def test_minimum_impact_is_honoured(
    smtp: SmtpServer,
    subscribe: Subscribe,
    run_on_commit: Callable[..., Any],
    staff: User,
    api_and_web: tuple[Component, Component],
) -> None:
    api, _ = api_and_web
    for impact in ("none", "minor", "major", "critical"):
        subscribe(f"{impact}@example.com", minimum_impact=impact)

    incident = run_on_commit(factories.declare, actor=staff, components={api: "partial_outage"})  # major impact
    assert incident.impact == "major"
    assert sorted(smtp.copies()) == ["major@example.com", "minor@example.com", "none@example.com"]

    smtp.reset()
    run_on_commit(actions.post_update, incident, actor=staff, body="Worse.", components={api: "major_outage"})
    assert sorted(smtp.copies()) == [
        "critical@example.com",
        "major@example.com",
        "minor@example.com",
        "none@example.com",
    ]


def test_kind_choices_are_honoured(
    smtp: SmtpServer,
    subscribe: Subscribe,
    run_on_commit: Callable[..., Any],
    staff: User,
    api_and_web: tuple[Component, Component],
) -> None:
    api, _ = api_and_web
    subscribe("incidents@example.com", notify_maintenance=False, notify_postmortems=False)
    subscribe("maintenance@example.com", notify_incidents=False, notify_postmortems=False)

    run_on_commit(factories.declare, actor=staff, title="API errors")
    run_on_commit(
        actions.schedule_maintenance,
        actor=staff,
        title="Database upgrade",
        scheduled_for=T0 + timedelta(days=30),
        scheduled_until=T0 + timedelta(days=30, hours=2),
        components=[api],
    )

    assert [e["Subject"] for e in smtp.inbox("incidents@example.com")] == ["[Investigating] API errors"]
    [maintenance] = smtp.inbox("maintenance@example.com")
    assert maintenance["Subject"] == "[Maintenance scheduled] Database upgrade"
    assert maintenance.get_body(("html",)) is not None


# --- batches --------------------------------------------------------------------------------------


def test_a_batch_goes_over_one_connection(
    smtp: SmtpServer, subscribe: Subscribe, run_on_commit: Callable[..., Any], staff: User
) -> None:
    names = [f"reader{n:02}" for n in range(30)]
    subscribers(subscribe, *names)

    run_on_commit(factories.declare, actor=staff)

    assert smtp.copies() == {f"{name}@example.com": 1 for name in names}
    assert smtp.connections == 1
    assert Delivery.objects.filter(message=last_update_message(), status=DeliveryStatus.SENT).count() == 30


def test_claiming_reads_the_delivery_table_alone(
    smtp: SmtpServer, subscribe: Subscribe, staff: User, django_capture_on_commit_callbacks: Any
) -> None:
    """The claim filters on the row's own transport (copied at fan-out), never joining subscribers: a
    join let PostgreSQL pick a plan that scanned every subscriber per due row after a bulk import."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    subscribers(subscribe, "ann", "bob")
    actions.add_webhook(actor=staff, url="https://hooks.example.com/status")
    with django_capture_on_commit_callbacks(execute=False):
        factories.declare(actor=staff)
    notifications.fan_out(last_update_message().pk)
    rows = Delivery.objects.filter(message=last_update_message())
    assert sorted(rows.values_list("transport", flat=True)) == ["email", "email", "webhook"]

    with CaptureQueriesContext(connection) as queries:
        batch = notifications.claim_batch(timezone.now())
    assert batch is not None
    assert {d.subscriber.email for d in batch.deliveries} == {"ann@example.com", "bob@example.com"}
    [claim] = [q["sql"] for q in queries.captured_queries if "ORDER BY" in q["sql"] and "LIMIT" in q["sql"]]
    tables = re.findall(r'(?:FROM|JOIN) "?(\w+)', claim)
    # The delivery table, and again for the probe of the subscriber's earlier unsent rows.
    assert set(tables) == {"incidents_delivery"}, claim


def test_each_batch_has_its_own_connection(
    smtp: SmtpServer,
    subscribe: Subscribe,
    run_on_commit: Callable[..., Any],
    staff: User,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    subscribers(subscribe, *[f"reader{n:02}" for n in range(25)])
    monkeypatch.setattr(notifications, "BATCH_SIZE", 10)

    run_on_commit(factories.declare, actor=staff)

    assert len(smtp.received) == 25
    assert smtp.connections == 3
    per_connection = sorted(sum(1 for r in smtp.received if r.connection == n) for n in (1, 2, 3))
    assert per_connection == [5, 10, 10]


# --- refusals and retries -------------------------------------------------------------------------


def test_a_refused_recipient_fails_with_the_reason_and_is_never_retried(
    smtp: SmtpServer, subscribe: Subscribe, run_on_commit: Callable[..., Any], staff: User
) -> None:
    bob = subscribers(subscribe, "ann", "bob", "cat")[1]
    smtp.refuse("bob@example.com")

    with time_machine.travel(T0, tick=False):
        run_on_commit(factories.declare, actor=staff)

    assert smtp.copies() == {"ann@example.com": 1, "cat@example.com": 1}
    row = delivery_to(bob, last_update_message())
    assert row.status == DeliveryStatus.FAILED
    assert row.attempts == 1
    assert "550" in row.last_error
    assert "No such user here" in row.last_error
    # A refused recipient says nothing about the transport.
    assert (breaker().state, breaker().consecutive_failures) == (BreakerState.CLOSED, 0)

    with time_machine.travel(T0 + timedelta(days=1), tick=False):
        assert notifications.deliver_due() == 0
    assert len(smtp.handler.refused) == 1  # never asked again


def test_an_address_that_does_not_exist_is_unsubscribed_and_can_come_back(
    smtp: SmtpServer,
    subscribe: Subscribe,
    run_on_commit: Callable[..., Any],
    staff: User,
    django_capture_on_commit_callbacks: Any,
    at_t0: time_machine.Traveller,
) -> None:
    """A hard bounce (550 5.1.1 'no such user') unsubscribes the address, so later updates do not ask the
    server again; a refusal for policy (550 5.7.1) does not. Subscribing again starts over."""
    _, bob, cat = subscribers(subscribe, "ann", "bob", "cat")
    smtp.refuse("bob@example.com")  # 550 5.1.1 No such user here
    smtp.refuse("cat@example.com", "550 5.7.1 Message rejected as spam")
    incident = run_on_commit(factories.declare, actor=staff)

    bob.refresh_from_db()
    assert bob.unsubscribed_at is not None and bob.bounced_at == bob.unsubscribed_at
    assert bob.bounce_reason == "recipient refused: 550 5.1.1 No such user here"  # read as text, not b'…'
    cat.refresh_from_db()
    assert (cat.unsubscribed_at, cat.bounced_at) == (None, None)

    run_on_commit(actions.post_update, incident, actor=staff, body="Found it.", public_status="identified")
    assert [address for address, _ in smtp.handler.refused].count("bob@example.com") == 1  # not asked again
    assert [address for address, _ in smtp.handler.refused].count("cat@example.com") == 2
    assert not Delivery.objects.filter(subscriber=bob, message=last_update_message()).exists()
    assert smtp.copies() == {"ann@example.com": 2}

    smtp.accept("bob@example.com")
    at_t0.shift(timedelta(minutes=10))  # well within the hour that holds back a second confirmation
    with django_capture_on_commit_callbacks(execute=True):
        actions.subscribe(email="bob@example.com")  # at once: no hour's wait for the confirmation
    bob.refresh_from_db()
    assert (bob.unsubscribed_at, bob.bounced_at, bob.bounce_reason, bob.confirmed_at) == (None, None, "", None)
    assert [e["Subject"] for e in smtp.inbox("bob@example.com")] == [
        "Confirm your subscription to Signalpost status updates"
    ]


def test_hard_bounces_are_told_from_other_refusals() -> None:
    def refused(code: int, text: bytes) -> smtplib.SMTPRecipientsRefused:
        return smtplib.SMTPRecipientsRefused({"x@example.com": (code, text)})

    assert notifications.is_hard_bounce(refused(550, b"5.1.1 No such user here"))
    assert notifications.is_hard_bounce(refused(550, b"5.1.10 Null MX"))
    assert notifications.is_hard_bounce(refused(553, b"mailbox name not allowed"))  # no enhanced code
    assert not notifications.is_hard_bounce(refused(550, b"5.7.1 Rejected for policy reasons"))
    assert not notifications.is_hard_bounce(refused(552, b"5.2.2 Mailbox full"))
    assert not notifications.is_hard_bounce(refused(450, b"4.2.1 Mailbox busy"))
    assert not notifications.is_hard_bounce(smtplib.SMTPDataError(550, b"5.1.1 content"))


def test_a_deferred_recipient_does_not_hold_up_the_others(
    smtp: SmtpServer, subscribe: Subscribe, run_on_commit: Callable[..., Any], staff: User
) -> None:
    bob = subscribers(subscribe, "ann", "bob", "cat")[1]
    smtp.defer("bob@example.com")

    with time_machine.travel(T0, tick=False):
        run_on_commit(factories.declare, actor=staff)

    assert smtp.copies() == {"ann@example.com": 1, "cat@example.com": 1}
    row = delivery_to(bob, last_update_message())
    assert (row.status, row.attempts) == (DeliveryStatus.PENDING, 1)
    assert "450" in row.last_error
    assert (breaker().state, breaker().consecutive_failures) == (BreakerState.CLOSED, 0)


def test_a_deferred_recipient_is_retried_after_a_backoff_and_delivered(
    smtp: SmtpServer, subscribe: Subscribe, run_on_commit: Callable[..., Any], staff: User
) -> None:
    bob = subscribe("bob@example.com")
    smtp.defer("bob@example.com")

    with time_machine.travel(T0, tick=False):
        run_on_commit(factories.declare, actor=staff)
        assert notifications.deliver_due() == 0  # not due again yet

    row = delivery_to(bob, last_update_message())
    assert (row.status, row.attempts, row.claim) == (DeliveryStatus.PENDING, 1, "")
    assert T0 < row.next_attempt_at <= T0 + timedelta(seconds=settings.DELIVERY_BACKOFF_SECONDS)
    assert "450" in row.last_error
    assert smtp.received == []

    smtp.accept("bob@example.com")
    with time_machine.travel(row.next_attempt_at - timedelta(microseconds=1), tick=False):
        assert notifications.deliver_due() == 0
    with time_machine.travel(row.next_attempt_at, tick=False):
        assert notifications.deliver_due() == 1

    assert smtp.copies() == {"bob@example.com": 1}
    row.refresh_from_db()
    assert (row.status, row.attempts, row.last_error) == (DeliveryStatus.SENT, 2, "")
    assert row.sent_at == row.next_attempt_at


def test_a_subscriber_gets_updates_in_the_order_they_were_posted_even_after_a_retry(
    smtp: SmtpServer, subscribe: Subscribe, run_on_commit: Callable[..., Any], staff: User
) -> None:
    """Bob's mailbox defers the first update; by the time the second is posted it accepts again. The
    second waits for the first's retry instead of overtaking it; Ann, with nothing pending, gets both
    at once."""
    ann, bob = subscribe("ann@example.com"), subscribe("bob@example.com")
    smtp.defer("bob@example.com")
    with time_machine.travel(T0, tick=False):
        incident = run_on_commit(factories.declare, actor=staff, title="Queries are slow")
        first = last_update_message()
        smtp.accept("bob@example.com")
        run_on_commit(actions.post_update, incident, actor=staff, body="Found it.", public_status="identified")
        second = last_update_message()
        assert notifications.deliver_due() == 0

    assert [e["Subject"] for e in smtp.inbox("ann@example.com")] == [
        "[Investigating] Queries are slow",
        "[Identified] Queries are slow",
    ]
    assert smtp.inbox("bob@example.com") == []
    held = delivery_to(bob, second)
    assert (held.status, held.attempts, held.next_attempt_at) == (DeliveryStatus.PENDING, 0, T0)  # due, held back
    retry = delivery_to(bob, first).next_attempt_at
    assert retry > T0

    with time_machine.travel(retry, tick=False):
        assert notifications.deliver_due() == 2
    assert [e["Subject"] for e in smtp.inbox("bob@example.com")] == [
        "[Investigating] Queries are slow",
        "[Identified] Queries are slow",
    ]
    assert {delivery_to(person, message).status for person in (ann, bob) for message in (first, second)} == {
        DeliveryStatus.SENT
    }


def test_an_email_that_cannot_be_built_fails_alone_and_is_retried_on_its_own_backoff(
    smtp: SmtpServer,
    subscribe: Subscribe,
    staff: User,
    django_capture_on_commit_callbacks: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bob = subscribers(subscribe, "ann", "bob", "cat")[1]
    with django_capture_on_commit_callbacks(execute=False):
        factories.declare(actor=staff)
    notifications.fan_out(last_update_message().pk)
    outgoing = emails.Composer.outgoing
    broken = True

    def broken_for_bob(composer: emails.Composer, delivery: Delivery, **options: Any) -> Any:
        if broken and delivery.subscriber_id == bob.pk:
            raise ValueError("no template for this")
        return outgoing(composer, delivery, **options)

    monkeypatch.setattr(emails.Composer, "outgoing", broken_for_bob)
    assert notifications.deliver_due() == 2

    assert smtp.copies() == {"ann@example.com": 1, "cat@example.com": 1}
    row = delivery_to(bob, last_update_message())
    assert (row.status, row.attempts) == (DeliveryStatus.PENDING, 1)
    assert row.last_error == "could not build the email: ValueError: no template for this"
    assert T0 < row.next_attempt_at <= T0 + timedelta(seconds=settings.DELIVERY_BACKOFF_SECONDS)
    assert not Delivery.objects.filter(status=DeliveryStatus.SENDING).exists()

    broken = False  # the template is fixed before the retry
    with time_machine.travel(row.next_attempt_at, tick=False):
        assert notifications.deliver_due() == 1
    assert smtp.copies() == {"ann@example.com": 1, "bob@example.com": 1, "cat@example.com": 1}


def legacy_subscriber(email: str) -> Subscriber:
    """A confirmed subscriber with an address sign-up now refuses (written before it was strict): made
    directly, since the actions would refuse it."""
    return Subscriber.objects.create(email=email, secret=new_secret(), confirmed_at=timezone.now())


POISONED = "=?utf-8?q?p?=@example.test"


def test_a_poisoned_address_between_two_good_ones_fails_alone(
    smtp: SmtpServer, subscribe: Subscribe, run_on_commit: Callable[..., Any], staff: User
) -> None:
    """The address of the review's finding: Django's SMTP backend raises ValueError for it. Before, the
    exception left the whole batch held (the other subscribers' updates waited for the claim timeout and
    came back with the poisoned row, again and again, until all were marked failed)."""
    ann = subscribe("ann@example.com")
    poisoned = legacy_subscriber(POISONED)
    cat = subscribe("cat@example.com")

    run_on_commit(factories.declare, actor=staff, title="Queries are slow")

    message = last_update_message()
    rows = [delivery_to(person, message) for person in (ann, poisoned, cat)]
    assert rows[0].pk < rows[1].pk < rows[2].pk  # one batch, the poisoned row between the good ones
    assert smtp.copies() == {"ann@example.com": 1, "cat@example.com": 1}
    assert [row.status for row in rows] == [DeliveryStatus.SENT, DeliveryStatus.FAILED, DeliveryStatus.SENT]
    failed = delivery_to(poisoned, message)
    assert failed.attempts == 1 and failed.last_error.startswith("cannot send to this address: ")
    assert "encoded-word" in failed.last_error
    # It can never be sent to: it is unsubscribed as a bounce (admin: Subscribers, "By bounced at").
    poisoned.refresh_from_db()
    assert poisoned.unsubscribed_at is not None and poisoned.bounced_at is not None
    assert poisoned.bounce_reason == failed.last_error
    assert (breaker().state, breaker().consecutive_failures) == (BreakerState.CLOSED, 0)

    run_on_commit(actions.post_update, Incident.objects.get(), actor=staff, body="Found it.")
    assert smtp.copies() == {"ann@example.com": 2, "cat@example.com": 2}
    assert Delivery.objects.filter(subscriber=poisoned).count() == 1


def test_any_exception_while_sending_one_email_fails_that_row_alone(
    smtp: SmtpServer,
    subscribe: Subscribe,
    run_on_commit: Callable[..., Any],
    staff: User,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without the address check, the poisoned row reaches Django's backend, which raises ValueError
    mid-batch: that row is retried on its own backoff and the batch goes on over a new connection."""
    monkeypatch.setattr(addresses, "sending_problem", lambda address: None)
    ann = subscribe("ann@example.com")
    poisoned = legacy_subscriber(POISONED)
    cat = subscribe("cat@example.com")

    run_on_commit(factories.declare, actor=staff)

    assert smtp.copies() == {"ann@example.com": 1, "cat@example.com": 1}
    row = delivery_to(poisoned, last_update_message())
    assert (row.status, row.attempts) == (DeliveryStatus.PENDING, 1)
    assert row.last_error.startswith("could not send: ValueError: Invalid address")
    assert T0 < row.next_attempt_at <= T0 + timedelta(seconds=settings.DELIVERY_BACKOFF_SECONDS)
    assert smtp.connections == 2  # the rest went over a new connection, in case the old one was left mid-command
    assert (breaker().state, breaker().consecutive_failures) == (BreakerState.CLOSED, 0)
    for person in (ann, cat):
        assert delivery_to(person, last_update_message()).status == DeliveryStatus.SENT


def test_a_recipient_the_server_hangs_up_on_does_not_hold_up_the_others(
    smtp: SmtpServer, subscribe: Subscribe, run_on_commit: Callable[..., Any], staff: User
) -> None:
    """Before, the broken connection ended the batch: everyone after bob waited out a backoff, and the
    breaker counted a failure each time bob's row came up (five in a row paused all email)."""
    bob = subscribers(subscribe, "ann", "bob", "cat")[1]
    smtp.hang_up_on("bob@example.com")

    run_on_commit(factories.declare, actor=staff)

    assert smtp.copies() == {"ann@example.com": 1, "cat@example.com": 1}
    row = delivery_to(bob, last_update_message())
    assert (row.status, row.attempts) == (DeliveryStatus.PENDING, 1)
    assert "SMTPServerDisconnected" in row.last_error
    assert (breaker().state, breaker().consecutive_failures) == (BreakerState.CLOSED, 0)

    smtp.accept("bob@example.com")
    with time_machine.travel(row.next_attempt_at, tick=False):
        assert notifications.deliver_due() == 1
    assert smtp.copies() == {"ann@example.com": 1, "bob@example.com": 1, "cat@example.com": 1}


def test_a_server_that_keeps_hanging_up_is_taken_for_down(
    smtp: SmtpServer, subscribe: Subscribe, run_on_commit: Callable[..., Any], staff: User
) -> None:
    names = [f"reader{n}" for n in range(8)]
    people = subscribers(subscribe, *names)
    for name in names:
        smtp.hang_up_on(f"{name}@example.com")

    run_on_commit(factories.declare, actor=staff)

    rows = [delivery_to(person, last_update_message()) for person in people]
    tried = notifications.RECONNECTS_PER_BATCH + 1
    # Each row the server hung up on counts an attempt; the rest wait, their attempts untouched.
    assert [row.attempts for row in rows] == [1] * tried + [0] * (len(names) - tried)
    assert {row.status for row in rows} == {DeliveryStatus.PENDING}
    assert breaker().consecutive_failures == 1
    assert smtp.connections == tried


def test_it_gives_up_after_max_attempts(
    smtp: SmtpServer, subscribe: Subscribe, run_on_commit: Callable[..., Any], staff: User
) -> None:
    bob = subscribe("bob@example.com")
    smtp.defer("bob@example.com")

    with time_machine.travel(T0, tick=False):
        run_on_commit(factories.declare, actor=staff)
    row = delivery_to(bob, last_update_message())
    # The longest backoff before giving up is base·2^(MAX_ATTEMPTS-2) (under the cap): an hour covers it.
    for hour in range(1, 20):
        row.refresh_from_db()
        if row.status != DeliveryStatus.PENDING:
            break
        with time_machine.travel(T0 + timedelta(hours=hour), tick=False):
            notifications.deliver_due()

    assert row.status == DeliveryStatus.FAILED
    assert row.attempts == settings.DELIVERY_MAX_ATTEMPTS
    assert row.last_error.startswith(f"gave up after {settings.DELIVERY_MAX_ATTEMPTS} attempts")
    assert len(smtp.handler.refused) == settings.DELIVERY_MAX_ATTEMPTS
    with time_machine.travel(T0 + timedelta(days=2), tick=False):
        smtp.accept("bob@example.com")
        assert notifications.deliver_due() == 0
    assert smtp.received == []


def test_backoff_has_full_jitter_and_is_bounded() -> None:
    rng = random.Random(20261201)
    base, cap = settings.DELIVERY_BACKOFF_SECONDS, settings.DELIVERY_BACKOFF_CAP_SECONDS
    for attempts in range(1, 16):
        ceiling = min(cap, base * 2 ** (attempts - 1))
        waits = [notifications.backoff(attempts, rng).total_seconds() for _ in range(2000)]
        assert all(0 <= wait <= ceiling for wait in waits)
        # Full jitter: spread over the whole range, not bunched at the ceiling (equal jitter) or fixed.
        assert min(waits) < ceiling * 0.02
        assert max(waits) > ceiling * 0.98
        assert 0.45 * ceiling < sum(waits) / len(waits) < 0.55 * ceiling
    assert notifications.backoff(1000, rng) <= timedelta(seconds=cap)
    assert notifications.backoff(0, rng) <= timedelta(seconds=base)
    # The same seed gives the same waits.
    assert [notifications.backoff(3, random.Random(7)) for _ in range(2)] == [
        notifications.backoff(3, random.Random(7))
    ] * 2


# --- the circuit breaker ----------------------------------------------------------------------------


def test_the_breaker_opens_after_consecutive_failures_probes_once_and_closes(
    smtp: SmtpServer,
    subscribe: Subscribe,
    run_on_commit: Callable[..., Any],
    staff: User,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    names = ["ann", "bob", "cat", "dan"]
    subscribers(subscribe, *names)
    monkeypatch.setattr(notifications, "random", random.Random(5))  # reproducible backoffs
    smtp.stop()

    with time_machine.travel(T0, tick=False):
        run_on_commit(factories.declare, actor=staff)  # failure 1: the notify task found no server
    for failure in range(2, settings.BREAKER_THRESHOLD + 1):
        assert breaker().state == BreakerState.CLOSED
        with time_machine.travel(T0 + timedelta(hours=failure), tick=False):
            assert notifications.deliver_due() == 0
        assert breaker().consecutive_failures == failure
    opened_at = T0 + timedelta(hours=settings.BREAKER_THRESHOLD)
    state = breaker()
    assert state.state == BreakerState.OPEN
    assert state.opened_at == opened_at
    assert state.retry_at == opened_at + timedelta(seconds=settings.BREAKER_COOLDOWN_SECONDS)
    assert "ConnectionRefusedError" in state.last_error
    # A server that cannot be reached is no row's fault: nobody's attempts are used up.
    attempts = Delivery.objects.filter(message=last_update_message()).values_list("attempts", flat=True)
    assert sum(attempts) == 0

    # Open: nothing is claimed or sent, though the server is back and rows are due.
    smtp.start()
    before = list(Delivery.objects.values_list("id", "status", "attempts", "next_attempt_at"))
    with time_machine.travel(state.retry_at - timedelta(seconds=1), tick=False):
        assert Delivery.objects.filter(status=DeliveryStatus.PENDING, next_attempt_at__lte=state.retry_at).exists()
        assert notifications.deliver_due() == 0
    assert list(Delivery.objects.values_list("id", "status", "attempts", "next_attempt_at")) == before
    assert smtp.connections == 0

    # After the cool-down one probe goes out; it succeeds, the breaker closes and the due rows follow.
    with time_machine.travel(state.retry_at, tick=False):
        due = Delivery.objects.filter(status=DeliveryStatus.PENDING, next_attempt_at__lte=state.retry_at).count()
        assert notifications.deliver_due() == due
    assert sum(1 for r in smtp.received if r.connection == 1) == 1  # the probe: one email
    assert smtp.connections == (2 if due > 1 else 1)
    state.refresh_from_db()
    assert (state.state, state.consecutive_failures, state.retry_at) == (BreakerState.CLOSED, 0, None)

    with time_machine.travel(T0 + timedelta(days=1), tick=False):
        notifications.deliver_due()
    assert smtp.copies() == {f"{name}@example.com": 1 for name in names}
    assert not Delivery.objects.exclude(status=DeliveryStatus.SENT).exists()


def test_a_failed_probe_opens_the_breaker_for_another_cool_down(
    smtp: SmtpServer, subscribe: Subscribe, run_on_commit: Callable[..., Any], staff: User
) -> None:
    subscribers(subscribe, "ann", "bob", "cat")
    smtp.stop()
    with time_machine.travel(T0, tick=False):
        run_on_commit(factories.declare, actor=staff)
    for failure in range(2, settings.BREAKER_THRESHOLD + 1):
        with time_machine.travel(T0 + timedelta(hours=failure), tick=False):
            notifications.deliver_due()
    state = breaker()
    assert state.state == BreakerState.OPEN
    assert state.retry_at is not None

    before = dict(Delivery.objects.values_list("id", "attempts"))
    probe_at = state.retry_at + timedelta(hours=1)  # every row is due by now
    with time_machine.travel(probe_at, tick=False):
        assert notifications.deliver_due() == 0
    state.refresh_from_db()
    assert state.state == BreakerState.OPEN
    assert state.retry_at == probe_at + timedelta(seconds=settings.BREAKER_COOLDOWN_SECONDS)
    assert state.consecutive_failures == settings.BREAKER_THRESHOLD + 1
    after = dict(Delivery.objects.values_list("id", "attempts"))
    assert after == before  # the probe found no server: no row's attempt is used up


def test_an_outage_longer_than_every_attempt_loses_nothing(
    smtp: SmtpServer, subscribe: Subscribe, run_on_commit: Callable[..., Any], staff: User
) -> None:
    """Probe after probe fails for a day (far more probes than DELIVERY_MAX_ATTEMPTS): the rows keep
    waiting, and arrive once when the server is back (a review read that a long outage would fail
    them for good)."""
    subscribers(subscribe, "ann", "bob")
    smtp.stop()
    with time_machine.travel(T0, tick=False):
        run_on_commit(factories.declare, actor=staff)
    for hour in range(1, 3 * settings.DELIVERY_MAX_ATTEMPTS):
        with time_machine.travel(T0 + timedelta(hours=hour), tick=False):
            assert notifications.deliver_due() == 0
    assert breaker().consecutive_failures > settings.DELIVERY_MAX_ATTEMPTS
    rows = Delivery.objects.filter(message=last_update_message())
    assert set(rows.values_list("status", "attempts")) == {(DeliveryStatus.PENDING, 0)}

    smtp.start()
    with time_machine.travel(T0 + timedelta(days=2), tick=False):
        assert notifications.deliver_due() == 2
    assert smtp.copies() == {"ann@example.com": 1, "bob@example.com": 1}


def test_only_one_probe_at_a_time(db: None) -> None:
    notifications.breaker(EMAIL)
    for _ in range(settings.BREAKER_THRESHOLD):
        notifications.record_failure(EMAIL, "ConnectionRefusedError", T0)
    after_cool_down = T0 + timedelta(seconds=settings.BREAKER_COOLDOWN_SECONDS)

    # Two workers ask at the same moment: one may probe, the other must wait.
    assert [notifications.may_send(EMAIL, after_cool_down) for _ in range(2)] == [1, 0]


# --- claims, repeats and unsubscribing ---------------------------------------------------------------


def test_rows_held_past_the_claim_timeout_are_put_back(
    smtp: SmtpServer,
    subscribe: Subscribe,
    staff: User,
    django_capture_on_commit_callbacks: Any,
) -> None:
    subscribers(subscribe, "ann", "bob", "cat")
    with django_capture_on_commit_callbacks(execute=False):  # the notify task is lost
        factories.declare(actor=staff)
    message = last_update_message()
    notifications.fan_out(message.pk)

    batch = notifications.claim_batch(T0)  # a worker takes the rows and dies holding them
    assert batch is not None
    assert len(batch.deliveries) == 3
    assert notifications.claim_batch(T0) is None  # nobody else can take them
    assert notifications.requeue_stale(T0 + CLAIM_TIMEOUT - timedelta(seconds=1)) == 0

    later = T0 + CLAIM_TIMEOUT + timedelta(seconds=1)
    assert notifications.requeue_stale(later) == 3
    rows = Delivery.objects.filter(message=message)
    assert set(rows.values_list("status", "claim", "next_attempt_at", "attempts")) == {
        (DeliveryStatus.PENDING, "", later, 1)  # the dead worker's try counts
    }
    # The dead worker's fence no longer holds: its late "sent" changes nothing.
    notifications.mark_sent(batch.deliveries[0], batch.claim, later)
    assert rows.filter(status=DeliveryStatus.PENDING).count() == 3

    with time_machine.travel(later, tick=False):
        assert notifications.deliver_due() == 3
    assert smtp.copies() == {"ann@example.com": 1, "bob@example.com": 1, "cat@example.com": 1}


def test_the_claim_timeout_is_short_by_default() -> None:
    """Rows a dead worker held wait one claim timeout (and a sweep) before anyone sends them: it was 300 s.
    A living worker keeps its claim with a heartbeat (below), however long one email takes."""
    assert settings.DELIVERY_CLAIM_TIMEOUT_SECONDS <= 60
    assert settings.DELIVERY_CLAIM_TIMEOUT_SECONDS / notifications.HEARTBEATS_PER_TIMEOUT <= 15


@pytest.mark.django_db(transaction=True)
def test_the_heartbeat_renews_its_batch_s_claim_and_nothing_else(
    requires_postgres: None, smtp: SmtpServer, subscribe: Subscribe, staff: User, settings: Any
) -> None:
    settings.DELIVER_EAGERLY = False
    settings.DELIVERY_CLAIM_TIMEOUT_SECONDS = 1  # a beat every 0.2 s
    subscribers(subscribe, "ann", "bob", "cat")
    factories.declare(actor=staff)
    notifications.fan_out(last_update_message().pk)
    Delivery.objects.filter(message=last_update_message()).update(status=DeliveryStatus.PENDING, claim="")
    ours = notifications.claim_batch(T0, limit=2)
    theirs = notifications.claim_batch(T0, limit=1)
    assert ours is not None and theirs is not None
    an_hour_ago = T0 - timedelta(hours=1)
    Delivery.objects.filter(status=DeliveryStatus.SENDING).update(claimed_at=an_hour_ago)

    with notifications.Heartbeat(Delivery.objects.all(), ours.claim) as heartbeat:
        deadline = time.monotonic() + 10
        while heartbeat.beats < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    beats = heartbeat.beats

    assert beats >= 2
    assert set(Delivery.objects.filter(claim=ours.claim).values_list("claimed_at", flat=True)) == {T0}
    assert set(Delivery.objects.filter(claim=theirs.claim).values_list("claimed_at", flat=True)) == {an_hour_ago}
    assert notifications.requeue_stale(T0 + timedelta(seconds=0.5)) == 1  # only the batch nobody renewed
    time.sleep(0.5)
    assert heartbeat.beats == beats  # stopped with its batch


def test_a_worker_that_lost_its_claim_sends_nothing_more(
    smtp: SmtpServer,
    subscribe: Subscribe,
    staff: User,
    django_capture_on_commit_callbacks: Any,
) -> None:
    subscribers(subscribe, "ann", "bob", "cat")
    with django_capture_on_commit_callbacks(execute=False):
        factories.declare(actor=staff)
    notifications.fan_out(last_update_message().pk)
    stalled = notifications.claim_batch(T0)
    assert stalled is not None

    later = T0 + CLAIM_TIMEOUT + timedelta(seconds=1)
    with time_machine.travel(later, tick=False):
        notifications.requeue_stale(later)
        assert notifications.deliver_due() == 3  # another worker sends them
        notifications.send_email_batch(stalled, later)  # the stalled worker wakes up

    assert smtp.copies() == {"ann@example.com": 1, "bob@example.com": 1, "cat@example.com": 1}


def test_fanning_out_twice_creates_no_duplicates(
    smtp: SmtpServer,
    subscribe: Subscribe,
    staff: User,
    django_capture_on_commit_callbacks: Any,
) -> None:
    subscribers(subscribe, "ann", "bob")
    with django_capture_on_commit_callbacks(execute=False):
        factories.declare(actor=staff)
    message = last_update_message()

    assert notifications.fan_out(message.pk) == 2
    message.refresh_from_db()
    fanned_out_at = message.fanned_out_at
    assert fanned_out_at is not None
    notifications.fan_out(message.pk)
    assert Delivery.objects.filter(message=message).count() == 2
    message.refresh_from_db()
    assert message.fanned_out_at == fanned_out_at

    # The notify task delivered twice (a retry, or the sweep racing it) still sends one copy each.
    tasks.notify(message.pk)
    tasks.notify(message.pk)
    assert smtp.copies() == {"ann@example.com": 1, "bob@example.com": 1}
    assert notifications.fan_out(999_999) == 0  # a message that is gone: nothing to do


def test_fanning_out_again_reports_nothing_created(
    subscribe: Subscribe, staff: User, django_capture_on_commit_callbacks: Any
) -> None:
    subscribers(subscribe, "ann", "bob")
    with django_capture_on_commit_callbacks(execute=False):
        factories.declare(actor=staff)
    message = last_update_message()
    notifications.fan_out(message.pk)

    assert notifications.fan_out(message.pk) == 0


def test_the_sweep_sends_a_message_whose_task_was_lost(
    smtp: SmtpServer,
    subscribe: Subscribe,
    staff: User,
    django_capture_on_commit_callbacks: Any,
) -> None:
    subscribers(subscribe, "ann", "bob")
    with django_capture_on_commit_callbacks(execute=False):  # e.g. the broker was down at commit
        factories.declare(actor=staff)
    assert smtp.received == []
    assert list(notifications.pending_messages()) == [last_update_message().pk]

    assert tasks.sweep_deliveries() == 2
    assert smtp.copies() == {"ann@example.com": 1, "bob@example.com": 1}
    assert list(notifications.pending_messages()) == []
    assert tasks.sweep_deliveries() == 0


def test_unsubscribing_stops_pending_mail(
    smtp: SmtpServer,
    subscribe: Subscribe,
    run_on_commit: Callable[..., Any],
    staff: User,
    django_capture_on_commit_callbacks: Any,
) -> None:
    bob = subscribers(subscribe, "ann", "bob")[1]
    with django_capture_on_commit_callbacks(execute=False):
        incident = factories.declare(actor=staff)
    notifications.fan_out(last_update_message().pk)

    actions.unsubscribe(bob)
    assert notifications.deliver_due() == 1
    assert smtp.copies() == {"ann@example.com": 1}
    row = delivery_to(bob, last_update_message())
    assert row.status == DeliveryStatus.FAILED
    assert row.last_error == "unsubscribed before it was sent"

    run_on_commit(actions.post_update, incident, actor=staff, body="Found it.", public_status="identified")
    assert smtp.copies() == {"ann@example.com": 2}
    assert Delivery.objects.filter(subscriber=bob, message__kind=MessageKind.INCIDENT_UPDATE).count() == 1


def test_a_row_that_keeps_killing_its_worker_fails_in_the_end(
    smtp: SmtpServer, subscribe: Subscribe, staff: User, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    settings.DELIVERY_MAX_ATTEMPTS = 3
    subscribers(subscribe, "ann")
    with django_capture_on_commit_callbacks(execute=False):
        factories.declare(actor=staff)
    notifications.fan_out(last_update_message().pk)

    moment = T0
    for _ in range(settings.DELIVERY_MAX_ATTEMPTS):
        assert notifications.claim_batch(moment) is not None  # a worker takes it, then dies
        moment += CLAIM_TIMEOUT + timedelta(seconds=1)
        notifications.requeue_stale(moment)

    row = Delivery.objects.get(message=last_update_message())
    assert (row.status, row.attempts) == (DeliveryStatus.FAILED, 3)
    assert notifications.claim_batch(moment) is None


def test_unsubscribing_stops_a_row_already_claimed(
    smtp: SmtpServer, subscribe: Subscribe, staff: User, django_capture_on_commit_callbacks: Any
) -> None:
    bob = subscribers(subscribe, "ann", "bob")[1]
    with django_capture_on_commit_callbacks(execute=False):
        factories.declare(actor=staff)
    notifications.fan_out(last_update_message().pk)
    batch = notifications.claim_batch(T0)
    assert batch is not None

    actions.unsubscribe(bob)  # while a worker holds the batch
    notifications.send_email_batch(batch, T0)

    assert smtp.copies() == {"ann@example.com": 1}
    assert delivery_to(bob, last_update_message()).status == DeliveryStatus.FAILED


# --- marks on PostgreSQL: sent without waiting, read before the next email ---------------------------


def fanned_out_again(smtp: SmtpServer, staff: User, settings: Any) -> Message:
    """An update whose deliveries are all due (in autocommit the notify task runs at declare: undo it)."""
    settings.DELIVER_EAGERLY = False
    factories.declare(actor=staff)
    message = last_update_message()
    Delivery.objects.filter(message=message).delete()
    smtp.reset()
    notifications.fan_out(message.pk)
    return message


@pytest.mark.django_db(transaction=True)
def test_on_postgresql_each_row_is_marked_before_the_next_email_goes_out(
    requires_postgres: None,
    smtp: SmtpServer,
    subscribe: Subscribe,
    staff: User,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """In autocommit the mark is sent without waiting and its answer read before the next email: when
    the server receives email n, rows 1..n-1 are marked sent, committed (seen from another session)."""
    from django.db import connections

    names = ["ann", "bob", "cat", "dan"]
    subscribers(subscribe, *names)
    message = fanned_out_again(smtp, staff, settings)
    with notifications.SentMarks() as marks:
        assert marks._pgconn is not None  # the path under test: autocommit, no query log

    other = connections.create_connection("default")
    marked_when_sent: list[int] = []
    send = smtplib.SMTP.sendmail  # where the merged bytes and the backend's send_messages both end

    def look_then_send(client: smtplib.SMTP, *args: Any, **kwargs: Any) -> Any:
        with other.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM incidents_delivery WHERE message_id = %s AND status = 'sent'", [message.pk]
            )
            marked_when_sent.append(cursor.fetchone()[0])
        return send(client, *args, **kwargs)

    monkeypatch.setattr(smtplib.SMTP, "sendmail", look_then_send)
    try:
        assert notifications.deliver_due() == 4
    finally:
        other.close()
    assert marked_when_sent == [0, 1, 2, 3]
    assert Delivery.objects.filter(message=message, status=DeliveryStatus.SENT).count() == 4
    assert smtp.copies() == {f"{name}@example.com": 1 for name in names}


@pytest.mark.django_db(transaction=True)
def test_on_postgresql_marks_survive_their_prepared_statement_being_dropped(
    requires_postgres: None,
    smtp: SmtpServer,
    subscribe: Subscribe,
    staff: User,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """DEALLOCATE ALL (or a pooler handing over another server connection) drops the prepared mark between
    two emails: the next mark fails, is prepared and run again before the next email, nothing twice."""
    from django.db import connection

    subscribers(subscribe, "ann", "bob", "cat")
    message = fanned_out_again(smtp, staff, settings)
    outgoing = emails.Composer.outgoing
    built: list[int] = []

    def build_then_drop(composer: emails.Composer, delivery: Delivery, **options: Any) -> Any:
        built.append(delivery.pk)
        if len(built) == 2:  # email 1 is out and its mark answered; drop the statement mark 2 will use
            with connection.cursor() as cursor:
                cursor.execute("DEALLOCATE ALL")
        return outgoing(composer, delivery, **options)

    monkeypatch.setattr(emails.Composer, "outgoing", build_then_drop)
    assert notifications.deliver_due() == 3
    assert Delivery.objects.filter(message=message, status=DeliveryStatus.SENT).count() == 3
    assert smtp.copies() == {"ann@example.com": 1, "bob@example.com": 1, "cat@example.com": 1}
