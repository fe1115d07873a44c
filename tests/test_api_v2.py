"""The Statuspage-compatible public API: shapes against real payloads, invariants, HTTP, no database.

The reference shapes come from real Statuspage v2 payloads in tests/fixtures/statuspage-v2/ (MIT,
from atc0005/check-statuspage; licence beside them). For each object type, our keys must equal the
fixture's, in the same order, and each value's JSON type must be one the fixture uses.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import time_machine
from django.contrib.auth.models import User
from django.test import Client

from incidents import actions, publishing
from incidents.models import Component, Incident, Maintenance
from statuspage.http import clear_rendered
from statuspage.snapshot import reader
from tests import factories

pytestmark = pytest.mark.django_db

FIXTURES = Path(__file__).parent / "fixtures" / "statuspage-v2"
T0 = datetime(2026, 3, 2, 14, 5, tzinfo=UTC)
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}(Z|[+-]\d{2}:\d{2})$")
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
TIMESTAMP_KEYS = {
    "created_at", "updated_at", "monitoring_at", "resolved_at", "started_at", "display_at", "scheduled_for",
    "scheduled_until",
}  # fmt: skip

ENDPOINTS = {
    "/api/v2/summary.json": ["page", "components", "incidents", "scheduled_maintenances", "status"],
    "/api/v2/status.json": ["page", "status"],
    "/api/v2/components.json": ["page", "components"],
    "/api/v2/incidents.json": ["page", "incidents"],
    "/api/v2/incidents/unresolved.json": ["page", "incidents"],
    "/api/v2/scheduled-maintenances.json": ["page", "scheduled_maintenances"],
    "/api/v2/scheduled-maintenances/upcoming.json": ["page", "scheduled_maintenances"],
    "/api/v2/scheduled-maintenances/active.json": ["page", "scheduled_maintenances"],
}
PUBLIC_URLS = [*ENDPOINTS, "/history.atom", "/history.rss", "/maintenance.ics"]
OUR_EXTRA_KEYS = {
    "uptime", "body_html", "impact_scope", "next_update_at", "duration_seconds", "cancelled_at", "sequence",
    "legacy_id",
}  # fmt: skip

COMPONENT_STATUSES = {"operational", "degraded_performance", "partial_outage", "major_outage", "under_maintenance"}
INCIDENT_STATUSES = {"investigating", "identified", "monitoring", "resolved", "postmortem"}
MAINTENANCE_STATUSES = {"scheduled", "in_progress", "verifying", "completed"}
IMPACTS = {"none", "minor", "major", "critical"}
INDICATORS = {"none", "minor", "major", "critical"}


# --- reference shapes from the real payloads ----------------------------------------------------


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return data


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    assert isinstance(value, dict), value
    return "object"


class Shape:
    """The keys (in order) and the JSON types per key seen across a fixture's objects of one type."""

    def __init__(self, rows: list[dict[str, Any]], also: dict[str, str] | None = None) -> None:
        assert rows
        self.keys = list(rows[0])
        assert all(list(row) == self.keys for row in rows), "the fixture's rows disagree on their keys"
        self.types: dict[str, set[str]] = {key: {json_type(row[key]) for row in rows} for key in self.keys}
        for key, kind in (also or {}).items():
            self.types[key].add(kind)

    def check(self, obj: dict[str, Any], label: str) -> None:
        assert list(obj) == self.keys, f"{label}: keys {list(obj)} != Statuspage's {self.keys}"
        for key, value in obj.items():
            assert json_type(value) in self.types[key], f"{label}.{key}: {value!r} not {self.types[key]}"


INSTRUCTURE = load("instructure-summary.json")
PAYLOADS = [INSTRUCTURE, load("github-components.json"), load("twilio-components.json")]
ALL_COMPONENTS = [c for payload in PAYLOADS for c in payload["components"]]
FIXTURE_UPDATES = [u for i in INSTRUCTURE["incidents"] for u in i["incident_updates"]]
PAGE = Shape([p["page"] for p in PAYLOADS])
COMPONENT = Shape([c for c in ALL_COMPONENTS if not c["group"]])
# A group may carry a description (string) on Statuspage; the fixtures' groups happen to have none.
GROUP = Shape([c for c in ALL_COMPONENTS if c["group"]], also={"description": "string"})
STATUS = Shape([INSTRUCTURE["status"]])
# The one incident in the fixture is unresolved and never reached monitoring; Statuspage documents
# both stamps as timestamps (string) once reached.
INCIDENT = Shape(INSTRUCTURE["incidents"], also={"monitoring_at": "string", "resolved_at": "string"})
# Real payloads carry "affected_components": null on updates that changed no component.
UPDATE = Shape(FIXTURE_UPDATES, also={"affected_components": "null"})
AFFECTED = Shape([a for u in FIXTURE_UPDATES for a in u["affected_components"]])
# No maintenance payload is among the fixtures: Statuspage's maintenance object is its incident object
# followed by scheduled_for and scheduled_until (timestamps), in that order.
MAINTENANCE = Shape(
    [
        {**i, "scheduled_for": "2021-12-07T09:06:43.178-07:00", "scheduled_until": "2021-12-07T10:06:43.178-07:00"}
        for i in INSTRUCTURE["incidents"]
    ],
    also={"monitoring_at": "string", "resolved_at": "string"},
)
TOP_LEVEL = list(INSTRUCTURE)


def check_component(row: dict[str, Any], label: str) -> None:
    (GROUP if row["group"] else COMPONENT).check(row, label)
    assert row["status"] in COMPONENT_STATUSES
    assert isinstance(row["position"], int)
    assert row["start_date"] is None or DATE.match(row["start_date"])
    if row["group"]:
        assert all(isinstance(child, str) for child in row["components"])


def check_updates(updates: list[dict[str, Any]], label: str, statuses: set[str]) -> None:
    for update in updates:
        UPDATE.check(update, f"{label}.update")
        assert update["status"] in statuses
        for affected in update["affected_components"] or []:
            AFFECTED.check(affected, f"{label}.affected_component")
            assert {affected["old_status"], affected["new_status"]} <= COMPONENT_STATUSES
    stamps = [datetime.fromisoformat(u["display_at"]) for u in updates]
    assert stamps == sorted(stamps, reverse=True), "updates newest first"


def check_incident(row: dict[str, Any]) -> None:
    INCIDENT.check(row, "incident")
    assert row["status"] in INCIDENT_STATUSES
    assert row["impact"] in IMPACTS
    assert (row["resolved_at"] is not None) == (row["status"] in {"resolved", "postmortem"})
    check_updates(row["incident_updates"], "incident", INCIDENT_STATUSES)
    for component in row["components"]:
        check_component(component, "incident.component")


def check_maintenance(row: dict[str, Any]) -> None:
    MAINTENANCE.check(row, "maintenance")
    assert row["status"] in MAINTENANCE_STATUSES
    assert row["impact"] == "maintenance"
    check_updates(row["incident_updates"], "maintenance", MAINTENANCE_STATUSES)
    for component in row["components"]:
        check_component(component, "maintenance.component")


def check_payload(url: str, payload: dict[str, Any]) -> None:
    assert list(payload) == ENDPOINTS[url]
    assert [key for key in TOP_LEVEL if key in payload] == list(payload), "Statuspage's top-level order"
    PAGE.check(payload["page"], "page")
    if "status" in payload:
        STATUS.check(payload["status"], "status")
        assert payload["status"]["indicator"] in INDICATORS
    for component in payload.get("components", []):
        check_component(component, "component")
    for incident in payload.get("incidents", []):
        check_incident(incident)
    for maintenance in payload.get("scheduled_maintenances", []):
        check_maintenance(maintenance)


def walk(value: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield key, item
            yield from walk(item)
    elif isinstance(value, list):
        for item in value:
            yield from walk(item)


def test_the_reference_shapes_come_from_the_fixtures() -> None:
    assert "components" in GROUP.keys and "components" not in COMPONENT.keys
    assert UPDATE.keys[:4] == ["id", "status", "body", "incident_id"]
    for payload in PAYLOADS:
        for key, value in walk(payload):
            if key in TIMESTAMP_KEYS and value is not None:
                assert TIMESTAMP.match(value), value


# --- data ---------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _frozen_clock() -> Iterator[None]:
    with time_machine.travel(T0, tick=False):
        yield


@pytest.fixture
def client() -> Client:
    return Client()


@pytest.fixture
def platform(staff: User) -> Component:
    return factories.make_component(name="Platform", is_group=True, actor=staff)


@pytest.fixture
def query_api(staff: User, platform: Component) -> Component:
    return factories.make_component(name="Query API", group=platform, actor=staff)


@pytest.fixture
def ingest(staff: User, platform: Component) -> Component:
    return factories.make_component(name="Ingest", group=platform, actor=staff)


@pytest.fixture
def website(staff: User) -> Component:
    return factories.make_component(name="Website", actor=staff)


@pytest.fixture
def site(staff: User, query_api: Component, ingest: Component, website: Component) -> dict[str, Any]:
    """An open incident (with an internal note), a resolved one, and maintenance in every state."""
    open_incident = factories.declare(
        actor=staff, title="Queries are slow", components={query_api: "partial_outage"}, at=T0 - timedelta(hours=2)
    )
    actions.post_update(
        open_incident, actor=staff, body="INTERNAL: the db01 disk is full", is_public=False, at=T0 - timedelta(hours=1)
    )
    actions.post_update(
        open_incident,
        actor=staff,
        body="We found the cause.",
        public_status="identified",
        components={ingest: "degraded_performance"},
        at=T0 - timedelta(minutes=30),
    )
    resolved = factories.declare(
        actor=staff, title="Website down", components={website: "major_outage"}, at=T0 - timedelta(days=2)
    )
    actions.post_update(
        resolved,
        actor=staff,
        body="A fix is out.",
        public_status="monitoring",
        at=T0 - timedelta(days=2) + timedelta(minutes=20),
    )
    actions.resolve_incident(resolved, actor=staff, message="All good.", at=T0 - timedelta(days=2) + timedelta(hours=1))
    maintenances = maintenance_windows(staff, query_api)
    publishing.publish()
    return {"open": open_incident, "resolved": resolved, **maintenances}


def maintenance_windows(staff: User, component: Component) -> dict[str, Maintenance]:
    upcoming = actions.schedule_maintenance(
        actor=staff,
        title="Database upgrade",
        scheduled_for=T0 + timedelta(days=3),
        scheduled_until=T0 + timedelta(days=3, hours=2),
        components=[component],
        at=T0 - timedelta(days=1),
    )
    later = actions.schedule_maintenance(
        actor=staff,
        title="Network upgrade",
        scheduled_for=T0 + timedelta(days=1),
        scheduled_until=T0 + timedelta(days=1, hours=1),
        at=T0 - timedelta(days=1),
    )
    active = actions.schedule_maintenance(
        actor=staff,
        title="Index rebuild",
        scheduled_for=T0 - timedelta(minutes=20),
        scheduled_until=T0 + timedelta(hours=1),
        components=[component],
        at=T0 - timedelta(days=1),
    )
    actions.start_maintenance(active, actor=None, at=T0 - timedelta(minutes=20))
    verifying = actions.schedule_maintenance(
        actor=staff,
        title="Cache warm-up",
        scheduled_for=T0 - timedelta(hours=1),
        scheduled_until=T0 + timedelta(hours=1),
        at=T0 - timedelta(days=1),
    )
    actions.start_maintenance(verifying, actor=None, at=T0 - timedelta(hours=1))
    actions.post_maintenance_update(
        verifying, actor=staff, body="Checking.", status="verifying", at=T0 - timedelta(minutes=10)
    )
    completed = actions.schedule_maintenance(
        actor=staff,
        title="Kernel patch",
        scheduled_for=T0 - timedelta(days=1),
        scheduled_until=T0 - timedelta(days=1) + timedelta(hours=1),
        at=T0 - timedelta(days=2),
    )
    actions.start_maintenance(completed, actor=None, at=T0 - timedelta(days=1))
    actions.complete_maintenance(completed, actor=None, at=T0 - timedelta(days=1) + timedelta(hours=1))
    cancelled = actions.schedule_maintenance(
        actor=staff,
        title="Cancelled move",
        scheduled_for=T0 + timedelta(days=5),
        scheduled_until=T0 + timedelta(days=5, hours=1),
        at=T0 - timedelta(days=1),
    )
    actions.cancel_maintenance(cancelled, actor=staff, reason="Not needed.", at=T0 - timedelta(hours=3))
    return {
        "upcoming": upcoming,
        "later": later,
        "active": active,
        "verifying": verifying,
        "completed": completed,
        "cancelled": cancelled,
    }


def republish() -> None:
    """Publish a change and forget the copy this process holds (it re-checks only once a second)."""
    publishing.publish()
    reader.reset()


def get_json(client: Client, url: str) -> dict[str, Any]:
    response = client.get(url)
    assert response.status_code == 200, response.content
    data: dict[str, Any] = response.json()
    return data


def ids(rows: list[dict[str, Any]]) -> list[str]:
    return [row["id"] for row in rows]


# --- shapes -------------------------------------------------------------------------------------


@pytest.mark.parametrize("url", list(ENDPOINTS))
def test_it_serves_statuspage_shapes(client: Client, site: dict[str, Any], url: str) -> None:
    response = client.get(url)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    check_payload(url, response.json())


def test_it_fills_every_object_type(client: Client, site: dict[str, Any]) -> None:
    """The shape checks above ran on real objects of each kind, not on empty lists."""
    summary = get_json(client, "/api/v2/summary.json")
    components = summary["components"]
    assert any(c["group"] for c in components) and any(not c["group"] for c in components)
    assert summary["incidents"] and summary["scheduled_maintenances"]
    every = get_json(client, "/api/v2/incidents.json")["incidents"]
    updates = [u for i in every for u in i["incident_updates"]]
    assert any(u["affected_components"] for u in updates)
    assert any(u["affected_components"] is None for u in updates)
    assert get_json(client, "/api/v2/incidents.json")["incidents"][1]["status"] == "resolved"


@pytest.mark.parametrize("url", list(ENDPOINTS))
def test_it_shapes_an_empty_page(client: Client, url: str) -> None:
    publishing.publish()
    check_payload(url, get_json(client, url))


def test_it_leaves_out_the_documents_own_keys(client: Client, site: dict[str, Any]) -> None:
    document = reader.current().document  # type: ignore[union-attr]
    assert {key for key, _ in walk(document)} >= OUR_EXTRA_KEYS, "the document has them"
    for url in ENDPOINTS:
        leaked = {key for key, _ in walk(get_json(client, url))} & OUR_EXTRA_KEYS
        assert not leaked, f"{url} leaks {leaked}"


def test_it_writes_ids_as_strings_and_timestamps_with_milliseconds_and_the_pages_offset(
    client: Client, settings: Any, staff: User, query_api: Component
) -> None:
    settings.DISPLAY_TIME_ZONE = "America/Denver"
    factories.declare(actor=staff, title="Slow", components={query_api: "degraded_performance"}, at=T0)
    publishing.publish()
    summary = get_json(client, "/api/v2/summary.json")
    assert summary["page"]["time_zone"] == "America/Denver"
    stamps = [(key, value) for key, value in walk(summary) if key in TIMESTAMP_KEYS and value is not None]
    assert stamps
    for key, value in stamps:
        assert TIMESTAMP.match(value), (key, value)
        assert value.endswith("-07:00"), (key, value)  # Denver in March before DST: UTC-7
    for key, value in walk(summary):
        if key in {"id", "page_id", "incident_id", "group_id", "code"} and value is not None:
            assert isinstance(value, str), (key, value)
    for row in summary["components"]:
        assert (row["start_date"] is None) == row["group"], "groups have no start date of their own"
        assert row["start_date"] is None or DATE.match(row["start_date"])


# --- invariants ---------------------------------------------------------------------------------


def test_summary_is_the_sum_of_its_parts(client: Client, site: dict[str, Any]) -> None:
    summary = get_json(client, "/api/v2/summary.json")
    assert summary["page"] == get_json(client, "/api/v2/status.json")["page"]
    assert summary["status"] == get_json(client, "/api/v2/status.json")["status"]
    assert summary["components"] == get_json(client, "/api/v2/components.json")["components"]
    assert summary["incidents"] == get_json(client, "/api/v2/incidents/unresolved.json")["incidents"]
    active = get_json(client, "/api/v2/scheduled-maintenances/active.json")["scheduled_maintenances"]
    upcoming = get_json(client, "/api/v2/scheduled-maintenances/upcoming.json")["scheduled_maintenances"]
    assert sorted(ids(summary["scheduled_maintenances"])) == sorted(ids(active + upcoming))
    assert {m["status"] for m in summary["scheduled_maintenances"]} == {"scheduled", "in_progress", "verifying"}


def test_unresolved_lists_only_open_incidents(client: Client, site: dict[str, Any]) -> None:
    unresolved = get_json(client, "/api/v2/incidents/unresolved.json")["incidents"]
    everything = get_json(client, "/api/v2/incidents.json")["incidents"]
    assert ids(unresolved) == [str(site["open"].pk)]
    assert ids(everything) == [str(site["open"].pk), str(site["resolved"].pk)]
    for incident in everything:
        assert (incident["resolved_at"] is not None) == (incident["status"] == "resolved")


def test_resolved_at_is_set_exactly_when_resolved(client: Client, staff: User, query_api: Component) -> None:
    incident = factories.declare(actor=staff, title="Flaky", components={query_api: "partial_outage"}, at=T0)
    publishing.publish()
    assert get_json(client, "/api/v2/incidents.json")["incidents"][0]["resolved_at"] is None
    actions.resolve_incident(incident, actor=staff, message="Fixed.", at=T0 + timedelta(minutes=5))
    republish()
    row = get_json(client, "/api/v2/incidents.json")["incidents"][0]
    assert row["status"] == "resolved"
    assert datetime.fromisoformat(row["resolved_at"]) == T0 + timedelta(minutes=5)
    assert get_json(client, "/api/v2/incidents/unresolved.json")["incidents"] == []


@pytest.mark.parametrize(
    ("component_status", "indicator"),
    [
        ("operational", "none"),
        ("degraded_performance", "minor"),
        ("partial_outage", "major"),
        ("major_outage", "critical"),
    ],
)
def test_the_indicator_follows_the_components(
    client: Client, staff: User, query_api: Component, website: Component, component_status: str, indicator: str
) -> None:
    actions.set_component_status(query_api, actor=staff, status=component_status, at=T0)
    publishing.publish()
    status = get_json(client, "/api/v2/status.json")["status"]
    assert status["indicator"] == indicator
    summary = get_json(client, "/api/v2/summary.json")
    assert summary["status"] == status
    statuses = {c["id"]: c["status"] for c in summary["components"]}
    assert statuses[str(query_api.pk)] == component_status
    assert statuses[str(query_api.group_id)] == component_status, "a group shows its worst child"


def test_all_operational_without_incidents_is_none(client: Client, query_api: Component, website: Component) -> None:
    publishing.publish()
    summary = get_json(client, "/api/v2/summary.json")
    assert summary["status"] == {"indicator": "none", "description": "All Systems Operational"}
    assert {c["status"] for c in summary["components"]} == {"operational"}
    assert summary["incidents"] == []


def test_an_open_incident_raises_the_indicator_to_its_impact(client: Client, staff: User, query_api: Component) -> None:
    factories.declare(actor=staff, title="Something", impact_override="major", at=T0)
    publishing.publish()
    summary = get_json(client, "/api/v2/summary.json")
    assert {c["status"] for c in summary["components"]} == {"operational"}
    assert summary["status"]["indicator"] == "major"


def test_updates_are_newest_first_and_internal_ones_never_appear(client: Client, site: dict[str, Any]) -> None:
    for url in ENDPOINTS:
        assert b"INTERNAL" not in client.get(url).content, url
    incident = get_json(client, "/api/v2/incidents/unresolved.json")["incidents"][0]
    assert [u["body"] for u in incident["incident_updates"]] == [
        "We found the cause.",
        "We are investigating elevated latency.",
    ]
    assert [u["status"] for u in incident["incident_updates"]] == ["identified", "investigating"]
    assert all(u["incident_id"] == incident["id"] for u in incident["incident_updates"])
    assert incident["updated_at"] == incident["incident_updates"][0]["created_at"]


def test_groups_list_their_children_and_affected_components_are_named_group_dash_component(
    client: Client, site: dict[str, Any], platform: Component, query_api: Component, ingest: Component
) -> None:
    components = {c["id"]: c for c in get_json(client, "/api/v2/components.json")["components"]}
    group = components[str(platform.pk)]
    assert group["group"] is True
    assert group["group_id"] is None
    assert sorted(group["components"]) == sorted([str(query_api.pk), str(ingest.pk)])
    for child in group["components"]:
        assert components[child]["group_id"] == group["id"]
        assert components[child]["group"] is False
    incident = get_json(client, "/api/v2/incidents/unresolved.json")["incidents"][0]
    assert incident["incident_updates"][0]["affected_components"] == [
        {
            "code": str(ingest.pk),
            "name": "Platform - Ingest",
            "old_status": "operational",
            "new_status": "degraded_performance",
        }
    ]
    assert sorted(c["name"] for c in incident["components"]) == ["Ingest", "Query API"]


def test_lists_are_capped_at_50(client: Client, staff: User, query_api: Component) -> None:
    made = []
    for n in range(55):
        incident = factories.declare(actor=staff, title=f"Incident {n}", at=T0 - timedelta(hours=60 - n))
        made.append(incident)
    for incident in made[-2:]:
        actions.resolve_incident(incident, actor=staff, message="Done.", at=T0)
    for n in range(55):
        actions.schedule_maintenance(
            actor=staff,
            title=f"Window {n}",
            scheduled_for=T0 + timedelta(days=1, hours=n),
            scheduled_until=T0 + timedelta(days=1, hours=n + 1),
            at=T0,
        )
    publishing.publish()
    newest_first = [str(i.pk) for i in reversed(made)]
    assert ids(get_json(client, "/api/v2/incidents.json")["incidents"]) == newest_first[:50]
    unresolved = ids(get_json(client, "/api/v2/incidents/unresolved.json")["incidents"])
    assert unresolved == newest_first[2:52]
    assert ids(get_json(client, "/api/v2/summary.json")["incidents"]) == unresolved
    listed = get_json(client, "/api/v2/scheduled-maintenances.json")["scheduled_maintenances"]
    assert len(listed) == 50
    assert listed[0]["name"] == "Window 54", "latest start first"
    upcoming = get_json(client, "/api/v2/scheduled-maintenances/upcoming.json")["scheduled_maintenances"]
    assert [m["name"] for m in upcoming] == [f"Window {n}" for n in range(50)], "soonest first"


def test_maintenance_lists_by_status_and_without_cancelled_windows(client: Client, site: dict[str, Any]) -> None:
    def names(url: str) -> list[str]:
        return [m["name"] for m in get_json(client, url)["scheduled_maintenances"]]

    assert names("/api/v2/scheduled-maintenances/upcoming.json") == ["Network upgrade", "Database upgrade"]
    assert names("/api/v2/scheduled-maintenances/active.json") == ["Cache warm-up", "Index rebuild"]
    assert names("/api/v2/scheduled-maintenances.json") == [
        "Database upgrade", "Network upgrade", "Index rebuild", "Cache warm-up", "Kernel patch",
    ]  # fmt: skip
    assert names("/api/v2/summary.json") == ["Cache warm-up", "Index rebuild", "Network upgrade", "Database upgrade"]
    document = reader.current().document  # type: ignore[union-attr]
    assert "Cancelled move" in [m["name"] for m in document["scheduled_maintenances"]], "kept for the calendar"


def test_a_maintenance_lists_its_components_and_updates(
    client: Client, site: dict[str, Any], query_api: Component
) -> None:
    active = get_json(client, "/api/v2/scheduled-maintenances/active.json")["scheduled_maintenances"]
    rebuild = next(m for m in active if m["name"] == "Index rebuild")
    assert rebuild["impact"] == "maintenance"
    assert datetime.fromisoformat(rebuild["scheduled_for"]) == T0 - timedelta(minutes=20)
    assert datetime.fromisoformat(rebuild["scheduled_until"]) == T0 + timedelta(hours=1)
    assert [c["id"] for c in rebuild["components"]] == [str(query_api.pk)]
    assert [u["status"] for u in rebuild["incident_updates"]] == ["in_progress", "scheduled"]
    # The open incident's partial outage of Query API wins over the window: its start changed nothing.
    assert rebuild["incident_updates"][0]["affected_components"] is None
    assert rebuild["components"][0]["status"] == "partial_outage"
    assert all(u["incident_id"] == rebuild["id"] for u in rebuild["incident_updates"])
    completed = get_json(client, "/api/v2/scheduled-maintenances.json")["scheduled_maintenances"][-1]
    assert completed["status"] == "completed"
    assert completed["resolved_at"] is not None


# --- HTTP ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("url", PUBLIC_URLS)
def test_every_response_allows_any_origin_and_revalidates(client: Client, site: dict[str, Any], url: str) -> None:
    response = client.get(url)
    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == "*"
    assert response["Cache-Control"].startswith("public")
    etag = response["ETag"]
    again = client.get(url, headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert again["ETag"] == etag
    assert again["Access-Control-Allow-Origin"] == "*"


@pytest.mark.parametrize("url", PUBLIC_URLS)
def test_head_answers_with_the_same_headers_and_no_body(client: Client, site: dict[str, Any], url: str) -> None:
    get = client.get(url)
    head = client.head(url)
    assert head.status_code == 200
    assert head.content == b""
    for header in ("Content-Type", "ETag", "Last-Modified", "Cache-Control", "Access-Control-Allow-Origin"):
        assert head[header] == get[header], header
    assert int(head["Content-Length"]) == len(get.content)


@pytest.mark.parametrize("url", PUBLIC_URLS)
def test_a_request_makes_no_database_query_warm_or_cold(
    client: Client, site: dict[str, Any], url: str, django_assert_num_queries: Any
) -> None:
    first = client.get(url)
    with django_assert_num_queries(0):
        warm = client.get(url)
    reader.reset()  # a fresh process: the snapshot comes from the store (Redis or the file)
    clear_rendered()
    with django_assert_num_queries(0):
        cold = client.get(url)
    redis = publishing.redis_client()
    if redis is not None:  # Redis lost its copy: the file still serves
        redis.delete(publishing.REDIS_DOCUMENT_KEY, publishing.REDIS_VERSION_KEY)
    reader.reset()
    clear_rendered()
    with django_assert_num_queries(0):
        from_file = client.get(url)
    assert first.content == warm.content == cold.content == from_file.content
    assert first["ETag"] == cold["ETag"] == from_file["ETag"]


def test_a_new_version_changes_the_etag_and_the_content(client: Client, staff: User, query_api: Component) -> None:
    publishing.publish()
    before = client.get("/api/v2/status.json")
    actions.set_component_status(query_api, actor=staff, status="major_outage", at=T0)
    republish()
    after = client.get("/api/v2/status.json", headers={"If-None-Match": before["ETag"]})
    assert after.status_code == 200
    assert after["ETag"] != before["ETag"]
    assert after.json()["status"]["indicator"] == "critical"


def test_other_methods_are_refused_and_preflight_is_answered(client: Client, site: dict[str, Any]) -> None:
    refused = client.post("/api/v2/summary.json")
    assert refused.status_code == 405
    assert "GET" in refused["Allow"]
    preflight = client.options("/api/v2/summary.json", headers={"Origin": "https://example.org"})
    assert preflight.status_code == 204
    assert preflight["Access-Control-Allow-Origin"] == "*"
    assert "GET" in preflight["Access-Control-Allow-Methods"]


@pytest.mark.parametrize("url", PUBLIC_URLS)
def test_without_any_snapshot_it_answers_503_with_retry_after(
    client: Client, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    def database_down(**kwargs: Any) -> None:
        raise RuntimeError("the database is down")

    monkeypatch.setattr(publishing, "publish", database_down)
    response = client.get(url)
    assert response.status_code == 503
    assert int(response["Retry-After"]) > 0
    assert response["Access-Control-Allow-Origin"] == "*"
    assert "error" in response.json()


def test_with_an_empty_store_the_first_request_builds_from_the_database(client: Client, website: Component) -> None:
    response = client.get("/api/v2/components.json")
    assert response.status_code == 200
    assert [c["name"] for c in response.json()["components"]] == ["Website"]


def test_the_bytes_are_compact_ascii_json(client: Client, staff: User) -> None:
    factories.make_component(name="Zürich – Core", actor=staff)
    publishing.publish()
    body = client.get("/api/v2/components.json").content
    body.decode("ascii")
    assert b", " not in body and b'": ' not in body
    assert json.loads(body)["components"][0]["name"] == "Zürich – Core"


def test_a_markup_body_is_served_as_written(client: Client, staff: User) -> None:
    """Statuspage's body is the text as written; rendering stays with the client."""
    incident = factories.declare(actor=staff, title="Odd <b>chars</b> & more", message="**Bold** <i>x</i>", at=T0)
    publishing.publish()
    row = get_json(client, "/api/v2/incidents.json")["incidents"][0]
    assert row["name"] == incident.title
    assert row["incident_updates"][0]["body"] == "**Bold** <i>x</i>"


def test_an_incident_published_later_is_listed_from_its_first_public_update(client: Client, staff: User) -> None:
    incident: Incident = factories.declare(actor=staff, title="Quiet", is_public=False, message="looking", at=T0)
    publishing.publish()
    assert get_json(client, "/api/v2/incidents.json")["incidents"] == []
    actions.post_update(incident, actor=staff, body="We are looking into it.", at=T0 + timedelta(minutes=3))
    republish()
    rows = get_json(client, "/api/v2/incidents.json")["incidents"]
    assert [u["body"] for u in rows[0]["incident_updates"]] == ["We are looking into it."]


@pytest.mark.parametrize("url", ["/api/v2/summary.json", "/", "/history.atom"])
def test_it_answers_other_methods_with_405_not_a_csrf_error(site: dict[str, Any], url: str) -> None:
    response = Client(enforce_csrf_checks=True).post(url)  # as a real client: no CSRF token
    assert response.status_code == 405
    assert "GET" in response["Allow"]
