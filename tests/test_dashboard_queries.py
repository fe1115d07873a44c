"""The dashboard makes a fixed number of queries, however many incidents there are."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from incidents import actions
from incidents.models import Component, EscalationStep, Incident
from tests import factories

T0 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
# Session, user, open incidents + their clocks, the open count, resolved incidents + their clocks, paused
# transports, unpublished post-mortems, overdue action items, the open incidents' page steps (with what
# the mail server made of their pages), the timer sweep's heartbeat, pages failing on the mail server,
# the escalation steps' people (a target whose address was removed pages nobody, so the dashboard says
# so before an incident finds out), and the public page's last publish and oldest waiting change.
MAX_QUERIES = 16
pytestmark = pytest.mark.django_db


def make_incidents(start: int, count: int, people: Sequence[User], components: Sequence[Component]) -> None:
    """A realistic mix, all through the actions: every other incident resolved, some acknowledged by
    someone other than the declarer, some with component outages and a public update, four severities.

    1,000 of them take about 10 s on SQLite and 20 s on PostgreSQL here, so no shortcut is needed.
    """
    for number in range(start, start + count):
        at = T0 + timedelta(minutes=7 * number)
        declarer, responder = people[number % len(people)], people[(number + 1) % len(people)]
        outage = {components[number % len(components)]: "partial_outage"} if number % 3 == 0 else None
        incident = factories.declare(
            actor=declarer,
            title=f"Incident {number}",
            severity_key=f"sev{number % 4 + 1}",
            components=outage,
            customer_impact_percent=str(number % 100),
            regions="eu-west" if number % 2 else "us-east, ap-south",
            at=at,
        )
        if number % 4 in (1, 2):
            actions.acknowledge_incident(incident, actor=responder, at=at + timedelta(minutes=3))
        if number % 5 == 0:
            actions.post_update(incident, actor=responder, body="Mitigated.", public_status="monitoring", at=at)
        if number % 2 == 0:
            actions.resolve_incident(incident, actor=responder, message="Resolved.", at=at + timedelta(hours=1))


def dashboard_queries(client: Client) -> tuple[int, str]:
    with CaptureQueriesContext(connection) as queries:
        response = client.get("/manage/")
    assert response.status_code == 200
    return len(queries), response.content.decode()


def test_it_makes_the_same_queries_for_10_and_1000_incidents(
    staff_client: Client, staff: User, other_staff: User
) -> None:
    # Every severity pages people while unacknowledged, so the dashboard shows who is paged and who is next.
    for key in ("sev1", "sev2", "sev3", "sev4"):
        step = EscalationStep.objects.create(severity=factories.severity(key), position=1, after_minutes=0)
        step.users.set([staff])
        EscalationStep.objects.create(
            severity=factories.severity(key), position=2, after_minutes=10, addresses="oncall@example.com"
        )
    group = factories.make_component(name="Platform", is_group=True)
    components = [factories.make_component(name=f"Service {n}", group=group) for n in range(5)]
    people = [staff, other_staff]

    make_incidents(0, 10, people, components)
    with time_machine.travel(T0 + timedelta(days=1), tick=False):
        with_10, html_10 = dashboard_queries(staff_client)

    make_incidents(10, 990, people, components)
    assert Incident.objects.count() == 1000
    assert Incident.objects.open().count() == 500
    with time_machine.travel(T0 + timedelta(days=10), tick=False):
        with_1000, html_1000 = dashboard_queries(staff_client)

    assert with_10 == with_1000
    assert with_1000 <= MAX_QUERIES
    assert "Next: alice at" in html_10  # no sweep ran: the first step is due, nobody paged yet
    # Same page, more rows: 5 open and 5 resolved, then the capped lists (100 open, 20 resolved).
    assert html_10.count('class="incident-title"') == 10
    assert html_1000.count('class="incident-title"') == 120
    assert "Showing the 100 most severe of 500 open incidents." in html_1000
