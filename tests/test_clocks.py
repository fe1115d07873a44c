"""Response clocks: targets copied at declaration, warnings and breach recorded exactly once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.contrib.auth.models import User

from incidents import actions, clocks
from incidents.models import Clock, ClockEvent, EventKind, Incident, Severity, TimelineEvent
from tests import factories

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
pytestmark = pytest.mark.django_db


def clock(incident: Incident, metric: str) -> Clock:
    return Clock.objects.get(incident=incident, metric=metric)


def events(incident: Incident, metric: str) -> list[tuple[str, int, datetime]]:
    return list(
        ClockEvent.objects.filter(clock__incident=incident, clock__metric=metric)
        .order_by("due_at", "id")
        .values_list("kind", "cycle", "due_at")
    )


def sweep_at(moment: datetime) -> int:
    with time_machine.travel(moment, tick=False):
        return clocks.sweep_due()


def test_it_starts_clocks_with_targets_copied_from_the_severity(staff: User) -> None:
    incident = factories.declare(actor=staff, severity_key="sev1", at=T0)

    assert {c.metric: c.target_seconds for c in incident.clocks.all()} == {
        "acknowledge": 300,
        "first_update": 900,
        "resolve": 14400,
        # The first message was public: the cadence clock promises the next update in 30 min.
        "update_cadence": 1800,
    }
    Severity.objects.filter(key="sev1").update(acknowledge_target=60)
    assert clock(incident, "acknowledge").target_seconds == 300


def test_it_starts_the_cadence_clock_only_with_a_public_update(staff: User) -> None:
    incident = factories.declare(actor=staff, is_public=False, at=T0)

    assert not Clock.objects.filter(incident=incident, metric="update_cadence").exists()
    assert clock(incident, "first_update").state == "running"


def test_it_records_warnings_and_breach_each_exactly_once(staff: User) -> None:
    incident = factories.declare(actor=staff, at=T0)

    assert sweep_at(T0 + timedelta(seconds=224)) == 0
    assert sweep_at(T0 + timedelta(seconds=226)) == 1  # 75% of 5 min is 3 min 45 s
    assert sweep_at(T0 + timedelta(seconds=226)) == 0
    assert sweep_at(T0 + timedelta(seconds=271)) == 1  # 90%
    assert sweep_at(T0 + timedelta(seconds=301)) == 1  # breach
    for _ in range(3):
        assert sweep_at(T0 + timedelta(seconds=302)) == 0

    assert events(incident, "acknowledge") == [
        ("warning_75", 1, T0 + timedelta(seconds=225)),
        ("warning_90", 1, T0 + timedelta(seconds=270)),
        ("breach", 1, T0 + timedelta(seconds=300)),
    ]
    ack = clock(incident, "acknowledge")
    assert ack.state == "breached"
    assert ack.breached_at == T0 + timedelta(seconds=300)
    assert TimelineEvent.objects.filter(incident=incident, kind=EventKind.CLOCK_BREACHED).count() == 1


def test_it_catches_up_every_threshold_in_one_late_sweep(staff: User) -> None:
    incident = factories.declare(actor=staff, at=T0)

    assert sweep_at(T0 + timedelta(hours=1)) > 3
    assert [kind for kind, _, _ in events(incident, "acknowledge")] == ["warning_75", "warning_90", "breach"]
    assert sweep_at(T0 + timedelta(hours=1)) == 0


def test_it_meets_the_acknowledge_clock_when_acknowledged_in_time(staff: User) -> None:
    incident = factories.declare(actor=staff, at=T0)

    actions.acknowledge_incident(incident, actor=staff, at=T0 + timedelta(minutes=2))
    sweep_at(T0 + timedelta(hours=1))

    ack = clock(incident, "acknowledge")
    assert (ack.state, ack.elapsed_seconds, ack.next_check_at) == ("met", 120, None)
    assert events(incident, "acknowledge") == []


def test_it_records_a_breach_missed_by_the_sweep_when_the_clock_stops(staff: User) -> None:
    """No sweep ran (workers down): stopping the clock still records what fell due."""
    incident = factories.declare(actor=staff, at=T0)

    actions.acknowledge_incident(incident, actor=staff, at=T0 + timedelta(hours=2, minutes=30))

    ack = clock(incident, "acknowledge")
    assert (ack.state, ack.elapsed_seconds) == ("breached", 9000)
    assert [kind for kind, _, _ in events(incident, "acknowledge")] == ["warning_75", "warning_90", "breach"]


def test_it_is_on_time_when_stopped_exactly_at_the_target(staff: User) -> None:
    incident = factories.declare(actor=staff, at=T0)

    actions.acknowledge_incident(incident, actor=staff, at=T0 + timedelta(minutes=5))

    assert clock(incident, "acknowledge").state == "met"
    assert [kind for kind, _, _ in events(incident, "acknowledge")] == ["warning_75", "warning_90"]


def test_it_counts_a_human_identify_as_acknowledgment(staff: User) -> None:
    incident = factories.declare(actor=staff, at=T0)

    actions.post_update(
        incident, actor=staff, body="Found it", public_status="identified", at=T0 + timedelta(minutes=1)
    )

    assert clock(incident, "acknowledge").state == "met"
    incident.refresh_from_db()
    assert incident.acknowledged_at == T0 + timedelta(minutes=1)


def test_it_restarts_the_cadence_clock_on_each_public_update(staff: User) -> None:
    incident = factories.declare(actor=staff, at=T0)  # first public update at T0: cadence 30 min

    sweep_at(T0 + timedelta(minutes=31))  # cycle 1 breached
    actions.post_update(incident, actor=staff, body="Still digging", at=T0 + timedelta(minutes=40))
    actions.post_update(incident, actor=staff, body="Internal note", is_public=False, at=T0 + timedelta(minutes=60))
    sweep_at(T0 + timedelta(minutes=64))  # cycle 2 at 80%

    cadence = clock(incident, "update_cadence")
    assert (cadence.cycle, cadence.state, cadence.started_at) == (2, "running", T0 + timedelta(minutes=40))
    assert cadence.due_at == T0 + timedelta(minutes=70)
    assert [(kind, cycle) for kind, cycle, _ in events(incident, "update_cadence")] == [
        ("warning_75", 1),
        ("warning_90", 1),
        ("breach", 1),
        ("warning_75", 2),
    ]


def test_it_stops_cadence_and_first_update_clocks_on_resolve(staff: User) -> None:
    incident = factories.declare(actor=staff, is_public=False, at=T0)

    actions.resolve_incident(incident, actor=staff, at=T0 + timedelta(minutes=10))

    assert clock(incident, "first_update").state == "stopped"
    assert clock(incident, "resolve").state == "met"
    # Only the post-mortem clock (SEV1 requires one) runs on after resolve.
    running = Clock.objects.filter(incident=incident, next_check_at__isnull=False)
    assert list(running.values_list("metric", flat=True)) == ["postmortem"]


def test_it_retargets_on_severity_change_keeping_elapsed_time(staff: User) -> None:
    incident = factories.declare(actor=staff, severity_key="sev3", at=T0)  # ack target 1 h

    changed = T0 + timedelta(minutes=20)
    actions.change_severity(incident, actor=staff, severity=factories.severity("sev1"), at=changed)

    ack = clock(incident, "acknowledge")
    assert (ack.target_seconds, ack.state, ack.elapsed_at(changed)) == (300, "breached", 1200)
    # Recorded when the shorter target made them misses, not backdated to before the change.
    assert ack.breached_at == changed
    assert events(incident, "acknowledge") == [
        ("warning_75", 1, changed),
        ("warning_90", 1, changed),
        ("breach", 1, changed),
    ]
    assert sweep_at(changed + timedelta(seconds=1)) == 0


def test_it_leaves_stopped_clocks_with_the_target_they_ran_against(staff: User) -> None:
    incident = factories.declare(actor=staff, severity_key="sev3", at=T0)  # ack target 1 h
    actions.acknowledge_incident(incident, actor=staff, at=T0 + timedelta(minutes=7))

    actions.change_severity(incident, actor=staff, severity=factories.severity("sev1"), at=T0 + timedelta(hours=1))

    ack = clock(incident, "acknowledge")
    assert (ack.target_seconds, ack.state) == (3600, "met")
    assert events(incident, "acknowledge") == []
    assert clock(incident, "resolve").target_seconds == 14400  # still running: retargeted


def test_it_keeps_a_recorded_breach_when_severity_is_lowered(staff: User) -> None:
    incident = factories.declare(actor=staff, severity_key="sev1", at=T0)
    sweep_at(T0 + timedelta(minutes=6))

    actions.change_severity(incident, actor=staff, severity=factories.severity("sev3"), at=T0 + timedelta(minutes=7))
    actions.acknowledge_incident(incident, actor=staff, at=T0 + timedelta(minutes=8))

    ack = clock(incident, "acknowledge")
    assert (ack.target_seconds, ack.state, ack.breached_at) == (3600, "breached", T0 + timedelta(minutes=5))


def test_it_adds_clocks_a_higher_severity_has_targets_for(staff: User) -> None:
    incident = factories.declare(actor=staff, severity_key="sev4", is_public=False, at=T0)
    assert not Clock.objects.filter(incident=incident, metric="first_update").exists()

    actions.change_severity(incident, actor=staff, severity=factories.severity("sev1"), at=T0 + timedelta(minutes=12))

    first = clock(incident, "first_update")
    assert (first.started_at, first.target_seconds, first.state) == (T0, 900, "running")
    assert first.due_at == T0 + timedelta(minutes=15)
    assert events(incident, "first_update") == [("warning_75", 1, T0 + timedelta(minutes=12))]  # 80% gone


def test_it_resumes_the_resolve_clock_on_reopen(staff: User) -> None:
    incident = factories.declare(actor=staff, at=T0)  # resolve target 4 h
    actions.resolve_incident(incident, actor=staff, at=T0 + timedelta(hours=1))
    assert clock(incident, "resolve").state == "met"

    actions.reopen_incident(incident, actor=staff, reason="Errors are back", at=T0 + timedelta(hours=10))
    resolve = clock(incident, "resolve")
    assert (resolve.state, resolve.elapsed_seconds) == ("running", 3600)
    # 1 h already used; the 3 h left run from the reopening, the resolved time does not count.
    assert resolve.due_at == T0 + timedelta(hours=13)
    sweep_at(T0 + timedelta(hours=12, minutes=59))
    assert [kind for kind, _, _ in events(incident, "resolve")] == ["warning_75", "warning_90"]
    sweep_at(T0 + timedelta(hours=13, seconds=1))
    assert events(incident, "resolve")[-1] == ("breach", 1, T0 + timedelta(hours=13))


def test_a_reopened_incident_runs_against_the_severity_it_has_now(staff: User) -> None:
    incident = factories.declare(actor=staff, severity_key="sev1", at=T0)  # resolve target 4 h
    actions.resolve_incident(incident, actor=staff, at=T0 + timedelta(hours=2))
    # Lowered while resolved: the stopped clock keeps the 4 h it ran against (history is not rewritten).
    actions.change_severity(incident, actor=staff, severity=factories.severity("sev3"), at=T0 + timedelta(hours=4))
    assert clock(incident, "resolve").target_seconds == 4 * 3600

    reopened_at = T0 + timedelta(hours=5)
    actions.reopen_incident(incident, actor=staff, reason="Errors are back", at=reopened_at)

    resolve = clock(incident, "resolve")
    assert (resolve.state, resolve.target_seconds, resolve.elapsed_seconds) == ("running", 3 * 86400, 2 * 3600)
    assert resolve.due_at == reopened_at + timedelta(days=3, hours=-2)
    incident.refresh_from_db()
    assert incident.resolve_target == 3 * 86400
    # An hour past SEV1's 4 h is no breach (nor a warning) for a SEV3.
    sweep_at(reopened_at + timedelta(hours=3))
    assert events(incident, "resolve") == []
    assert incident.events.get(kind=EventKind.REOPENED).message.startswith(
        "alice reopened the incident: Errors are back; the resolve clock now runs against SEV3's 3 d target;"
    )


def test_a_reopen_under_a_stricter_severity_records_what_it_has_already_missed(staff: User) -> None:
    incident = factories.declare(actor=staff, severity_key="sev3", at=T0)  # resolve target 3 d
    actions.resolve_incident(incident, actor=staff, at=T0 + timedelta(hours=5))
    actions.change_severity(incident, actor=staff, severity=factories.severity("sev1"), at=T0 + timedelta(hours=6))

    reopened_at = T0 + timedelta(hours=7)
    actions.reopen_incident(incident, actor=staff, reason="Errors are back", at=reopened_at)

    resolve = clock(incident, "resolve")
    assert (resolve.state, resolve.target_seconds, resolve.breached_at) == ("breached", 4 * 3600, reopened_at)
    # Dated at the reopen, not before the target that made it a miss existed.
    assert [(kind, due) for kind, _, due in events(incident, "resolve")] == [
        ("warning_75", reopened_at),
        ("warning_90", reopened_at),
        ("breach", reopened_at),
    ]


def test_a_reopen_starts_a_resolve_clock_the_declared_severity_did_not_have(staff: User) -> None:
    no_target = Severity.objects.create(key="sev5", name="SEV5", rank=5, acknowledge_target=3600)
    incident = factories.declare(actor=staff, severity_key="sev5", at=T0)
    actions.resolve_incident(incident, actor=staff, at=T0 + timedelta(hours=2))
    assert not Clock.objects.filter(incident=incident, metric="resolve").exists()
    actions.change_severity(incident, actor=staff, severity=factories.severity("sev1"), at=T0 + timedelta(hours=3))

    actions.reopen_incident(incident, actor=staff, reason="Errors are back", at=T0 + timedelta(hours=10))

    resolve = clock(incident, "resolve")
    # The 2 h it was open before the resolve count; the 8 h it was resolved do not.
    assert (resolve.state, resolve.target_seconds, resolve.elapsed_seconds) == ("running", 4 * 3600, 2 * 3600)
    assert resolve.due_at == T0 + timedelta(hours=12)
    assert no_target.resolve_target is None


def test_a_reopen_under_a_severity_without_a_resolve_target_leaves_the_clock_stopped(staff: User) -> None:
    Severity.objects.create(key="sev5", name="SEV5", rank=5, acknowledge_target=3600)
    incident = factories.declare(actor=staff, severity_key="sev1", at=T0)
    actions.resolve_incident(incident, actor=staff, at=T0 + timedelta(hours=1))
    actions.change_severity(incident, actor=staff, severity=factories.severity("sev5"), at=T0 + timedelta(hours=2))

    actions.reopen_incident(incident, actor=staff, reason="Errors are back", at=T0 + timedelta(hours=3))

    resolve = clock(incident, "resolve")
    assert (resolve.state, resolve.running_since, resolve.target_seconds) == ("met", None, 4 * 3600)
    sweep_at(T0 + timedelta(days=2))
    assert events(incident, "resolve") == []
    assert "; SEV5 sets no resolve target, so the resolve clock stays stopped" in (
        incident.events.get(kind=EventKind.REOPENED).message
    )


def test_it_reports_display_levels_for_countdowns(staff: User) -> None:
    incident = factories.declare(actor=staff, at=T0)
    ack = clock(incident, "acknowledge")

    assert clocks.display_level(ack, T0 + timedelta(minutes=1)) == "ok"
    assert clocks.display_level(ack, T0 + timedelta(minutes=4)) == "warning"
    assert clocks.display_level(ack, T0 + timedelta(minutes=6)) == "breached"
    assert clocks.remaining(ack, T0 + timedelta(minutes=1)) == 240


def test_it_sweeps_through_the_run_timers_command(staff: User) -> None:
    from django.core.management import call_command

    incident = factories.declare(actor=staff, at=T0)
    with time_machine.travel(T0 + timedelta(minutes=10), tick=False):
        call_command("run_timers")

    assert clock(incident, "acknowledge").state == "breached"
