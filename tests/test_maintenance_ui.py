"""The staff UI for scheduled maintenance: personas, scheduling, each action with and without htmx,
each refusal explained, component statuses, and the sweep's automatic start and completion.

As on the incident page: without htmx an action answers 303 to the window's page (a refused button
with a flash message), and a form with errors or a refusal re-renders the page with 422, keeping what
was typed; with htmx (HX-Request) the same URLs answer with partials, 200 on success and 422 on errors
or refusals.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from incidents import actions, clocks
from incidents.models import Component, Maintenance, TimelineEvent
from tests import factories

T0 = datetime(2026, 3, 2, 14, 5, tzinfo=UTC)
START, END = datetime(2026, 3, 3, 22, 0, tzinfo=UTC), datetime(2026, 3, 4, 1, 0, tzinfo=UTC)
HTMX = {"HX-Request": "true"}
pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _at_t0() -> Any:
    """Each test starts at T0, a day before the window; tests that need another moment travel on."""
    with time_machine.travel(T0, tick=False) as traveller:
        yield traveller


@pytest.fixture
def api(staff: User) -> Component:
    group = factories.make_component(name="Platform", is_group=True, actor=staff)
    component = factories.make_component(name="Query API", group=group, actor=staff)
    return actions.set_component_status(component, actor=staff, status="degraded_performance")


@pytest.fixture
def web(staff: User) -> Component:
    return factories.make_component(name="Web app", actor=staff)


@pytest.fixture
def window(staff: User, api: Component, web: Component) -> Maintenance:
    return actions.schedule_maintenance(
        actor=staff,
        title="Database upgrade",
        scheduled_for=START,
        scheduled_until=END,
        components=[api, web],
        message="We upgrade the **database**.",
    )


@pytest.fixture
def started(staff: User, window: Maintenance) -> Maintenance:
    return actions.start_maintenance(window, actor=staff)


@pytest.fixture
def completed(staff: User, started: Maintenance) -> Maintenance:
    return actions.complete_maintenance(started, actor=staff)


def text(response: object) -> str:
    content: bytes = response.content  # type: ignore[attr-defined]
    return content.decode()


def errors_of(html: str, field_id: str) -> str:
    """The text of the error list tied to a field (id="<field id>_error")."""
    match = re.search(rf'id="{re.escape(field_id)}_error"[^>]*>(.*?)</ul>', html, re.S)
    assert match, f"no errors shown next to {field_id}"
    return re.sub(r"<[^>]+>", "", match.group(1)).strip()


def status_of(component: Component) -> str:
    component.refresh_from_db()
    return component.status


def refused_page(response: Any) -> str:
    """Without JavaScript a form's refusal re-renders the whole page (422), keeping what was typed."""
    assert response.status_code == 422, response.content
    html = text(response)
    assert "<html" in html
    return html


def flash_after(client: Client, response: Any) -> str:
    """The page a no-JavaScript post redirected to, with its flash message."""
    assert response.status_code == 303, response.content
    return text(client.get(response["Location"]))


def oob_parts(html: str) -> set[str]:
    return set(re.findall(r'id="([\w-]+)"[^>]*hx-swap-oob="true"', html))


def page_urls(maintenance: Maintenance) -> list[str]:
    return ["/manage/maintenance/", "/manage/maintenance/new", f"/manage/maintenance/{maintenance.pk}"]


def post_urls(maintenance: Maintenance) -> list[str]:
    base = f"/manage/maintenance/{maintenance.pk}"
    return [
        f"{base}/start",
        f"{base}/complete",
        f"{base}/update",
        f"{base}/reschedule",
        f"{base}/cancel",
        "/manage/maintenance/new",
    ]


SCHEDULE = {
    "title": "Search reindex",
    "scheduled_for": "2026-03-05T22:00",
    "scheduled_until": "2026-03-06T00:30",
    "message": "Search may return *stale* results.",
    "auto_start": "on",
}


# --- personas -----------------------------------------------------------------------------------


def test_it_shows_every_page_to_staff(staff_client: Client, window: Maintenance) -> None:
    for url in [*page_urls(window), "/manage/maintenance/panel"]:
        assert staff_client.get(url).status_code == 200, url


def test_it_sends_anonymous_visitors_to_the_login_page(client: Client, window: Maintenance) -> None:
    for url in [*page_urls(window), "/manage/maintenance/panel"]:
        response = client.get(url)
        assert (response.status_code, response["Location"]) == (302, f"/login/?next={url}"), url
    for url in post_urls(window):
        response = client.post(url, {"reason": "x", "body": "x"})
        assert (response.status_code, response["Location"]) == (302, f"/login/?next={url}"), url
    assert Maintenance.objects.count() == 1


def test_it_forbids_logged_in_non_staff(outsider_client: Client, window: Maintenance) -> None:
    for url in [*page_urls(window), "/manage/maintenance/panel"]:
        assert outsider_client.get(url).status_code == 403, url
    for url in post_urls(window):
        data = {**SCHEDULE, "status": "completed", "body": "x", "reason": "x"}
        assert outsider_client.post(url, data).status_code == 403, url
    window.refresh_from_db()
    assert (window.status, window.cancelled_at, window.updates.count()) == ("scheduled", None, 1)
    assert Maintenance.objects.count() == 1


def test_it_refuses_get_on_action_urls(staff_client: Client, window: Maintenance) -> None:
    for url in post_urls(window)[:-1]:
        assert staff_client.get(url).status_code == 405, url


def test_it_answers_404_for_an_unknown_window(staff_client: Client) -> None:
    assert staff_client.get("/manage/maintenance/999999").status_code == 404
    assert staff_client.post("/manage/maintenance/999999/start").status_code == 404


def test_it_links_maintenance_from_the_navigation(staff_client: Client) -> None:
    assert 'href="/manage/maintenance/">Maintenance</a>' in text(staff_client.get("/manage/"))
    assert 'href="/manage/maintenance/" aria-current="page">Maintenance</a>' in text(
        staff_client.get("/manage/maintenance/")
    )


# --- the list -----------------------------------------------------------------------------------


def test_it_lists_active_upcoming_and_recent_windows(
    staff_client: Client, staff: User, window: Maintenance, web: Component
) -> None:
    later = actions.schedule_maintenance(
        actor=staff,
        title="Later upgrade",
        scheduled_for=END + timedelta(days=2),
        scheduled_until=END + timedelta(days=3),
    )
    running = actions.schedule_maintenance(
        actor=staff, title="Cache flush", scheduled_for=T0, scheduled_until=T0 + timedelta(hours=1), components=[web]
    )
    actions.start_maintenance(running, actor=staff)
    done = actions.schedule_maintenance(
        actor=staff, title="Old job", scheduled_for=T0, scheduled_until=T0 + timedelta(hours=1), auto_start=False
    )
    actions.cancel_maintenance(done, actor=staff, reason="Not needed")

    html = text(staff_client.get("/manage/maintenance/"))

    active, upcoming, recent = (
        html.split('id="active-heading"')[1].split('id="upcoming-heading"')[0],
        html.split('id="upcoming-heading"')[1].split('id="recent-heading"')[0],
        html.split('id="recent-heading"')[1],
    )
    assert "Cache flush" in active and "In progress" in active
    assert "Web app" in active and "Under maintenance" in active
    assert active.index("Cache flush") and "Database upgrade" not in active
    assert upcoming.index("Database upgrade") < upcoming.index("Later upgrade")  # soonest first
    assert f'href="/manage/maintenance/{window.pk}"' in upcoming
    assert f'href="/manage/maintenance/{later.pk}"' in upcoming
    assert "Platform - Query API" in upcoming
    assert "3 Mar, 22:00 UTC" in upcoming and "4 Mar, 01:00 UTC" in upcoming  # the window, its zone named
    assert "3 h" in upcoming and "In 1 d 7 h" in upcoming and "Starts automatically" in upcoming
    assert "Old job" in recent and "Cancelled" in recent and "Database upgrade" not in recent
    assert "Times are in UTC." in html


def test_it_shows_windows_in_the_display_time_zone(staff_client: Client, window: Maintenance, settings: Any) -> None:
    settings.DISPLAY_TIME_ZONE = "Europe/Berlin"

    listing = text(staff_client.get("/manage/maintenance/"))
    page = text(staff_client.get(f"/manage/maintenance/{window.pk}"))

    assert "3 Mar, 23:00 CET" in listing and "4 Mar, 02:00 CET" in listing
    assert "Times are in Europe/Berlin." in listing
    assert "3 Mar, 23:00 CET" in page
    # The reschedule form shows the window as wall-clock times in that zone, and says which zone.
    assert 'value="2026-03-03T23:00"' in page and 'value="2026-03-04T02:00"' in page
    assert "In Europe/Berlin." in page


def test_it_reads_the_list_in_a_fixed_number_of_queries(staff_client: Client, staff: User, web: Component) -> None:
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert staff_client.get("/manage/maintenance/").status_code == 200
        return len(captured)

    def add_one_of_each(count: int) -> None:
        for number in range(count * 3):
            maintenance = actions.schedule_maintenance(
                actor=staff, title=f"W{number}", scheduled_for=START, scheduled_until=END, components=[web]
            )
            if number % 3 == 1:
                actions.start_maintenance(maintenance, actor=staff)
            elif number % 3 == 2:
                actions.cancel_maintenance(maintenance, actor=staff)

    add_one_of_each(1)  # upcoming, active and recent
    before = queries()
    add_one_of_each(4)
    assert queries() == before


# --- the dashboard panel ------------------------------------------------------------------------


def test_it_loads_a_maintenance_panel_into_the_dashboard(
    staff_client: Client, staff: User, started: Maintenance
) -> None:
    upcoming = actions.schedule_maintenance(
        actor=staff, title="Next week", scheduled_for=END + timedelta(days=7), scheduled_until=END + timedelta(days=8)
    )
    past = actions.schedule_maintenance(actor=staff, title="Called off", scheduled_for=START, scheduled_until=END)
    actions.cancel_maintenance(past, actor=staff)

    dashboard = text(staff_client.get("/manage/"))
    placeholder = dashboard.split('id="maintenance-panel"')[1].split("</section>")[0]
    assert 'hx-get="/manage/maintenance/panel" hx-trigger="load, every 30s"' in placeholder
    assert 'href="/manage/maintenance/"' in placeholder  # without JavaScript, a link to the list

    response = staff_client.get("/manage/maintenance/panel", headers=HTMX)
    panel = text(response)
    assert panel.lstrip().startswith('<section id="maintenance-panel"')
    assert 'hx-trigger="every 30s"' in panel  # polls on, but does not reload itself on load
    assert "<html" not in panel
    assert f'href="/manage/maintenance/{started.pk}">Database upgrade</a>' in panel
    assert f'href="/manage/maintenance/{upcoming.pk}">Next week</a>' in panel
    assert "In progress" in panel and "Called off" not in panel


def test_it_keeps_the_panel_short_and_its_queries_fixed(staff_client: Client, staff: User, web: Component) -> None:
    def panel() -> tuple[int, str]:
        with CaptureQueriesContext(connection) as captured:
            response = staff_client.get("/manage/maintenance/panel", headers=HTMX)
        return len(captured), text(response)

    actions.schedule_maintenance(actor=staff, title="W0", scheduled_for=START, scheduled_until=END, components=[web])
    queries, _ = panel()
    for number in range(1, 8):
        actions.schedule_maintenance(
            actor=staff,
            title=f"W{number}",
            scheduled_for=START + timedelta(hours=number),
            scheduled_until=END + timedelta(days=1),
        )
    more_queries, html = panel()

    assert more_queries == queries
    assert re.findall(r">(W\d)</a>", html) == ["W0", "W1", "W2", "W3", "W4"]
    assert "And 3 more upcoming" in html


# --- scheduling ---------------------------------------------------------------------------------


def test_it_offers_components_as_checkboxes_under_their_groups(
    staff_client: Client, api: Component, web: Component
) -> None:
    html = text(staff_client.get("/manage/maintenance/new"))

    assert 'type="datetime-local" name="scheduled_for"' in html
    assert html.count("In UTC.") == 2  # next to the start and the end
    assert re.search(rf'<legend>Platform</legend>.*?value="{api.pk}"', html, re.S)
    assert f'type="checkbox" name="components" value="{web.pk}"' in html
    assert f'value="{api.group_id}"' not in html  # a group is a heading, not a choice
    assert re.search(r'name="auto_start"[^>]*checked', html) and re.search(r'name="auto_complete"[^>]*checked', html)


def test_it_schedules_a_window_from_the_form(staff_client: Client, staff: User, api: Component, web: Component) -> None:
    response = staff_client.post("/manage/maintenance/new", {**SCHEDULE, "components": [api.pk, web.pk]})

    maintenance = Maintenance.objects.get(title="Search reindex")
    assert response.status_code == 303
    assert response["Location"] == f"/manage/maintenance/{maintenance.pk}"
    assert maintenance.scheduled_for == datetime(2026, 3, 5, 22, 0, tzinfo=UTC)
    assert maintenance.scheduled_until == datetime(2026, 3, 6, 0, 30, tzinfo=UTC)
    assert (maintenance.auto_start, maintenance.auto_complete, maintenance.created_by) == (True, False, staff)
    assert set(maintenance.components.all()) == {api, web}
    assert maintenance.updates.get().body == "Search may return *stale* results."
    assert (status_of(api), status_of(web)) == ("degraded_performance", "operational")  # not started yet

    page = flash_after(staff_client, response)
    assert "Scheduled: Search reindex" in page
    assert "Search may return <em>stale</em> results." in page
    assert "alice scheduled maintenance from 05 Mar 2026 22:00 UTC to 06 Mar 2026 00:30 UTC" in page


def test_it_reads_the_times_in_the_display_time_zone(staff_client: Client, settings: Any) -> None:
    settings.DISPLAY_TIME_ZONE = "Europe/Berlin"

    assert text(staff_client.get("/manage/maintenance/new")).count("In Europe/Berlin.") == 2
    response = staff_client.post("/manage/maintenance/new", SCHEDULE)

    assert response.status_code == 303
    maintenance = Maintenance.objects.get()
    assert maintenance.scheduled_for == datetime(2026, 3, 5, 21, 0, tzinfo=UTC)  # 22:00 CET
    assert "5 Mar, 22:00 CET" in text(staff_client.get(response["Location"]))


def test_it_refuses_a_time_the_clocks_skip(staff_client: Client, settings: Any) -> None:
    settings.DISPLAY_TIME_ZONE = "Europe/Berlin"
    data = {**SCHEDULE, "scheduled_for": "2026-03-29T02:30", "scheduled_until": "2026-10-25T02:30"}

    html = text(staff_client.post("/manage/maintenance/new", data))

    assert errors_of(html, "id_scheduled_for") == (
        "29 Mar 2026 02:30 does not exist in Europe/Berlin: the clocks skip it. Choose another time."
    )
    assert errors_of(html, "id_scheduled_until") == (
        "25 Oct 2026 02:30 happens twice in Europe/Berlin: the clocks go back. Choose a time an hour apart."
    )
    assert not Maintenance.objects.exists()


def test_it_shows_an_end_before_the_start_next_to_the_end(staff_client: Client) -> None:
    data = {**SCHEDULE, "scheduled_until": "2026-03-05T21:00"}

    response = staff_client.post("/manage/maintenance/new", data)

    html = text(response)
    assert response.status_code == 422
    assert errors_of(html, "id_scheduled_until") == "The window must end after it starts."
    assert 'value="Search reindex"' in html  # what was typed is kept
    assert not Maintenance.objects.exists()


def test_it_shows_missing_and_malformed_fields(staff_client: Client) -> None:
    response = staff_client.post("/manage/maintenance/new", {"title": " ", "scheduled_for": "tomorrow"})

    html = text(response)
    assert response.status_code == 422
    assert errors_of(html, "id_title") == "This field is required."
    assert errors_of(html, "id_scheduled_for") == "Enter a date and time, e.g. 2026-03-14T22:00."
    assert errors_of(html, "id_scheduled_until") == "This field is required."
    assert 'aria-invalid="true"' in html


def test_it_rejects_a_group_as_a_component(staff_client: Client, api: Component) -> None:
    response = staff_client.post("/manage/maintenance/new", {**SCHEDULE, "components": [api.group_id, api.pk]})

    assert response.status_code == 422
    assert errors_of(text(response), "id_components") == "Platform is a group; choose its components instead."

    response = staff_client.post("/manage/maintenance/new", {**SCHEDULE, "components": ["999999"]})
    assert response.status_code == 422
    assert "Select a valid choice" in errors_of(text(response), "id_components")
    assert not Maintenance.objects.exists()


# --- the window's page --------------------------------------------------------------------------


def test_it_shows_details_updates_newest_first_and_the_timeline(
    staff_client: Client, staff: User, window: Maintenance
) -> None:
    with time_machine.travel(T0 + timedelta(hours=1), tick=False):
        actions.post_maintenance_update(window, actor=staff, body="Still on for tonight.")
    with time_machine.travel(T0 + timedelta(hours=2), tick=False):
        html = text(staff_client.get(f"/manage/maintenance/{window.pk}"))

    header = html.split('id="maintenance-header"')[1].split("</section>")[0]
    assert "Database upgrade" in header and "Scheduled" in header
    assert "3 Mar, 22:00 UTC" in header and "4 Mar, 01:00 UTC" in header and "3 h" in header
    assert "Automatically, in 1 d 5 h" in header
    assert "Platform - Query API" in header and "Degraded performance" in header and "Web app" in header
    assert "Start now" in header
    updates = html.split('id="updates"')[1].split("</section>")[0]
    assert updates.index("Still on for tonight.") < updates.index("We upgrade the <strong>database</strong>.")
    timeline = html.split('id="timeline"')[1].split("</section>")[0]
    assert "alice scheduled maintenance from 03 Mar 2026 22:00 UTC to 04 Mar 2026 01:00 UTC" in timeline
    assert "alice posted an update (scheduled)" in timeline
    assert "2 Mar 2026, 15:05:00 UTC" in timeline


def test_it_escapes_titles(staff_client: Client, staff: User) -> None:
    maintenance = actions.schedule_maintenance(
        actor=staff, title="<script>alert(1)</script>", scheduled_for=START, scheduled_until=END
    )

    html = text(staff_client.get(f"/manage/maintenance/{maintenance.pk}"))

    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_it_reads_the_page_in_a_fixed_number_of_queries(
    staff_client: Client, staff: User, other_staff: User, window: Maintenance
) -> None:
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert staff_client.get(f"/manage/maintenance/{window.pk}").status_code == 200
        return len(captured)

    before = queries()
    window = actions.start_maintenance(window, actor=other_staff)
    for number in range(5):
        actions.post_maintenance_update(window, actor=staff if number % 2 else other_staff, body=f"Step {number}")
    assert queries() == before


def test_it_polls_the_header_with_updates_and_timeline_out_of_band(staff_client: Client, window: Maintenance) -> None:
    response = staff_client.get(f"/manage/maintenance/{window.pk}", headers=HTMX)

    html = text(response)
    assert html.lstrip().startswith('<section id="maintenance-header"')
    assert oob_parts(html) == {"updates", "timeline"}  # the forms are left alone: someone may be typing
    assert "<html" not in html
    assert "HX-Request" in response["Vary"]


# --- start and complete -------------------------------------------------------------------------


def test_it_starts_without_javascript(
    staff_client: Client, window: Maintenance, api: Component, web: Component
) -> None:
    page = flash_after(staff_client, staff_client.post(f"/manage/maintenance/{window.pk}/start"))

    window.refresh_from_db()
    assert (window.status, window.started_at) == ("in_progress", T0)
    assert (status_of(api), status_of(web)) == ("under_maintenance", "under_maintenance")
    assert "Started: the components are under maintenance." in page
    assert "Complete now" in page and "Start now" not in page
    assert "Platform - Query API: Degraded performance" in page  # the change, on the update


def test_it_starts_with_htmx(staff_client: Client, window: Maintenance, api: Component) -> None:
    response = staff_client.post(f"/manage/maintenance/{window.pk}/start", headers=HTMX)

    html = text(response)
    assert response.status_code == 200
    assert html.lstrip().startswith('<section id="maintenance-header"')
    assert oob_parts(html) == {"update-form", "updates", "timeline", "reschedule-form", "cancel-form", "messages"}
    assert "alice started the maintenance" in html
    assert "It has started: complete it instead of cancelling." in html  # the cancel form, out of band
    assert status_of(api) == "under_maintenance"


def test_it_explains_starting_twice(staff_client: Client, started: Maintenance) -> None:
    page = flash_after(staff_client, staff_client.post(f"/manage/maintenance/{started.pk}/start"))
    assert "This maintenance has already started." in page

    response = staff_client.post(f"/manage/maintenance/{started.pk}/start", headers=HTMX)
    assert response.status_code == 422
    assert '<p class="form-errors" role="alert">This maintenance has already started.</p>' in text(response)
    assert started.events.filter(kind="maintenance_started").count() == 1


def test_it_completes_and_restores_the_components(
    staff_client: Client, started: Maintenance, api: Component, web: Component
) -> None:
    assert (status_of(api), status_of(web)) == ("under_maintenance", "under_maintenance")

    with time_machine.travel(T0 + timedelta(hours=2), tick=False):
        page = flash_after(staff_client, staff_client.post(f"/manage/maintenance/{started.pk}/complete"))

    started.refresh_from_db()
    assert (started.status, started.completed_at) == ("completed", T0 + timedelta(hours=2))
    assert (status_of(api), status_of(web)) == ("degraded_performance", "operational")  # as before the start
    assert "Completed: the components have their status back." in page
    assert "updates can no longer be posted" in page and "This maintenance is over" in page


def test_it_completes_with_htmx(staff_client: Client, started: Maintenance, web: Component) -> None:
    response = staff_client.post(f"/manage/maintenance/{started.pk}/complete", headers=HTMX)

    html = text(response)
    assert response.status_code == 200
    assert html.lstrip().startswith('<section id="maintenance-header"')
    assert "Completed" in html and "Complete now" not in html
    assert "alice completed the maintenance" in html
    assert status_of(web) == "operational"


def test_it_explains_completing_a_window_that_has_not_started(
    staff_client: Client, window: Maintenance, web: Component
) -> None:
    page = flash_after(staff_client, staff_client.post(f"/manage/maintenance/{window.pk}/complete"))
    assert "This maintenance has not started; start it or cancel it." in page

    response = staff_client.post(f"/manage/maintenance/{window.pk}/complete", headers=HTMX)
    assert response.status_code == 422
    assert "This maintenance has not started; start it or cancel it." in text(response)
    window.refresh_from_db()
    assert window.status == "scheduled"


def test_it_leaves_a_component_an_incident_changed_meanwhile(
    staff_client: Client, staff: User, started: Maintenance, web: Component
) -> None:
    factories.declare(actor=staff, components={web: "major_outage"})

    staff_client.post(f"/manage/maintenance/{started.pk}/complete")

    assert status_of(web) == "major_outage"


# --- updates ------------------------------------------------------------------------------------


def test_it_posts_an_update_without_javascript(staff_client: Client, started: Maintenance) -> None:
    data = {"status": "verifying", "body": "Checking *replication*."}

    page = flash_after(staff_client, staff_client.post(f"/manage/maintenance/{started.pk}/update", data))

    started.refresh_from_db()
    assert started.status == "verifying"
    assert "Update posted." in page and "Checking <em>replication</em>." in page


def test_it_posts_an_update_with_htmx(staff_client: Client, started: Maintenance) -> None:
    data = {"status": "in_progress", "body": "Half way."}

    response = staff_client.post(f"/manage/maintenance/{started.pk}/update", data, headers=HTMX)

    html = text(response)
    assert response.status_code == 200
    assert html.lstrip().startswith('<section id="update-form"')
    assert "Half way.</textarea>" not in html  # a fresh form for the next update
    assert "maintenance-header" in oob_parts(html) and "updates" in oob_parts(html)
    assert "<p>Half way.</p>" in html


def test_it_starts_and_completes_through_updates(staff_client: Client, window: Maintenance, web: Component) -> None:
    staff_client.post(f"/manage/maintenance/{window.pk}/update", {"status": "in_progress", "body": "Going."})
    assert status_of(web) == "under_maintenance"

    staff_client.post(f"/manage/maintenance/{window.pk}/update", {"status": "completed", "body": "Done."})
    window.refresh_from_db()
    assert (window.status, status_of(web)) == ("completed", "operational")
    assert [update.body for update in window.updates.all()][:2] == ["Done.", "Going."]


def test_it_shows_update_errors_next_to_the_field(staff_client: Client, window: Maintenance) -> None:
    for headers in ({}, HTMX):
        response = staff_client.post(
            f"/manage/maintenance/{window.pk}/update", {"status": "verifying", "body": " "}, headers=headers
        )
        assert response.status_code == 422
        assert errors_of(text(response), "update-body") == "This field is required."

    response = staff_client.post(
        f"/manage/maintenance/{window.pk}/update", {"status": "verifying", "body": "Checking"}, headers=HTMX
    )
    assert response.status_code == 422
    assert errors_of(text(response), "update-status") == "Start the maintenance before verifying it."
    assert "Checking</textarea>" in text(response)

    response = staff_client.post(f"/manage/maintenance/{window.pk}/update", {"status": "scheduled", "body": "x"})
    assert response.status_code == 422
    assert "Select a valid choice" in errors_of(text(response), "update-status")
    assert window.updates.count() == 1


def test_it_explains_an_update_on_a_completed_window(staff_client: Client, completed: Maintenance) -> None:
    data = {"status": "verifying", "body": "One more thing"}

    page = refused_page(staff_client.post(f"/manage/maintenance/{completed.pk}/update", data))
    assert '<div class="form-errors" role="alert"><p>This maintenance is over; updates' in page
    assert "One more thing</textarea>" in page

    response = staff_client.post(f"/manage/maintenance/{completed.pk}/update", data, headers=HTMX)
    html = text(response)
    assert response.status_code == 422
    assert '<div class="form-errors" role="alert"><p>This maintenance is over; updates' in html
    assert "One more thing</textarea>" in html
    assert completed.updates.count() == 3


# --- reschedule ---------------------------------------------------------------------------------


def test_it_reschedules_without_javascript(staff_client: Client, window: Maintenance) -> None:
    data = {"scheduled_for": "2026-03-04T22:00", "scheduled_until": "2026-03-05T02:00", "message": ""}

    page = flash_after(staff_client, staff_client.post(f"/manage/maintenance/{window.pk}/reschedule", data))

    window.refresh_from_db()
    assert (window.scheduled_for, window.scheduled_until, window.sequence) == (
        START + timedelta(days=1),
        END + timedelta(days=1, hours=1),
        1,
    )
    assert window.next_action_at == window.scheduled_for
    assert "Rescheduled." in page
    assert "Rescheduled: now from 04 Mar 2026 22:00 UTC to 05 Mar 2026 02:00 UTC." in page


def test_it_reschedules_with_htmx(staff_client: Client, window: Maintenance) -> None:
    data = {"scheduled_for": "2026-03-03T23:00", "scheduled_until": "2026-03-04T01:00", "message": "An hour later."}

    response = staff_client.post(f"/manage/maintenance/{window.pk}/reschedule", data, headers=HTMX)

    html = text(response)
    assert response.status_code == 200
    assert html.lstrip().startswith('<section id="reschedule-form"')
    assert 'value="2026-03-03T23:00"' in html
    assert "<p>An hour later.</p>" in html
    assert "alice rescheduled the maintenance" in html


def test_it_moves_only_the_end_of_a_started_window(staff_client: Client, started: Maintenance) -> None:
    html = text(staff_client.get(f"/manage/maintenance/{started.pk}"))
    assert re.search(r'name="scheduled_for" value="2026-03-03T22:00"[^>]*readonly', html)

    data = {"scheduled_for": "2026-03-03T20:00", "scheduled_until": "2026-03-04T03:00"}
    for headers in ({}, HTMX):
        response = staff_client.post(f"/manage/maintenance/{started.pk}/reschedule", data, headers=headers)
        assert response.status_code == 422
        message = errors_of(text(response), "reschedule-scheduled_for")
        assert message == "The maintenance has started; only its end can move."

    data["scheduled_for"] = "2026-03-03T22:00"
    assert staff_client.post(f"/manage/maintenance/{started.pk}/reschedule", data).status_code == 303
    started.refresh_from_db()
    assert started.scheduled_until == datetime(2026, 3, 4, 3, 0, tzinfo=UTC)


def test_it_explains_rescheduling_a_finished_window(staff_client: Client, completed: Maintenance) -> None:
    data = {"scheduled_for": "2026-03-04T22:00", "scheduled_until": "2026-03-05T02:00"}

    page = refused_page(staff_client.post(f"/manage/maintenance/{completed.pk}/reschedule", data))
    assert "This maintenance is over; schedule a new one instead." in page
    assert 'value="2026-03-04T22:00"' in page

    response = staff_client.post(f"/manage/maintenance/{completed.pk}/reschedule", data, headers=HTMX)
    html = text(response)
    assert response.status_code == 422
    assert html.lstrip().startswith('<section id="reschedule-form"')
    assert "This maintenance is over; schedule a new one instead." in html
    assert 'value="2026-03-04T22:00"' in html  # what was typed is kept
    completed.refresh_from_db()
    assert completed.scheduled_for == START


def test_it_explains_a_reschedule_that_changes_nothing(staff_client: Client, window: Maintenance) -> None:
    data = {"scheduled_for": "2026-03-03T22:00", "scheduled_until": "2026-03-04T01:00"}

    page = refused_page(staff_client.post(f"/manage/maintenance/{window.pk}/reschedule", data))
    assert '<div class="form-errors" role="alert"><p>Nothing changed.</p></div>' in page

    # With htmx only the reschedule form answers: the update and cancel forms keep what was typed.
    response = staff_client.post(f"/manage/maintenance/{window.pk}/reschedule", data, headers=HTMX)
    html = text(response)
    assert response.status_code == 422
    assert html.lstrip().startswith('<section id="reschedule-form"')
    assert '<div class="form-errors" role="alert"><p>Nothing changed.</p></div>' in html
    assert "hx-swap-oob" not in html


# --- cancel -------------------------------------------------------------------------------------


def test_it_cancels_without_javascript(staff_client: Client, window: Maintenance, web: Component) -> None:
    data = {"reason": "The vendor postponed."}

    page = flash_after(staff_client, staff_client.post(f"/manage/maintenance/{window.pk}/cancel", data))

    window.refresh_from_db()
    assert (window.cancelled_at, window.next_action_at) == (T0, None)
    assert status_of(web) == "operational"
    assert "Cancelled." in page and "The vendor postponed." in page
    assert "alice cancelled the maintenance: The vendor postponed." in page
    assert "Start now" not in page


def test_it_cancels_with_htmx(staff_client: Client, window: Maintenance) -> None:
    response = staff_client.post(f"/manage/maintenance/{window.pk}/cancel", {"reason": ""}, headers=HTMX)

    html = text(response)
    assert response.status_code == 200
    assert html.lstrip().startswith('<section id="cancel-form"')
    assert "This maintenance has been cancelled." in html  # the default notice
    assert "updates can no longer be posted" in html  # the update form, out of band


def test_a_cancel_reason_of_only_spaces_is_an_error_not_the_default_notice(
    staff_client: Client, window: Maintenance
) -> None:
    response = staff_client.post(f"/manage/maintenance/{window.pk}/cancel", {"reason": "   "}, headers=HTMX)

    assert response.status_code == 422
    assert errors_of(text(response), "cancel-reason") == "This is only spaces: write something, or leave it empty."
    window.refresh_from_db()
    assert window.cancelled_at is None


def test_it_explains_cancelling_a_started_window(staff_client: Client, started: Maintenance) -> None:
    data = {"reason": "Too late"}

    page = refused_page(staff_client.post(f"/manage/maintenance/{started.pk}/cancel", data))
    assert "This maintenance has started; complete it instead of cancelling." in page
    assert "Too late</textarea>" in page

    response = staff_client.post(f"/manage/maintenance/{started.pk}/cancel", data, headers=HTMX)
    html = text(response)
    assert response.status_code == 422
    assert html.lstrip().startswith('<section id="cancel-form"')
    assert "This maintenance has started; complete it instead of cancelling." in html
    started.refresh_from_db()
    assert started.cancelled_at is None


def test_it_explains_cancelling_twice(staff_client: Client, staff: User, window: Maintenance) -> None:
    actions.cancel_maintenance(window, actor=staff)

    response = staff_client.post(f"/manage/maintenance/{window.pk}/cancel", {"reason": ""}, headers=HTMX)

    assert response.status_code == 422
    assert "This maintenance is already cancelled." in text(response)


# --- the sweep ----------------------------------------------------------------------------------


def test_it_starts_and_completes_on_time_through_the_sweep(
    staff_client: Client, window: Maintenance, api: Component, web: Component
) -> None:
    with time_machine.travel(START - timedelta(seconds=1), tick=False):
        clocks.sweep_due()  # only the reminder an hour ahead: the window does not start yet
    window.refresh_from_db()
    assert (window.status, status_of(web)) == ("scheduled", "operational")

    with time_machine.travel(START, tick=False):
        assert clocks.sweep_due() == 1
        page = text(staff_client.get(f"/manage/maintenance/{window.pk}"))
    window.refresh_from_db()
    assert (window.status, window.started_at) == ("in_progress", START)
    assert (status_of(api), status_of(web)) == ("under_maintenance", "under_maintenance")
    assert "automatic ·" in page and "system started the maintenance" in page

    with time_machine.travel(END, tick=False):
        assert clocks.sweep_due() == 1
        assert clocks.sweep_due() == 0  # each step happens once
    window.refresh_from_db()
    assert (window.status, window.completed_at) == ("completed", END)
    assert (status_of(api), status_of(web)) == ("degraded_performance", "operational")
    kinds = list(TimelineEvent.objects.filter(maintenance=window).values_list("kind", flat=True))
    assert kinds == ["maintenance_scheduled", "maintenance_started", "maintenance_completed"]


def test_it_leaves_a_manual_window_to_the_staff(staff_client: Client, staff: User, web: Component) -> None:
    response = staff_client.post(
        "/manage/maintenance/new",
        {**SCHEDULE, "components": [web.pk], "auto_start": "", "auto_complete": ""},
    )
    maintenance = Maintenance.objects.get(pk=int(response["Location"].rsplit("/", 1)[1]))

    with time_machine.travel(maintenance.scheduled_until + timedelta(hours=1), tick=False):
        assert clocks.sweep_due() == 0
        page = text(staff_client.get(response["Location"]))
        assert "Start it by hand" in page and "Complete it by hand" in page
    assert (Maintenance.objects.get().status, status_of(web)) == ("scheduled", "operational")


@pytest.mark.parametrize(
    ("field", "value"), [("scheduled_for", "1999-12-01T22:00"), ("scheduled_until", "2150-01-01T00:30")]
)
def test_it_keeps_windows_in_the_years_the_api_takes(staff_client: Client, field: str, value: str) -> None:
    response = staff_client.post("/manage/maintenance/new", {**SCHEDULE, field: value})

    assert response.status_code == 422
    assert errors_of(text(response), f"id_{field}") == "Choose a time from the year 2000 to 2099."
    assert not Maintenance.objects.exists()
