"""The write path: each action's effects, milestones, timeline events and refusals."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection, transaction
from django.utils import timezone

from incidents import actions, escalation
from incidents.actions import ActionRefused
from incidents.models import (
    Component,
    ComponentStatusChange,
    EscalationStep,
    EventKind,
    Incident,
    Postmortem,
    TimelineEvent,
)
from tests import factories

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
pytestmark = pytest.mark.django_db


@pytest.fixture
def us(staff: User) -> Component:
    group = factories.make_component(name="Query API", is_group=True, actor=staff)
    return factories.make_component(name="US", group=group, actor=staff)


def kinds(incident: Incident) -> list[str]:
    return list(incident.events.order_by("created_at", "id").values_list("kind", flat=True))


def test_it_declares_with_scope_components_and_a_first_message(staff: User, us: Component) -> None:
    incident = factories.declare(
        actor=staff,
        components={us: "partial_outage"},
        customer_impact_percent="45",
        regions="US, us-east ,US",
        workaround="Use cached dashboards.",
        at=T0,
    )

    assert (incident.status, incident.public_status, incident.impact) == ("declared", "investigating", "major")
    assert (incident.customer_impact_percent, incident.regions) == (Decimal("45.00"), ["US", "us-east"])
    assert (incident.declared_at, incident.published_at, incident.acknowledged_at) == (T0, T0, None)
    assert incident.commander == staff
    assert kinds(incident) == ["declared", "update_posted"]
    us.refresh_from_db()
    assert us.status == "partial_outage"
    change = ComponentStatusChange.objects.get(component=us)
    assert (change.old_status, change.new_status, change.incident_id) == ("operational", "partial_outage", incident.pk)
    assert str(us) == "Query API - US"


def test_it_takes_the_impact_override_over_the_derived_impact(staff: User, us: Component) -> None:
    incident = factories.declare(actor=staff, components={us: "degraded_performance"}, impact_override="critical")
    assert incident.impact == "critical"

    actions.update_impact_scope(incident, actor=staff, impact_override="")
    incident.refresh_from_db()
    assert incident.impact == "minor"


def test_it_keeps_the_peak_impact_as_components_recover(staff: User, us: Component) -> None:
    incident = factories.declare(actor=staff, components={us: "major_outage"})
    actions.post_update(incident, actor=staff, body="Recovering", components={us: "degraded_performance"})

    incident.refresh_from_db()
    assert incident.impact == "critical"


def test_it_acknowledges_once_and_explains_a_second_try(staff: User, other_staff: User) -> None:
    incident = factories.declare(actor=staff, at=T0)
    actions.acknowledge_incident(incident, actor=staff, at=T0 + timedelta(minutes=3))

    with pytest.raises(ActionRefused, match="Already acknowledged by alice"):
        actions.acknowledge_incident(incident, actor=other_staff, at=T0 + timedelta(minutes=4))

    incident.refresh_from_db()
    assert (incident.status, incident.acknowledged_at, incident.acknowledged_by) == (
        "acknowledged",
        T0 + timedelta(minutes=3),
        staff,
    )
    event = incident.events.get(kind=EventKind.ACKNOWLEDGED)
    assert event.message == "alice acknowledged after 3 min"


def test_it_stamps_each_milestone_once(staff: User) -> None:
    incident = factories.declare(actor=staff, at=T0)
    actions.post_update(
        incident, actor=staff, body="Cause found", public_status="identified", at=T0 + timedelta(hours=1)
    )
    actions.post_update(
        incident, actor=staff, body="Fix rolling out", public_status="monitoring", at=T0 + timedelta(hours=2)
    )
    actions.post_update(incident, actor=staff, body="Regressed", public_status="identified", at=T0 + timedelta(hours=3))

    incident.refresh_from_db()
    assert incident.identified_at == T0 + timedelta(hours=1)
    assert incident.mitigated_at == T0 + timedelta(hours=2)
    assert incident.acknowledged_at == T0 + timedelta(hours=1)  # identifying is acknowledging
    assert (incident.status, incident.public_status) == ("mitigated", "identified")


def test_it_keeps_internal_updates_out_of_the_public_status(staff: User) -> None:
    incident = factories.declare(actor=staff, is_public=False, at=T0)
    update = actions.post_update(
        incident, actor=staff, body="Paging the DBA", public_status="identified", is_public=False
    )

    incident.refresh_from_db()
    assert (incident.public_status, incident.published_at, update.is_public) == ("investigating", None, False)
    assert update.status == "identified"  # the status it was written with, for staff to read


def test_it_renders_markdown_and_strips_scripts(staff: User) -> None:
    incident = factories.declare(actor=staff)
    update = actions.post_update(
        incident, actor=staff, body="**Fixed** <script>alert(1)</script> [notes](https://example.com)"
    )

    assert "<strong>Fixed</strong>" in update.body_html
    assert "<script" not in update.body_html
    assert 'rel="noopener noreferrer nofollow"' in update.body_html


def test_it_resolves_filling_milestones_and_restoring_components(staff: User, us: Component) -> None:
    incident = factories.declare(actor=staff, components={us: "major_outage"}, at=T0)

    actions.resolve_incident(incident, actor=staff, message="All clear.", at=T0 + timedelta(hours=2))

    incident.refresh_from_db()
    resolved = T0 + timedelta(hours=2)
    assert (incident.acknowledged_at, incident.identified_at, incident.mitigated_at, incident.resolved_at) == (
        resolved,
        resolved,
        resolved,
        resolved,
    )
    assert (incident.status, incident.public_status) == ("resolved", "resolved")
    us.refresh_from_db()
    assert us.status == "operational"
    assert incident.updates.first().component_changes == [  # type: ignore[union-attr]
        {"component_id": us.pk, "name": "Query API - US", "old_status": "major_outage", "new_status": "operational"}
    ]
    assert kinds(incident)[-2:] == ["resolved", "postmortem_started"]  # SEV1 requires a post-mortem


@pytest.mark.parametrize(
    ("action", "message"),
    [
        (lambda i, u: actions.resolve_incident(i, actor=u), "already resolved"),
        (lambda i, u: actions.acknowledge_incident(i, actor=u), "already resolved; reopen it first"),
        (lambda i, u: actions.post_update(i, actor=u, body="More"), "reopen it before posting an update"),
        (lambda i, u: actions.set_component_status(Component.objects.get(), actor=u, status="major_outage", incident=i),
         "reopen it first"),
    ],
)  # fmt: skip
def test_it_refuses_changes_to_a_resolved_incident(
    staff: User, action: Callable[[Incident, User], Any], message: str
) -> None:
    factories.make_component(name="Website", actor=staff)
    incident = factories.declare(actor=staff)
    actions.resolve_incident(incident, actor=staff)
    events_before = TimelineEvent.objects.count()

    with pytest.raises(ActionRefused, match=message):
        action(incident, staff)

    assert TimelineEvent.objects.count() == events_before


def test_it_reopens_only_a_resolved_incident_with_a_reason(staff: User) -> None:
    incident = factories.declare(actor=staff)
    with pytest.raises(ActionRefused, match="Only a resolved incident"):
        actions.reopen_incident(incident, actor=staff, reason="x")
    actions.resolve_incident(incident, actor=staff)
    with pytest.raises(ActionRefused, match="Say why") as refused:
        actions.reopen_incident(incident, actor=staff, reason="  ")
    assert refused.value.field == "reason"

    actions.reopen_incident(incident, actor=staff, reason="Errors are back")

    incident.refresh_from_db()
    assert (incident.status, incident.public_status, incident.resolved_at, incident.reopened_count) == (
        "acknowledged",
        "investigating",
        None,
        1,
    )
    reopened = incident.events.get(kind=EventKind.REOPENED)
    assert (
        reopened.message
        == "alice reopened the incident: Errors are back; the post-mortem clock waits for the next resolve"
    )


def latest_public_update(incident: Incident) -> tuple[str, str]:
    update = incident.updates.filter(is_public=True).latest("created_at", "id")
    return update.status, update.body


def test_reopening_a_public_incident_tells_customers(staff: User) -> None:
    # Without it the public page showed an active incident whose latest update said "Resolved".
    incident = factories.declare(actor=staff, at=T0)
    actions.resolve_incident(incident, actor=staff, message="Fixed.", at=T0 + timedelta(hours=1))

    actions.reopen_incident(incident, actor=staff, reason="Errors are back", at=T0 + timedelta(hours=2))

    assert latest_public_update(incident) == ("investigating", "We are investigating this issue again.")
    assert incident.updates.count() == 3


def test_an_internal_reopen_message_stays_internal_and_customers_still_hear(staff: User) -> None:
    incident = factories.declare(actor=staff, at=T0)
    actions.resolve_incident(incident, actor=staff, message="Fixed.", at=T0 + timedelta(hours=1))

    actions.reopen_incident(
        incident,
        actor=staff,
        reason="Errors are back",
        message="db01 again",
        is_public=False,
        at=T0 + timedelta(hours=2),
    )

    assert incident.updates.get(is_public=False).body == "db01 again"
    assert latest_public_update(incident) == ("investigating", "We are investigating this issue again.")


def test_a_public_reopen_message_is_the_one_update(staff: User) -> None:
    incident = factories.declare(actor=staff, at=T0)
    actions.resolve_incident(incident, actor=staff, message="Fixed.", at=T0 + timedelta(hours=1))

    actions.reopen_incident(
        incident, actor=staff, reason="Errors are back", message="Errors are back for some.", at=T0 + timedelta(hours=2)
    )

    assert latest_public_update(incident) == ("investigating", "Errors are back for some.")
    assert incident.updates.count() == 3


def test_resolving_a_public_incident_without_a_message_tells_customers(staff: User, us: Component) -> None:
    # Without it the public page and /api/v2 showed "Investigating" as the latest update of a resolved
    # incident, and subscribers never heard it was over.
    incident = factories.declare(actor=staff, components={us: "partial_outage"}, at=T0)

    actions.resolve_incident(incident, actor=staff, at=T0 + timedelta(hours=1))

    assert latest_public_update(incident) == ("resolved", "This incident has been resolved.")
    resolved = incident.updates.get(status="resolved")
    assert [(c["component_id"], c["new_status"]) for c in resolved.component_changes] == [(us.pk, "operational")]
    assert incident.updates.count() == 2


def test_an_internal_resolve_message_stays_internal_and_customers_still_hear(staff: User, us: Component) -> None:
    incident = factories.declare(actor=staff, components={us: "partial_outage"}, at=T0)

    actions.resolve_incident(
        incident, actor=staff, message="Rolled back db01.", is_public=False, at=T0 + timedelta(hours=1)
    )

    internal = incident.updates.get(is_public=False)
    # Written with Resolve, it says so (it was labelled "Investigating", the status it left unchanged).
    assert (internal.body, internal.status, internal.component_changes) == ("Rolled back db01.", "resolved", [])
    assert latest_public_update(incident) == ("resolved", "This incident has been resolved.")
    # The components' recovery goes with the update customers read.
    public = incident.updates.filter(is_public=True).latest("created_at", "id")
    assert [c["new_status"] for c in public.component_changes] == ["operational"]


def test_a_public_resolve_message_is_the_one_update(staff: User) -> None:
    incident = factories.declare(actor=staff, at=T0)

    actions.resolve_incident(incident, actor=staff, message="Fixed.", at=T0 + timedelta(hours=1))

    assert latest_public_update(incident) == ("resolved", "Fixed.")
    assert incident.updates.count() == 2


def test_resolving_an_incident_that_was_never_public_publishes_nothing(staff: User) -> None:
    incident = factories.declare(actor=staff, is_public=False, at=T0)

    actions.resolve_incident(incident, actor=staff, at=T0 + timedelta(hours=1))

    incident.refresh_from_db()
    assert (incident.published_at, incident.public_status) == (None, "resolved")
    assert not incident.updates.filter(is_public=True).exists()


def test_reopening_an_incident_that_was_never_public_publishes_nothing(staff: User) -> None:
    incident = factories.declare(actor=staff, is_public=False, at=T0)
    actions.resolve_incident(incident, actor=staff, at=T0 + timedelta(hours=1))

    actions.reopen_incident(incident, actor=staff, reason="Errors are back", at=T0 + timedelta(hours=2))

    incident.refresh_from_db()
    assert incident.published_at is None
    assert not incident.updates.filter(is_public=True).exists()


def test_it_promises_the_next_public_update_again_on_reopen(staff: User) -> None:
    incident = factories.declare(actor=staff, at=T0)  # SEV1: public updates every 30 min
    actions.resolve_incident(incident, actor=staff, message="Fixed", at=T0 + timedelta(hours=1))

    actions.reopen_incident(incident, actor=staff, reason="Errors are back", at=T0 + timedelta(hours=2))

    cadence = incident.clocks.get(metric="update_cadence")
    assert (cadence.state, cadence.due_at) == ("running", T0 + timedelta(hours=2, minutes=30))

    actions.resolve_incident(incident, actor=staff, at=T0 + timedelta(hours=3))
    actions.reopen_incident(
        incident, actor=staff, reason="Again", message="We are looking into new errors.", at=T0 + timedelta(hours=4)
    )
    incident.refresh_from_db()
    assert incident.updates.first().body == "We are looking into new errors."  # type: ignore[union-attr]
    assert incident.public_status == "investigating"


def test_it_records_the_declared_component_changes_on_the_first_update(staff: User, us: Component) -> None:
    incident = factories.declare(actor=staff, components={us: "partial_outage"})

    first = incident.updates.get()
    assert first.component_changes == [
        {"component_id": us.pk, "name": "Query API - US", "old_status": "operational", "new_status": "partial_outage"}
    ]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"title": "  "}, "title"),
        ({"customer_impact_percent": "145"}, "customer_impact_percent"),
        ({"customer_impact_percent": "lots"}, "customer_impact_percent"),
        ({"public_status": "resolved"}, "public_status"),
        ({"impact_override": "apocalyptic"}, "impact_override"),
    ],
)
def test_it_refuses_bad_declarations_naming_the_field(staff: User, kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ActionRefused) as refused:
        factories.declare(actor=staff, **kwargs)

    assert refused.value.field == field
    assert not Incident.objects.exists()


def test_it_refuses_unknown_component_statuses_and_groups(staff: User, us: Component) -> None:
    incident = factories.declare(actor=staff)
    with pytest.raises(ActionRefused, match="Unknown component status 'on_fire'"):
        actions.post_update(incident, actor=staff, body="x", components={us: "on_fire"})
    with pytest.raises(ActionRefused, match="is a group"):
        actions.post_update(incident, actor=staff, body="x", components={us.group: "major_outage"})  # type: ignore[dict-item]


def test_it_refuses_a_severity_change_to_the_same_severity(staff: User) -> None:
    incident = factories.declare(actor=staff, severity_key="sev2")
    with pytest.raises(ActionRefused, match="already SEV2"):
        actions.change_severity(incident, actor=staff, severity=factories.severity("sev2"))


def test_it_audits_impact_scope_changes(staff: User) -> None:
    incident = factories.declare(actor=staff, customer_impact_percent=10)

    actions.update_impact_scope(incident, actor=staff, customer_impact_percent=45, regions=["US"])

    event = incident.events.get(kind=EventKind.SCOPE_CHANGED)
    assert event.data["changes"] == {
        "customer_impact_percent": {"old": "10.00", "new": "45.00"},
        "regions": {"old": [], "new": ["US"]},
    }
    with pytest.raises(ActionRefused, match="Nothing changed"):
        actions.update_impact_scope(incident, actor=staff, customer_impact_percent=45)


def test_it_returns_the_same_incident_for_a_repeated_idempotency_key(staff: User, other_staff: User) -> None:
    first = factories.declare(actor=staff, idempotency_key="abc")
    again = factories.declare(actor=staff, idempotency_key="abc", title="Another title")
    someone_else = factories.declare(actor=other_staff, idempotency_key="abc")

    assert again.pk == first.pk
    assert (first.replayed, again.replayed, someone_else.replayed) == (False, True, False)
    assert someone_else.pk != first.pk
    assert Incident.objects.count() == 2


def test_it_creates_components_in_two_levels_only(staff: User, us: Component) -> None:
    with pytest.raises(ActionRefused, match="not a group"):
        actions.create_component(actor=staff, name="Deep", group=us)
    with pytest.raises(ActionRefused, match="already exists"):
        actions.create_component(actor=staff, name="US", group=us.group)
    with pytest.raises(ActionRefused, match="Groups cannot be nested"):
        actions.create_component(actor=staff, name="Sub", group=us.group, is_group=True)


def test_it_records_component_history_outside_incidents(staff: User, us: Component) -> None:
    actions.set_component_status(us, actor=staff, status="under_maintenance")
    actions.set_component_status(us, actor=staff, status="under_maintenance")  # no change: no history row
    actions.set_component_status(us, actor=staff, status="operational")

    assert list(us.status_changes.values_list("new_status", flat=True)) == ["under_maintenance", "operational"]


def run_concurrently(*calls: Callable[[], Any]) -> list[Any]:
    """Run each call in its own thread and database connection, started together."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def runner(index: int, call: Callable[[], Any]) -> None:
        barrier.wait()
        try:
            results[index] = call()
        except Exception as error:
            results[index] = error
        finally:
            connection.close()

    threads = [threading.Thread(target=runner, args=(i, call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


@pytest.mark.django_db(transaction=True)
def test_it_lets_one_of_two_concurrent_acknowledgments_win(requires_postgres: None) -> None:
    alice = factories.make_user(username="alice")
    bob = factories.make_user(username="bob")
    incident = factories.declare(actor=alice)

    results = run_concurrently(
        lambda: actions.acknowledge_incident(incident, actor=alice),
        lambda: actions.acknowledge_incident(incident, actor=bob),
    )

    refused = [r for r in results if isinstance(r, ActionRefused)]
    assert len(refused) == 1, results
    assert "Already acknowledged" in refused[0].message
    assert TimelineEvent.objects.filter(incident=incident, kind=EventKind.ACKNOWLEDGED).count() == 1


@pytest.mark.django_db(transaction=True)
def test_it_loses_no_change_when_acknowledge_and_resolve_race(requires_postgres: None) -> None:
    alice = factories.make_user(username="alice")
    bob = factories.make_user(username="bob")
    incident = factories.declare(actor=alice)

    results = run_concurrently(
        lambda: actions.acknowledge_incident(incident, actor=alice),
        lambda: actions.resolve_incident(incident, actor=bob, message="Fixed"),
    )

    incident.refresh_from_db()
    assert incident.status == "resolved"
    assert incident.acknowledged_at is not None
    # Whichever ran second saw the first's change: either both applied, or acknowledge was refused
    # because the resolve (which acknowledges) came first. Never a silent overwrite.
    if isinstance(results[0], ActionRefused):
        assert "already resolved" in results[0].message
        assert incident.acknowledged_by == bob
    else:
        assert incident.acknowledged_by == alice
    assert incident.events.filter(kind=EventKind.RESOLVED).count() == 1


def test_it_words_timeline_events_as_people_read_them(staff: User) -> None:
    incident = factories.declare(actor=staff, is_public=False, at=T0)
    actions.post_update(incident, actor=staff, body="Paging the DBA", is_public=False, at=T0)
    actions.acknowledge_incident(incident, actor=staff, at=T0 + timedelta(hours=2, minutes=30, seconds=20))
    actions.resolve_incident(incident, actor=staff, at=T0 + timedelta(days=3, hours=4, minutes=5))

    people = incident.events.exclude(kind__startswith="clock_")
    assert list(people.values_list("message", flat=True)) == [
        "alice declared SEV1: Queries are slow",
        "alice posted an internal update",
        "alice posted an internal update",
        "alice acknowledged after 2 h 30 min",
        "alice resolved the incident after 3 d 4 h",
        "Post-mortem draft opened, owned by alice, due 10 Mar 2026 13:05 UTC",
    ]


def test_it_assigns_a_staff_commander(staff: User, other_staff: User, outsider: User) -> None:
    incident = factories.declare(actor=None)
    assert incident.commander is None

    actions.assign_commander(incident, actor=staff, commander=other_staff)

    incident.refresh_from_db()
    assert incident.commander == other_staff
    assert incident.events.last().message == "alice made bob the incident commander"
    with pytest.raises(ActionRefused, match="already the commander"):
        actions.assign_commander(incident, actor=staff, commander=other_staff)
    with pytest.raises(ActionRefused, match="active staff user"):
        actions.assign_commander(incident, actor=staff, commander=outsider)


def while_another_transaction_changes_severity(incident: Incident, call: Callable[[], Any], *, to: str) -> Any:
    """Run `call` in its own thread and connection while this connection's transaction, having changed the
    incident's severity, holds the row; commit once `call` waits for the lock. Returns what `call` returned
    or raised."""
    severity = factories.severity(to)
    return holding_the_incident_while(
        incident,
        call,
        lambda: actions.change_severity(incident, actor=incident.commander, severity=severity),
        change_first=True,
    )


def resolved_incident(staff: User) -> Incident:
    incident = factories.declare(actor=staff, severity_key="sev3")
    return actions.resolve_incident(incident, actor=staff, message="Fixed.")


RACING_ACTIONS: dict[str, tuple[Callable[[Incident, User, Component], Any], str, str]] = {
    # name: (the action, the event kind it writes, how the incident starts: open or resolved)
    "acknowledge": (lambda i, u, c: actions.acknowledge_incident(i, actor=u), EventKind.ACKNOWLEDGED, "open"),
    "update": (lambda i, u, c: actions.post_update(i, actor=u, body="Still on it."), EventKind.UPDATE_POSTED, "open"),
    "scope": (
        lambda i, u, c: actions.update_impact_scope(i, actor=u, customer_impact_percent="12"),
        EventKind.SCOPE_CHANGED,
        "open",
    ),
    "commander": (
        lambda i, u, c: actions.assign_commander(i, actor=u, commander=factories.make_user(username="bob")),
        EventKind.COMMANDER_CHANGED,
        "open",
    ),
    "stop paging": (
        lambda i, u, c: actions.stop_paging(i, actor=u, reason="On it already."),
        EventKind.PAGING_STOPPED,
        "open",
    ),
    "component": (
        lambda i, u, c: actions.set_component_status(c, actor=u, status="major_outage", incident=i),
        EventKind.COMPONENT_CHANGED,
        "open",
    ),
    "resolve": (lambda i, u, c: actions.resolve_incident(i, actor=u, message="Fixed."), EventKind.RESOLVED, "open"),
    "severity": (
        lambda i, u, c: actions.change_severity(i, actor=u, severity=factories.severity("sev4")),
        EventKind.SEVERITY_CHANGED,
        "open",
    ),
    "paging sweep": (
        lambda i, u, c: escalation.fire_due(i.declared_at + timedelta(minutes=31)),
        EventKind.SEVERITY_CHANGED,  # nothing of its own: the change stopped the step it found due
        "open",
    ),
    "reopen": (lambda i, u, c: actions.reopen_incident(i, actor=u, reason="Back."), EventKind.REOPENED, "resolved"),
    "post-mortem": (lambda i, u, c: actions.start_postmortem(i, actor=u), EventKind.POSTMORTEM_STARTED, "resolved"),
}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("name", RACING_ACTIONS)
def test_no_action_fails_while_another_transaction_changes_the_severity(requires_postgres: None, name: str) -> None:
    # Locking the incident joined to its severity made PostgreSQL drop the row once the severity changed
    # under it: Incident.DoesNotExist, a 500 for the person acting.
    act, kind, start = RACING_ACTIONS[name]
    staff = factories.make_user(username="alice")
    component = factories.make_component(name="API", actor=staff)
    for key in ("sev1", "sev2"):  # paging waiting to fire, for "stop paging"
        EscalationStep.objects.create(
            severity=factories.severity(key), position=1, after_minutes=30, addresses="pager@example.com"
        )
    if start == "open":
        incident = factories.declare(actor=staff, severity_key="sev1", components={component: "degraded_performance"})
    else:
        incident = resolved_incident(staff)
    before = {k: incident.events.filter(kind=k).count() for k in (kind, EventKind.SEVERITY_CHANGED)}

    # Raised to SEV2 after the resolve, the incident would get the post-mortem SEV2 requires from the
    # change itself; starting one races a change to SEV4, which requires none.
    racing_to = "sev4" if name == "post-mortem" else "sev2"
    result = while_another_transaction_changes_severity(incident, lambda: act(incident, staff, component), to=racing_to)

    assert not isinstance(result, Exception), repr(result)
    incident.refresh_from_db()
    assert incident.severity.key == ("sev4" if name == "severity" else racing_to)
    if name == "paging sweep":
        assert result == 0
    changes = 2 if name == "severity" else 1  # ours, and the racing action's when it is a severity change too
    severity_changes = incident.events.filter(kind=EventKind.SEVERITY_CHANGED).count()
    assert severity_changes == before[EventKind.SEVERITY_CHANGED] + changes
    if kind != EventKind.SEVERITY_CHANGED:
        assert incident.events.filter(kind=kind).count() == before[kind] + 1


def holding_the_incident_while(
    incident: Incident, waiting: Callable[[], Any], then: Callable[[], Any], *, change_first: bool = False
) -> Any:
    """Lock the incident in this connection, run `waiting` in its own thread and connection, and once it
    waits for the row lock run `then` here and commit. Returns what `waiting` returned or raised. With
    change_first, `then` runs (and takes the lock) before `waiting` starts instead."""
    outcome: list[Any] = [None]

    def runner() -> None:
        try:
            outcome[0] = waiting()
        except Exception as error:
            outcome[0] = error
        finally:
            connection.close()

    thread = threading.Thread(target=runner)
    with transaction.atomic():
        Incident.objects.locked(incident.pk)
        if change_first:
            then()
        thread.start()
        deadline = time.monotonic() + 20
        with connection.cursor() as cursor:
            while True:  # until the other connection waits for our row lock
                cursor.execute("SELECT pg_stat_clear_snapshot()")
                cursor.execute(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE wait_event_type = 'Lock' AND datname = current_database()"
                )
                if cursor.fetchone()[0]:
                    break
                assert thread.is_alive() and time.monotonic() < deadline, f"it never waited: {outcome[0]!r}"
                time.sleep(0.01)
        if not change_first:
            then()
    thread.join(30)
    assert not thread.is_alive()
    return outcome[0]


@pytest.mark.django_db(transaction=True)
def test_the_timeline_keeps_the_order_of_severity_changes_that_waited_for_each_other(
    requires_postgres: None,
) -> None:
    # An action took its time before waiting for the incident's lock: the change that waited, written
    # second, was dated before the one it waited for, and the timeline read "SEV3 to SEV1" before
    # "SEV4 to SEV3". The time is taken once the lock is held, so time order is commit order.
    staff = factories.make_user(username="alice")
    incident = factories.declare(actor=staff, severity_key="sev4")

    result = holding_the_incident_while(
        incident,
        lambda: actions.change_severity(incident, actor=staff, severity=factories.severity("sev1")),
        lambda: actions.change_severity(incident, actor=staff, severity=factories.severity("sev3")),
    )

    assert not isinstance(result, Exception), repr(result)
    changes = list(incident.events.filter(kind=EventKind.SEVERITY_CHANGED).order_by("created_at", "id"))
    assert [(e.data["old"], e.data["new"]) for e in changes] == [("sev4", "sev3"), ("sev3", "sev1")]
    assert [e.pk for e in changes] == sorted(e.pk for e in changes)
    assert changes[0].created_at < changes[1].created_at


@pytest.mark.django_db(transaction=True)
def test_public_updates_are_dated_in_the_order_they_were_written(requires_postgres: None) -> None:
    # The same race for updates: a "resolved" update that waited for a "monitoring" one was dated before
    # it, so the public page showed the incident resolved, then monitoring.
    staff = factories.make_user(username="alice")
    incident = factories.declare(actor=staff, severity_key="sev3")

    result = holding_the_incident_while(
        incident,
        lambda: actions.resolve_incident(incident, actor=staff, message="Fixed."),
        lambda: actions.post_update(incident, actor=staff, body="Watching it.", public_status="monitoring"),
    )

    assert not isinstance(result, Exception), repr(result)
    public = list(incident.updates.filter(is_public=True).order_by("created_at", "id"))
    assert [u.status for u in public] == ["investigating", "monitoring", "resolved"]
    assert [u.pk for u in public] == sorted(u.pk for u in public)
    assert public[1].created_at < public[2].created_at


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("edit", ["due date", "owner", "action item status", "submit"])
def test_post_mortem_actions_take_the_incidents_lock_first(requires_postgres: None, edit: str) -> None:
    """The fifth review: due-date edits racing a resolve or reopen deadlocked (PostgreSQL's
    DeadlockDetected, 500s). A post-mortem action locked the post-mortem, then the clock; reopen locked
    the incident, then the clock. Every post-mortem action now takes the incident's lock first, so they
    queue behind a resolve or reopen instead: here it waits for the incident held by this connection."""
    staff = factories.make_user(username="alice")
    incident = factories.declare(actor=staff, severity_key="sev1")
    actions.resolve_incident(incident, actor=staff)  # opens the SEV1's post-mortem
    postmortem = Postmortem.objects.get(incident=incident)
    item = actions.add_action_item(
        postmortem, actor=staff, title="Alert on switch errors", kind="detect", priority="p1"
    )
    later = timezone.now() + timedelta(days=9)
    for key in ("summary", "root_cause"):
        actions.edit_postmortem(postmortem, actor=staff, sections={key: ("Written.", False)})
    act = {
        "due date": lambda: actions.edit_postmortem(postmortem, actor=staff, due_at=later),
        "owner": lambda: actions.edit_postmortem(postmortem, actor=staff, owner=staff),
        "action item status": lambda: actions.set_action_item_status(item, actor=staff, status="done"),
        "submit": lambda: actions.submit_postmortem(postmortem, actor=staff),
    }[edit]

    # Holding the incident, lock the post-mortem as a reopen does next (pausing its clock): with the old
    # order the other connection held the post-mortem and waited for the incident, a deadlock.
    result = holding_the_incident_while(
        incident, act, lambda: Postmortem.objects.select_for_update().get(pk=postmortem.pk)
    )

    assert not isinstance(result, Exception), repr(result)
