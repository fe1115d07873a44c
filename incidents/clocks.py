"""Clock arithmetic, and the sweep that records warnings and breaches when they fall due.

A clock accumulates elapsed time over running spans: `elapsed_seconds` holds what was accumulated
before `running_since`. Thresholds are fractions of the target: 75% and 90% warnings, breach at 100%.
`thresholds_done` counts how many of them the current cycle has recorded, so the next one to check is
a column (`next_check_at`) that the sweep claims, never a broker ETA.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from incidents.models import Clock, ClockEventKind, ClockState, Maintenance, SweepHeartbeat

if TYPE_CHECKING:
    from django.db.models import QuerySet

THRESHOLDS: tuple[tuple[float, str], ...] = (
    (0.75, ClockEventKind.WARNING_75),
    (0.90, ClockEventKind.WARNING_90),
    (1.00, ClockEventKind.BREACH),
)
SWEEP_BATCH = 100
HEARTBEAT = "timers"


def elapsed(clock: Clock, now: datetime) -> float:
    """Seconds the clock has run, up to `now`."""
    return clock.elapsed_at(now)


def remaining(clock: Clock, now: datetime) -> float:
    return clock.target_seconds - elapsed(clock, now)


def threshold_at(clock: Clock, fraction: float) -> datetime | None:
    """When a running clock reaches `fraction` of its target (None when it is not running)."""
    if clock.running_since is None:
        return None
    return clock.running_since + timedelta(seconds=fraction * clock.target_seconds - clock.elapsed_seconds)


def due_at(clock: Clock) -> datetime | None:
    """When the target is (or, for a stopped clock, would have been) reached."""
    return clock.due_at


def next_check_at(clock: Clock) -> datetime | None:
    if clock.running_since is None or clock.thresholds_done >= len(THRESHOLDS):
        return None
    return threshold_at(clock, THRESHOLDS[clock.thresholds_done][0])


def fraction_elapsed(clock: Clock, now: datetime) -> float:
    return elapsed(clock, now) / clock.target_seconds if clock.target_seconds else 1.0


def display_level(clock: Clock, now: datetime) -> str:
    """'ok', 'warning' (past 75%) or 'breached', for the countdown colours."""
    if clock.state == ClockState.BREACHED or clock.breached_at is not None:
        return "breached"
    if clock.state == ClockState.RUNNING:
        share = fraction_elapsed(clock, now)
        if share >= 1:
            return "breached"
        if share >= THRESHOLDS[0][0]:
            return "warning"
    return "ok"


def due_clocks(now: datetime) -> QuerySet[Clock]:
    qs = Clock.objects.filter(next_check_at__lt=now).order_by("next_check_at", "id")
    if connection.features.has_select_for_update_skip_locked:
        # Two sweeps running at once each take different rows instead of queueing for the same ones.
        qs = qs.select_for_update(skip_locked=True, of=("self",))
    return qs


def due_maintenance(now: datetime) -> QuerySet[Maintenance]:
    qs = Maintenance.objects.filter(next_action_at__lte=now).order_by("next_action_at", "id")
    if connection.features.has_select_for_update_skip_locked:
        qs = qs.select_for_update(skip_locked=True)
    return qs


def sweep_due(now: datetime | None = None) -> int:
    """Record every clock warning and breach, take every maintenance step and fire every page step due by `now`.

    Returns how many were recorded or taken. Safe to run concurrently and repeatedly: rows are claimed
    under a lock, the unique key on ClockEvent (clock, kind, cycle) makes a second recording
    impossible, and a maintenance step checks the window's state before it acts.
    """
    from incidents import actions, escalation  # the write path imports this module's arithmetic

    now = now or timezone.now()
    done = 0
    while True:
        with transaction.atomic():
            batch = list(due_clocks(now)[:SWEEP_BATCH])
            for clock in batch:
                done += actions.record_clock_thresholds(clock, now=now)
        if len(batch) < SWEEP_BATCH:
            break
    while True:
        with transaction.atomic():
            windows = list(due_maintenance(now)[:SWEEP_BATCH])
            for maintenance in windows:
                done += actions.run_due_maintenance(maintenance, now=now)
        if len(windows) < SWEEP_BATCH:
            break
    done += actions.remind_of_maintenance(now=now)
    done += escalation.fire_due(now)
    record_sweep(now)
    return done


def record_sweep(now: datetime, *, name: str = HEARTBEAT) -> None:
    """Stamp the heartbeat once a sweep has completed: the dashboard warns when it goes stale.

    Never moves backwards (two sweepers may finish out of order); the first sweep creates the row,
    and a second one racing it is harmless (ignore_conflicts, then the conditional update). Other
    periodic work stamps a row of its own `name` (publishing: /readyz reads it).
    """
    if not SweepHeartbeat.objects.filter(name=name, swept_at__lt=now).update(swept_at=now):
        SweepHeartbeat.objects.bulk_create([SweepHeartbeat(name=name, swept_at=now)], ignore_conflicts=True)


def last_sweep() -> datetime | None:
    """When the timer sweep last completed (None: never)."""
    return SweepHeartbeat.objects.filter(name=HEARTBEAT).values_list("swept_at", flat=True).first()


def sweep_overdue_after() -> timedelta:
    """A sweep older than two intervals means the timers have stopped (one late sweep is not an alarm)."""
    return timedelta(seconds=2 * settings.TIMER_SWEEP_SECONDS)
