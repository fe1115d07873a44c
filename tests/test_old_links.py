"""Old links keep working: every public incident and maintenance window keeps its page.

The snapshot holds the newest incidents (500; 2 here) and the windows of the last 90 days, and their
pages are served from it as before. Older ones are read from the database, in the same page, and say
"temporarily unavailable" (503, in the public page's style) while the database is down; anything that
was never public stays a 404. The old address of a window's page, /maintenance/<number>, redirects
permanently to /maintenance/<public id>.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from django.contrib.auth.models import User
from django.db import OperationalError
from django.test import Client
from playwright.sync_api import Page

from incidents import actions, public, publishing
from incidents.models import Incident, Maintenance, new_public_id
from statuspage.http import CACHE_CONTROL, clear_rendered
from statuspage.snapshot import reader
from tests import factories
from tests.test_browser import watch_console
from tests.test_public_resilience import assert_database_unreachable, database_down

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 8, 14, 5, tzinfo=UTC)
KEPT_INCIDENTS = 2  # the snapshot's HISTORY_LIMIT in these tests (500 in production)
UNAVAILABLE = "page is temporarily unavailable"
# A page read from the database: a handful of queries (the row with its updates, clocks and components;
# every component's row; the post-mortem), never one per update or component.
ARCHIVE_QUERIES = 8


@pytest.fixture(autouse=True)
def _now() -> Iterator[None]:
    with time_machine.travel(NOW, tick=False):
        yield


@dataclass
class Archive:
    old_incident: Incident
    recent_incident: Incident
    private_incident: Incident
    old_window: Maintenance
    recent_window: Maintenance


def cold() -> None:
    reader.reset()
    clear_rendered()


@pytest.fixture
def archive(monkeypatch: pytest.MonkeyPatch) -> Archive:
    monkeypatch.setattr(public, "HISTORY_LIMIT", KEPT_INCIDENTS)
    factories.ensure_severities()  # a transactional test's flush removes the seeded ones
    staff = User.objects.filter(username="alice").first() or factories.make_user(username="alice")
    api = factories.make_component(name="API", actor=staff)
    long_ago = NOW - timedelta(days=400)
    with time_machine.travel(long_ago, tick=False):
        private = factories.declare(actor=staff, title="Internal drill", message="Drill.", is_public=False)
        old = factories.declare(
            actor=staff, title="Login failures", components={api: "major_outage"}, message="Logins fail for some."
        )
    with time_machine.travel(long_ago + timedelta(minutes=20), tick=False):
        actions.post_update(old, actor=staff, body="A certificate expired; renewing it.", public_status="identified")
    with time_machine.travel(long_ago + timedelta(hours=1), tick=False):
        actions.resolve_incident(old, actor=staff, message="Logins work again.")
    for days in (3, 2):
        with time_machine.travel(NOW - timedelta(days=days), tick=False):
            recent = factories.declare(actor=staff, title=f"Slow search ({days} days ago)")
    window_start = NOW - timedelta(days=120)
    with time_machine.travel(window_start - timedelta(days=7), tick=False):
        old_window = actions.schedule_maintenance(
            actor=staff,
            title="Kernel patch",
            scheduled_for=window_start,
            scheduled_until=window_start + timedelta(hours=2),
            components=[api],
            message="We patch the kernel on every host.",
        )
    with time_machine.travel(window_start, tick=False):
        actions.start_maintenance(old_window, actor=staff)
    with time_machine.travel(window_start + timedelta(hours=1), tick=False):
        actions.complete_maintenance(old_window, actor=staff, message="All hosts patched.")
    recent_window = actions.schedule_maintenance(
        actor=staff,
        title="Database upgrade",
        scheduled_for=NOW + timedelta(days=1),
        scheduled_until=NOW + timedelta(days=1, hours=1),
        components=[api],
    )
    document = publishing.publish().document
    cold()
    # The setup: the snapshot holds the recent ones and not the old ones.
    assert [row["id"] for row in document["incidents"]] == [str(recent.pk), str(recent.pk - 1)]
    assert [row["id"] for row in document["scheduled_maintenances"]] == [recent_window.public_id]
    return Archive(old, recent, private, old_window, recent_window)


def html(response: Any) -> str:
    return " ".join(response.content.decode().split())


def test_an_incident_older_than_the_snapshot_keeps_its_page(
    client: Client, archive: Archive, django_assert_max_num_queries: Callable[..., Any]
) -> None:
    with django_assert_max_num_queries(ARCHIVE_QUERIES):
        response = client.get(f"/incidents/{archive.old_incident.pk}")

    assert response.status_code == 200
    page = html(response)
    assert "<title>Login failures · Signalpost status</title>" in page
    assert "This incident has been resolved." in page
    for body in ("Logins fail for some.", "A certificate expired; renewing it.", "Logins work again."):
        assert body in page
    assert "Affected components</dt> <dd>API</dd>" in page
    assert 'href="/history.atom"' in page and "Powered by Signalpost" in page  # the public page's frame
    assert response["Cache-Control"] == CACHE_CONTROL
    revalidated = client.get(f"/incidents/{archive.old_incident.pk}", HTTP_IF_NONE_MATCH=response["ETag"])
    assert revalidated.status_code == 304
    head = client.head(f"/incidents/{archive.old_incident.pk}")
    assert head.status_code == 200 and head.content == b""


def test_a_window_older_than_90_days_keeps_its_page_and_its_old_address(
    client: Client, archive: Archive, django_assert_max_num_queries: Callable[..., Any]
) -> None:
    window = archive.old_window
    with django_assert_max_num_queries(ARCHIVE_QUERIES):
        response = client.get(f"/maintenance/{window.public_id}")

    assert response.status_code == 200
    page = html(response)
    assert "<title>Kernel patch · Signalpost status</title>" in page
    assert "This maintenance has been completed." in page
    assert "We patch the kernel on every host." in page and "All hosts patched." in page

    with django_assert_max_num_queries(1):
        old_address = client.get(f"/maintenance/{window.pk}")
    assert (old_address.status_code, old_address["Location"]) == (301, f"/maintenance/{window.public_id}")


def test_the_recent_ones_are_still_served_from_the_snapshot(
    client: Client, archive: Archive, django_assert_num_queries: Callable[..., Any]
) -> None:
    with django_assert_num_queries(0):
        assert client.get(f"/incidents/{archive.recent_incident.pk}").status_code == 200
        assert client.get(f"/maintenance/{archive.recent_window.public_id}").status_code == 200
        redirect = client.get(f"/maintenance/{archive.recent_window.pk}")
    assert (redirect.status_code, redirect["Location"]) == (301, f"/maintenance/{archive.recent_window.public_id}")


def test_what_was_never_public_has_no_page(
    client: Client, archive: Archive, django_assert_max_num_queries: Callable[..., Any]
) -> None:
    for url in [
        f"/incidents/{archive.private_incident.pk}",  # internal only: it never reached the public page
        "/incidents/999999",
        f"/maintenance/{new_public_id()}",
        "/maintenance/999999",
    ]:
        with django_assert_max_num_queries(1):
            response = client.get(url)
        assert response.status_code == 404, url
        assert "We could not find that" in html(response), url
        assert "Internal drill" not in html(response)


@pytest.mark.django_db(transaction=True)
def test_an_old_page_says_it_is_temporarily_unavailable_while_the_database_is_down(
    client: Client, archive: Archive
) -> None:
    with database_down():
        assert_database_unreachable()
        # What the snapshot holds answers as ever.
        assert client.get("/").status_code == 200
        assert client.get(f"/incidents/{archive.recent_incident.pk}").status_code == 200
        assert client.get(f"/maintenance/{archive.recent_window.public_id}").status_code == 200
        assert client.get(f"/maintenance/{archive.recent_window.pk}").status_code == 301
        # What needs the database says so, in the public page's style, and asks to come back.
        for url, what in [
            (f"/incidents/{archive.old_incident.pk}", "incident"),
            (f"/maintenance/{archive.old_window.public_id}", "maintenance"),
            (f"/maintenance/{archive.old_window.pk}", "maintenance"),
        ]:
            response = client.get(url)
            assert response.status_code == 503, url
            page = html(response)
            assert f"This {what} {UNAVAILABLE}" in page, url
            assert "<title>Temporarily unavailable · Signalpost status</title>" in page
            assert 'class="masthead"' in page and 'href="/static/css/public.css"' in page
            assert '<a href="/">Current status</a>' in page
            assert response["Retry-After"] == "30"
            assert response["Cache-Control"] == "no-store"
        assert_database_unreachable()

    assert client.get(f"/incidents/{archive.old_incident.pk}").status_code == 200  # back with the database
    assert client.get(f"/maintenance/{archive.old_window.public_id}").status_code == 200


@pytest.mark.django_db(transaction=True)
def test_old_pages_and_the_unavailable_page_fit_a_phone(
    requires_chromium: None, live_server: Any, page: Page, archive: Archive, monkeypatch: pytest.MonkeyPatch
) -> None:
    problems = watch_console(page)
    paths = [f"/incidents/{archive.old_incident.pk}", f"/maintenance/{archive.old_window.public_id}"]
    for width in (390, 1280):
        page.set_viewport_size({"width": width, "height": 800})
        for path in paths:
            response = page.goto(f"{live_server.url}{path}")
            assert response is not None and response.status == 200, path
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), (path, width)

    def database_refuses(*args: Any) -> None:
        raise OperationalError("connection refused")

    # The live server runs in this process: its database "refuses" only for the old incident's page.
    monkeypatch.setattr(public, "archived_incident_row", database_refuses)
    for width in (390, 1280):
        page.set_viewport_size({"width": width, "height": 800})
        response = page.goto(f"{live_server.url}{paths[0]}")
        assert response is not None and response.status == 503
        assert page.get_by_role("heading", name=f"This incident {UNAVAILABLE}").is_visible()
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), width
    assert problems == []


def test_the_history_does_not_say_no_incidents_for_months_it_does_not_list(archive: Archive, client: Client) -> None:
    # The issue 12 review: with more public incidents than the snapshot keeps, months before the oldest
    # kept one said "No incidents reported", though they had some.
    page = html(client.get("/history"))

    november = page[page.index('id="month-2026-11"') : page.index('id="month-2026-10"')]
    assert "Slow search (2 days ago)" in november
    assert "Earlier incidents of this month are not listed here: the history lists the newest 2." in november
    october = page[page.index('id="month-2026-10"') :]
    assert "No incidents reported" not in october
    assert "Incidents of this month are not listed here: the history lists the newest 2." in october


def test_a_history_that_lists_every_incident_still_says_when_a_month_had_none(client: Client, staff: User) -> None:
    factories.declare(actor=staff, title="Slow search")
    publishing.publish()
    cold()

    page = html(client.get("/history"))

    assert "No incidents reported" in page
    assert "not listed here" not in page
