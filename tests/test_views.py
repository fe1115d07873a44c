"""The on-call staff UI: personas, declaring, every incident action with and without htmx, refusals.

Without htmx an action answers 303 to the incident page (a refusal as a flash message), and a form
with errors re-renders the whole page with 422 and the errors next to their fields. With htmx
(HX-Request) the same URLs answer with template partials: 200 on success, 422 on errors or refusals.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import time_machine
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from incidents import actions
from incidents.models import Component, Incident, IncidentTemplate
from incidents.templatetags.incident_ui import display_datetime, display_time, duration, percent
from tests import factories

T0 = datetime(2026, 3, 2, 14, 5, tzinfo=UTC)
HTMX = {"HX-Request": "true"}
pytestmark = pytest.mark.django_db


@pytest.fixture
def api(staff: User) -> Component:
    group = factories.make_component(name="Platform", is_group=True, actor=staff)
    return factories.make_component(name="Query API", group=group, actor=staff)


@pytest.fixture
def web(staff: User) -> Component:
    return factories.make_component(name="Web app", actor=staff)


@pytest.fixture
def incident(staff: User, api: Component) -> Incident:
    return factories.declare(
        actor=staff, title="Queries are slow", components={api: "partial_outage"}, customer_impact_percent="25"
    )


@pytest.fixture
def resolved(staff: User, incident: Incident) -> Incident:
    return actions.resolve_incident(incident, actor=staff)


def text(response: object) -> str:
    content: bytes = response.content  # type: ignore[attr-defined]
    return content.decode()


def errors_of(html: str, field_id: str) -> str:
    """The text of the error list tied to a field (id="<field id>_error")."""
    match = re.search(rf'id="{re.escape(field_id)}_error"[^>]*>(.*?)</ul>', html, re.S)
    assert match, f"no errors shown next to {field_id}"
    return re.sub(r"<[^>]+>", "", match.group(1)).strip()


def post_urls(incident: Incident) -> list[str]:
    base = f"/manage/incidents/{incident.pk}"
    return [
        f"{base}/acknowledge",
        f"{base}/update",
        f"{base}/severity",
        f"{base}/scope",
        f"{base}/commander",
        f"{base}/resolve",
        f"{base}/reopen",
        "/manage/incidents/new",
    ]


def page_urls(incident: Incident) -> list[str]:
    return ["/manage/", "/manage/incidents/new", f"/manage/incidents/{incident.pk}"]


# --- personas -----------------------------------------------------------------------------------


def test_it_shows_every_page_to_staff(staff_client: Client, incident: Incident) -> None:
    for url in page_urls(incident):
        assert staff_client.get(url).status_code == 200, url


def test_it_sends_anonymous_visitors_to_the_login_page(client: Client, incident: Incident) -> None:
    for url in page_urls(incident) + post_urls(incident):
        response = client.post(url) if url in post_urls(incident) else client.get(url)
        assert response.status_code == 302, url
        assert response["Location"] == f"/login/?next={url}"


def test_it_redirects_an_anonymous_htmx_poll_with_hx_redirect(client: Client) -> None:
    response = client.get("/manage/", headers={**HTMX, "HX-Current-URL": "http://testserver/manage/"})

    assert response.status_code == 200
    assert response["HX-Redirect"] == "/login/?next=/manage/"


def test_it_forbids_logged_in_non_staff(outsider_client: Client, incident: Incident) -> None:
    for url in page_urls(incident):
        assert outsider_client.get(url).status_code == 403, url
    for url in post_urls(incident):
        assert outsider_client.post(url, {"reason": "x", "body": "x"}).status_code == 403, url
    incident.refresh_from_db()
    assert incident.acknowledged_at is None
    assert incident.updates.count() == 1


def test_it_answers_every_post_endpoint_for_staff(staff_client: Client, incident: Incident) -> None:
    base = f"/manage/incidents/{incident.pk}"
    assert staff_client.post(f"{base}/acknowledge").status_code == 303
    response = staff_client.post(
        f"{base}/update", {"public_status": "identified", "body": "Found", "visibility": "public"}
    )
    assert response.status_code == 303
    assert staff_client.post(f"{base}/severity", {"severity": factories.severity("sev2").pk}).status_code == 303
    assert staff_client.post(f"{base}/scope", {"customer_impact_percent": "30"}).status_code == 303
    assert staff_client.post(f"{base}/resolve", {"visibility": "public"}).status_code == 303
    assert staff_client.post(f"{base}/reopen", {"reason": "It came back"}).status_code == 303
    response = staff_client.post(
        "/manage/incidents/new",
        {
            "title": "Other",
            "severity": factories.severity("sev3").pk,
            "public_status": "investigating",
            "message_visibility": "public",
        },
    )
    assert response.status_code == 303


def test_it_refuses_get_on_action_urls(staff_client: Client, incident: Incident) -> None:
    assert staff_client.get(f"/manage/incidents/{incident.pk}/acknowledge").status_code == 405


def test_it_answers_404_for_an_unknown_incident(staff_client: Client) -> None:
    assert staff_client.get("/manage/incidents/999999").status_code == 404
    assert staff_client.post("/manage/incidents/999999/acknowledge").status_code == 404


# --- dashboard ----------------------------------------------------------------------------------


def test_it_lists_open_and_recently_resolved_incidents(staff_client: Client, staff: User, api: Component) -> None:
    with time_machine.travel(T0, tick=False):
        open_one = factories.declare(
            actor=staff,
            title="Checkout fails",
            components={api: "major_outage"},
            customer_impact_percent="12.5",
            regions="eu-west, us-east",
        )
        done = factories.declare(actor=staff, title="Old blip", severity_key="sev3")
        actions.resolve_incident(done, actor=staff)
    with time_machine.travel(T0 + timedelta(hours=2, minutes=30), tick=False):
        response = staff_client.get("/manage/")

    html = text(response)
    open_part, resolved_part = html.split("Recently resolved")
    assert "Checkout fails" in open_part and "Old blip" not in open_part
    assert "Old blip" in resolved_part
    assert f'href="/manage/incidents/{open_one.pk}"' in open_part
    assert "SEV1" in open_part
    assert "Investigating" in open_part
    assert "Commander alice" in open_part
    assert "Critical" in open_part
    assert "12.5% of customers" in open_part
    assert "eu-west, us-east" in open_part
    assert "Open for 2 h 30 min" in open_part
    assert response["Vary"].count("HX-Request") == 1


def test_it_caps_the_recently_resolved_list(staff_client: Client, staff: User) -> None:
    for number in range(21):
        # SEV3: no post-mortem, so the follow-up panel does not name them too.
        actions.resolve_incident(
            factories.declare(actor=staff, title=f"Blip {number:02}", severity_key="sev3"), actor=staff
        )

    html = text(staff_client.get("/manage/"))

    assert html.count("Blip ") == 20
    assert "Blip 00" not in html  # the oldest resolution falls off


def test_it_gives_htmx_polls_the_list_fragment(staff_client: Client, incident: Incident) -> None:
    response = staff_client.get("/manage/", headers=HTMX)

    html = text(response)
    assert response.status_code == 200
    assert html.lstrip().startswith('<div id="open-incidents"')
    assert 'hx-trigger="every 10s"' in html
    assert "<html" not in html
    assert "Queries are slow" in html
    assert "HX-Request" in response["Vary"]


def test_it_gives_a_history_restore_the_whole_page(staff_client: Client, incident: Incident) -> None:
    response = staff_client.get("/manage/", headers={**HTMX, "HX-History-Restore-Request": "true"})

    assert "<html" in text(response)


def count_level(html: str, level: str) -> int:
    return len(re.findall(rf'class="countdown countdown--{level}"', html))


def test_it_colours_countdowns_by_how_close_the_target_is(staff_client: Client, staff: User) -> None:
    # SEV1: acknowledge within 5 min, resolve within 4 h (the first public update is posted at once).
    with time_machine.travel(T0, tick=False):
        incident = factories.declare(actor=staff, title="Clocks")

    with time_machine.travel(T0 + timedelta(minutes=1), tick=False):
        html = text(staff_client.get("/manage/"))
    ack_cell = html.split('data-due-at="2026-03-02T14:10:00Z"')[0].rsplit("<td>", 1)[1]
    assert "countdown--ok" in ack_cell
    assert count_level(html, "warning") == count_level(html, "breached") == 0

    with time_machine.travel(T0 + timedelta(minutes=4), tick=False):  # 80% of the 5 min target
        html = text(staff_client.get("/manage/"))
    assert count_level(html, "warning") == 1
    assert "1 min" in html and "due soon" in html

    with time_machine.travel(T0 + timedelta(minutes=6, seconds=30), tick=False):
        html = text(staff_client.get("/manage/"))
        page = text(staff_client.get(f"/manage/incidents/{incident.pk}"))
    assert count_level(html, "breached") == 1
    assert "1 min 30 s" in html and "overdue" in html
    assert count_level(page, "breached") == 1
    assert 'data-due-at="2026-03-02T14:10:00Z"' in page
    assert 'data-warn-at="2026-03-02T14:08:45Z"' in page


def test_it_renders_the_remaining_time_without_javascript(staff_client: Client, staff: User) -> None:
    with time_machine.travel(T0, tick=False):
        factories.declare(actor=staff, title="Clocks")
    with time_machine.travel(T0 + timedelta(seconds=55), tick=False):
        html = text(staff_client.get("/manage/"))

    # Acknowledge 5 min, next update 30 min (cadence after the first public update), resolve 4 h.
    assert '<span class="countdown__time">4 min 5 s</span>' in html
    assert '<span class="countdown__time">29 min 5 s</span>' in html
    assert '<span class="countdown__time">3 h 59 min</span>' in html


# --- declaring ----------------------------------------------------------------------------------


def test_it_declares_an_incident_from_the_form(
    staff_client: Client, staff: User, api: Component, web: Component
) -> None:
    response = staff_client.post(
        "/manage/incidents/new",
        {
            "title": "Search is down",
            "severity": factories.severity("sev2").pk,
            "public_status": "identified",
            f"component-{api.pk}": "major_outage",
            f"component-{web.pk}": "",
            "customer_impact_percent": "40",
            "regions": "eu-west, us-east",
            "message": "We found a **bad deploy**.",
            "message_visibility": "internal",
        },
    )

    incident = Incident.objects.get(title="Search is down")
    assert response.status_code == 303
    assert response["Location"] == f"/manage/incidents/{incident.pk}"
    assert incident.severity.key == "sev2"
    assert incident.declared_by == staff
    assert str(incident.customer_impact_percent) == "40.00"
    assert incident.regions == ["eu-west", "us-east"]
    assert list(incident.components.all()) == [api]
    api.refresh_from_db()
    web.refresh_from_db()
    assert (api.status, web.status) == ("major_outage", "operational")
    update = incident.updates.get()
    assert (update.is_public, update.body_html) == (False, "<p>We found a <strong>bad deploy</strong>.</p>\n")
    assert incident.published_at is None  # the first message was internal

    page = text(staff_client.get(response["Location"]))
    assert "Declared SEV2: Search is down" in page  # the flash message
    assert "<strong>bad deploy</strong>" in page


def test_it_shows_declaration_errors_next_to_their_fields(staff_client: Client) -> None:
    response = staff_client.post(
        "/manage/incidents/new",
        {"title": "", "severity": factories.severity().pk, "customer_impact_percent": "150", "public_status": "x"},
    )

    html = text(response)
    assert response.status_code == 422
    assert errors_of(html, "id_title") == "This field is required."
    assert errors_of(html, "id_customer_impact_percent") == "Ensure this value is less than or equal to 100."
    assert "Select a valid choice" in errors_of(html, "id_public_status")
    assert 'aria-invalid="true"' in html
    assert not Incident.objects.exists()


def test_it_refuses_an_unknown_component_with_a_field_error(staff_client: Client, api: Component) -> None:
    data = {
        "title": "Ghost",
        "severity": factories.severity().pk,
        "public_status": "investigating",
        "message_visibility": "public",
    }

    response = staff_client.post("/manage/incidents/new", {**data, "component-999999": "major_outage"})
    assert response.status_code == 422
    assert errors_of(text(response), "id_components") == "There is no component with id &#x27;999999&#x27;."

    response = staff_client.post("/manage/incidents/new", {**data, "component-abc": "major_outage"})
    assert response.status_code == 422
    assert "There is no component with id" in errors_of(text(response), "id_components")

    assert api.group is not None
    response = staff_client.post("/manage/incidents/new", {**data, f"component-{api.group.pk}": "major_outage"})
    assert response.status_code == 422
    assert "Platform is a group" in errors_of(text(response), "id_components")

    response = staff_client.post("/manage/incidents/new", {**data, f"component-{api.pk}": "on_fire"})
    assert response.status_code == 422
    assert "Select a valid choice" in errors_of(text(response), f"id_component-{api.pk}")
    assert not Incident.objects.exists()


def test_it_prefills_the_form_from_a_template(staff_client: Client, api: Component, web: Component) -> None:
    template = IncidentTemplate.objects.create(
        name="Database failover",
        title="Errors after a database failover",
        severity=factories.severity("sev2"),
        message="We are looking into errors after a failover.",
        component_status="partial_outage",
    )
    template.components.set([api])

    page = text(staff_client.get("/manage/incidents/new"))
    assert f'href="?template={template.pk}"' in page

    html = text(staff_client.get(f"/manage/incidents/new?template={template.pk}"))
    assert 'value="Errors after a database failover"' in html
    assert re.search(rf'value="{template.severity_id}"[^>]*checked', html)
    assert "We are looking into errors after a failover.</textarea>" in html
    api_select = html.split(f'name="component-{api.pk}"')[1].split("</select>")[0]
    assert '<option value="partial_outage" selected>' in api_select
    web_select = html.split(f'name="component-{web.pk}"')[1].split("</select>")[0]
    assert '<option value="" selected>' in web_select
    assert staff_client.get("/manage/incidents/new?template=999999").status_code == 404


def test_it_escapes_titles_but_renders_sanitised_update_html(staff_client: Client, staff: User) -> None:
    incident = factories.declare(actor=staff, title="<script>alert(1)</script>", message="<b>raw</b> and *em*")

    html = text(staff_client.get(f"/manage/incidents/{incident.pk}"))

    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<b>raw</b>" not in html
    assert "<em>em</em>" in html


# --- the incident page --------------------------------------------------------------------------


def test_it_shows_the_incident_header_clocks_and_timeline(staff_client: Client, staff: User, api: Component) -> None:
    with time_machine.travel(T0, tick=False):
        incident = factories.declare(
            actor=staff, components={api: "partial_outage"}, customer_impact_percent="25", regions="eu-west"
        )
    with time_machine.travel(T0 + timedelta(minutes=2), tick=False):
        actions.acknowledge_incident(incident, actor=staff)
    with time_machine.travel(T0 + timedelta(minutes=3), tick=False):
        html = text(staff_client.get(f"/manage/incidents/{incident.pk}"))

    header = html.split('id="incident-header"')[1].split("</section>\n")[0]
    assert "SEV1" in header and "Investigating" in header and "Internal: acknowledged" in header
    assert "Major" in header and "25%" in header and "eu-west" in header
    assert "Platform - Query API" in header and "Partial outage" in header
    assert "Acknowledged by <strong>alice</strong>" in header
    assert "14:07 UTC" in header and "+2 min" in header  # milestone, with the time since declaration
    assert "Acknowledge</th>" in html and "Met" in html
    assert "Resolve</th>" in html and "4 h" in html and "18:05 UTC" in html
    timeline = html.split('id="timeline"')[1]
    assert "alice declared SEV1: Queries are slow" in timeline
    assert "alice acknowledged after 2 min" in timeline
    assert "2 Mar 2026, 14:07:00 UTC" in timeline


def test_it_reads_the_incident_page_in_a_fixed_number_of_queries(
    staff_client: Client, staff: User, other_staff: User, incident: Incident, web: Component
) -> None:
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert staff_client.get(f"/manage/incidents/{incident.pk}").status_code == 200
        return len(captured)

    before = queries()
    for number in range(10):
        author = staff if number % 2 else other_staff
        actions.post_update(incident, actor=author, body=f"Update {number}", components={web: "major_outage"})
    actions.acknowledge_incident(incident, actor=other_staff)
    assert queries() == before


def test_it_shows_times_in_the_display_time_zone(staff_client: Client, staff: User, settings: Any) -> None:
    settings.DISPLAY_TIME_ZONE = "Europe/Berlin"
    with time_machine.travel(T0, tick=False):
        incident = factories.declare(actor=staff)
        html = text(staff_client.get(f"/manage/incidents/{incident.pk}"))

    assert "15:05 CET" in html
    assert "2 Mar 2026, 15:05:00 CET" in html


def test_it_polls_the_header_with_updates_and_timeline_out_of_band(staff_client: Client, incident: Incident) -> None:
    response = staff_client.get(f"/manage/incidents/{incident.pk}", headers=HTMX)

    html = text(response)
    assert html.lstrip().startswith('<section id="incident-header"')
    assert 'id="updates" class="panel" aria-labelledby="updates-heading" hx-swap-oob="true"' in html
    assert 'id="timeline" class="panel" aria-labelledby="timeline-heading" hx-swap-oob="true"' in html
    assert "<html" not in html
    assert "HX-Request" in response["Vary"]


def test_it_acknowledges_without_javascript(staff_client: Client, incident: Incident) -> None:
    response = staff_client.post(f"/manage/incidents/{incident.pk}/acknowledge")

    assert response.status_code == 303
    assert response["Location"] == f"/manage/incidents/{incident.pk}"
    incident.refresh_from_db()
    assert incident.acknowledged_by is not None and incident.acknowledged_by.username == "alice"
    page = text(staff_client.get(response["Location"]))
    assert "Acknowledged. You are on it." in page
    assert "Acknowledged by <strong>alice</strong>" in page


def test_it_acknowledges_with_htmx(staff_client: Client, incident: Incident) -> None:
    response = staff_client.post(f"/manage/incidents/{incident.pk}/acknowledge", headers=HTMX)

    html = text(response)
    assert response.status_code == 200
    assert html.lstrip().startswith('<section id="incident-header"')  # the target, swapped in place
    assert "Acknowledged by <strong>alice</strong>" in html
    assert 'id="timeline" class="panel" aria-labelledby="timeline-heading" hx-swap-oob="true"' in html
    assert "alice acknowledged after" in html
    assert 'id="messages" class="messages" aria-live="polite" hx-swap-oob="true"' in html


def test_it_explains_a_second_acknowledgment(staff_client: Client, other_staff: User, incident: Incident) -> None:
    actions.acknowledge_incident(incident, actor=other_staff)

    response = staff_client.post(f"/manage/incidents/{incident.pk}/acknowledge")
    assert response.status_code == 303
    assert "Already acknowledged by bob." in text(staff_client.get(response["Location"]))

    response = staff_client.post(f"/manage/incidents/{incident.pk}/acknowledge", headers=HTMX)
    assert response.status_code == 422
    assert '<p class="form-errors" role="alert">Already acknowledged by bob.</p>' in text(response)
    incident.refresh_from_db()
    assert incident.acknowledged_by == other_staff


def test_it_posts_an_update_without_javascript(staff_client: Client, incident: Incident, web: Component) -> None:
    response = staff_client.post(
        f"/manage/incidents/{incident.pk}/update",
        {
            "public_status": "identified",
            "body": "Found a *bad* index.",
            "visibility": "public",
            f"component-{web.pk}": "degraded_performance",
        },
    )

    assert response.status_code == 303
    incident.refresh_from_db()
    web.refresh_from_db()
    assert (incident.public_status, incident.status, web.status) == ("identified", "identified", "degraded_performance")
    update = incident.updates.first()
    assert update is not None and update.body == "Found a *bad* index." and update.is_public
    page = text(staff_client.get(response["Location"]))
    assert "Public update posted." in page
    assert "Found a <em>bad</em> index." in page
    assert "Web app: Operational" in page


def test_it_posts_an_internal_update_with_htmx(staff_client: Client, incident: Incident) -> None:
    response = staff_client.post(
        f"/manage/incidents/{incident.pk}/update",
        {"public_status": "investigating", "body": "Paging the DBA.", "visibility": "internal"},
        headers=HTMX,
    )

    html = text(response)
    assert response.status_code == 200
    assert html.lstrip().startswith('<section id="update-form"')
    assert "Paging the DBA.</textarea>" not in html  # a fresh form for the next update
    for part in ("incident-header", "updates", "timeline", "messages"):
        assert re.search(rf'id="{part}"[^>]*hx-swap-oob="true"', html), part
    assert "<p>Paging the DBA.</p>" in html
    assert "Internal update posted." in html
    update = incident.updates.first()
    assert update is not None and not update.is_public


def test_it_shows_update_errors_next_to_the_field(staff_client: Client, incident: Incident) -> None:
    data = {"public_status": "identified", "body": "  ", "visibility": "public"}

    response = staff_client.post(f"/manage/incidents/{incident.pk}/update", data, headers=HTMX)
    html = text(response)
    assert response.status_code == 422
    assert html.lstrip().startswith('<section id="update-form"')
    assert "hx-swap-oob" not in html
    assert errors_of(html, "update-body") == "This field is required."

    response = staff_client.post(f"/manage/incidents/{incident.pk}/update", data)
    html = text(response)
    assert response.status_code == 422
    assert "<html" in html
    assert errors_of(html, "update-body") == "This field is required."
    assert incident.updates.count() == 1


def test_it_shows_an_unknown_component_in_an_update_as_a_field_error(staff_client: Client, incident: Incident) -> None:
    data = {"public_status": "identified", "body": "More", "visibility": "public", "component-424242": "major_outage"}

    response = staff_client.post(f"/manage/incidents/{incident.pk}/update", data, headers=HTMX)

    assert response.status_code == 422
    assert "There is no component with id" in errors_of(text(response), "update-components")
    assert "More</textarea>" in text(response)  # what was typed is kept
    assert incident.updates.count() == 1


def test_it_refuses_an_update_on_a_resolved_incident(staff_client: Client, resolved: Incident) -> None:
    data = {"public_status": "monitoring", "body": "Still watching", "visibility": "public"}

    # Without JavaScript: the page again, brought up to date, with the message and the typed text kept.
    response = staff_client.post(f"/manage/incidents/{resolved.pk}/update", data)
    html = text(response)
    assert response.status_code == 422
    assert "This incident is resolved; reopen it before posting an update." in html
    assert "Still watching</textarea>" in html
    assert "Reopen incident" in html

    # With htmx (a stale tab): every part of the page swaps to the current state, not just the form.
    response = staff_client.post(f"/manage/incidents/{resolved.pk}/update", data, headers=HTMX)
    html = text(response)
    assert response.status_code == 422
    assert "This incident is resolved; reopen it before posting an update." in html
    assert "Still watching</textarea>" in html
    for part in ("incident-header", "updates", "timeline", "resolve-form", "severity-form", "scope-form"):
        assert re.search(rf'id="{part}"[^>]*hx-swap-oob="true"', html), part
    assert "Reopen incident" in html
    assert resolved.updates.count() == 2  # the first message and the default "resolved" one, nothing more


def test_it_changes_severity(staff_client: Client, incident: Incident) -> None:
    sev2 = factories.severity("sev2")

    response = staff_client.post(f"/manage/incidents/{incident.pk}/severity", {"severity": sev2.pk})
    assert response.status_code == 303
    incident.refresh_from_db()
    assert incident.severity == sev2

    sev3 = factories.severity("sev3")
    response = staff_client.post(f"/manage/incidents/{incident.pk}/severity", {"severity": sev3.pk}, headers=HTMX)
    html = text(response)
    assert response.status_code == 200
    assert html.lstrip().startswith('<section id="severity-form"')
    assert re.search(r'id="incident-header"[^>]*hx-swap-oob="true"', html)
    assert "changed severity from SEV2 to SEV3" in html


def test_it_explains_choosing_the_current_severity(staff_client: Client, incident: Incident) -> None:
    same = {"severity": incident.severity_id}

    response = staff_client.post(f"/manage/incidents/{incident.pk}/severity", same)
    assert response.status_code == 422
    assert "The incident is already SEV1." in text(response)

    response = staff_client.post(f"/manage/incidents/{incident.pk}/severity", same, headers=HTMX)
    html = text(response)
    assert response.status_code == 422
    assert html.lstrip().startswith('<section id="severity-form"')
    assert '<div class="form-errors" role="alert"><p>The incident is already SEV1.</p></div>' in html
    # Nothing changed on the server: only this form answers, so no other form's typed text is replaced.
    assert "hx-swap-oob" not in html

    unchanged_scope = {"customer_impact_percent": "25", "regions": "", "workaround": "", "impact_override": ""}
    response = staff_client.post(f"/manage/incidents/{incident.pk}/scope", unchanged_scope, headers=HTMX)
    html = text(response)
    assert response.status_code == 422
    assert html.lstrip().startswith('<section id="scope-form"')
    assert '<div class="form-errors" role="alert"><p>Nothing changed.</p></div>' in html
    assert "hx-swap-oob" not in html


def test_it_hands_the_incident_to_a_commander(staff_client: Client, other_staff: User, incident: Incident) -> None:
    response = staff_client.post(f"/manage/incidents/{incident.pk}/commander", {"commander": other_staff.pk})
    assert response.status_code == 303
    incident.refresh_from_db()
    assert incident.commander == other_staff
    page = text(staff_client.get(response["Location"]))
    assert "bob is now the incident commander." in page
    assert "Take command myself" in page

    response = staff_client.post(
        f"/manage/incidents/{incident.pk}/commander", {"commander": incident.declared_by_id}, headers=HTMX
    )
    html = text(response)
    assert response.status_code == 200
    assert html.lstrip().startswith('<section id="commander-form"')
    assert "Take command myself" not in html  # alice commands now
    assert re.search(r'id="incident-header"[^>]*hx-swap-oob="true"', html)
    assert "Commander: alice" in html


def test_it_refuses_a_commander_who_is_not_staff(
    staff_client: Client, outsider: User, staff: User, incident: Incident
) -> None:
    response = staff_client.post(f"/manage/incidents/{incident.pk}/commander", {"commander": outsider.pk})
    assert response.status_code == 422
    assert "Select a valid choice" in errors_of(text(response), "commander-commander")

    response = staff_client.post(f"/manage/incidents/{incident.pk}/commander", {"commander": staff.pk}, headers=HTMX)
    assert response.status_code == 422
    assert errors_of(text(response), "commander-commander") == "alice is already the commander."


def test_it_refuses_a_commander_without_an_email_address(staff_client: Client, incident: Incident) -> None:
    # Nudges go to the commander by email: one without an address would never hear of them.
    nomail = User.objects.create_user("nomail", email="", password="pw", is_staff=True)

    response = staff_client.post(f"/manage/incidents/{incident.pk}/commander", {"commander": nomail.pk}, headers=HTMX)

    assert response.status_code == 422
    assert errors_of(text(response), "commander-commander").startswith(
        "nomail has no email address, so nudges to the commander could not reach them."
    )
    incident.refresh_from_db()
    assert incident.commander != nomail
    assert not incident.events.filter(kind="commander_changed").exists()


def test_it_edits_the_impact_scope(staff_client: Client, incident: Incident) -> None:
    data = {
        "customer_impact_percent": "60",
        "regions": "eu-west, ap-south",
        "workaround": "Use the CLI.",
        "impact_override": "critical",
    }

    response = staff_client.post(f"/manage/incidents/{incident.pk}/scope", data, headers=HTMX)

    assert response.status_code == 200
    assert "Impact scope updated." in text(response)
    incident.refresh_from_db()
    assert str(incident.customer_impact_percent) == "60.00"
    assert incident.regions == ["eu-west", "ap-south"]
    assert (incident.workaround, incident.impact_override, incident.impact) == ("Use the CLI.", "critical", "critical")
    page = text(staff_client.get(f"/manage/incidents/{incident.pk}"))
    assert 'value="60"' in page  # shown as typed, not as 60.00


def test_it_explains_a_scope_edit_that_changes_nothing(staff_client: Client, incident: Incident) -> None:
    data = {"customer_impact_percent": "25", "regions": "", "workaround": "", "impact_override": ""}

    response = staff_client.post(f"/manage/incidents/{incident.pk}/scope", data)
    assert response.status_code == 422
    assert "Nothing changed." in text(response)

    response = staff_client.post(f"/manage/incidents/{incident.pk}/scope", data, headers=HTMX)
    assert response.status_code == 422
    assert text(response).lstrip().startswith('<section id="scope-form"')
    assert "Nothing changed." in text(response)


def test_it_shows_a_bad_customer_share_next_to_the_field(staff_client: Client, incident: Incident) -> None:
    response = staff_client.post(f"/manage/incidents/{incident.pk}/scope", {"customer_impact_percent": "101"})

    assert response.status_code == 422
    assert errors_of(text(response), "scope-customer_impact_percent") == (
        "Ensure this value is less than or equal to 100."
    )


def test_it_resolves_with_a_final_message(staff_client: Client, incident: Incident, api: Component) -> None:
    data = {"message": "Fixed by rolling back.", "visibility": "public", "restore_components": "on"}

    response = staff_client.post(f"/manage/incidents/{incident.pk}/resolve", data, headers=HTMX)

    html = text(response)
    assert response.status_code == 200
    assert html.lstrip().startswith('<section id="resolve-form"')
    assert "Reopen incident" in html  # the resolve form turned into the reopen form
    assert "Reopen it to post more updates." in html  # the update form, out of band
    assert "<p>Fixed by rolling back.</p>" in html
    incident.refresh_from_db()
    api.refresh_from_db()
    assert (incident.status, incident.public_status, api.status) == ("resolved", "resolved", "operational")


def test_it_resolves_without_javascript(staff_client: Client, incident: Incident, api: Component) -> None:
    response = staff_client.post(f"/manage/incidents/{incident.pk}/resolve", {"visibility": "public"})

    assert response.status_code == 303
    incident.refresh_from_db()
    api.refresh_from_db()
    assert incident.is_resolved
    assert api.status == "partial_outage"  # the box to restore components was not ticked
    assert "Resolved." in text(staff_client.get(response["Location"]))


def test_an_internal_closing_message_is_labelled_resolved_and_internal(
    staff_client: Client, staff: User, incident: Incident
) -> None:
    actions.resolve_incident(incident, actor=staff, message="Rolled back db01.", is_public=False)

    page = text(staff_client.get(f"/manage/incidents/{incident.pk}"))
    updates = re.findall(r'<article class="update update--(\w+)">(.*?)</article>', page, re.DOTALL)
    labels = [
        (kind, re.sub(r"<[^>]+>", "", head).split(), re.sub(r"<[^>]+>", "", body).strip())
        for kind, html in updates
        for head, body in re.findall(
            r'<header class="update__head">(.*?)</header>\s*<div class="prose">(.*?)</div>', html, re.DOTALL
        )
    ]
    assert [(kind, words[:2], body) for kind, words, body in labels] == [
        ("public", ["Resolved", "Public"], "This incident has been resolved."),
        ("internal", ["Resolved", "Internal"], "Rolled back db01."),
        ("public", ["Investigating", "Public"], "We are investigating elevated latency."),
    ]


def test_resolving_without_a_final_message_tells_customers(staff_client: Client, incident: Incident) -> None:
    page = text(staff_client.get(f"/manage/incidents/{incident.pk}"))
    assert "customers of a public incident read “This incident has been resolved.”" in page

    response = staff_client.post(f"/manage/incidents/{incident.pk}/resolve", {"message": "", "visibility": "public"})

    assert response.status_code == 303
    latest = incident.updates.filter(is_public=True).latest("created_at", "id")
    assert (latest.status, latest.body) == ("resolved", "This incident has been resolved.")


ONLY_SPACES = "This is only spaces: write something, or leave it empty."


@pytest.mark.parametrize("htmx", [False, True])
def test_a_final_message_of_only_spaces_is_an_error_not_none(
    staff_client: Client, incident: Incident, htmx: bool
) -> None:
    data = {"message": "  \r\n  ", "visibility": "public"}

    response = staff_client.post(f"/manage/incidents/{incident.pk}/resolve", data, headers=HTMX if htmx else {})

    assert response.status_code == 422
    assert errors_of(text(response), "resolve-message") == ONLY_SPACES
    incident.refresh_from_db()
    assert not incident.is_resolved


def test_a_reopen_message_or_workaround_of_only_spaces_is_an_error(staff_client: Client, resolved: Incident) -> None:
    reopen = staff_client.post(f"/manage/incidents/{resolved.pk}/reopen", {"reason": "Back", "message": "   "})
    scope = staff_client.post(f"/manage/incidents/{resolved.pk}/scope", {"workaround": " \t "})

    assert (reopen.status_code, scope.status_code) == (422, 422)
    assert errors_of(text(reopen), "reopen-message") == ONLY_SPACES
    assert errors_of(text(scope), "scope-workaround") == ONLY_SPACES
    resolved.refresh_from_db()
    assert resolved.is_resolved


def test_it_explains_resolving_a_resolved_incident(staff_client: Client, resolved: Incident) -> None:
    response = staff_client.post(f"/manage/incidents/{resolved.pk}/resolve", {"visibility": "public"})
    assert response.status_code == 422
    assert "This incident is already resolved." in text(response)

    response = staff_client.post(f"/manage/incidents/{resolved.pk}/resolve", {"visibility": "public"}, headers=HTMX)
    assert response.status_code == 422
    assert "This incident is already resolved." in text(response)


def test_it_reopens_with_a_reason(staff_client: Client, resolved: Incident) -> None:
    response = staff_client.post(f"/manage/incidents/{resolved.pk}/reopen", {"reason": "Errors are back"}, headers=HTMX)

    html = text(response)
    assert response.status_code == 200
    assert "Resolve incident" in html
    assert 'id="update-form" class="panel" aria-labelledby="update-heading" hx-swap-oob="true"' in html
    assert "alice reopened the incident: Errors are back" in html
    resolved.refresh_from_db()
    assert (resolved.status, resolved.reopened_count) == ("acknowledged", 1)


def test_it_requires_a_reason_to_reopen(staff_client: Client, resolved: Incident) -> None:
    for headers in ({}, HTMX):
        response = staff_client.post(f"/manage/incidents/{resolved.pk}/reopen", {"reason": " "}, headers=headers)
        assert response.status_code == 422
        assert errors_of(text(response), "reopen-reason") == "This field is required."
    resolved.refresh_from_db()
    assert resolved.is_resolved


def test_it_explains_reopening_an_open_incident(staff_client: Client, incident: Incident) -> None:
    response = staff_client.post(f"/manage/incidents/{incident.pk}/reopen", {"reason": "Why not"})

    assert response.status_code == 422
    assert "Only a resolved incident can be reopened." in text(response)


# --- page furniture -----------------------------------------------------------------------------


def test_it_serves_htmx_locally_with_the_csp_nonce(staff_client: Client, incident: Incident) -> None:
    response = staff_client.get(f"/manage/incidents/{incident.pk}")

    html = text(response)
    nonce = re.search(r"'nonce-([^']+)'", response["Content-Security-Policy"])
    assert nonce
    scripts = re.findall(r"<script[^>]*>", html)
    assert scripts and all(f'nonce="{nonce.group(1)}"' in tag and "src=" in tag for tag in scripts)
    assert '<script src="/static/django_htmx/htmx-2.min.js"' in html
    assert '<script src="/static/js/countdown.js"' in html
    assert re.search(r"hx-headers='\{\"X-CSRFToken\": \"[^\"]+\"\}'", html)
    assert '{"code": "422", "swap": true}' in html
    assert 'action="/logout/"' in html


def test_it_renders_the_login_page(client: Client) -> None:
    response = client.get("/login/?next=/manage/")

    html = text(response)
    assert response.status_code == 200
    assert '<label for="id_username">' in html and '<label for="id_password">' in html
    assert 'name="next" value="/manage/"' in html
    assert "<title>Log in · Signalpost</title>" in html  # not the host, which LoginView calls site_name


def test_it_logs_in_staff_and_sends_them_on(client: Client, staff: User) -> None:
    response = client.post("/login/", {"username": "alice", "password": factories.PASSWORD, "next": "/manage/"})

    assert response.status_code == 302
    assert response["Location"] == "/manage/"


def test_it_formats_times_and_durations() -> None:
    now = datetime(2026, 3, 2, 18, 0, tzinfo=UTC)
    assert display_time(T0, now) == "14:05 UTC"
    assert display_time(T0, now + timedelta(days=1)) == "2 Mar, 14:05 UTC"
    assert display_time(T0, now + timedelta(days=365)) == "2 Mar 2026, 14:05 UTC"
    assert display_datetime(T0) == "2 Mar 2026, 14:05:00 UTC"
    assert duration(timedelta(hours=2, minutes=30)) == "2 h 30 min"
    assert duration(3600) == "1 h"
    assert duration(3 * 86400 + 4 * 3600 + 5) == "3 d 4 h"
    assert duration(245.9) == "4 min 6 s"
    assert duration(timedelta(seconds=54.6)) == "55 s"  # as the timeline's "acknowledged after 55 s" rounds
    assert duration(-90) == "1 min 30 s"
    assert duration(0) == "0 s"
    assert percent(None) == ""
    assert [percent(Decimal(v)) for v in ("12.50", "100.00", "0.25")] == ["12.5%", "100%", "0.25%"]


def test_it_explains_a_server_error_and_points_to_the_public_page(staff: User, monkeypatch: pytest.MonkeyPatch) -> None:
    from incidents import access

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(access, "incidents_for", broken)
    client = Client(raise_request_exception=False)
    client.force_login(staff)

    response = client.get("/manage/")

    assert response.status_code == 500
    assert "Something went wrong on our side" in text(response)
    assert 'href="/"' in text(response)


def test_a_server_error_that_is_not_the_database_does_not_blame_it(staff: User, settings: Any, tmp_path: Path) -> None:
    # collectstatic never ran: every page linking a stylesheet raises "Missing staticfiles manifest entry".
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
    }
    settings.STATIC_ROOT = tmp_path
    client = Client(raise_request_exception=False)
    client.force_login(staff)

    response = client.get("/manage/")

    page = text(response)
    assert response.status_code == 500
    assert "Something went wrong on our side" in page
    assert "the server hit an unexpected error, which has been logged" in page
    assert "database" not in page.lower()  # it said "most likely because its database is out of reach"
    assert client.get("/api/v2/summary.json").status_code == 200  # as the page says, the API still answers


def test_it_explains_a_database_outage_with_a_503_and_points_to_the_public_page(
    staff: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.db import OperationalError

    from incidents import access

    def database_down(*args: object, **kwargs: object) -> None:
        raise OperationalError("could not connect to server")

    monkeypatch.setattr(access, "incidents_for", database_down)
    client = Client(raise_request_exception=False)
    client.force_login(staff)

    response = client.get("/manage/")

    assert response.status_code == 503
    assert response["Retry-After"] == "60"
    assert "The database is not answering" in text(response)
    assert 'href="/"' in text(response)


def test_it_reopens_with_a_message_for_customers(staff_client: Client, resolved: Incident) -> None:
    response = staff_client.post(
        f"/manage/incidents/{resolved.pk}/reopen",
        {"reason": "Errors are back", "message": "We are seeing errors again and are looking into it."},
    )

    assert response.status_code == 303
    resolved.refresh_from_db()
    newest = resolved.updates.first()
    assert newest is not None
    assert (newest.body, newest.is_public, newest.status) == (
        "We are seeing errors again and are looking into it.",
        True,
        "investigating",
    )


@pytest.mark.django_db
def test_a_page_not_found_is_ours_and_fits_a_phone(staff_client: Client, settings: Any) -> None:
    settings.DEBUG = False

    response = staff_client.get("/manage/incidents/999999")

    html = response.content.decode()
    assert response.status_code == 404
    assert '<meta name="viewport"' in html and "<h1>Not found</h1>" in html
