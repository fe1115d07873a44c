"""Publishing: when a snapshot is built, what it says, and where it is stored."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import time_machine
from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.test import Client
from kombu.exceptions import OperationalError

from incidents import actions, publishing, tasks
from incidents.models import Component, Incident, PublishRequest, Snapshot, TimelineEvent
from incidents.public import build_document, overall_status
from statuspage.snapshot import reader
from tests import factories

pytestmark = pytest.mark.django_db
T0 = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)


@pytest.fixture
def us(staff: User) -> Component:
    group = factories.make_component(name="Query API", is_group=True, actor=staff)
    return factories.make_component(name="US", group=group, actor=staff)


def published_incident_names() -> list[str]:
    return [row["name"] for row in Snapshot.objects.latest().document["incidents"]]


def test_it_publishes_after_the_change_commits(
    staff: User, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        factories.declare(actor=staff, title="Slow queries")
        assert not Snapshot.objects.exists()

    assert callbacks.count(publishing._enqueue_publish) == 1
    assert published_incident_names() == ["Slow queries"]


def test_it_asks_once_per_transaction(staff: User, django_capture_on_commit_callbacks: Callable[..., Any]) -> None:
    with django_capture_on_commit_callbacks(execute=True) as callbacks, transaction.atomic():
        us = factories.make_component(name="US", actor=staff)
        incident = factories.declare(actor=staff)
        actions.post_update(incident, actor=staff, body="More", components={us: "major_outage"})
        actions.resolve_incident(incident, actor=staff, message="Fixed")

    assert callbacks.count(publishing._enqueue_publish) == 1
    assert Snapshot.objects.count() == 1


def test_it_does_not_store_unchanged_content_again(staff: User) -> None:
    factories.declare(actor=staff)
    first = publishing.publish()

    assert publishing.publish().version == first.version
    assert publishing.publish(force=True).version == first.version + 1


def test_it_keeps_internal_incidents_and_updates_out(staff: User) -> None:
    factories.declare(actor=staff, title="Internal only", is_public=False)
    public = factories.declare(actor=staff, title="Public")
    actions.post_update(public, actor=staff, body="Secret DBA notes", is_public=False)
    actions.post_update(public, actor=staff, body="We found the cause.", public_status="identified")

    document = publishing.publish().document
    assert [row["name"] for row in document["incidents"]] == ["Public"]
    bodies = [u["body"] for u in document["incidents"][0]["incident_updates"]]
    assert bodies == ["We found the cause.", "We are investigating elevated latency."]


def test_it_writes_the_file_atomically_and_redis_never_backwards(staff: User, requires_redis: None) -> None:
    factories.declare(actor=staff)
    snapshot = publishing.publish()
    path = Path(settings.SNAPSHOT_DIR) / "snapshot.json"

    assert json.loads(path.read_bytes())["version"] == snapshot.version
    assert sorted(p.name for p in path.parent.iterdir()) == ["snapshot.json"]  # no temporary files left
    client = publishing.redis_client()
    assert int(client.get(publishing.REDIS_VERSION_KEY)) == snapshot.version

    publishing.write_stores({**snapshot.document, "version": snapshot.version - 1, "stale": True})
    assert "stale" not in json.loads(client.get(publishing.REDIS_DOCUMENT_KEY))
    assert "stale" not in json.loads(path.read_bytes())


@pytest.mark.parametrize("stores", ["file and Redis", "file only"])
def test_after_a_restore_of_an_older_dump_the_next_publish_reaches_the_public_side(
    staff: User, stores: str, settings: Any, requires_redis: None
) -> None:
    """The stores only move forward. Before, a database restored from an older dump numbered its next
    snapshot below theirs, and the public side kept showing the state from before the restore."""
    if stores == "file only":
        settings.REDIS_URL = ""
    factories.declare(actor=staff, title="Before the dump")
    publishing.publish()
    dumped = Snapshot.objects.get()
    factories.declare(actor=staff, title="After the dump, lost with the restore")
    for _ in range(3):
        publishing.publish(force=True)
    Snapshot.objects.exclude(pk=dumped.pk).delete()  # what pg_restore of the older dump leaves
    lost = Incident.objects.get(title="After the dump, lost with the restore")
    TimelineEvent.objects.filter(incident=lost).delete()
    lost.delete()

    snapshot = publishing.publish()
    reader.reset()

    assert snapshot.version == 5  # above the stores' 4, not the restored database's 1 + 1
    assert [row["name"] for row in reader.current().document["incidents"]] == ["Before the dump"]  # type: ignore[union-attr]


def test_the_public_side_reuses_its_redis_connection(requires_redis: None) -> None:
    """Before, every call made a new client: a TCP handshake (and a new server-side client) each time."""
    ids = {publishing.redis_client().client_id() for _ in range(5)}
    assert len(ids) == 1


def test_it_reads_the_file_when_redis_is_down(staff: User, settings: Any) -> None:
    factories.declare(actor=staff, title="From the file")
    publishing.publish()
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    reader.reset()

    snapshot = reader.current()
    assert snapshot is not None
    assert [row["name"] for row in snapshot.document["incidents"]] == ["From the file"]


def test_it_derives_group_status_and_the_page_indicator(staff: User, us: Component) -> None:
    eu = factories.make_component(name="EU", group=us.group, actor=staff)
    actions.set_component_status(us, actor=staff, status="partial_outage")
    actions.set_component_status(eu, actor=staff, status="degraded_performance")

    document = build_document()
    rows = {row["name"]: row for row in document["components"]}
    assert rows["Query API"]["status"] == "partial_outage"
    assert rows["Query API"]["components"] == [str(us.pk), str(eu.pk)]
    assert document["status"] == {"indicator": "major", "description": "Partial System Outage"}


@pytest.mark.parametrize(
    ("statuses", "impacts", "expected"),
    [
        (["operational"], [], ("none", "All Systems Operational")),
        (["operational", "under_maintenance"], [], ("none", "Service Under Maintenance")),
        (["degraded_performance"], [], ("minor", "Partially Degraded Service")),
        (["operational"], ["minor"], ("minor", "Minor Service Outage")),
        (["major_outage"], ["minor"], ("critical", "Major System Outage")),
    ],
)
def test_it_names_the_overall_status(statuses: list[str], impacts: list[str], expected: tuple[str, str]) -> None:
    status = overall_status(statuses, impacts)
    assert (status["indicator"], status["description"]) == expected


def test_it_counts_uptime_by_the_stated_rule(staff: User) -> None:
    with time_machine.travel(T0 - timedelta(days=3), tick=False):
        component = factories.make_component(name="Exports", actor=staff)
    day = T0 - timedelta(days=1)  # 1 March, in UTC (the page's zone here)
    # 10 h partial outage (counts 0.3), 2 h major outage, 4 h maintenance (left out), 2 h degraded (free)
    for hours, status in [(2, "partial_outage"), (12, "major_outage"), (14, "under_maintenance"),
                          (18, "degraded_performance"), (20, "operational")]:  # fmt: skip
        actions.set_component_status(component, actor=staff, status=status, at=day + timedelta(hours=hours))

    with time_machine.travel(T0 + timedelta(hours=12), tick=False):
        document = build_document()
    uptime = next(row for row in document["components"] if row["name"] == "Exports")["uptime"]
    march_1 = next(d for d in uptime["days"] if d["date"] == "2026-03-01")
    down = 10 * 3600 * 0.3 + 2 * 3600
    assert march_1["outage_seconds"] == round(down)
    assert march_1["uptime_percent"] == round(100 * (1 - down / (20 * 3600)), 3)
    assert march_1["worst_status"] == "major_outage"
    assert next(d for d in uptime["days"] if d["date"] == "2026-03-02")["uptime_percent"] == 100.0
    assert uptime["days"][0]["uptime_percent"] is None  # before the component existed


def test_it_gives_the_last_30_days_uptime_for_narrow_screens(staff: User, client: Any) -> None:
    """Narrow screens show the last 30 days' bars; the figure beside them is those 30 days', not 90's."""
    with time_machine.travel(T0 - timedelta(days=60), tick=False):
        component = factories.make_component(name="Exports", actor=staff)
    outage = T0 - timedelta(days=40)  # inside the 90 days, outside the last 30
    actions.set_component_status(component, actor=staff, status="major_outage", at=outage)
    actions.set_component_status(component, actor=staff, status="operational", at=outage + timedelta(hours=12))

    with time_machine.travel(T0 + timedelta(hours=12), tick=False):
        document = build_document()
        publishing.publish()
        html = client.get("/").content.decode()
    uptime = next(row for row in document["components"] if row["name"] == "Exports")["uptime"]
    assert uptime["uptime_percent"] < 100
    assert uptime["uptime_percent_30_days"] == 100.0
    assert '<span class="uptime__percent uptime__percent--30">100% uptime</span>' in html
    assert '<span class="uptime__percent uptime__percent--90">99.17% uptime</span>' in html


def test_it_shows_the_promised_next_update(staff: User) -> None:
    factories.declare(actor=staff, title="Slow", at=T0)  # SEV1: public updates every 30 min

    with time_machine.travel(T0 + timedelta(minutes=5), tick=False):
        row = build_document()["incidents"][0]
    assert row["next_update_at"] == "2026-03-02T00:30:00.000Z"
    assert row["impact_scope"] == {"customer_impact_percent": None, "regions": [], "workaround": ""}


def test_it_publishes_by_hand(staff: User) -> None:
    from io import StringIO

    from django.core.management import call_command

    factories.declare(actor=staff)
    out = StringIO()
    call_command("publish", stdout=out)
    call_command("publish", "--force", stdout=out)

    versions = list(Snapshot.objects.values_list("version", flat=True))
    assert out.getvalue().count("published snapshot version") == 2
    assert versions == [2, 1]


def test_it_bases_the_banner_on_what_open_incidents_affect_now(staff: User, us: Component) -> None:
    incident = factories.declare(actor=staff, components={us: "partial_outage"})
    assert build_document()["status"]["indicator"] == "major"

    actions.post_update(incident, actor=staff, body="Recovering", components={us: "operational"})

    document = build_document()
    assert document["status"] == {"indicator": "none", "description": "All Systems Operational"}
    assert document["incidents"][0]["impact"] == "major"  # the incident's record keeps its worst


# --- a publish request lost with the broker ------------------------------------------------------


def broker_down(*args: Any, **kwargs: Any) -> None:
    raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")


@pytest.fixture
def lost_publish_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every publish request after commit is lost, as with Redis (the broker) down."""
    monkeypatch.setattr(tasks.publish_snapshot, "apply_async", broker_down)


def dashboard(client: Client) -> str:
    """The dashboard's live part as text (tags dropped, spaces collapsed) and its error classes."""
    html = client.get("/manage/", headers={"HX-Request": "true"}).content.decode()
    errors = " ".join(re.findall(r'class="message message--error"', html))
    return " ".join(re.sub(r"<[^>]+>", "", html).split()) + " " + errors


BEHIND = "The public page is behind: a change made at 00:00 UTC is not published yet."


def test_the_sweep_publishes_a_change_whose_publish_request_was_lost(
    staff: User,
    staff_client: Client,
    lost_publish_requests: None,
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    with time_machine.travel(T0, tick=False):
        publishing.publish()  # the page as it was before the change
        with django_capture_on_commit_callbacks(execute=True):
            factories.declare(actor=staff, title="Slow queries")
    assert published_incident_names() == [], "the publish request was lost"

    with time_machine.travel(T0 + timedelta(seconds=59), tick=False):
        html = dashboard(staff_client)
        assert "Public page last published at 00:00 UTC" in html
        assert "The public page is behind" not in html  # a minute's grace: publishing takes seconds
    with time_machine.travel(T0 + timedelta(seconds=61), tick=False):
        html = dashboard(staff_client)
        assert BEHIND in html
        assert 'class="message message--error"' in html

        assert tasks.sweep_clocks() == 0  # the sweep beat runs every TIMER_SWEEP_SECONDS

        assert published_incident_names() == ["Slow queries"]
        html = dashboard(staff_client)
        assert "The public page is behind" not in html
        assert "Public page last published at 00:01 UTC" in html
    assert not PublishRequest.objects.exists()


def test_the_sweep_leaves_a_change_to_its_own_publish_for_a_few_seconds(
    staff: User, lost_publish_requests: None
) -> None:
    with time_machine.travel(T0, tick=False):
        publishing.publish()
        factories.declare(actor=staff, title="Slow queries")  # not committed here: no publish ran
    with time_machine.travel(T0 + timedelta(seconds=publishing.STALE_AFTER_SECONDS - 1), tick=False):
        assert publishing.publish_if_stale() is None  # its own task is on its way: no second build
    with time_machine.travel(T0 + timedelta(seconds=publishing.STALE_AFTER_SECONDS), tick=False):
        assert publishing.publish_if_stale() is not None
    assert published_incident_names() == ["Slow queries"]


def test_run_timers_publishes_a_change_whose_publish_was_lost(staff: User, lost_publish_requests: None) -> None:
    from io import StringIO

    from django.core.management import call_command

    with time_machine.travel(T0, tick=False):
        publishing.publish()
        factories.declare(actor=staff, title="Slow queries")
    with time_machine.travel(T0 + timedelta(seconds=20), tick=False):
        call_command("run_timers", stdout=StringIO())
    assert published_incident_names() == ["Slow queries"]


def test_a_change_made_while_a_build_runs_waits_for_the_next_one(staff: User) -> None:
    """A request committed after a build started reading is not consumed by that build."""
    factories.declare(actor=staff, title="First")
    real_build = publishing.build_document

    def build_while_another_change_commits(now: Any = None) -> dict[str, Any]:
        document = real_build(now)
        PublishRequest.objects.create()  # committed after the build's reads: it did not see this change
        return document

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(publishing, "build_document", build_while_another_change_commits)
        publishing.publish()
    assert PublishRequest.objects.count() == 1


def test_the_dashboard_says_when_nothing_was_ever_published(staff_client: Client, lost_publish_requests: None) -> None:
    with time_machine.travel(T0, tick=False):
        factories.make_component(name="US")
    with time_machine.travel(T0 + timedelta(minutes=2), tick=False):
        html = dashboard(staff_client)
    assert BEHIND in html
    assert "The public page has never been published." in html
