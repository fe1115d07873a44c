"""Atom and RSS of incident updates, and the iCalendar of maintenance windows, from the snapshot.

Feeds are checked by parsing them the way readers do (feedparser), the calendar with icalendar.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import feedparser  # type: ignore[import-untyped]
import icalendar
import pytest
import time_machine
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client

from incidents import actions, publishing
from incidents.models import Component, Incident, Maintenance
from statuspage.feeds import fold, ics_text
from statuspage.snapshot import reader
from tests import factories

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 3, 2, 14, 5, tzinfo=UTC)
FEEDS = ["/history.atom", "/history.rss"]


@pytest.fixture(autouse=True)
def _frozen_clock() -> Iterator[None]:
    with time_machine.travel(T0, tick=False):
        yield


@pytest.fixture
def client() -> Client:
    return Client()


@pytest.fixture
def query_api(staff: User) -> Component:
    group = factories.make_component(name="Platform", is_group=True, actor=staff)
    return factories.make_component(name="Query API", group=group, actor=staff)


@pytest.fixture
def incidents(staff: User, query_api: Component) -> tuple[Incident, Incident]:
    old = factories.declare(actor=staff, title="Website down", message="Looking.", at=T0 - timedelta(days=1))
    actions.resolve_incident(old, actor=staff, message="Fixed & verified <b>now</b>.", at=T0 - timedelta(hours=20))
    new = factories.declare(
        actor=staff,
        title="Queries are slow",
        message="We are **investigating**.",
        components={query_api: "partial_outage"},
        at=T0 - timedelta(hours=2),
    )
    actions.post_update(new, actor=staff, body="INTERNAL: db01 disk full", is_public=False, at=T0 - timedelta(hours=1))
    actions.post_update(
        new, actor=staff, body="Cause found: a full disk.", public_status="identified", at=T0 - timedelta(minutes=30)
    )
    publishing.publish()
    return old, new


def parse(client: Client, url: str) -> Any:
    response = client.get(url)
    assert response.status_code == 200
    parsed = feedparser.parse(response.content)
    assert not parsed.bozo, parsed.get("bozo_exception")
    return parsed


# --- Atom and RSS -------------------------------------------------------------------------------


@pytest.mark.parametrize("url", FEEDS)
def test_a_feed_has_one_entry_per_public_update_newest_first(
    client: Client, incidents: tuple[Incident, Incident], url: str
) -> None:
    old, new = incidents
    feed = parse(client, url)
    assert [entry.title for entry in feed.entries] == [
        "[Identified] Queries are slow",
        "[Investigating] Queries are slow",
        "[Resolved] Website down",
        "[Investigating] Website down",
    ]
    links = [entry.link for entry in feed.entries]
    assert links == [f"{settings.SITE_URL}/incidents/{i.pk}" for i in (new, new, old, old)]
    published = [entry.published_parsed for entry in feed.entries]
    assert published == sorted(published, reverse=True)
    assert len({entry.id for entry in feed.entries}) == 4, "each update has its own id"
    assert feed.feed.link == f"{settings.SITE_URL}/"


@pytest.mark.parametrize("url", FEEDS)
def test_a_feed_carries_the_update_as_escaped_html_and_never_an_internal_note(
    client: Client, incidents: tuple[Incident, Incident], url: str
) -> None:
    response = client.get(url)
    assert b"INTERNAL" not in response.content
    assert b"<strong>" not in response.content, "the HTML is escaped inside the XML"
    feed = feedparser.parse(response.content)
    investigating = feed.entries[1]
    assert "<strong>investigating</strong>" in investigating.summary
    resolved = feed.entries[2]
    # Markup typed into an update is shown as text (the body's HTML escapes it), and stays so in the feed.
    assert resolved.summary == "<p>Fixed &amp; verified &lt;b&gt;now&lt;/b&gt;.</p>"


def test_the_feeds_content_types(client: Client, incidents: tuple[Incident, Incident]) -> None:
    assert client.get("/history.atom")["Content-Type"] == "application/atom+xml; charset=utf-8"
    assert client.get("/history.rss")["Content-Type"] == "application/rss+xml; charset=utf-8"


@pytest.mark.parametrize("url", FEEDS)
def test_a_feed_keeps_the_newest_50_updates(client: Client, staff: User, url: str) -> None:
    incident = factories.declare(actor=staff, title="Long one", message="Update 0", at=T0 - timedelta(hours=2))
    for n in range(1, 55):
        actions.post_update(
            incident, actor=staff, body=f"Update {n}", at=T0 - timedelta(hours=2) + timedelta(minutes=n)
        )
    publishing.publish()
    feed = parse(client, url)
    assert len(feed.entries) == 50
    assert "Update 54" in feed.entries[0].summary
    assert "Update 5<" in feed.entries[-1].summary


@pytest.mark.parametrize("url", FEEDS)
def test_an_empty_feed_is_valid_and_dated_by_the_snapshot(client: Client, url: str) -> None:
    publishing.publish()
    feed = parse(client, url)
    assert feed.entries == []
    first = client.get(url).content
    with time_machine.travel(T0 + timedelta(hours=1), tick=False):
        assert client.get(url).content == first, "the same version gives the same bytes"


@pytest.mark.parametrize("url", FEEDS)
def test_a_control_character_in_an_update_does_not_break_the_feed(client: Client, staff: User, url: str) -> None:
    factories.declare(actor=staff, title="Odd\x0b title", message="Pasted\x0b from a terminal\x1b[0m", at=T0)
    publishing.publish()
    feed = parse(client, url)
    assert feed.entries[0].title == "[Investigating] Odd title"
    assert "Pasted from a terminal" in feed.entries[0].summary


def test_an_incident_published_later_appears_in_the_feed(client: Client, staff: User) -> None:
    incident = factories.declare(actor=staff, title="Quiet", is_public=False, message="internal look", at=T0)
    publishing.publish()
    assert parse(client, "/history.atom").entries == []
    actions.post_update(incident, actor=staff, body="Now public.", at=T0 + timedelta(minutes=5))
    publishing.publish()
    reader.reset()
    entries = parse(client, "/history.atom").entries
    assert [e.title for e in entries] == ["[Investigating] Quiet"]


# --- iCalendar ----------------------------------------------------------------------------------


@pytest.fixture
def windows(staff: User, query_api: Component) -> dict[str, Maintenance]:
    upcoming = actions.schedule_maintenance(
        actor=staff,
        title="Database upgrade",
        scheduled_for=T0 + timedelta(days=2),
        scheduled_until=T0 + timedelta(days=2, hours=2),
        components=[query_api],
        message="Writes pause for a few minutes; reads continue.",
        at=T0 - timedelta(days=1),
    )
    cancelled = actions.schedule_maintenance(
        actor=staff,
        title="Network move",
        scheduled_for=T0 + timedelta(days=4),
        scheduled_until=T0 + timedelta(days=4, hours=1),
        at=T0 - timedelta(days=1),
    )
    actions.cancel_maintenance(cancelled, actor=staff, reason="No longer needed.", at=T0 - timedelta(hours=1))
    completed = actions.schedule_maintenance(
        actor=staff,
        title="Kernel patch",
        scheduled_for=T0 - timedelta(days=1),
        scheduled_until=T0 - timedelta(days=1) + timedelta(hours=1),
        at=T0 - timedelta(days=3),
    )
    actions.start_maintenance(completed, actor=None, at=T0 - timedelta(days=1))
    actions.complete_maintenance(completed, actor=None, at=T0 - timedelta(days=1) + timedelta(hours=1))
    publishing.publish()
    return {"upcoming": upcoming, "cancelled": cancelled, "completed": completed}


def calendar(client: Client) -> icalendar.Calendar:
    response = client.get("/maintenance.ics")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/calendar; charset=utf-8"
    return icalendar.Calendar.from_ical(response.content)


def events(client: Client) -> dict[str, icalendar.Event]:
    return {event.uid: event for event in calendar(client).events}


def uid(maintenance: Maintenance) -> str:
    return f"maintenance-{maintenance.public_id}@127.0.0.1"


def test_the_calendar_has_one_event_per_window(client: Client, windows: dict[str, Maintenance]) -> None:
    found = events(client)
    assert sorted(found) == sorted(uid(m) for m in windows.values())
    upcoming = found[uid(windows["upcoming"])]
    assert upcoming.summary == "Database upgrade"
    assert upcoming.start == T0 + timedelta(days=2)
    assert upcoming.end == T0 + timedelta(days=2, hours=2)
    assert isinstance(upcoming.start, datetime)
    assert upcoming.start.utcoffset() == timedelta(0), "times in UTC"
    assert b"DTSTART:" + T0.strftime("%Y").encode() in upcoming.to_ical()
    assert upcoming.status == "CONFIRMED"
    assert upcoming.sequence == 0
    assert upcoming.url == f"{settings.SITE_URL}/maintenance/{windows['upcoming'].public_id}"
    description = upcoming.description or ""
    assert "Writes pause for a few minutes; reads continue." in description
    assert "Affected: Platform - Query API" in description
    assert upcoming.DTSTAMP is not None
    assert upcoming.DTSTAMP.utcoffset() == timedelta(0)


def test_a_cancelled_window_stays_with_status_cancelled_and_a_higher_sequence(
    client: Client, windows: dict[str, Maintenance]
) -> None:
    cancelled = events(client)[uid(windows["cancelled"])]
    assert cancelled.status == "CANCELLED"
    assert cancelled.sequence == 1
    assert (cancelled.description or "").startswith("No longer needed.\n\nNetwork move is scheduled from")


def test_a_reschedule_moves_the_event_under_the_same_uid(
    client: Client, staff: User, windows: dict[str, Maintenance]
) -> None:
    before = events(client)[uid(windows["upcoming"])]
    actions.reschedule_maintenance(
        windows["upcoming"],
        actor=staff,
        scheduled_for=T0 + timedelta(days=3),
        scheduled_until=T0 + timedelta(days=3, hours=1),
        at=T0,
    )
    publishing.publish()
    reader.reset()
    after = events(client)[uid(windows["upcoming"])]
    assert after.sequence == before.sequence + 1
    assert after.start == T0 + timedelta(days=3)
    assert after.DTSTAMP is not None and before.DTSTAMP is not None
    assert after.DTSTAMP > before.DTSTAMP


def test_the_calendar_is_crlf_folded_and_escaped(client: Client, staff: User) -> None:
    title = "Wartung: Datenbank, Netz; Speicher – größere Umstellung der Zürcher Rechenzentren " * 2
    actions.schedule_maintenance(
        actor=staff,
        title=title.strip(),
        scheduled_for=T0 + timedelta(days=1),
        scheduled_until=T0 + timedelta(days=1, hours=1),
        message="Line one\nLine two, with a comma; and a backslash \\ too",
        at=T0,
    )
    publishing.publish()
    body = client.get("/maintenance.ics").content
    assert body.endswith(b"\r\n")
    lines = body.split(b"\r\n")[:-1]
    assert all(b"\n" not in line and b"\r" not in line for line in lines)
    assert all(len(line) <= 75 for line in lines), max(len(line) for line in lines)
    assert any(line.startswith(b" ") for line in lines), "the long lines were folded"
    for line in lines:
        line.decode("utf-8")  # never folded inside a multi-byte character
    event = calendar(client).events[0]
    assert event.summary == title.strip()
    assert (event.description or "").startswith("Line one\nLine two, with a comma; and a backslash \\ too")


def test_an_empty_calendar_is_valid(client: Client) -> None:
    publishing.publish()
    cal = calendar(client)
    assert cal.events == []
    assert str(cal["VERSION"]) == "2.0"
    assert "PRODID" in cal


def test_text_escaping_and_folding_helpers() -> None:
    assert ics_text("a,b;c\\d\ne\r\nf") == "a\\,b\\;c\\\\d\\ne\\nf"
    assert ics_text("bell\x07") == "bell"
    assert fold("x" * 75) == "x" * 75
    folded = fold("é" * 80)
    parts = folded.split("\r\n")
    assert all(len(part.encode()) <= 75 for part in parts)
    assert "".join(part.removeprefix(" ") for part in parts) == "é" * 80


# --- maintenance in the history -------------------------------------------------------------------


def test_a_completed_window_is_in_the_history_and_the_feeds(client: Client, windows: dict[str, Maintenance]) -> None:
    """Carried-out maintenance is part of the record, as on Statuspage: the history lists it in its month
    (linking to its page), and the feeds carry each of its updates. Upcoming and cancelled windows are
    not history."""
    completed = windows["completed"]
    html = client.get("/history").content.decode()
    assert f'href="/maintenance/{completed.public_id}">Kernel patch</a>' in html
    assert "Database upgrade" not in html and "Network move" not in html
    assert "Maintenance" in html

    for url in FEEDS:
        entries = parse(client, url).entries
        kernel = [e for e in entries if e.title.endswith("Kernel patch")]
        assert [e.title for e in kernel] == [
            "[Completed] Kernel patch",
            "[In progress] Kernel patch",
            "[Scheduled] Kernel patch",
        ]
        assert {e.link for e in kernel} == {f"{settings.SITE_URL}/maintenance/{completed.public_id}"}
        assert any(e.title == "[Scheduled] Database upgrade" for e in entries)
