"""The public page never lies: an outage is never hidden by maintenance, a promised update time that
has passed says so, a cancelled window says cancelled, and times say what really happened.

Data is set up through actions and published with incidents.publishing.publish(); the pages are
requested at their literal URLs as an anonymous reader would.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from django.contrib.auth.models import User
from django.test import Client
from playwright.sync_api import Browser, Locator, Page, expect

from incidents import actions, clocks, publishing
from incidents.models import Component, Maintenance
from statuspage.snapshot import reader
from tests import factories
from tests.smtp import SmtpServer

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 3, 2, 22, 0, tzinfo=UTC)
START, END = T0 + timedelta(hours=1), T0 + timedelta(hours=3)


def text(response: Any) -> str:
    content: bytes = response.content
    return content.decode()


def words(html: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def status_of(component: Component) -> str:
    component.refresh_from_db()
    return component.status


def sweep_at(moment: datetime) -> int:
    with time_machine.travel(moment, tick=False):
        return clocks.sweep_due()


def publish_at(moment: datetime) -> dict[str, Any]:
    with time_machine.travel(moment, tick=False):
        document: dict[str, Any] = publishing.publish().document
    reader.reset()
    return document


def row(document: dict[str, Any], component: Component) -> dict[str, Any]:
    return next(c for c in document["components"] if c["id"] == str(component.pk))


@pytest.fixture
def frozen() -> Iterator[None]:
    with time_machine.travel(T0, tick=False):
        yield


# --- maintenance never hides an outage ----------------------------------------------------------


@pytest.fixture
def exports(staff: User) -> Component:
    return actions.create_component(actor=staff, name="Exports", at=T0 - timedelta(days=3))


@pytest.fixture
def window(staff: User, exports: Component) -> Maintenance:
    return actions.schedule_maintenance(
        actor=staff, title="Database upgrade", scheduled_for=START, scheduled_until=END, components=[exports], at=T0
    )


def test_a_window_starting_during_a_major_outage_keeps_the_outage_on_the_page(
    client: Client, staff: User, exports: Component, window: Maintenance
) -> None:
    factories.declare(actor=staff, title="Exports fail", components={exports: "major_outage"}, at=T0)

    sweep_at(START + timedelta(seconds=5))  # the window starts on time
    window.refresh_from_db()
    assert window.status == "in_progress"
    assert status_of(exports) == "major_outage"  # the incident's status wins

    document = publish_at(START + timedelta(hours=2))  # 01:00 on 3 March
    assert document["status"] == {"indicator": "critical", "description": "Major System Outage"}
    assert row(document, exports)["status"] == "major_outage"
    # Every minute since the incident began counts as outage, the window's included.
    today = row(document, exports)["uptime"]["days"][-1]
    yesterday = row(document, exports)["uptime"]["days"][-2]
    assert (yesterday["date"], yesterday["outage_seconds"]) == ("2026-03-02", 2 * 3600)
    assert (today["date"], today["outage_seconds"], today["worst_status"]) == ("2026-03-03", 3600, "major_outage")

    # The maintenance shows beside the outage: in its own section and next to the component.
    html = text(client.get("/"))
    page = words(html)
    assert "Major System Outage" in page
    assert "Exports Major outage Maintenance in progress" in page
    assert "Maintenance in progress Database upgrade In progress" in page


def test_an_outage_during_a_window_ends_under_maintenance_and_the_window_restores_operational(
    staff: User, exports: Component, window: Maintenance
) -> None:
    incident = factories.declare(actor=staff, title="Exports fail", components={exports: "major_outage"}, at=T0)
    sweep_at(START + timedelta(seconds=5))

    # The incident is resolved while the window still runs: the component is under maintenance again.
    actions.resolve_incident(incident, actor=staff, message="Fixed.", at=START + timedelta(minutes=30))
    assert status_of(exports) == "under_maintenance"
    document = publish_at(START + timedelta(minutes=31))
    assert document["status"]["description"] == "Service Under Maintenance"

    sweep_at(END + timedelta(seconds=5))
    assert status_of(exports) == "operational"  # not the major outage it had when the window started
    assert list(exports.status_changes.values_list("new_status", "changed_at")) == [
        ("major_outage", T0),
        ("under_maintenance", START + timedelta(minutes=30)),
        ("operational", END),
    ]


def test_an_outage_that_begins_during_a_window_wins_over_it(
    staff: User, exports: Component, window: Maintenance
) -> None:
    sweep_at(START + timedelta(seconds=5))
    assert status_of(exports) == "under_maintenance"

    factories.declare(
        actor=staff, title="Exports fail", components={exports: "partial_outage"}, at=START + timedelta(minutes=10)
    )
    document = publish_at(START + timedelta(minutes=11))
    assert row(document, exports)["status"] == "partial_outage"
    assert document["status"]["description"] == "Partial System Outage"

    sweep_at(END + timedelta(seconds=5))
    assert status_of(exports) == "partial_outage"  # the incident still has it


# --- a promised update time that has passed says so ---------------------------------------------


@pytest.mark.django_db(transaction=True)  # real commits: the sweep's publish runs as in production
def test_a_passed_next_update_time_reads_as_overdue_once_the_sweep_republishes(client: Client) -> None:
    staff = factories.make_user(username="alice")
    with time_machine.travel(T0, tick=False):
        factories.declare(actor=staff, title="Exports fail")  # SEV1: the next update within 30 min
    with time_machine.travel(T0 + timedelta(minutes=5), tick=False):
        before = publishing.publish().version
    reader.reset()
    card = words(text(client.get("/")))
    assert "Next update by 22:30 UTC" in card

    # The promised time passes with nobody posting: the sweep records the breach and republishes.
    sweep_at(T0 + timedelta(minutes=31))
    latest = publishing.Snapshot.objects.latest()
    assert latest.version > before
    assert latest.document["generated_at"] == "2026-03-02T22:31:00.000Z"
    assert latest.document["incidents"][0]["next_update_overdue"] is True
    reader.reset()

    html = text(client.get("/"))
    assert "Update overdue since 22:30 UTC" in words(html)
    assert "Next update by" not in words(html)
    # The page also carries both phrasings and the time, for public.js to judge again when it is read.
    assert (
        '<p class="next-update is-overdue" data-due="2026-03-02T22:30:00+00:00" data-promise="Next update by"'
        ' data-overdue="Update overdue since"><span><span data-due-label>Update overdue since</span>'
        ' <time datetime="2026-03-02T22:30:00+00:00" data-local="nearby">22:30 UTC</time></span></p>'
    ) in html
    incident_page = words(text(client.get(f"/incidents/{latest.document['incidents'][0]['id']}")))
    assert "Next update overdue since 22:30 UTC" in incident_page


def test_a_next_update_time_on_another_day_shows_its_date(client: Client, staff: User) -> None:
    late = T0 + timedelta(hours=1, minutes=50)  # 23:50; the next update is due by 00:20 on 3 March
    factories.declare(actor=staff, title="Exports fail", at=late)
    publish_at(late + timedelta(minutes=1))

    assert "Next update by 3 Mar 2026, 00:20 UTC" in words(text(client.get("/")))


# --- in the reader's own zone and clock (public.js) ---------------------------------------------


def said(locator: Locator) -> str:
    return " ".join((locator.first.text_content() or "").split())


def watch_console(page: Page) -> list[str]:
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if "Content Security Policy" in m.text else None)
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    return problems


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_the_reader_sees_an_update_go_overdue_and_a_range_across_midnight_with_its_end_date(
    requires_chromium: None, live_server: Any, browser: Browser
) -> None:
    staff = factories.make_user(username="alice")
    with time_machine.travel(T0, tick=False):
        exports = actions.create_component(actor=staff, name="Exports", at=T0 - timedelta(days=3))
        incident = factories.declare(actor=staff, title="Exports fail")  # next update by 22:30 UTC
        # 05:17 to 08:16 UTC on 3 March: one day in UTC, 21:17 to 00:16 across midnight in Los Angeles.
        window = actions.schedule_maintenance(
            actor=staff,
            title="Database upgrade",
            scheduled_for=datetime(2026, 3, 3, 5, 17, tzinfo=UTC),
            scheduled_until=datetime(2026, 3, 3, 8, 16, tzinfo=UTC),
            components=[exports],
        )
    with time_machine.travel(T0 + timedelta(minutes=5), tick=False):
        publishing.publish()

    context = browser.new_context(timezone_id="America/Los_Angeles")
    page = context.new_page()
    problems = watch_console(page)
    # The reader's clock: 22:10 UTC (14:10 PST), 20 minutes before the promised update.
    page.clock.install(time=T0 + timedelta(minutes=10))
    page.goto(f"{live_server.url}/")

    promise = page.locator(".next-update")
    assert said(promise) == "Next update by 14:30 PST"
    card = page.locator("article", has=page.locator(f"#maintenance-{window.public_id}"))
    assert "2 Mar 2026, 21:17 PST to 3 Mar 2026, 00:16 PST" in said(card)

    # The page stays open past the promised time: it says overdue, with no new snapshot needed.
    page.clock.fast_forward("21:00")
    # Awaited, not read at once: the 30 s refreshes the jump fired may still be swapping the part in.
    expect(promise).to_have_class(re.compile(r"\bis-overdue\b"))
    expect(promise).to_have_text(re.compile(r"^\s*Update overdue since\s+14:30 PST\s*$"))

    # The incident's own page, opened later, judges at once.
    page.goto(f"{live_server.url}/incidents/{incident.pk}")
    assert said(page.locator(".due")) == "overdue since 14:30 PST"
    # A time on another day in the reader's zone shows its date.
    page.clock.fast_forward("12:00:00")  # 02:31 PST on 3 March, reading a promise made for 2 March
    expect(page.locator(".due time")).to_have_text(re.compile(r"^2 Mar"))
    assert said(page.locator(".due")) == "overdue since 2 Mar 2026, 14:30 PST"
    assert problems == []
    context.close()


# --- a cancelled window says cancelled everywhere -----------------------------------------------


def test_a_cancelled_window_says_cancelled_in_the_email_on_the_page_in_webhooks_and_feeds(
    client: Client, staff: User, window: Maintenance
) -> None:
    from django.core import mail

    from incidents import notifications, webhooks
    from incidents.models import Message

    reader_ = actions.subscribe(email="reader@example.com", at=T0)
    actions.confirm_subscription(reader_)
    actions.cancel_maintenance(window, actor=staff, reason="The vendor postponed it.", at=T0 + timedelta(minutes=5))

    cancellation = Message.objects.get(maintenance_update__body="The vendor postponed it.")
    notifications.fan_out(cancellation.pk)
    mail.outbox.clear()
    notifications.deliver_due()
    assert [m.subject for m in mail.outbox] == ["[Maintenance cancelled] Database upgrade"]
    assert "Status: Cancelled" in str(mail.outbox[0].body)

    hook = webhooks.shared_body(cancellation)["incident"]
    assert (hook["status"], hook["incident_updates"][0]["status"]) == ("cancelled", "cancelled")

    publish_at(T0 + timedelta(minutes=6))
    html = text(client.get(f"/maintenance/{window.public_id}"))
    assert '<span class="state state--cancelled">Cancelled</span>' in html  # the badge
    detail = words(html)
    assert "Database upgrade Maintenance Cancelled This maintenance was cancelled 2 Mar 2026, 22:05 UTC" in detail
    assert "Was planned for 2 Mar 2026, 23:00 UTC to 3 Mar 2026, 01:00 UTC" in detail
    # The updates, newest first: the cancellation, then the announcement it cancels.
    assert "Cancelled The vendor postponed it. Posted 2 Mar 2026, 22:05 UTC Scheduled Database upgrade" in detail
    assert "<title>[Cancelled] Database upgrade</title>" in text(client.get("/history.atom"))


# --- times say what really happened -------------------------------------------------------------


def test_a_window_completed_early_shows_when_it_really_ran(client: Client, staff: User, window: Maintenance) -> None:
    from django.core import mail

    from incidents import notifications
    from incidents.models import Message

    reader_ = actions.subscribe(email="reader@example.com", at=T0)
    actions.confirm_subscription(reader_)
    # Planned for 23:00 to 01:00; started by hand at 22:10 and done by 22:40.
    actions.start_maintenance(window, actor=staff, at=T0 + timedelta(minutes=10))
    actions.complete_maintenance(window, actor=staff, message="All done early.", at=T0 + timedelta(minutes=40))

    publish_at(T0 + timedelta(minutes=45))
    detail = words(text(client.get(f"/maintenance/{window.public_id}")))
    assert "This maintenance has been completed." in detail
    assert (
        "Carried out 2 Mar 2026, 22:10 UTC to 22:40 UTC Planned 2 Mar 2026, 23:00 UTC to 3 Mar 2026, 01:00 UTC"
    ) in detail
    history = words(text(client.get("/history")))
    assert "Database upgrade Maintenance Completed – All done early. 2 Mar 2026, 22:10 UTC to 22:40 UTC" in history

    done = Message.objects.get(maintenance_update__body="All done early.")
    notifications.fan_out(done.pk)
    mail.outbox.clear()
    notifications.deliver_due()
    body = str(mail.outbox[0].body)
    assert (
        "Carried out: 2 Mar 2026, 22:10 to 2 Mar 2026, 22:40 UTC\nPlanned: 2 Mar 2026, 23:00 to 3 Mar 2026, 01:00 UTC"
        in body
    )
    html = str(mail.outbox[0].alternatives[0][0])  # type: ignore[union-attr]
    assert "Carried out 2 Mar 2026, 22:10 to 2 Mar 2026, 22:40 UTC · planned 2 Mar 2026, 23:00" in html


def test_a_range_across_midnight_in_the_page_zone_gives_its_end_a_date(
    client: Client, staff: User, exports: Component, settings: Any
) -> None:
    settings.DISPLAY_TIME_ZONE = "America/Los_Angeles"
    window = actions.schedule_maintenance(
        actor=staff,
        title="Database upgrade",
        scheduled_for=datetime(2026, 3, 3, 5, 17, tzinfo=UTC),  # 21:17 PST on 2 March
        scheduled_until=datetime(2026, 3, 3, 8, 16, tzinfo=UTC),  # 00:16 PST on 3 March
        components=[exports],
        at=T0,
    )
    publish_at(T0 + timedelta(minutes=1))

    html = text(client.get(f"/maintenance/{window.public_id}"))
    assert "Scheduled 2 Mar 2026, 21:17 PST to 3 Mar 2026, 00:16 PST" in words(html)
    # public.js gets the start with the end, to give the end its date in the reader's zone too.
    assert (
        '<time datetime="2026-03-03T00:16:00-08:00" data-local="end" data-start="2026-03-02T21:17:00-08:00">'
        "3 Mar 2026, 00:16 PST</time>"
    ) in html


# --- emails name their list (RFC 2919) ----------------------------------------------------------


@pytest.mark.parametrize(
    ("site_name", "list_id"),
    [
        ("Acme Cloud", "Acme Cloud status updates <acme-cloud.status.example.com>"),
        ('Zürich "Transit", AG', "Zürich Transit, AG status updates <zurich-transit-ag.status.example.com>"),
        ("Acme, Inc.", '"Acme, Inc. status updates" <acme-inc.status.example.com>'),
    ],
)
def test_every_subscriber_email_carries_a_list_id(
    smtp: SmtpServer,
    staff: User,
    settings: Any,
    django_capture_on_commit_callbacks: Any,
    site_name: str,
    list_id: str,
) -> None:
    settings.SITE_NAME = site_name
    with django_capture_on_commit_callbacks(execute=True):
        ann = actions.subscribe(email="ann@example.com")
    [confirmation] = smtp.inbox("ann@example.com")  # built whole, for her alone
    actions.confirm_subscription(ann)
    smtp.reset()
    with django_capture_on_commit_callbacks(execute=True):
        factories.declare(actor=staff, title="Queries are slow")
    [update] = smtp.inbox("ann@example.com")  # merged from the message's shared MIME text

    assert confirmation["List-Id"] == update["List-Id"] == list_id
    if site_name.isascii():
        [raw] = smtp.raw("ann@example.com")
        assert f"\r\nList-Id: {list_id}\r\n".encode() in raw  # one line, as written


@pytest.mark.parametrize(
    ("site_url", "list_id"),
    [
        ("https://Status.Example.com", "Signalpost status updates <signalpost.status.example.com>"),
        ("http://127.0.0.1:8000", "Signalpost status updates <signalpost.localhost>"),
        ("http://[::1]:8000", "Signalpost status updates <signalpost.localhost>"),
        ("http://localhost:8000", "Signalpost status updates <signalpost.localhost>"),
    ],
)
def test_a_list_id_without_a_domain_uses_the_localhost_namespace(settings: Any, site_url: str, list_id: str) -> None:
    from incidents.emails import list_id as make_list_id

    settings.SITE_URL, settings.SITE_NAME = site_url, "Signalpost"
    assert make_list_id() == list_id


# --- on a phone ---------------------------------------------------------------------------------

FITS = """() => ({scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth})"""
IN_VIEW = """(elements) => elements.map((e) => { const b = e.getBoundingClientRect(); return [b.left, b.right]; })"""


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_what_these_pages_now_say_fits_a_phone_and_a_desktop(
    requires_chromium: None, live_server: Any, page: Page
) -> None:
    staff = factories.make_user(username="alice")
    with time_machine.travel(T0, tick=False):
        group = actions.create_component(actor=staff, name="Data platform", is_group=True, at=T0 - timedelta(days=3))
        exports = actions.create_component(
            actor=staff, name="Scheduled exports to customer warehouses", group=group, at=T0 - timedelta(days=3)
        )
        incident = factories.declare(
            actor=staff,
            title="Exports fail for every warehouse",
            components={exports: "major_outage"},
            # A long URL in an update wraps rather than widening the page (a third review found 493 px).
            message="Follow https://docs.example-company.com/guides/ingestion/troubleshooting/retries-and-backoff"
            "?utm_source=status&utm_medium=page#rate-limits meanwhile.\n\n"
            # And so does a code block's line of 190 characters with nowhere to break.
            f"```\n{'warehouseconnector' * 10}exports_qa\n```",
        )
        running = actions.schedule_maintenance(
            actor=staff,
            title="Warehouse connector upgrade",
            scheduled_for=T0 + timedelta(minutes=10),
            scheduled_until=T0 + timedelta(hours=3),
            components=[exports],
        )
        cancelled = actions.schedule_maintenance(
            actor=staff,
            title="Network change",
            scheduled_for=T0 + timedelta(days=1),
            scheduled_until=T0 + timedelta(days=1, hours=1),
        )
        actions.cancel_maintenance(cancelled, actor=staff, reason="Not needed after all.")
        done = actions.schedule_maintenance(
            actor=staff,
            title="Certificate rotation",
            scheduled_for=T0 + timedelta(hours=5),
            scheduled_until=T0 + timedelta(hours=6),
        )
        actions.start_maintenance(done, actor=staff, at=T0 + timedelta(minutes=1))
        actions.complete_maintenance(done, actor=staff, at=T0 + timedelta(minutes=5))
    sweep_at(T0 + timedelta(minutes=40))  # the window starts; the promised update time passes
    with time_machine.travel(T0 + timedelta(minutes=41), tick=False):
        publishing.publish()

    page.clock.install(time=T0 + timedelta(minutes=45))
    paths = [
        "/",
        f"/incidents/{incident.pk}",
        f"/maintenance/{running.public_id}",
        f"/maintenance/{cancelled.public_id}",
    ]
    paths.append(f"/maintenance/{done.public_id}")
    for width in (390, 360, 1280):
        page.set_viewport_size({"width": width, "height": 800})
        for path in paths:
            page.goto(f"{live_server.url}{path}")
            page.evaluate("document.querySelectorAll('details').forEach((d) => { d.open = true; })")
            sizes = page.evaluate(FITS)
            assert sizes["scrollWidth"] <= sizes["innerWidth"], f"{path} at {width} px scrolls sideways: {sizes}"
            for selector in (".status--beside", ".next-update", ".due", ".state"):
                for left, right in page.locator(selector).evaluate_all(IN_VIEW):
                    assert left >= 0 and right <= width, f"{selector} on {path} at {width} px: {left}–{right}"
        page.goto(f"{live_server.url}/")
        expect(page.locator(".status--beside")).to_have_text("Maintenance in progress")
        expect(page.locator(".next-update")).to_contain_text("Update overdue since")
