"""Public ids: a maintenance window (and its updates) never shares an id with an incident (or an incident
update), wherever the public side names them: the v2 API, webhooks, the feeds, the calendar, the public
URLs and emails. Statuspage's ids are unique across both, and its clients key on them.

The case that collided: an incident and a window with the same primary key, and so for their first
updates. `twins` makes it on purpose (each table's next id is set to the same number), on SQLite and on
PostgreSQL alike, so these tests fail whenever a primary key leaks out as a window's public id.

Also here: UTC times in the v2 API end in "Z", as Statuspage's do (tests/fixtures/statuspage-v2/).
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import feedparser  # type: ignore[import-untyped]
import icalendar
import pytest
import time_machine
from django.conf import settings
from django.contrib.auth.models import User
from django.core import mail
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.db.models import Model
from django.test import Client

from incidents import actions, publishing, webhooks
from incidents.models import (
    Incident,
    IncidentUpdate,
    Maintenance,
    MaintenanceUpdate,
    Message,
    MessageKind,
    is_public_id,
    new_public_id,
)
from statuspage.http import clear_rendered
from statuspage.snapshot import reader
from tests import factories

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 3, 2, 14, 5, tzinfo=UTC)
TWIN_ID = 700_001
FIXTURES = Path(__file__).parent / "fixtures" / "statuspage-v2"
V2_LISTS = {
    "/api/v2/summary.json": ("incidents", "scheduled_maintenances"),
    "/api/v2/incidents.json": ("incidents", None),
    "/api/v2/incidents/unresolved.json": ("incidents", None),
    "/api/v2/scheduled-maintenances.json": (None, "scheduled_maintenances"),
    "/api/v2/scheduled-maintenances/upcoming.json": (None, "scheduled_maintenances"),
    "/api/v2/scheduled-maintenances/active.json": (None, "scheduled_maintenances"),
}
TIMESTAMP_KEYS = {
    "created_at", "updated_at", "monitoring_at", "resolved_at", "started_at", "display_at", "scheduled_for",
    "scheduled_until",
}  # fmt: skip


@pytest.fixture(autouse=True)
def _frozen_clock() -> Iterator[None]:
    with time_machine.travel(T0, tick=False):
        yield


def next_ids_from(value: int, *models: type[Model]) -> None:
    """Make each table's next primary key `value` (SQLite's AUTOINCREMENT counter, PostgreSQL's sequence)."""
    with connection.cursor() as cursor:
        for model in models:
            table = model._meta.db_table
            if connection.vendor == "postgresql":
                cursor.execute("SELECT setval(pg_get_serial_sequence(%s, 'id'), %s, false)", [table, value])
            else:
                cursor.execute("UPDATE sqlite_sequence SET seq = %s WHERE name = %s", [value - 1, table])
                if cursor.rowcount == 0:
                    cursor.execute("INSERT INTO sqlite_sequence (name, seq) VALUES (%s, %s)", [table, value - 1])


@dataclass
class Twins:
    incident: Incident
    window: Maintenance


@pytest.fixture
def twins(staff: User) -> Twins:
    next_ids_from(TWIN_ID, Incident, Maintenance, IncidentUpdate, MaintenanceUpdate)
    api = factories.make_component(name="API", actor=staff)
    incident = factories.declare(actor=staff, title="API errors", components={api: "partial_outage"})
    window = actions.schedule_maintenance(
        actor=staff,
        title="Database upgrade",
        scheduled_for=T0 + timedelta(hours=1),
        scheduled_until=T0 + timedelta(hours=2),
        components=[api],
        message="Writes pause for a few minutes.",
    )
    actions.post_update(incident, actor=staff, body="A bad deploy; rolling back.", public_status="identified")
    actions.post_maintenance_update(window, actor=staff, body="Still on for 15:05 UTC.")
    # The setup really is the colliding case: equal primary keys, for the objects and for their updates.
    assert incident.pk == window.pk == TWIN_ID
    assert set(incident.updates.values_list("pk", flat=True)) == set(window.updates.values_list("pk", flat=True))
    publishing.publish()
    return Twins(incident, window)


def republish() -> None:
    publishing.publish()
    reader.reset()
    clear_rendered()


def get_json(client: Client, url: str) -> dict[str, Any]:
    response = client.get(url)
    assert response.status_code == 200, url
    data: dict[str, Any] = response.json()
    return data


def assert_apart(incidents: list[dict[str, Any]], windows: list[dict[str, Any]], where: str) -> None:
    """No id in common between the incidents and the windows, nor between their updates; every update
    names its own incident or window."""
    incident_ids = {row["id"] for row in incidents}
    window_ids = {row["id"] for row in windows}
    assert incident_ids and window_ids, where
    assert not incident_ids & window_ids, where
    incident_update_ids = {u["id"] for row in incidents for u in row["incident_updates"]}
    window_update_ids = {u["id"] for row in windows for u in row["incident_updates"]}
    assert incident_update_ids and window_update_ids, where
    assert not incident_update_ids & window_update_ids, where
    assert not (incident_ids | incident_update_ids) & (window_ids | window_update_ids), where
    for row in [*incidents, *windows]:
        assert {u["incident_id"] for u in row["incident_updates"]} == {row["id"]}, where


def test_the_v2_api_never_gives_a_window_an_incidents_id(client: Client, twins: Twins) -> None:
    lists: dict[str, list[dict[str, Any]]] = {"incidents": [], "scheduled_maintenances": []}
    for url, keys in V2_LISTS.items():
        payload = get_json(client, url)
        for key in keys:
            if key is not None:
                lists[key] += payload[key]
    assert_apart(lists["incidents"], lists["scheduled_maintenances"], "v2 API")

    [window] = get_json(client, "/api/v2/scheduled-maintenances.json")["scheduled_maintenances"]
    assert window["id"] == twins.window.public_id
    assert is_public_id(window["id"]) and not window["id"].isdigit()
    update_ids = set(twins.window.updates.values_list("public_id", flat=True))
    assert {u["id"] for u in window["incident_updates"]} == update_ids
    assert window["shortlink"] == f"{settings.SITE_URL}/maintenance/{twins.window.public_id}"
    [incident] = get_json(client, "/api/v2/incidents.json")["incidents"]
    assert incident["id"] == str(twins.incident.pk), "incidents keep their ids"
    assert incident["shortlink"] == f"{settings.SITE_URL}/incidents/{twins.incident.pk}"


def test_webhooks_never_give_a_window_an_incidents_id(twins: Twins) -> None:
    """What every webhook POST carries (all but its subscriber's "meta"), for each incident and window message."""
    bodies = {
        kind: [webhooks.shared_body(m)["incident"] for m in Message.objects.filter(kind=kind)]
        for kind in (MessageKind.INCIDENT_UPDATE, MessageKind.MAINTENANCE)
    }
    assert len(bodies[MessageKind.INCIDENT_UPDATE]) == 2 and len(bodies[MessageKind.MAINTENANCE]) == 2
    assert_apart(bodies[MessageKind.INCIDENT_UPDATE], bodies[MessageKind.MAINTENANCE], "webhooks")
    assert {b["id"] for b in bodies[MessageKind.MAINTENANCE]} == {twins.window.public_id}


@pytest.mark.parametrize("url", ["/history.atom", "/history.rss"])
def test_feed_entries_never_share_an_id(client: Client, twins: Twins, url: str) -> None:
    feed = feedparser.parse(client.get(url).content)
    assert not feed.bozo
    guids = [entry.id for entry in feed.entries]
    assert len(guids) == len(set(guids)) == 4
    windows = [e for e in feed.entries if e.title.endswith("Database upgrade")]
    incidents = [e for e in feed.entries if e.title.endswith("API errors")]
    assert len(windows) == len(incidents) == 2
    window_url = f"{settings.SITE_URL}/maintenance/{twins.window.public_id}"
    assert {e.link for e in windows} == {window_url}
    # Each guid is the page's URL and the update's id: no update id of a window is an incident update's.
    window_updates = {e.id.removeprefix(f"{window_url}#update-") for e in windows}
    incident_updates = {e.id.rsplit("#update-", 1)[1] for e in incidents}
    assert window_updates == set(twins.window.updates.values_list("public_id", flat=True))
    assert not window_updates & incident_updates


def test_the_calendar_names_each_window_by_its_public_id(client: Client, twins: Twins) -> None:
    calendar = icalendar.Calendar.from_ical(client.get("/maintenance.ics").content)
    [event] = calendar.events
    assert event.uid == f"maintenance-{twins.window.public_id}@127.0.0.1"
    assert str(twins.incident.pk) not in event.uid
    assert event.url == f"{settings.SITE_URL}/maintenance/{twins.window.public_id}"


def test_public_urls_and_emails_use_the_public_id_and_old_urls_redirect(
    client: Client,
    staff: User,
    twins: Twins,
    django_assert_num_queries: Callable[..., Any],
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    window = twins.window
    page = client.get(f"/maintenance/{window.public_id}")
    assert page.status_code == 200 and "Database upgrade" in page.content.decode()
    assert f'href="/maintenance/{window.public_id}"' in client.get("/").content.decode()

    with django_assert_num_queries(0):  # the old link of a window the snapshot holds: no database
        old = client.get(f"/maintenance/{window.pk}?from=email")
    assert old.status_code == 301
    assert old["Location"] == f"/maintenance/{window.public_id}?from=email"
    assert client.get(f"/maintenance/{window.pk}/", follow=True).redirect_chain == [
        (f"/maintenance/{window.pk}", 301),
        (f"/maintenance/{window.public_id}", 301),
    ]
    # The incident with the same number is still the incident.
    assert "API errors" in client.get(f"/incidents/{twins.incident.pk}").content.decode()

    reader = actions.subscribe(email="reader@example.com")
    actions.confirm_subscription(reader)
    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        actions.post_maintenance_update(window, actor=staff, body="Starting on time.")
    [email] = mail.outbox
    assert f"{settings.SITE_URL}/maintenance/{window.public_id}" in email.body
    assert f"/maintenance/{window.pk}\n" not in email.body


def test_public_ids_never_change(client: Client, staff: User, twins: Twins) -> None:
    window = twins.window
    before = (window.public_id, list(window.updates.order_by("pk").values_list("public_id", flat=True)))
    actions.reschedule_maintenance(
        window, actor=staff, scheduled_for=T0 + timedelta(hours=3), scheduled_until=T0 + timedelta(hours=4)
    )
    actions.cancel_maintenance(window, actor=staff)
    publishing.publish()
    window.refresh_from_db()
    assert window.public_id == before[0]
    assert list(window.updates.order_by("pk").values_list("public_id", flat=True))[:2] == before[1]
    calendar = icalendar.Calendar.from_ical(client.get("/maintenance.ics").content)
    assert [e.uid for e in calendar.events] == [f"maintenance-{before[0]}@127.0.0.1"]


def test_a_public_id_is_never_a_decimal_number() -> None:
    ids = [new_public_id() for _ in range(2000)]
    assert all(is_public_id(i) and re.fullmatch(r"[a-z][a-z0-9]{11}", i) for i in ids)
    assert len(set(ids)) == len(ids)
    assert not any(is_public_id(text) for text in ["1", "700001", "123456789012", "Abcdefghijkl", "abc"])


# --- the migration ------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_migration_gives_existing_windows_public_ids_and_rewrites_frozen_webhook_bodies() -> None:
    executor = MigrationExecutor(connection)
    # By name, whatever number it has: from the state just before it to the state just after.
    [after] = [key for key in executor.loader.disk_migrations if key[1].endswith("_maintenance_public_ids")]
    before = [node.key for node in executor.loader.graph.node_map[after].parents if node.key[0] == "incidents"]
    executor.migrate(before)
    old = executor.loader.project_state(before).apps
    window = old.get_model("incidents", "Maintenance").objects.create(
        title="Kernel patch", scheduled_for=T0, scheduled_until=T0 + timedelta(hours=1)
    )
    updates = [
        old.get_model("incidents", "MaintenanceUpdate").objects.create(
            maintenance=window, status="scheduled", body=text, body_html=f"<p>{text}</p>"
        )
        for text in ("Announced.", "Moved.")
    ]
    frozen = {
        "page": {"id": "abc", "status_indicator": "none", "status_description": "All Systems Operational"},
        "incident": {
            "id": str(window.pk),
            "shortlink": f"{settings.SITE_URL}/maintenance/{window.pk}",
            "incident_updates": [{"id": str(u.pk), "incident_id": str(window.pk)} for u in updates],
        },
    }
    message = old.get_model("incidents", "Message").objects.create(
        kind="maintenance", key="m:1", maintenance=window, webhook_body=json.dumps(frozen)
    )
    try:
        executor = MigrationExecutor(connection)
        executor.migrate([after])
        new = executor.loader.project_state([after]).apps
        migrated = new.get_model("incidents", "Maintenance").objects.get(pk=window.pk)
        update_ids = dict(
            new.get_model("incidents", "MaintenanceUpdate").objects.values_list("pk", "public_id").order_by("pk")
        )
        assert is_public_id(migrated.public_id)
        assert all(is_public_id(i) for i in update_ids.values()) and len(set(update_ids.values())) == 2
        body = json.loads(new.get_model("incidents", "Message").objects.get(pk=message.pk).webhook_body)
        assert body["incident"]["id"] == migrated.public_id
        assert body["incident"]["shortlink"] == f"{settings.SITE_URL}/maintenance/{migrated.public_id}"
        assert [(u["id"], u["incident_id"]) for u in body["incident"]["incident_updates"]] == [
            (update_ids[u.pk], migrated.public_id) for u in updates
        ]
    finally:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(executor.loader.graph.leaf_nodes())
        factories.ensure_severities()


def test_the_migrations_ids_are_public_ids() -> None:
    [name] = [
        p.stem for p in (Path(__file__).parent.parent / "incidents" / "migrations").glob("*_maintenance_public_ids.py")
    ]
    module = importlib.import_module(f"incidents.migrations.{name}")
    taken: set[str] = set()
    assert all(is_public_id(module._new_id(taken)) for _ in range(100)) and len(taken) == 100


# --- UTC times end in Z ---------------------------------------------------------------------------

# The format of a real Statuspage page in UTC (GitHub's): milliseconds, then "Z".
GITHUB = json.loads((FIXTURES / "github-components.json").read_text())
UTC_STAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


def stamps(value: Any) -> Iterator[tuple[str, str]]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key in TIMESTAMP_KEYS and isinstance(item, str):
                yield key, item
            else:
                yield from stamps(item)
    elif isinstance(value, list):
        for item in value:
            yield from stamps(item)


def test_the_fixture_of_a_page_in_utc_writes_z() -> None:
    assert GITHUB["page"]["time_zone"] == "Etc/UTC"
    found = list(stamps(GITHUB))
    assert found and all(UTC_STAMP.match(value) for _, value in found)


@pytest.mark.parametrize("zone", ["UTC", "Etc/UTC"])
def test_utc_times_end_in_z_in_the_v2_api_and_webhooks(client: Client, settings: Any, twins: Twins, zone: str) -> None:
    settings.DISPLAY_TIME_ZONE = zone
    republish()
    summary = get_json(client, "/api/v2/summary.json")
    assert summary["page"]["time_zone"] == zone
    found = [*stamps(summary), *stamps(get_json(client, "/api/v2/incidents.json"))]
    found += stamps(get_json(client, "/api/v2/scheduled-maintenances.json"))
    assert len(found) > 10
    assert [(key, value) for key, value in found if not UTC_STAMP.match(value)] == []
    [incident] = summary["incidents"]
    assert incident["created_at"] == "2026-03-02T14:05:00.000Z"
    assert summary["scheduled_maintenances"][0]["scheduled_for"] == "2026-03-02T15:05:00.000Z"
    for message in Message.objects.filter(kind__in=[MessageKind.INCIDENT_UPDATE, MessageKind.MAINTENANCE]):
        body = webhooks.shared_body(message)
        assert all(UTC_STAMP.match(value) for _, value in stamps(body)), body


def test_other_zones_keep_their_offset_even_at_zero(client: Client, settings: Any, twins: Twins) -> None:
    """As Statuspage (Rails) writes them: "Z" for UTC itself; London in winter is "+00:00", Denver "-07:00"."""
    settings.DISPLAY_TIME_ZONE = "Europe/London"
    republish()
    [incident] = get_json(client, "/api/v2/incidents.json")["incidents"]
    assert incident["created_at"] == "2026-03-02T14:05:00.000+00:00"
    settings.DISPLAY_TIME_ZONE = "America/Denver"
    republish()
    [incident] = get_json(client, "/api/v2/incidents.json")["incidents"]
    assert incident["created_at"] == "2026-03-02T07:05:00.000-07:00"
