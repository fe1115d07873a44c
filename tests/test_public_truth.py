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

from incidents import actions, clocks, publishing
from incidents.models import Component, Maintenance
from statuspage.snapshot import reader
from tests import factories

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
