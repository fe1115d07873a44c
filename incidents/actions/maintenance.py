"""Scheduled maintenance: schedule, reschedule, remind, start, update, complete, cancel."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from incidents.actions.errors import ActionRefused
from incidents.actions.impact import (
    OUTAGE_STATUSES,
    ComponentChange,
    apply_component_changes,
    components_in_open_incidents,
)
from incidents.actions.subscriptions import message_for_maintenance
from incidents.actions.timeline import Actor, acting_user, actor_name, format_moment
from incidents.markup import render_markdown
from incidents.models import (
    Component,
    ComponentStatus,
    ComponentStatusChange,
    EventKind,
    Maintenance,
    MaintenanceStatus,
    MaintenanceUpdate,
    MaintenanceUpdateStatus,
    TimelineEvent,
)
from incidents.publishing import request_publish


def _maintenance_event(
    maintenance: Maintenance, kind: str, message: str, *, actor: Actor, at: datetime, **data: Any
) -> None:
    TimelineEvent.objects.create(
        maintenance=maintenance, kind=kind, actor=acting_user(actor), message=message[:500], data=data, created_at=at
    )


def _lock_maintenance(maintenance: Maintenance) -> Maintenance:
    return Maintenance.objects.select_for_update().get(pk=maintenance.pk)


def to_the_minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def _check_window(
    scheduled_for: datetime | None, scheduled_until: datetime | None, *, now: datetime
) -> tuple[datetime, datetime]:
    """A window must end after it starts and after now. Its start may be past only for a window in
    progress now, which the end rule already means: subscribers are never told of a window that is over.

    Windows are to the minute, as every page and notice shows them: seconds are dropped, so 10:00:30
    and 10:00:00 are one time and a reschedule to what is shown already changes nothing."""
    if scheduled_for is None:
        raise ActionRefused("A start time is required.", field="scheduled_for")
    if scheduled_until is None:
        raise ActionRefused("An end time is required.", field="scheduled_until")
    scheduled_for, scheduled_until = to_the_minute(scheduled_for), to_the_minute(scheduled_until)
    if scheduled_until <= scheduled_for:
        raise ActionRefused("The window must end after it starts.", field="scheduled_until")
    if scheduled_until <= now:
        raise ActionRefused(
            f"The window would end in the past ({format_moment(scheduled_until)}); choose an end after now.",
            field="scheduled_until",
            code="in_the_past",
        )
    return scheduled_for, scheduled_until


def _next_maintenance_action(maintenance: Maintenance) -> datetime | None:
    if maintenance.is_finished:
        return None
    if maintenance.status == MaintenanceStatus.SCHEDULED:
        return maintenance.scheduled_for if maintenance.auto_start else None
    return maintenance.scheduled_until if maintenance.auto_complete else None


def _maintenance_update(
    maintenance: Maintenance, *, actor: Actor, status: str, body: str, changes: list[dict[str, Any]], at: datetime
) -> MaintenanceUpdate:
    """Record a maintenance update; every one is public, so subscribers hear of it."""
    update = MaintenanceUpdate.objects.create(
        maintenance=maintenance,
        status=status,
        body=body,
        body_html=render_markdown(body),
        component_changes=changes,
        author=acting_user(actor),
        created_at=at,
    )
    message_for_maintenance(maintenance, update)
    return update


def schedule_maintenance(
    *,
    actor: Actor,
    title: str,
    scheduled_for: datetime | None,
    scheduled_until: datetime | None,
    components: Iterable[Component] = (),
    message: str = "",
    auto_start: bool = True,
    auto_complete: bool = True,
    at: datetime | None = None,
) -> Maintenance:
    """Schedule a window; with auto_start/auto_complete the sweep starts and completes it on time."""
    at = at or timezone.now()
    title = title.strip()
    if not title:
        raise ActionRefused("A title is required.", field="title")
    start, end = _check_window(scheduled_for, scheduled_until, now=at)
    components = list(components)
    if any(component.is_group for component in components):
        raise ActionRefused("Choose components, not groups.", field="components")
    body = message.strip() or f"{title} is scheduled from {format_moment(start)} to {format_moment(end)}."
    with transaction.atomic():
        maintenance = Maintenance.objects.create(
            title=title[:200],
            scheduled_for=start,
            scheduled_until=end,
            auto_start=auto_start,
            auto_complete=auto_complete,
            created_by=acting_user(actor),
            created_at=at,
            updated_at=at,
        )
        maintenance.components.set(components)
        maintenance.next_action_at = _next_maintenance_action(maintenance)
        maintenance.save(update_fields=["next_action_at"])
        _maintenance_update(maintenance, actor=actor, status=MaintenanceStatus.SCHEDULED, body=body, changes=[], at=at)
        _maintenance_event(
            maintenance,
            EventKind.MAINTENANCE_SCHEDULED,
            f"{actor_name(actor)} scheduled maintenance from {format_moment(start)} to {format_moment(end)}",
            actor=actor,
            at=at,
        )
        request_publish()
        return maintenance


def reschedule_maintenance(
    maintenance: Maintenance,
    *,
    actor: Actor,
    scheduled_for: datetime | None,
    scheduled_until: datetime | None,
    message: str = "",
    at: datetime | None = None,
) -> Maintenance:
    at = at or timezone.now()
    start, end = _check_window(scheduled_for, scheduled_until, now=at)
    with transaction.atomic():
        maintenance = _lock_maintenance(maintenance)
        if maintenance.is_finished:
            raise ActionRefused("This maintenance is over; schedule a new one instead.")
        if maintenance.status != MaintenanceStatus.SCHEDULED:
            if start != to_the_minute(maintenance.scheduled_for):
                raise ActionRefused("The maintenance has started; only its end can move.", field="scheduled_for")
            start = maintenance.scheduled_for  # when it started stays as it was
        # A window stored with seconds (before they were dropped) is compared as it is shown.
        if (to_the_minute(start), end) == (
            to_the_minute(maintenance.scheduled_for),
            to_the_minute(maintenance.scheduled_until),
        ):
            raise ActionRefused("Nothing changed.", code="unchanged")
        old = (format_moment(maintenance.scheduled_for), format_moment(maintenance.scheduled_until))
        maintenance.scheduled_for, maintenance.scheduled_until = start, end
        maintenance.sequence += 1
        maintenance.next_action_at = _next_maintenance_action(maintenance)
        return _record(
            maintenance,
            ["scheduled_for", "scheduled_until", "sequence", "next_action_at"],
            status=maintenance.status,
            body=message.strip() or f"Rescheduled: now from {format_moment(start)} to {format_moment(end)}.",
            changes=[],
            kind=EventKind.MAINTENANCE_RESCHEDULED,
            text=f"{actor_name(actor)} rescheduled the maintenance from {old[0]}–{old[1]} to {format_moment(start)}–"
            f"{format_moment(end)}",
            actor=actor,
            at=at,
        )


def _record(
    maintenance: Maintenance,
    fields: list[str],
    *,
    status: str,
    body: str,
    changes: list[dict[str, Any]],
    kind: str,
    text: str,
    actor: Actor,
    at: datetime,
) -> Maintenance:
    """The last steps of every change to a window: save the changed fields, post the update subscribers
    see, write the timeline event, republish the public page."""
    maintenance.updated_at = at
    maintenance.save(update_fields=[*fields, "updated_at"])
    _maintenance_update(maintenance, actor=actor, status=status, body=body, changes=changes, at=at)
    _maintenance_event(maintenance, kind, text, actor=actor, at=at)
    request_publish()
    return maintenance


def start_maintenance(
    maintenance: Maintenance, *, actor: Actor, message: str = "", at: datetime | None = None
) -> Maintenance:
    """Start the window: its components go under maintenance (their statuses are kept to restore), except
    those in an outage: an incident's status wins over maintenance, and the window shows beside it."""
    at = at or timezone.now()
    with transaction.atomic():
        maintenance = _lock_maintenance(maintenance)
        if maintenance.is_cancelled:
            raise ActionRefused("This maintenance was cancelled.")
        if maintenance.status != MaintenanceStatus.SCHEDULED:
            raise ActionRefused("This maintenance has already started.", code="already_started")
        covered = list(maintenance.components.all())
        in_incidents = components_in_open_incidents(c.pk for c in covered if c.status in OUTAGE_STATUSES)
        components = [c for c in covered if c.pk not in in_incidents]
        maintenance.restore_statuses = {str(c.pk): c.status for c in components}
        changes = apply_component_changes(
            None, [ComponentChange(c, ComponentStatus.UNDER_MAINTENANCE) for c in components], actor=actor, at=at
        )
        maintenance.status = MaintenanceStatus.IN_PROGRESS
        maintenance.started_at = at
        maintenance.next_action_at = _next_maintenance_action(maintenance)
        return _record(
            maintenance,
            ["restore_statuses", "status", "started_at", "next_action_at"],
            status=MaintenanceStatus.IN_PROGRESS,
            body=message.strip() or "The scheduled maintenance is in progress.",
            changes=changes,
            kind=EventKind.MAINTENANCE_STARTED,
            text=f"{actor_name(actor)} started the maintenance",
            actor=actor,
            at=at,
        )


def complete_maintenance(
    maintenance: Maintenance, *, actor: Actor, message: str = "", at: datetime | None = None
) -> Maintenance:
    """Complete the window: components still under maintenance get back the status they had."""
    at = at or timezone.now()
    with transaction.atomic():
        maintenance = _lock_maintenance(maintenance)
        if maintenance.is_cancelled:
            raise ActionRefused("This maintenance was cancelled.")
        if maintenance.status == MaintenanceStatus.COMPLETED:
            raise ActionRefused("This maintenance is already completed.", code="already_completed")
        if maintenance.status == MaintenanceStatus.SCHEDULED:
            raise ActionRefused("This maintenance has not started; start it or cancel it.", code="not_started")
        held_elsewhere = set(
            Maintenance.objects.filter(
                status__in=[MaintenanceStatus.IN_PROGRESS, MaintenanceStatus.VERIFYING], cancelled_at__isnull=True
            )
            .exclude(pk=maintenance.pk)
            .values_list("components", flat=True)
        )
        restore = []
        for component in maintenance.components.all():
            if component.pk in held_elsewhere:
                continue  # another window still running on it will restore it
            if component.status == ComponentStatus.UNDER_MAINTENANCE:
                # An incident that changed the component meanwhile owns its status; only undo our own.
                before = maintenance.restore_statuses.get(str(component.pk), ComponentStatus.OPERATIONAL)
                if before == ComponentStatus.UNDER_MAINTENANCE:
                    before = ComponentStatus.OPERATIONAL
                restore.append(ComponentChange(component, before))
        changes = apply_component_changes(None, restore, actor=actor, at=at, completing=maintenance)
        maintenance.status = MaintenanceStatus.COMPLETED
        maintenance.completed_at = at
        maintenance.next_action_at = None
        return _record(
            maintenance,
            ["status", "completed_at", "next_action_at"],
            status=MaintenanceStatus.COMPLETED,
            body=message.strip() or "The scheduled maintenance has been completed.",
            changes=changes,
            kind=EventKind.MAINTENANCE_COMPLETED,
            text=f"{actor_name(actor)} completed the maintenance",
            actor=actor,
            at=at,
        )


def post_maintenance_update(
    maintenance: Maintenance, *, actor: Actor, body: str, status: str | None = None, at: datetime | None = None
) -> Maintenance:
    """Post an update; a status of in_progress starts the window and completed completes it."""
    at = at or timezone.now()
    body = body.strip()
    if not body:
        raise ActionRefused("An update needs a message.", field="body")
    if status is not None and status not in MaintenanceStatus.values:
        raise ActionRefused(f"Unknown maintenance status {status!r}.", field="status")
    with transaction.atomic():
        # Decide on the row as it is now, not as the caller last saw it.
        maintenance = _lock_maintenance(maintenance)
        status = status or maintenance.status
        if status == MaintenanceStatus.IN_PROGRESS and maintenance.status == MaintenanceStatus.SCHEDULED:
            return start_maintenance(maintenance, actor=actor, message=body, at=at)
        if status == MaintenanceStatus.COMPLETED and maintenance.status != MaintenanceStatus.COMPLETED:
            return complete_maintenance(maintenance, actor=actor, message=body, at=at)
        if maintenance.is_finished:
            raise ActionRefused("This maintenance is over; updates can no longer be posted.")
        if status == MaintenanceStatus.SCHEDULED and maintenance.status != MaintenanceStatus.SCHEDULED:
            raise ActionRefused("A started maintenance cannot go back to scheduled.", field="status")
        if status == MaintenanceStatus.VERIFYING and maintenance.status == MaintenanceStatus.SCHEDULED:
            raise ActionRefused("Start the maintenance before verifying it.", field="status")
        maintenance.status = status
        return _record(
            maintenance,
            ["status"],
            status=status,
            body=body,
            changes=[],
            kind=EventKind.MAINTENANCE_UPDATE,
            text=f"{actor_name(actor)} posted an update ({status})",
            actor=actor,
            at=at,
        )


def cancel_maintenance(
    maintenance: Maintenance, *, actor: Actor, reason: str = "", at: datetime | None = None
) -> Maintenance:
    """Cancel a window that has not started (a started one is completed instead)."""
    at = at or timezone.now()
    with transaction.atomic():
        maintenance = _lock_maintenance(maintenance)
        if maintenance.is_cancelled:
            raise ActionRefused("This maintenance is already cancelled.", code="already_cancelled")
        if maintenance.status == MaintenanceStatus.COMPLETED:
            raise ActionRefused("This maintenance is already completed.", code="already_completed")
        if maintenance.status != MaintenanceStatus.SCHEDULED:
            raise ActionRefused("This maintenance has started; complete it instead of cancelling.", code="started")
        maintenance.cancelled_at = at
        maintenance.sequence += 1
        maintenance.next_action_at = None
        return _record(
            maintenance,
            ["cancelled_at", "sequence", "next_action_at"],
            status=MaintenanceUpdateStatus.CANCELLED,
            body=reason.strip() or "This maintenance has been cancelled.",
            changes=[],
            kind=EventKind.MAINTENANCE_CANCELLED,
            text=f"{actor_name(actor)} cancelled the maintenance" + (f": {reason.strip()}" if reason.strip() else ""),
            actor=actor,
            at=at,
        )


def run_due_maintenance(maintenance: Maintenance, *, now: datetime) -> int:
    """The sweep's step for a claimed window: start or complete it when due. Safe to run twice.

    A step is stamped at its scheduled time when the sweep was late (workers down), but never before
    the window existed, before it started, or before its components' last recorded change: the
    status history stays in order and uptime stays true.
    """
    steps = 0
    last_change = ComponentStatusChange.objects.filter(component__in=maintenance.components.all()).aggregate(
        last=Max("changed_at")
    )["last"]
    if (
        maintenance.status == MaintenanceStatus.SCHEDULED
        and maintenance.auto_start
        and not maintenance.is_cancelled
        and maintenance.scheduled_for <= now
    ):
        start_at = max(filter(None, [maintenance.scheduled_for, maintenance.created_at, last_change]))
        maintenance = start_maintenance(maintenance, actor=None, at=min(start_at, now))
        last_change = maintenance.started_at
        steps += 1
    if (
        maintenance.status in (MaintenanceStatus.IN_PROGRESS, MaintenanceStatus.VERIFYING)
        and maintenance.auto_complete
        and maintenance.scheduled_until <= now
    ):
        end_at = max(filter(None, [maintenance.scheduled_until, maintenance.started_at, last_change]))
        complete_maintenance(maintenance, actor=None, at=min(end_at, now))
        steps += 1
    if not steps:
        # Claimed but nothing to do (moved by a reschedule in between): recompute the due column.
        Maintenance.objects.filter(pk=maintenance.pk).update(next_action_at=_next_maintenance_action(maintenance))
    return steps
