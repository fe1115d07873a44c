"""Clocks and milestones: starting, stopping, pausing and re-targeting an incident's clocks, and the
threshold events they record."""

from __future__ import annotations

import math
from datetime import datetime

from django.db import IntegrityError, transaction

from incidents import clocks, escalation
from incidents.actions.timeline import Actor, acting_user, actor_name, record_event
from incidents.models import (
    Clock,
    ClockEvent,
    ClockEventKind,
    ClockState,
    EventKind,
    Incident,
    IncidentStatus,
    Metric,
    PublicStatus,
    Severity,
)
from incidents.publishing import request_publish


def start_clocks(incident: Incident, severity: Severity, at: datetime) -> None:
    for metric in (Metric.ACKNOWLEDGE, Metric.FIRST_UPDATE, Metric.RESOLVE):
        target = severity.target_for(metric)
        if target:
            clock = Clock(incident=incident, metric=metric, target_seconds=target, started_at=incident.declared_at)
            clock.running_since = incident.declared_at
            clock.next_check_at = clocks.next_check_at(clock)
            clock.save()
    # The cadence clock starts with the first public update.


REPORTED_METRICS = (Metric.ACKNOWLEDGE, Metric.FIRST_UPDATE, Metric.RESOLVE)


def copy_targets(incident: Incident) -> None:
    """Copy the clocks' targets onto the incident row, where the response report reads them."""
    targets = dict(
        Clock.objects.filter(incident=incident, metric__in=REPORTED_METRICS).values_list("metric", "target_seconds")
    )
    values = {f"{metric}_target": targets.get(metric) for metric in REPORTED_METRICS}
    Incident.objects.filter(pk=incident.pk).update(**values)
    for name, value in values.items():
        setattr(incident, name, value)


def locked_clock(incident: Incident, metric: str) -> Clock | None:
    return Clock.objects.select_for_update().filter(incident=incident, metric=metric).first()


def _record_clock_event(clock: Clock, kind: str, due: datetime, *, nudge: bool = True) -> bool:
    try:
        with transaction.atomic():
            recorded = ClockEvent.objects.create(clock=clock, kind=kind, cycle=clock.cycle, due_at=due)
    except IntegrityError:
        return False  # recorded already: exactly once, whoever got there first
    if nudge:
        escalation.nudge(clock, recorded)
    if kind == ClockEventKind.BREACH and clock.metric == Metric.UPDATE_CADENCE:
        # The page's "next update by" has passed: republish so that it reads as overdue (the document
        # says so), also for readers without JavaScript and for the static files.
        request_publish()
    share = {ClockEventKind.WARNING_75.value: "75%", ClockEventKind.WARNING_90.value: "90%"}.get(kind)
    label = Metric(clock.metric).label
    if share:
        message = f"{label} clock at {share} of its {format_duration(clock.target_seconds)} target"
        event_kind = EventKind.CLOCK_WARNING
    else:
        message = f"{label} clock breached its {format_duration(clock.target_seconds)} target"
        event_kind = EventKind.CLOCK_BREACHED
    record_event(
        clock.incident, event_kind, message, actor=None, at=due, metric=clock.metric, threshold=kind, cycle=clock.cycle
    )
    return True


def record_clock_thresholds(
    clock: Clock, *, now: datetime, not_before: datetime | None = None, nudge: bool = True
) -> int:
    """Record the warnings and breach of a locked clock that are due by `now`.

    Called by the sweep for claimed rows, and by the actions before they stop a clock, so a threshold
    crossed between two sweeps is never lost. With `not_before` (a retarget), thresholds the new target
    has already passed are recorded at that moment: the timeline never shows a miss dated before the
    target that made it one. `nudge=False` (an action stopping the clock) queues no nudge to the
    commander: the update it would ask for is being posted.
    """
    recorded = 0
    while clock.running_since is not None and clock.thresholds_done < len(clocks.THRESHOLDS):
        fraction, kind = clocks.THRESHOLDS[clock.thresholds_done]
        due = clocks.threshold_at(clock, fraction)
        # Reaching the target exactly is still on time: a breach is strictly past it.
        if due is None or due > now or (due == now and kind == ClockEventKind.BREACH):
            break
        if not_before is not None:
            due = max(due, not_before)
        if _record_clock_event(clock, kind, due, nudge=nudge):
            recorded += 1
        if kind == ClockEventKind.BREACH:
            clock.state = ClockState.BREACHED
            clock.breached_at = clock.breached_at or due
        clock.thresholds_done += 1
    clock.next_check_at = clocks.next_check_at(clock)
    clock.save(update_fields=["thresholds_done", "state", "breached_at", "next_check_at"])
    return recorded


def stop_clock(clock: Clock | None, at: datetime, *, satisfied: bool = True) -> None:
    """Stop a running (or paused) clock: met if it made its target, breached if not, stopped if not satisfied."""
    if clock is None or (clock.running_since is None and clock.state != ClockState.PAUSED):
        return
    record_clock_thresholds(clock, now=at, nudge=False)
    clock.elapsed_seconds = clocks.elapsed(clock, at)
    clock.running_since = None
    clock.stopped_at = at
    if clock.breached_at is not None or clock.elapsed_seconds > clock.target_seconds:
        clock.state = ClockState.BREACHED
    else:
        clock.state = ClockState.MET if satisfied else ClockState.STOPPED
    clock.next_check_at = None
    clock.save(update_fields=["elapsed_seconds", "running_since", "stopped_at", "state", "next_check_at"])


def pause_clock(clock: Clock | None, at: datetime) -> bool:
    """Hold a running clock (the post-mortem's while its incident is reopened): what it has used is kept,
    nothing more is recorded until it resumes, and `stopped_at` says since when it waits."""
    if clock is None or clock.running_since is None:
        return False
    record_clock_thresholds(clock, now=at, nudge=False)
    clock.elapsed_seconds = clocks.elapsed(clock, at)
    clock.running_since = None
    clock.stopped_at = at
    clock.state = ClockState.PAUSED
    clock.next_check_at = None
    clock.save(update_fields=["elapsed_seconds", "running_since", "stopped_at", "state", "next_check_at"])
    return True


def resume_clock(clock: Clock | None, at: datetime) -> None:
    if clock is None or clock.running_since is not None:
        return
    clock.running_since = at
    clock.stopped_at = None
    clock.state = ClockState.BREACHED if clock.breached_at is not None else ClockState.RUNNING
    clock.next_check_at = clocks.next_check_at(clock)
    clock.save(update_fields=["running_since", "stopped_at", "state", "next_check_at"])


def aim_clock(clock: Clock, due: datetime, at: datetime) -> None:
    """Make a running or paused clock fall due at `due`, keeping the time it has run.

    For a deadline people set (the post-mortem's due date): the clock is what the sweep fires and what
    breaches are recorded against, so it must end exactly there. The target is whole seconds; the
    fraction of a second left over goes into the time already run, so `clocks.due_at(clock) == due`.
    A warning or breach already recorded stays recorded (history is not rewritten); one that the new
    deadline has already passed is recorded now.
    """
    base = clock.running_since or clock.stopped_at
    assert base is not None, "only a running or paused clock has a deadline to move"
    left = (due - base).total_seconds()
    target = max(1, math.ceil(clock.elapsed_seconds + left))
    clock.target_seconds = target
    clock.elapsed_seconds = target - left
    clock.save(update_fields=["target_seconds", "elapsed_seconds"])
    if clock.running_since is not None:
        record_clock_thresholds(clock, now=at, not_before=at)


def restart_cadence(incident: Incident, severity: Severity, at: datetime) -> None:
    """A public update meets the current cadence cycle and promises the next update."""
    target = severity.update_cadence_target
    clock = locked_clock(incident, Metric.UPDATE_CADENCE)
    if clock is not None:
        stop_clock(clock, at)
    if not target:
        return
    if clock is None:
        clock = Clock(incident=incident, metric=Metric.UPDATE_CADENCE, target_seconds=target, started_at=at, cycle=0)
    clock.cycle += 1
    clock.target_seconds = target
    clock.started_at = at
    clock.running_since = at
    clock.elapsed_seconds = 0
    clock.stopped_at = None
    clock.breached_at = None
    clock.thresholds_done = 0
    clock.state = ClockState.RUNNING
    clock.next_check_at = clocks.next_check_at(clock)
    clock.save()


def retarget_clocks(incident: Incident, severity: Severity, at: datetime) -> None:
    """Apply a new severity's targets to the running clocks, keeping their elapsed time and any breach
    already recorded. Stopped clocks keep the target they ran against: history is not rewritten."""
    existing = {clock.metric: clock for clock in Clock.objects.select_for_update().filter(incident=incident)}
    for metric in Metric.values:
        if metric == Metric.POSTMORTEM:
            continue  # runs after resolve, against the target it started with
        target = severity.target_for(metric)
        clock = existing.get(metric)
        if clock is None:
            if not target or incident.is_resolved:
                continue
            if metric == Metric.UPDATE_CADENCE:
                if incident.published_at is not None:
                    restart_cadence(incident, severity, at)
                continue
            if metric == Metric.ACKNOWLEDGE and incident.acknowledged_at is not None:
                continue
            if metric == Metric.FIRST_UPDATE and incident.published_at is not None:
                continue
            clock = Clock(incident=incident, metric=metric, target_seconds=target, started_at=incident.declared_at)
            clock.running_since = incident.declared_at
            clock.save()
            record_clock_thresholds(clock, now=at, not_before=at)
            continue
        if clock.running_since is None:
            continue
        if not target:
            stop_clock(clock, at, satisfied=False)
            continue
        clock.target_seconds = target
        clock.save(update_fields=["target_seconds"])
        record_clock_thresholds(clock, now=at, not_before=at)


def format_duration(seconds: int | float) -> str:
    """'2 h 30 min', '3 d 4 h', '45 s': the two largest units, as people read them."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    parts: list[str] = []
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        amount, seconds = divmod(seconds, size)
        if amount:
            parts.append(f"{amount} {unit}")
    return " ".join(parts[:2])


_STATUS_ORDER = [
    IncidentStatus.DECLARED,
    IncidentStatus.ACKNOWLEDGED,
    IncidentStatus.IDENTIFIED,
    IncidentStatus.MITIGATED,
    IncidentStatus.RESOLVED,
]
_INTERNAL_FOR_PUBLIC = {
    PublicStatus.INVESTIGATING: IncidentStatus.ACKNOWLEDGED,
    PublicStatus.IDENTIFIED: IncidentStatus.IDENTIFIED,
    PublicStatus.MONITORING: IncidentStatus.MITIGATED,
    PublicStatus.RESOLVED: IncidentStatus.RESOLVED,
}


def stamp_acknowledged(incident: Incident, actor: Actor, at: datetime) -> bool:
    if incident.acknowledged_at is not None:
        return False
    incident.acknowledged_at = at
    incident.acknowledged_by = acting_user(actor)
    stop_clock(locked_clock(incident, Metric.ACKNOWLEDGE), at)
    escalation.stop_pending(incident, at, f"acknowledged by {actor_name(actor)}")
    return True


def advance_status(incident: Incident, public_status: str, actor: Actor, at: datetime) -> list[str]:
    """Move the internal status forward for a public status, stamping each milestone once."""
    stamped: list[str] = []
    target = _INTERNAL_FOR_PUBLIC[PublicStatus(public_status)]
    # A person who identifies or resolves has acknowledged, even without pressing the button.
    beyond_investigating = target != IncidentStatus.ACKNOWLEDGED
    if beyond_investigating and acting_user(actor) is not None and stamp_acknowledged(incident, actor, at):
        stamped.append("acknowledged_at")
    if beyond_investigating and incident.identified_at is None:
        incident.identified_at = at
        stamped.append("identified_at")
    if target in (IncidentStatus.MITIGATED, IncidentStatus.RESOLVED) and incident.mitigated_at is None:
        incident.mitigated_at = at
        stamped.append("mitigated_at")
    if not beyond_investigating:
        # Still investigating: the status moves only through an explicit acknowledgment.
        return stamped
    if _STATUS_ORDER.index(target) > _STATUS_ORDER.index(IncidentStatus(incident.status)):
        incident.status = target
    return stamped
