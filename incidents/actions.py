"""THE write path. Every change with consequences is one function here.

Each action is one transaction, locks the rows it changes, refuses impossible moves with an
ActionRefused that says why, and writes one timeline event. Actions never send anything: side
effects are rows, and tasks enqueued with delay_on_commit. `at=` records a change that happened
earlier (imports, demo data); it defaults to now.
"""

from __future__ import annotations

import logging
import zoneinfo
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from html import unescape
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator, validate_email
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone
from django.utils.html import strip_tags

from incidents import clocks, escalation
from incidents.markup import render_markdown
from incidents.models import (
    COMPONENT_STATUS_RANK,
    IMPACT_FOR_COMPONENT_STATUS,
    IMPACT_RANK,
    PUBLIC_BY_DEFAULT,
    ActionItem,
    ActionKind,
    ActionPriority,
    ActionStatus,
    Clock,
    ClockEvent,
    ClockEventKind,
    ClockState,
    Component,
    ComponentStatus,
    ComponentStatusChange,
    Delivery,
    DeliveryStatus,
    EventKind,
    IdempotencyKey,
    Impact,
    Incident,
    IncidentStatus,
    IncidentUpdate,
    Maintenance,
    MaintenanceStatus,
    MaintenanceUpdate,
    Message,
    MessageKind,
    Metric,
    Postmortem,
    PostmortemEntry,
    PostmortemSection,
    PostmortemState,
    PublicStatus,
    SectionKey,
    Severity,
    Subscriber,
    SubscriberKind,
    TimelineEvent,
)
from incidents.publishing import request_publish
from incidents.tokens import new_secret

log = logging.getLogger(__name__)

Actor = AbstractBaseUser | AnonymousUser | None


class ActionRefused(Exception):
    """A refused change, with a message fit to show the person who asked for it."""

    def __init__(self, message: str, *, field: str | None = None, code: str = "refused") -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.code = code


@dataclass(frozen=True)
class ComponentChange:
    component: Component
    status: str


def _user(actor: Actor) -> Any:
    return actor if actor is not None and actor.is_authenticated else None


def _actor_name(actor: Actor) -> str:
    user = _user(actor)
    return user.get_username() if user is not None else "system"


def _event(incident: Incident, kind: str, message: str, *, actor: Actor, at: datetime, **data: Any) -> TimelineEvent:
    return TimelineEvent.objects.create(
        incident=incident, kind=kind, actor=_user(actor), message=message[:500], data=data, created_at=at
    )


def _lock(incident: Incident) -> Incident:
    """Re-read the incident under a row lock so concurrent actions queue instead of losing a change."""
    return Incident.objects.select_for_update(of=("self",)).select_related("severity").get(pk=incident.pk)


def _clean_percent(value: Decimal | float | int | str | None) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        percent = Decimal(str(value))
    except ArithmeticError:
        raise ActionRefused("Customer share must be a number from 0 to 100.", field="customer_impact_percent") from None
    if not percent.is_finite() or percent < 0 or percent > 100:
        raise ActionRefused("Customer share must be a number from 0 to 100.", field="customer_impact_percent")
    return percent.quantize(Decimal("0.01"))


def _clean_regions(regions: Iterable[str] | str | None) -> list[str]:
    if regions is None:
        return []
    if isinstance(regions, str):
        regions = regions.split(",")
    cleaned: list[str] = []
    for region in regions:
        region = region.strip()
        if region and region not in cleaned:
            cleaned.append(region[:100])
    return cleaned


def _check_status(status: str, field: str = "status") -> str:
    if status not in ComponentStatus.values:
        allowed = ", ".join(ComponentStatus.values)
        raise ActionRefused(f"Unknown component status {status!r}; use one of {allowed}.", field=field)
    return status


def _apply_component_changes(
    incident: Incident | None, changes: Iterable[ComponentChange], *, actor: Actor, at: datetime
) -> list[dict[str, Any]]:
    """Set component statuses, recording each real change in the component's history (and telling
    webhook subscribers, who get component updates as Statuspage sends them)."""
    applied: list[dict[str, Any]] = []
    webhooks = None
    for change in changes:
        _check_status(change.status, field="components")
        component = Component.objects.select_for_update().get(pk=change.component.pk)
        if component.is_group:
            raise ActionRefused(
                f"{component.name} is a group; set the status of its components instead.", field="components"
            )
        if component.status == change.status:
            continue
        recorded = ComponentStatusChange.objects.create(
            component=component,
            old_status=component.status,
            new_status=change.status,
            changed_at=at,
            incident=incident,
            actor=_user(actor),
        )
        if webhooks is None:
            webhooks = Subscriber.objects.filter(kind=SubscriberKind.WEBHOOK, unsubscribed_at__isnull=True).exists()
        if webhooks:
            _notify(
                Message.objects.create(
                    kind=MessageKind.COMPONENT_UPDATE,
                    key=f"component-change:{recorded.pk}",
                    component_change=recorded,
                    component_ids=[component.pk],
                    created_at=at,
                )
            )
        applied.append(
            {
                "component_id": component.pk,
                "name": component.display_name,
                "old_status": component.status,
                "new_status": change.status,
            }
        )
        component.status = change.status
        component.updated_at = at
        component.save(update_fields=["status", "updated_at"])
    return applied


def _derived_impact(statuses: Iterable[str]) -> str:
    worst = Impact.NONE
    for status in statuses:
        impact = IMPACT_FOR_COMPONENT_STATUS[ComponentStatus(status)]
        if IMPACT_RANK[impact] > IMPACT_RANK[Impact(worst)]:
            worst = impact
    return worst


def _refresh_impact(incident: Incident, statuses: Iterable[str]) -> None:
    """Impact is the worst the incident has reached (peak), unless staff override it."""
    if incident.impact_override:
        incident.impact = incident.impact_override
        return
    derived = _derived_impact(statuses)
    if IMPACT_RANK[Impact(derived)] > IMPACT_RANK[Impact(incident.impact)]:
        incident.impact = derived


# --- clocks -------------------------------------------------------------------------------------


def _start_clocks(incident: Incident, severity: Severity, at: datetime) -> None:
    for metric in (Metric.ACKNOWLEDGE, Metric.FIRST_UPDATE, Metric.RESOLVE):
        target = severity.target_for(metric)
        if target:
            clock = Clock(incident=incident, metric=metric, target_seconds=target, started_at=incident.declared_at)
            clock.running_since = incident.declared_at
            clock.next_check_at = clocks.next_check_at(clock)
            clock.save()
    # The cadence clock starts with the first public update.


REPORTED_METRICS = (Metric.ACKNOWLEDGE, Metric.FIRST_UPDATE, Metric.RESOLVE)


def _copy_targets(incident: Incident) -> None:
    """Copy the clocks' targets onto the incident row, where the response report reads them."""
    targets = dict(
        Clock.objects.filter(incident=incident, metric__in=REPORTED_METRICS).values_list("metric", "target_seconds")
    )
    values = {f"{metric}_target": targets.get(metric) for metric in REPORTED_METRICS}
    Incident.objects.filter(pk=incident.pk).update(**values)
    for name, value in values.items():
        setattr(incident, name, value)


def _clock(incident: Incident, metric: str) -> Clock | None:
    return Clock.objects.select_for_update().filter(incident=incident, metric=metric).first()


def _record_clock_event(clock: Clock, kind: str, due: datetime, *, nudge: bool = True) -> bool:
    try:
        with transaction.atomic():
            recorded = ClockEvent.objects.create(clock=clock, kind=kind, cycle=clock.cycle, due_at=due)
    except IntegrityError:
        return False  # recorded already: exactly once, whoever got there first
    if nudge:
        escalation.nudge(clock, recorded)
    share = {ClockEventKind.WARNING_75.value: "75%", ClockEventKind.WARNING_90.value: "90%"}.get(kind)
    label = Metric(clock.metric).label
    if share:
        message = f"{label} clock at {share} of its {_duration(clock.target_seconds)} target"
        event_kind = EventKind.CLOCK_WARNING
    else:
        message = f"{label} clock breached its {_duration(clock.target_seconds)} target"
        event_kind = EventKind.CLOCK_BREACHED
    _event(
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


def _stop_clock(clock: Clock | None, at: datetime, *, satisfied: bool = True) -> None:
    """Stop a running clock: met if it made its target, breached if not, stopped if not satisfied."""
    if clock is None or clock.running_since is None:
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


def _resume_clock(clock: Clock | None, at: datetime) -> None:
    if clock is None or clock.running_since is not None:
        return
    clock.running_since = at
    clock.stopped_at = None
    clock.state = ClockState.BREACHED if clock.breached_at is not None else ClockState.RUNNING
    clock.next_check_at = clocks.next_check_at(clock)
    clock.save(update_fields=["running_since", "stopped_at", "state", "next_check_at"])


def _restart_cadence(incident: Incident, severity: Severity, at: datetime) -> None:
    """A public update meets the current cadence cycle and promises the next update."""
    target = severity.update_cadence_target
    clock = _clock(incident, Metric.UPDATE_CADENCE)
    if clock is not None:
        _stop_clock(clock, at)
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


def _retarget_clocks(incident: Incident, severity: Severity, at: datetime) -> None:
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
                    _restart_cadence(incident, severity, at)
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
            _stop_clock(clock, at, satisfied=False)
            continue
        clock.target_seconds = target
        clock.save(update_fields=["target_seconds"])
        record_clock_thresholds(clock, now=at, not_before=at)


def _duration(seconds: int | float) -> str:
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


# --- milestones ---------------------------------------------------------------------------------

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


def _stamp_acknowledged(incident: Incident, actor: Actor, at: datetime) -> bool:
    if incident.acknowledged_at is not None:
        return False
    incident.acknowledged_at = at
    incident.acknowledged_by = _user(actor)
    _stop_clock(_clock(incident, Metric.ACKNOWLEDGE), at)
    escalation.stop_pending(incident, at, f"acknowledged by {_actor_name(actor)}")
    return True


def _advance(incident: Incident, public_status: str, actor: Actor, at: datetime) -> list[str]:
    """Move the internal status forward for a public status, stamping each milestone once."""
    stamped: list[str] = []
    target = _INTERNAL_FOR_PUBLIC[PublicStatus(public_status)]
    # A person who identifies or resolves has acknowledged, even without pressing the button.
    beyond_investigating = target != IncidentStatus.ACKNOWLEDGED
    if beyond_investigating and _user(actor) is not None and _stamp_acknowledged(incident, actor, at):
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


# --- incidents ----------------------------------------------------------------------------------


def declare_incident(
    *,
    actor: Actor,
    title: str,
    severity: Severity,
    message: str = "",
    message_is_public: bool = True,
    public_status: str = PublicStatus.INVESTIGATING,
    components: Mapping[Component, str] | None = None,
    customer_impact_percent: Decimal | float | str | None = None,
    regions: Iterable[str] | str | None = None,
    workaround: str = "",
    impact_override: str = "",
    commander: Any = None,
    idempotency_key: str | None = None,
    at: datetime | None = None,
) -> Incident:
    """Declare an incident, start its clocks, set component statuses and post the first message.

    With an idempotency key this user has used before, declare nothing and return that incident,
    marked `replayed`.
    """
    at = at or timezone.now()
    title = title.strip()
    if not title:
        raise ActionRefused("A title is required.", field="title")
    if public_status == PublicStatus.RESOLVED:
        raise ActionRefused("A new incident cannot start resolved.", field="public_status")
    if public_status not in PublicStatus.values:
        raise ActionRefused(f"Unknown status {public_status!r}.", field="public_status")
    if impact_override and impact_override not in Impact.values:
        raise ActionRefused(f"Unknown impact {impact_override!r}.", field="impact_override")
    percent = _clean_percent(customer_impact_percent)
    user = _user(actor)

    with transaction.atomic():
        if idempotency_key and user is not None:
            previous = IdempotencyKey.objects.filter(user=user, key=idempotency_key).select_related("incident")
            if found := previous.first():
                found.incident.replayed = True
                return found.incident

        incident = Incident.objects.create(
            title=title[:200],
            severity=severity,
            public_status=PublicStatus.INVESTIGATING,
            customer_impact_percent=percent,
            regions=_clean_regions(regions),
            workaround=workaround.strip(),
            impact_override=impact_override,
            commander=commander or user,
            declared_by=user,
            declared_at=at,
            updated_at=at,
        )
        if idempotency_key and user is not None:
            try:
                with transaction.atomic():
                    IdempotencyKey.objects.create(user=user, key=idempotency_key, incident=incident, created_at=at)
            except IntegrityError:
                # Another request with the same key won the race: ours never happened.
                transaction.set_rollback(True)
                winner = IdempotencyKey.objects.get(user=user, key=idempotency_key).incident
                winner.replayed = True
                return winner

        _start_clocks(incident, severity, at)
        _copy_targets(incident)
        escalation.copy_policy(incident, severity, at)
        changes = [ComponentChange(c, s) for c, s in (components or {}).items()]
        for change in changes:
            _check_status(change.status, field="components")
        if changes:
            incident.components.set([change.component for change in changes])
        _refresh_impact(incident, [change.status for change in changes])
        incident.save(update_fields=["impact", "impact_override"])
        _event(
            incident,
            EventKind.DECLARED,
            f"{_actor_name(actor)} declared {severity.name}: {incident.title}",
            actor=actor,
            at=at,
            severity=severity.key,
            components=[{"component_id": c.component.pk, "status": c.status} for c in changes],
        )
        if message.strip():
            # The first message carries the component changes, as every later update does.
            _post_update_locked(
                incident,
                actor=actor,
                body=message,
                public_status=public_status,
                is_public=message_is_public,
                component_changes=changes,
                at=at,
            )
        elif _apply_component_changes(incident, changes, actor=actor, at=at):
            request_publish()
        return incident


def acknowledge_incident(incident: Incident, *, actor: Actor, at: datetime | None = None) -> Incident:
    at = at or timezone.now()
    if _user(actor) is None:
        raise ActionRefused("Only a person can acknowledge an incident.")
    with transaction.atomic():
        incident = _lock(incident)
        if incident.is_resolved:
            raise ActionRefused("This incident is already resolved; reopen it first.")
        if incident.acknowledged_at is not None:
            who = incident.acknowledged_by.get_username() if incident.acknowledged_by else "someone"
            raise ActionRefused(f"Already acknowledged by {who}.", code="already_acknowledged")
        _stamp_acknowledged(incident, actor, at)
        if incident.status == IncidentStatus.DECLARED:
            incident.status = IncidentStatus.ACKNOWLEDGED
        incident.updated_at = at
        incident.save(update_fields=["acknowledged_at", "acknowledged_by", "status", "updated_at"])
        elapsed = (at - incident.declared_at).total_seconds()
        _event(
            incident,
            EventKind.ACKNOWLEDGED,
            f"{_actor_name(actor)} acknowledged after {_duration(round(elapsed))}",
            actor=actor,
            at=at,
            elapsed_seconds=elapsed,
        )
        return incident


def post_update(
    incident: Incident,
    *,
    actor: Actor,
    body: str,
    public_status: str | None = None,
    is_public: bool = True,
    components: Mapping[Component, str] | None = None,
    at: datetime | None = None,
) -> IncidentUpdate:
    """Post an update; a public one restarts the cadence clock and may move the public status."""
    at = at or timezone.now()
    with transaction.atomic():
        incident = _lock(incident)
        if incident.is_resolved:
            raise ActionRefused("This incident is resolved; reopen it before posting an update.")
        status = public_status or incident.public_status
        if status not in PublicStatus.values:
            raise ActionRefused(f"Unknown status {status!r}.", field="status")
        if status == PublicStatus.RESOLVED:
            raise ActionRefused("Use Resolve to resolve an incident.", field="status")
        changes = [ComponentChange(c, s) for c, s in (components or {}).items()]
        return _post_update_locked(
            incident,
            actor=actor,
            body=body,
            public_status=status,
            is_public=is_public,
            component_changes=changes,
            at=at,
        )


def _post_update_locked(
    incident: Incident,
    *,
    actor: Actor,
    body: str,
    public_status: str,
    is_public: bool,
    component_changes: list[ComponentChange],
    at: datetime,
) -> IncidentUpdate:
    body = body.strip()
    if not body:
        raise ActionRefused("An update needs a message.", field="body")
    applied = _apply_component_changes(incident, component_changes, actor=actor, at=at)
    if component_changes:
        incident.components.add(*[change.component for change in component_changes])
    previous_status = incident.public_status
    fields = {"public_status", "status", "impact", "updated_at"}
    if is_public:
        incident.public_status = public_status
    stamped = _advance(incident, public_status, actor, at)
    fields.update(stamped)
    if "acknowledged_at" in stamped:
        fields.add("acknowledged_by")
    if is_public:
        if incident.published_at is None:
            incident.published_at = at
            fields.add("published_at")
            _stop_clock(_clock(incident, Metric.FIRST_UPDATE), at)
        if public_status != PublicStatus.RESOLVED:
            _restart_cadence(incident, incident.severity, at)
    _refresh_impact(incident, [c["new_status"] for c in applied])
    incident.updated_at = at
    incident.save(update_fields=sorted(fields))
    if is_public or applied:
        request_publish()
    update = IncidentUpdate.objects.create(
        incident=incident,
        status=public_status if is_public else incident.public_status,
        body=body,
        body_html=render_markdown(body),
        is_public=is_public,
        component_changes=applied,
        author=_user(actor),
        created_at=at,
    )
    if is_public:
        _message_for_update(incident, update, sorted({c.pk for c in incident.components.all()}))
    kind = "a public" if is_public else "an internal"
    status_note = f" ({previous_status} → {public_status})" if is_public and previous_status != public_status else ""
    _event(
        incident,
        EventKind.UPDATE_POSTED,
        f"{_actor_name(actor)} posted {kind} update{status_note}",
        actor=actor,
        at=at,
        update_id=update.pk,
        is_public=is_public,
        public_status=public_status,
        components=applied,
        milestones=stamped,
    )
    return update


def change_severity(incident: Incident, *, actor: Actor, severity: Severity, at: datetime | None = None) -> Incident:
    at = at or timezone.now()
    with transaction.atomic():
        incident = _lock(incident)
        if incident.severity_id == severity.pk:
            raise ActionRefused(f"The incident is already {severity.name}.", code="unchanged")
        previous = incident.severity
        incident.severity = severity
        incident.updated_at = at
        incident.save(update_fields=["severity", "updated_at"])
        _retarget_clocks(incident, severity, at)
        _copy_targets(incident)
        if incident.published_at is not None:
            request_publish()  # the public "next update by" follows the new cadence target
        _event(
            incident,
            EventKind.SEVERITY_CHANGED,
            f"{_actor_name(actor)} changed severity from {previous.name} to {severity.name}",
            actor=actor,
            at=at,
            old=previous.key,
            new=severity.key,
        )
        if incident.acknowledged_at is None and not incident.is_resolved:
            # Still unacknowledged: the new severity's escalation takes over, timed from now.
            stopped = escalation.stop_pending(incident, at, f"severity changed to {severity.name}")
            steps = escalation.copy_policy(incident, severity, at)
            if stopped or steps:
                _event(
                    incident,
                    EventKind.PAGING_STOPPED if not steps else EventKind.PAGED,
                    f"Paging follows {severity.name}'s escalation from now ({len(steps)} step(s))"
                    if steps
                    else f"{severity.name} has no escalation steps: paging stopped",
                    actor=None,
                    at=at,
                    steps=len(steps),
                )
        return incident


def stop_paging(incident: Incident, *, actor: Actor, reason: str, at: datetime | None = None) -> int:
    """Stop paging for an unacknowledged incident (someone is on it but cannot acknowledge yet, say).

    Returns how many steps were stopped. Audited with the reason; the acknowledge clock keeps running.
    """
    at = at or timezone.now()
    reason = reason.strip()
    if _user(actor) is None:
        raise ActionRefused("Only a person can stop paging.")
    if not reason:
        raise ActionRefused("Say why paging stops.", field="reason")
    with transaction.atomic():
        incident = _lock(incident)
        stopped = escalation.stop_pending(incident, at, f"stopped by {_actor_name(actor)}: {reason}")
        if not stopped:
            raise ActionRefused("Nobody is waiting to be paged for this incident.", code="not_paging")
        _event(
            incident,
            EventKind.PAGING_STOPPED,
            f"{_actor_name(actor)} stopped paging ({stopped} step(s) left): {reason}",
            actor=actor,
            at=at,
            reason=reason,
            steps=stopped,
        )
        return stopped


def assign_commander(incident: Incident, *, actor: Actor, commander: Any, at: datetime | None = None) -> Incident:
    """Hand the incident to a commander (a staff user)."""
    at = at or timezone.now()
    if commander is None or not commander.is_active or not commander.is_staff:
        raise ActionRefused("The commander must be an active staff user.", field="commander")
    with transaction.atomic():
        incident = _lock(incident)
        if incident.commander_id == commander.pk:
            raise ActionRefused(f"{commander.get_username()} is already the commander.", field="commander")
        previous = incident.commander.get_username() if incident.commander else None
        incident.commander = commander
        incident.updated_at = at
        incident.save(update_fields=["commander", "updated_at"])
        _event(
            incident,
            EventKind.COMMANDER_CHANGED,
            f"{_actor_name(actor)} made {commander.get_username()} the incident commander",
            actor=actor,
            at=at,
            old=previous,
            new=commander.get_username(),
        )
        return incident


_UNSET: Any = object()


def update_impact_scope(
    incident: Incident,
    *,
    actor: Actor,
    customer_impact_percent: Any = _UNSET,
    regions: Any = _UNSET,
    workaround: Any = _UNSET,
    impact_override: Any = _UNSET,
    at: datetime | None = None,
) -> Incident:
    """Change who is affected. Only the arguments given change; the event records old and new."""
    at = at or timezone.now()
    with transaction.atomic():
        incident = _lock(incident)
        changed: dict[str, dict[str, Any]] = {}
        if customer_impact_percent is not _UNSET:
            percent = _clean_percent(customer_impact_percent)
            if percent != incident.customer_impact_percent:
                old = incident.customer_impact_percent
                changed["customer_impact_percent"] = {
                    "old": None if old is None else str(old),
                    "new": None if percent is None else str(percent),
                }
                incident.customer_impact_percent = percent
        if regions is not _UNSET:
            cleaned = _clean_regions(regions)
            if cleaned != incident.regions:
                changed["regions"] = {"old": incident.regions, "new": cleaned}
                incident.regions = cleaned
        if workaround is not _UNSET and (workaround or "").strip() != incident.workaround:
            changed["workaround"] = {"old": incident.workaround, "new": (workaround or "").strip()}
            incident.workaround = (workaround or "").strip()
        if impact_override is not _UNSET and (impact_override or "") != incident.impact_override:
            if impact_override and impact_override not in Impact.values:
                raise ActionRefused(f"Unknown impact {impact_override!r}.", field="impact_override")
            changed["impact_override"] = {"old": incident.impact_override, "new": impact_override or ""}
            incident.impact_override = impact_override or ""
            if incident.impact_override:
                incident.impact = incident.impact_override
            else:
                statuses = list(incident.components.values_list("status", flat=True))
                incident.impact = _derived_impact(statuses)
        if not changed:
            raise ActionRefused("Nothing changed.", code="unchanged")
        incident.updated_at = at
        incident.save(
            update_fields=[
                "customer_impact_percent", "regions", "workaround", "impact_override", "impact", "updated_at"
            ]
        )  # fmt: skip
        if incident.published_at is not None:
            request_publish()
        _event(
            incident,
            EventKind.SCOPE_CHANGED,
            f"{_actor_name(actor)} changed the impact scope ({', '.join(changed)})",
            actor=actor,
            at=at,
            changes=changed,
        )
        return incident


def resolve_incident(
    incident: Incident,
    *,
    actor: Actor,
    message: str = "",
    is_public: bool = True,
    restore_components: bool = True,
    at: datetime | None = None,
) -> Incident:
    """Resolve: fill skipped milestones forward, stop every clock, restore components if asked."""
    at = at or timezone.now()
    with transaction.atomic():
        incident = _lock(incident)
        if incident.is_resolved:
            raise ActionRefused("This incident is already resolved.", code="already_resolved")
        restore = (
            [ComponentChange(c, ComponentStatus.OPERATIONAL) for c in incident.components.filter(is_group=False)]
            if restore_components
            else []
        )
        if message.strip():
            _post_update_locked(
                incident,
                actor=actor,
                body=message,
                public_status=PublicStatus.RESOLVED,
                is_public=is_public,
                component_changes=restore,
                at=at,
            )
            restore = []
        else:
            _advance(incident, PublicStatus.RESOLVED, actor, at)
        applied = _apply_component_changes(incident, restore, actor=actor, at=at)
        # Skipped milestones fill forward, so every resolved incident has all of them.
        if incident.acknowledged_at is None:
            incident.acknowledged_at = at
            _stop_clock(_clock(incident, Metric.ACKNOWLEDGE), at)
        escalation.stop_pending(incident, at, "the incident was resolved")
        incident.identified_at = incident.identified_at or at
        incident.mitigated_at = incident.mitigated_at or at
        incident.resolved_at = at
        incident.status = IncidentStatus.RESOLVED
        incident.public_status = PublicStatus.RESOLVED
        incident.updated_at = at
        incident.save(
            update_fields=[
                "acknowledged_at", "acknowledged_by", "identified_at", "mitigated_at", "resolved_at",
                "status", "public_status", "published_at", "impact", "updated_at",
            ]
        )  # fmt: skip
        _stop_clock(_clock(incident, Metric.FIRST_UPDATE), at, satisfied=False)
        _stop_clock(_clock(incident, Metric.UPDATE_CADENCE), at, satisfied=False)
        _stop_clock(_clock(incident, Metric.RESOLVE), at)
        request_publish()
        duration = (at - incident.declared_at).total_seconds()
        opens_postmortem = (
            incident.severity.postmortem_required and not Postmortem.objects.filter(incident=incident).exists()
        )
        _event(
            incident,
            EventKind.RESOLVED,
            f"{_actor_name(actor)} resolved the incident after {_duration(round(duration))}",
            actor=actor,
            at=at,
            components=applied,
        )
        if opens_postmortem:
            _open_postmortem(incident, actor=actor, at=at)
        return incident


def reopen_incident(
    incident: Incident,
    *,
    actor: Actor,
    reason: str,
    message: str = "",
    is_public: bool = True,
    at: datetime | None = None,
) -> Incident:
    """Reopen a resolved incident: back to investigating, the resolve clock resumes with the time it
    had already run, and a published incident promises its next public update again. With a
    message, that update is posted at once."""
    at = at or timezone.now()
    reason = reason.strip()
    if not reason:
        raise ActionRefused("Say why the incident is reopened.", field="reason")
    with transaction.atomic():
        incident = _lock(incident)
        if not incident.is_resolved:
            raise ActionRefused("Only a resolved incident can be reopened.", code="not_resolved")
        incident.status = IncidentStatus.ACKNOWLEDGED
        incident.public_status = PublicStatus.INVESTIGATING
        incident.resolved_at = None
        incident.reopened_count += 1
        incident.updated_at = at
        incident.save(update_fields=["status", "public_status", "resolved_at", "reopened_count", "updated_at"])
        _resume_clock(_clock(incident, Metric.RESOLVE), at)
        _event(
            incident,
            EventKind.REOPENED,
            f"{_actor_name(actor)} reopened the incident: {reason}",
            actor=actor,
            at=at,
            reason=reason,
        )
        if message.strip():
            _post_update_locked(
                incident,
                actor=actor,
                body=message,
                public_status=PublicStatus.INVESTIGATING,
                is_public=is_public,
                component_changes=[],
                at=at,
            )
        elif incident.published_at is not None:
            _restart_cadence(incident, incident.severity, at)
            request_publish()
        return incident


# --- components ---------------------------------------------------------------------------------


def create_component(
    *,
    actor: Actor,
    name: str,
    group: Component | None = None,
    is_group: bool = False,
    description: str = "",
    position: int | None = None,
    status: str = ComponentStatus.OPERATIONAL,
    showcase: bool = True,
    only_show_if_degraded: bool = False,
    at: datetime | None = None,
) -> Component:
    at = at or timezone.now()
    name = name.strip()
    if not name:
        raise ActionRefused("A component needs a name.", field="name")
    _check_status(status)
    if group is not None and (not group.is_group or group.group_id is not None):
        raise ActionRefused(f"{group.name} is not a group.", field="group")
    if is_group and group is not None:
        raise ActionRefused("Groups cannot be nested: components have two levels.", field="group")
    taken = ActionRefused(f"A component named {name!r} already exists there.", field="name")
    with transaction.atomic():
        if Component.objects.filter(name=name, group=group).exists():
            raise taken
        if position is None:
            last = Component.objects.filter(group=group).order_by("-position").values_list("position", flat=True)
            position = (last.first() or 0) + 1
        try:
            with transaction.atomic():
                component = Component.objects.create(
                    name=name[:200],
                    group=group,
                    is_group=is_group,
                    description=description.strip(),
                    position=position,
                    status=status,
                    showcase=showcase,
                    only_show_if_degraded=only_show_if_degraded,
                    start_date=at.date(),
                    created_at=at,
                    updated_at=at,
                )
        except IntegrityError:
            raise taken from None  # a concurrent request took the name between the check and here
        request_publish()
        if status != ComponentStatus.OPERATIONAL:
            ComponentStatusChange.objects.create(
                component=component,
                old_status=ComponentStatus.OPERATIONAL,
                new_status=status,
                changed_at=at,
                actor=_user(actor),
            )
        return component


def set_component_status(
    component: Component,
    *,
    actor: Actor,
    status: str,
    incident: Incident | None = None,
    at: datetime | None = None,
) -> Component:
    """Change one component's status outside an update (the change is recorded in its history)."""
    at = at or timezone.now()
    _check_status(status)
    with transaction.atomic():
        if incident is not None:
            incident = _lock(incident)
            if incident.is_resolved:
                raise ActionRefused("This incident is resolved; reopen it first.")
        applied = _apply_component_changes(incident, [ComponentChange(component, status)], actor=actor, at=at)
        if applied:
            request_publish()
        if incident is not None and applied:
            incident.components.add(component)
            _refresh_impact(incident, [status])
            incident.updated_at = at
            incident.save(update_fields=["impact", "updated_at"])
            _event(
                incident,
                EventKind.COMPONENT_CHANGED,
                f"{_actor_name(actor)} set {component.display_name} to {ComponentStatus(status).label.lower()}",
                actor=actor,
                at=at,
                components=applied,
            )
        component.refresh_from_db()
        return component


def worst_status(statuses: Iterable[str]) -> str:
    worst: str = ComponentStatus.OPERATIONAL
    for status in statuses:
        if COMPONENT_STATUS_RANK[ComponentStatus(status)] > COMPONENT_STATUS_RANK[ComponentStatus(worst)]:
            worst = status
    return worst


# --- maintenance --------------------------------------------------------------------------------


def _maintenance_event(
    maintenance: Maintenance, kind: str, message: str, *, actor: Actor, at: datetime, **data: Any
) -> None:
    TimelineEvent.objects.create(
        maintenance=maintenance, kind=kind, actor=_user(actor), message=message[:500], data=data, created_at=at
    )


def _lock_maintenance(maintenance: Maintenance) -> Maintenance:
    return Maintenance.objects.select_for_update().get(pk=maintenance.pk)


def _check_window(scheduled_for: datetime | None, scheduled_until: datetime | None) -> tuple[datetime, datetime]:
    if scheduled_for is None:
        raise ActionRefused("A start time is required.", field="scheduled_for")
    if scheduled_until is None:
        raise ActionRefused("An end time is required.", field="scheduled_until")
    if scheduled_until <= scheduled_for:
        raise ActionRefused("The window must end after it starts.", field="scheduled_until")
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
        author=_user(actor),
        created_at=at,
    )
    _message_for_maintenance(maintenance, update)
    return update


def _when(moment: datetime) -> str:
    zone = zoneinfo.ZoneInfo(settings.DISPLAY_TIME_ZONE)
    local = moment.astimezone(zone)
    return f"{local:%d %b %Y %H:%M} {local.tzname() or settings.DISPLAY_TIME_ZONE}"


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
    start, end = _check_window(scheduled_for, scheduled_until)
    components = list(components)
    if any(component.is_group for component in components):
        raise ActionRefused("Choose components, not groups.", field="components")
    body = message.strip() or f"{title} is scheduled from {_when(start)} to {_when(end)}."
    with transaction.atomic():
        maintenance = Maintenance.objects.create(
            title=title[:200],
            scheduled_for=start,
            scheduled_until=end,
            auto_start=auto_start,
            auto_complete=auto_complete,
            created_by=_user(actor),
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
            f"{_actor_name(actor)} scheduled maintenance from {_when(start)} to {_when(end)}",
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
    start, end = _check_window(scheduled_for, scheduled_until)
    with transaction.atomic():
        maintenance = _lock_maintenance(maintenance)
        if maintenance.is_finished:
            raise ActionRefused("This maintenance is over; schedule a new one instead.")
        if maintenance.status != MaintenanceStatus.SCHEDULED and start != maintenance.scheduled_for:
            raise ActionRefused("The maintenance has started; only its end can move.", field="scheduled_for")
        if (start, end) == (maintenance.scheduled_for, maintenance.scheduled_until):
            raise ActionRefused("Nothing changed.", code="unchanged")
        old = (_when(maintenance.scheduled_for), _when(maintenance.scheduled_until))
        maintenance.scheduled_for, maintenance.scheduled_until = start, end
        maintenance.sequence += 1
        maintenance.updated_at = at
        maintenance.next_action_at = _next_maintenance_action(maintenance)
        maintenance.save(update_fields=["scheduled_for", "scheduled_until", "sequence", "updated_at", "next_action_at"])
        body = message.strip() or f"Rescheduled: now from {_when(start)} to {_when(end)}."
        _maintenance_update(maintenance, actor=actor, status=maintenance.status, body=body, changes=[], at=at)
        _maintenance_event(
            maintenance,
            EventKind.MAINTENANCE_RESCHEDULED,
            f"{_actor_name(actor)} rescheduled the maintenance from {old[0]}–{old[1]} to {_when(start)}–{_when(end)}",
            actor=actor,
            at=at,
        )
        request_publish()
        return maintenance


def start_maintenance(
    maintenance: Maintenance, *, actor: Actor, message: str = "", at: datetime | None = None
) -> Maintenance:
    """Start the window: its components go under maintenance (their statuses are kept to restore)."""
    at = at or timezone.now()
    with transaction.atomic():
        maintenance = _lock_maintenance(maintenance)
        if maintenance.is_cancelled:
            raise ActionRefused("This maintenance was cancelled.")
        if maintenance.status != MaintenanceStatus.SCHEDULED:
            raise ActionRefused("This maintenance has already started.", code="already_started")
        components = list(maintenance.components.all())
        maintenance.restore_statuses = {str(c.pk): c.status for c in components}
        changes = _apply_component_changes(
            None, [ComponentChange(c, ComponentStatus.UNDER_MAINTENANCE) for c in components], actor=actor, at=at
        )
        maintenance.status = MaintenanceStatus.IN_PROGRESS
        maintenance.started_at = at
        maintenance.updated_at = at
        maintenance.next_action_at = _next_maintenance_action(maintenance)
        maintenance.save(update_fields=["restore_statuses", "status", "started_at", "updated_at", "next_action_at"])
        body = message.strip() or "The scheduled maintenance is in progress."
        _maintenance_update(
            maintenance, actor=actor, status=MaintenanceStatus.IN_PROGRESS, body=body, changes=changes, at=at
        )
        _maintenance_event(
            maintenance,
            EventKind.MAINTENANCE_STARTED,
            f"{_actor_name(actor)} started the maintenance",
            actor=actor,
            at=at,
        )
        request_publish()
        return maintenance


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
        changes = _apply_component_changes(None, restore, actor=actor, at=at)
        maintenance.status = MaintenanceStatus.COMPLETED
        maintenance.completed_at = at
        maintenance.updated_at = at
        maintenance.next_action_at = None
        maintenance.save(update_fields=["status", "completed_at", "updated_at", "next_action_at"])
        body = message.strip() or "The scheduled maintenance has been completed."
        _maintenance_update(
            maintenance, actor=actor, status=MaintenanceStatus.COMPLETED, body=body, changes=changes, at=at
        )
        _maintenance_event(
            maintenance,
            EventKind.MAINTENANCE_COMPLETED,
            f"{_actor_name(actor)} completed the maintenance",
            actor=actor,
            at=at,
        )
        request_publish()
        return maintenance


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
        maintenance.updated_at = at
        maintenance.save(update_fields=["status", "updated_at"])
        _maintenance_update(maintenance, actor=actor, status=status, body=body, changes=[], at=at)
        _maintenance_event(
            maintenance,
            EventKind.MAINTENANCE_UPDATE,
            f"{_actor_name(actor)} posted an update ({status})",
            actor=actor,
            at=at,
        )
        request_publish()
        return maintenance


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
        maintenance.updated_at = at
        maintenance.next_action_at = None
        maintenance.save(update_fields=["cancelled_at", "sequence", "updated_at", "next_action_at"])
        body = reason.strip() or "This maintenance has been cancelled."
        _maintenance_update(maintenance, actor=actor, status=maintenance.status, body=body, changes=[], at=at)
        _maintenance_event(
            maintenance,
            EventKind.MAINTENANCE_CANCELLED,
            f"{_actor_name(actor)} cancelled the maintenance" + (f": {reason.strip()}" if reason.strip() else ""),
            actor=actor,
            at=at,
        )
        request_publish()
        return maintenance


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


# --- subscriptions ------------------------------------------------------------------------------

CONFIRMATION_RESEND_INTERVAL = timedelta(hours=1)


def _notify(message: Message) -> None:
    """Fan the message out and send it once the transaction commits (the sweep catches a lost task)."""

    def enqueue() -> None:
        from incidents.tasks import notify

        if notify.app.conf.task_always_eager and not settings.DELIVER_EAGERLY:
            # No broker: the timer loop's delivery sweep sends it within TIMER_SWEEP_SECONDS. Sending here
            # would hold the web request for as long as the mail server takes, and how long a sign-up
            # takes would tell whether the address was new.
            return
        try:
            notify.delay(message.pk)
        except Exception:  # a broker outage must not undo the change: the sweep sends it later
            log.warning("could not enqueue message %s; the delivery sweep will send it", message.pk, exc_info=True)

    transaction.on_commit(enqueue, robust=True)


def _message_for_update(incident: Incident, update: IncidentUpdate, component_ids: list[int]) -> None:
    message = Message.objects.create(
        kind=MessageKind.INCIDENT_UPDATE,
        key=f"incident-update:{update.pk}",
        incident=incident,
        incident_update=update,
        impact=incident.impact,
        component_ids=component_ids,
        created_at=update.created_at,
    )
    _notify(message)


def _message_for_maintenance(maintenance: Maintenance, update: MaintenanceUpdate) -> None:
    message = Message.objects.create(
        kind=MessageKind.MAINTENANCE,
        key=f"maintenance-update:{update.pk}",
        maintenance=maintenance,
        maintenance_update=update,
        component_ids=list(maintenance.components.values_list("pk", flat=True)),
        created_at=update.created_at,
    )
    _notify(message)


def subscribe(
    *,
    email: str,
    all_components: bool = True,
    components: Iterable[Component] = (),
    notify_incidents: bool = True,
    notify_maintenance: bool = True,
    notify_postmortems: bool = True,
    minimum_impact: str = Impact.NONE,
    at: datetime | None = None,
) -> Subscriber:
    """Sign an address up with double opt-in. Callers must answer the same whatever happened here, so
    nobody learns whether an address is subscribed; the address gets at most one email an hour."""
    at = at or timezone.now()
    email = email.strip()
    try:
        validate_email(email)
    except ValidationError:
        raise ActionRefused("Enter a valid email address, like name@example.com.", field="email") from None
    if minimum_impact not in Impact.values:
        raise ActionRefused(f"Unknown impact {minimum_impact!r}.", field="minimum_impact")
    components = list(components)
    if not all_components and not components:
        raise ActionRefused("Choose at least one component, or all of them.", field="components")
    if not (notify_incidents or notify_maintenance or notify_postmortems):
        raise ActionRefused("Choose at least one kind of update.", field="kinds")
    with transaction.atomic():
        subscriber = (
            Subscriber.objects.select_for_update().filter(kind=SubscriberKind.EMAIL, email__iexact=email).first()
        )
        if subscriber is None:
            subscriber = Subscriber.objects.create(kind=SubscriberKind.EMAIL, email=email, secret=new_secret())
        elif subscriber.unsubscribed_at is not None:
            # Coming back: confirm again, and old links stay dead.
            subscriber.unsubscribed_at = None
            subscriber.confirmed_at = None
            subscriber.secret = new_secret()
            subscriber.save(update_fields=["unsubscribed_at", "confirmed_at", "secret"])
        if subscriber.confirmed_at is None:
            # Choices come from the sign-up only until confirmed; afterwards only the manage link changes them.
            _set_choices(
                subscriber, all_components, components, notify_incidents, notify_maintenance, notify_postmortems,
                minimum_impact,
            )  # fmt: skip
        recently = (
            subscriber.confirmation_sent_at and at - subscriber.confirmation_sent_at < CONFIRMATION_RESEND_INTERVAL
        )
        if not recently:
            subscriber.confirmation_sent_at = at
            subscriber.save(update_fields=["confirmation_sent_at"])
            message = Message.objects.create(
                kind=MessageKind.CONFIRMATION,
                key=f"confirmation:{subscriber.pk}:{at.timestamp():.6f}",
                subscriber=subscriber,
                created_at=at,
            )
            _notify(message)
        return subscriber


def _set_choices(
    subscriber: Subscriber,
    all_components: bool,
    components: list[Component],
    notify_incidents: bool,
    notify_maintenance: bool,
    notify_postmortems: bool,
    minimum_impact: str,
) -> None:
    subscriber.all_components = all_components
    subscriber.notify_incidents = notify_incidents
    subscriber.notify_maintenance = notify_maintenance
    subscriber.notify_postmortems = notify_postmortems
    subscriber.minimum_impact = minimum_impact
    subscriber.save(
        update_fields=[
            "all_components", "notify_incidents", "notify_maintenance", "notify_postmortems", "minimum_impact"
        ]
    )  # fmt: skip
    subscriber.components.set([] if all_components else [c for c in components if not c.is_group])


def confirm_subscription(subscriber: Subscriber, *, at: datetime | None = None) -> Subscriber:
    at = at or timezone.now()
    with transaction.atomic():
        subscriber = Subscriber.objects.select_for_update().get(pk=subscriber.pk)
        if subscriber.unsubscribed_at is not None:
            raise ActionRefused("This address has unsubscribed; subscribe again to get updates.")
        if subscriber.confirmed_at is None:
            subscriber.confirmed_at = at
            subscriber.save(update_fields=["confirmed_at"])
        return subscriber


def update_subscription(
    subscriber: Subscriber,
    *,
    all_components: bool,
    components: Iterable[Component],
    notify_incidents: bool,
    notify_maintenance: bool,
    notify_postmortems: bool,
    minimum_impact: str,
) -> Subscriber:
    components = list(components)
    if minimum_impact not in Impact.values:
        raise ActionRefused(f"Unknown impact {minimum_impact!r}.", field="minimum_impact")
    if not all_components and not components:
        raise ActionRefused("Choose at least one component, or all of them.", field="components")
    if not (notify_incidents or notify_maintenance or notify_postmortems):
        raise ActionRefused("Choose at least one kind of update, or unsubscribe.", field="kinds")
    with transaction.atomic():
        subscriber = Subscriber.objects.select_for_update().get(pk=subscriber.pk)
        if subscriber.unsubscribed_at is not None:
            raise ActionRefused("This address has unsubscribed; subscribe again to get updates.")
        _set_choices(
            subscriber, all_components, components, notify_incidents, notify_maintenance, notify_postmortems,
            minimum_impact,
        )  # fmt: skip
        return subscriber


def unsubscribe(subscriber: Subscriber, *, at: datetime | None = None) -> Subscriber:
    """Stop all mail to this subscriber at once; deliveries not yet sent are dropped."""
    at = at or timezone.now()
    with transaction.atomic():
        subscriber = Subscriber.objects.select_for_update().get(pk=subscriber.pk)
        if subscriber.unsubscribed_at is None:
            subscriber.unsubscribed_at = at
            subscriber.save(update_fields=["unsubscribed_at"])
            # Claimed rows too: a worker checks its claim right before sending, so it skips them.
            Delivery.objects.filter(
                subscriber=subscriber, status__in=[DeliveryStatus.PENDING, DeliveryStatus.SENDING]
            ).update(status=DeliveryStatus.FAILED, claim="", last_error="unsubscribed before it was sent")
        return subscriber


def add_webhook(
    *,
    actor: Actor,
    url: str,
    components: Iterable[Component] = (),
    notify_incidents: bool = True,
    notify_maintenance: bool = True,
    notify_postmortems: bool = True,
    minimum_impact: str = Impact.NONE,
) -> tuple[Subscriber, str]:
    """Add a webhook subscriber (staff only); returns it and its signing secret, shown once."""
    if _user(actor) is None or not getattr(actor, "is_staff", False):
        raise ActionRefused("Only staff can add webhooks.")
    url = url.strip()
    try:
        URLValidator(schemes=["http", "https"])(url)
    except ValidationError:
        raise ActionRefused("Enter an http or https URL.", field="url") from None
    components = list(components)
    with transaction.atomic():
        subscriber = Subscriber.objects.create(
            kind=SubscriberKind.WEBHOOK,
            webhook_url=url,
            webhook_secret=new_secret() + new_secret(),
            secret=new_secret(),
            confirmed_at=timezone.now(),
        )
        _set_choices(
            subscriber, not components, components, notify_incidents, notify_maintenance, notify_postmortems,
            minimum_impact,
        )  # fmt: skip
        return subscriber, subscriber.webhook_secret


MAINTENANCE_REMINDER_BEFORE = timedelta(hours=1)


def remind_of_maintenance(*, now: datetime) -> int:
    """Tell subscribers about windows starting within the hour, once per window and schedule."""
    soon = Maintenance.objects.filter(
        status=MaintenanceStatus.SCHEDULED,
        cancelled_at__isnull=True,
        scheduled_for__gt=now,
        scheduled_for__lte=now + MAINTENANCE_REMINDER_BEFORE,
    )
    reminded = 0
    for maintenance in soon:
        with transaction.atomic():
            message, created = Message.objects.get_or_create(
                # A reschedule bumps the sequence: the new time gets its own reminder.
                key=f"maintenance-reminder:{maintenance.pk}:{maintenance.sequence}",
                defaults={
                    "kind": MessageKind.MAINTENANCE_REMINDER,
                    "maintenance": maintenance,
                    "component_ids": list(maintenance.components.values_list("pk", flat=True)),
                    "created_at": now,
                },
            )
            if created:
                _notify(message)
                reminded += 1
    return reminded


# --- post-mortems -------------------------------------------------------------------------------

# Timeline events worth a line in a post-mortem's timeline, and those starred to begin with.
_POSTMORTEM_EVENT_KINDS = {
    EventKind.DECLARED, EventKind.ACKNOWLEDGED, EventKind.SEVERITY_CHANGED, EventKind.COMMANDER_CHANGED,
    EventKind.COMPONENT_CHANGED, EventKind.SCOPE_CHANGED, EventKind.CLOCK_BREACHED, EventKind.RESOLVED,
    EventKind.REOPENED, EventKind.PAGED, EventKind.PAGING_STOPPED,
}  # fmt: skip
_STARRED_EVENT_KINDS = {EventKind.DECLARED, EventKind.ACKNOWLEDGED, EventKind.RESOLVED, EventKind.REOPENED}


def _require_staff(actor: Actor, what: str) -> Any:
    user = _user(actor)
    if user is None or not user.is_staff:
        raise ActionRefused(f"Only staff can {what}.", code="forbidden")
    return user


def _lock_postmortem(postmortem: Postmortem) -> Postmortem:
    return Postmortem.objects.select_for_update(of=("self",)).select_related("incident").get(pk=postmortem.pk)


def customer_impact_text(incident: Incident) -> str:
    """The customer-impact section as the incident recorded it: share, regions, components, duration."""
    started = incident.impact_started_at or incident.declared_at
    ended = incident.resolved_at or timezone.now()
    who = (
        f"About {_plain_percent(incident.customer_impact_percent)}% of customers"
        if incident.customer_impact_percent is not None
        else "Customers"
    )
    where = f" in {', '.join(incident.regions)}" if incident.regions else ""
    components = ", ".join(sorted(c.display_name for c in incident.components.select_related("group")))
    lines = [
        f"{who}{where} were affected for {_duration((ended - started).total_seconds())}, "
        f"from {started:%Y-%m-%d %H:%M} to {ended:%Y-%m-%d %H:%M} UTC.",
    ]
    if components:
        lines.append(f"Affected components: {components}.")
    if incident.impact != Impact.NONE:
        # "none" only says that no component status was set, which reads as a contradiction here.
        lines.append(f"Impact: {Impact(incident.impact).label.lower()}.")
    if incident.workaround:
        lines.append(f"Workaround offered: {incident.workaround}")
    return "\n\n".join(lines)


def _plain(html: str) -> str:
    return " ".join(unescape(strip_tags(html)).split())


def _plain_percent(value: Decimal) -> str:
    return f"{value.normalize():f}"


def _collect_timeline(postmortem: Postmortem) -> int:
    """Add the incident's events and public updates not yet in the post-mortem's timeline."""
    incident = postmortem.incident
    entries = [
        PostmortemEntry(
            postmortem=postmortem,
            at=event.created_at,
            text=event.message[:500],
            source=f"event:{event.pk}",
            is_starred=event.kind in _STARRED_EVENT_KINDS,
        )
        for event in incident.events.filter(kind__in=_POSTMORTEM_EVENT_KINDS)
    ]
    entries += [
        PostmortemEntry(
            postmortem=postmortem,
            at=update.created_at,
            # As customers read it (the Markdown rendered, then as plain text), not its source.
            text=f"Public update ({update.get_status_display()}): {_plain(update.body_html)}"[:500],
            source=f"update:{update.pk}",
        )
        for update in incident.updates.filter(is_public=True)
    ]
    before = postmortem.entries.count()
    PostmortemEntry.objects.bulk_create(entries, ignore_conflicts=True)
    return postmortem.entries.count() - before


def _open_postmortem(incident: Incident, *, actor: Actor, at: datetime) -> Postmortem:
    """A draft with every section, the customer impact filled in and the timeline collected."""
    target = incident.severity.postmortem_target
    postmortem = Postmortem.objects.create(
        incident=incident,
        owner=incident.commander or _user(actor),
        due_at=at + timedelta(seconds=target) if target else None,
        created_at=at,
        updated_at=at,
    )
    PostmortemSection.objects.bulk_create(
        PostmortemSection(
            postmortem=postmortem,
            key=key,
            position=position,
            is_public=key in PUBLIC_BY_DEFAULT,
            body=customer_impact_text(incident) if key == SectionKey.CUSTOMER_IMPACT else "",
        )
        for position, key in enumerate(SectionKey.values)
    )
    _collect_timeline(postmortem)
    if target:
        clock = Clock.objects.filter(incident=incident, metric=Metric.POSTMORTEM).first() or Clock(
            incident=incident, metric=Metric.POSTMORTEM
        )
        clock.target_seconds = target
        clock.started_at = clock.running_since = at
        clock.elapsed_seconds = 0
        clock.stopped_at = clock.breached_at = None
        clock.thresholds_done = 0
        clock.state = ClockState.RUNNING
        clock.next_check_at = clocks.next_check_at(clock)
        clock.save()
    owner = postmortem.owner.get_username() if postmortem.owner else "nobody"
    due = f", due {_when(postmortem.due_at)}" if postmortem.due_at else ""
    _event(
        incident,
        EventKind.POSTMORTEM_STARTED,
        f"Post-mortem draft opened, owned by {owner}{due}",
        actor=actor,
        at=at,
        postmortem_id=postmortem.pk,
    )
    return postmortem


def start_postmortem(incident: Incident, *, actor: Actor, at: datetime | None = None) -> Postmortem:
    """Open a post-mortem by hand (resolving a severity that requires one opens it by itself)."""
    at = at or timezone.now()
    _require_staff(actor, "start a post-mortem")
    with transaction.atomic():
        incident = _lock(incident)
        if Postmortem.objects.filter(incident=incident).exists():
            raise ActionRefused("This incident already has a post-mortem.", code="exists")
        if not incident.is_resolved:
            raise ActionRefused("Resolve the incident before starting its post-mortem.", code="not_resolved")
        return _open_postmortem(incident, actor=actor, at=at)


def edit_postmortem(
    postmortem: Postmortem,
    *,
    actor: Actor,
    sections: Mapping[str, tuple[str, bool]] | None = None,
    owner: Any = None,
    due_at: datetime | None = None,
    at: datetime | None = None,
) -> Postmortem:
    """Change sections ({key: (markdown, is_public)}), the owner or the due date. A published
    post-mortem can be corrected: the public page follows."""
    at = at or timezone.now()
    _require_staff(actor, "edit a post-mortem")
    with transaction.atomic():
        postmortem = _lock_postmortem(postmortem)
        changed: list[str] = []
        for key, (body, is_public) in (sections or {}).items():
            if key not in SectionKey.values:
                raise ActionRefused(f"There is no section {key!r}.", field=key)
            section = postmortem.sections.select_for_update().get(key=key)
            body = body.strip()
            if (section.body, section.is_public) != (body, is_public):
                section.body, section.is_public = body, is_public
                section.save(update_fields=["body", "is_public"])
                changed.append(section.get_key_display())
        fields = ["updated_at"]
        if owner is not None and owner != postmortem.owner:
            if not owner.is_active or not owner.is_staff:
                raise ActionRefused("The owner must be an active staff member.", field="owner")
            postmortem.owner = owner
            fields.append("owner")
            changed.append(f"owner → {owner.get_username()}")
        if due_at is not None and due_at != postmortem.due_at:
            postmortem.due_at = due_at
            fields.append("due_at")
            changed.append(f"due {_when(due_at)}")
        if not changed:
            return postmortem
        postmortem.updated_at = at
        postmortem.save(update_fields=fields)
        if postmortem.is_published:
            request_publish()
        _event(
            postmortem.incident,
            EventKind.POSTMORTEM_EDITED,
            f"{_actor_name(actor)} edited the post-mortem: {', '.join(changed)}",
            actor=actor,
            at=at,
            postmortem_id=postmortem.pk,
        )
        return postmortem


def refresh_postmortem_timeline(postmortem: Postmortem, *, actor: Actor, at: datetime | None = None) -> int:
    """Bring in the incident's events and public updates added since the draft was opened."""
    _require_staff(actor, "edit a post-mortem")
    with transaction.atomic():
        postmortem = _lock_postmortem(postmortem)
        return _collect_timeline(postmortem)


def add_postmortem_entry(
    postmortem: Postmortem, *, actor: Actor, at: datetime, text: str, is_public: bool = False
) -> PostmortemEntry:
    """A line written by hand (a moment the incident's events do not show: "12:02 switch replaced")."""
    _require_staff(actor, "edit a post-mortem")
    text = text.strip()
    if not text:
        raise ActionRefused("Say what happened at that time.", field="text")
    with transaction.atomic():
        postmortem = _lock_postmortem(postmortem)
        entry = PostmortemEntry.objects.create(
            postmortem=postmortem, at=at, text=text[:500], is_public=is_public, is_starred=True
        )
        if postmortem.is_published and is_public:
            request_publish()
        return entry


def mark_postmortem_entry(
    entry: PostmortemEntry,
    *,
    actor: Actor,
    is_starred: bool | None = None,
    is_hidden: bool | None = None,
    is_public: bool | None = None,
) -> PostmortemEntry:
    """Star, hide or make public one line of the timeline."""
    _require_staff(actor, "edit a post-mortem")
    with transaction.atomic():
        postmortem = _lock_postmortem(entry.postmortem)
        entry = postmortem.entries.get(pk=entry.pk)
        for name, value in (("is_starred", is_starred), ("is_hidden", is_hidden), ("is_public", is_public)):
            if value is not None:
                setattr(entry, name, value)
        entry.save(update_fields=["is_starred", "is_hidden", "is_public"])
        if postmortem.is_published:
            request_publish()
        return entry


def _check_action_item(title: str, owner: Any, link: str) -> tuple[str, str]:
    title = title.strip()
    if not title:
        raise ActionRefused("An action item needs a title.", field="title")
    if owner is not None and (not owner.is_active or not owner.is_staff):
        raise ActionRefused("The owner must be an active staff member.", field="owner")
    link = link.strip()
    if link:
        try:
            URLValidator(schemes=["http", "https"])(link)
        except ValidationError:
            raise ActionRefused("The link must be an http or https URL.", field="link") from None
    return title, link


def add_action_item(
    postmortem: Postmortem,
    *,
    actor: Actor,
    title: str,
    kind: str = ActionKind.PREVENT,
    priority: str = ActionPriority.P2,
    owner: Any = None,
    due_date: date | None = None,
    link: str = "",
    at: datetime | None = None,
) -> ActionItem:
    at = at or timezone.now()
    _require_staff(actor, "add action items")
    title, link = _check_action_item(title, owner, link)
    if kind not in ActionKind.values:
        raise ActionRefused("Choose detect, mitigate, prevent or process.", field="kind")
    if priority not in ActionPriority.values:
        raise ActionRefused("Choose P1, P2 or P3.", field="priority")
    with transaction.atomic():
        postmortem = _lock_postmortem(postmortem)
        item = ActionItem.objects.create(
            postmortem=postmortem,
            title=title,
            kind=kind,
            priority=priority,
            owner=owner,
            due_date=due_date,
            link=link,
            created_at=at,
        )
        _event(
            postmortem.incident,
            EventKind.POSTMORTEM_EDITED,
            f"{_actor_name(actor)} added action item “{title}” ({ActionKind(kind).label.lower()}, "
            f"{priority.upper()}{', owner ' + owner.get_username() if owner else ''})",
            actor=actor,
            at=at,
            action_item_id=item.pk,
        )
        return item


def set_action_item_status(item: ActionItem, *, actor: Actor, status: str, at: datetime | None = None) -> ActionItem:
    at = at or timezone.now()
    _require_staff(actor, "update action items")
    if status not in ActionStatus.values:
        raise ActionRefused("Choose open, in progress, done or won't do.", field="status")
    with transaction.atomic():
        item = ActionItem.objects.select_for_update().select_related("postmortem__incident").get(pk=item.pk)
        if item.status == status:
            return item
        previous = item.get_status_display()
        item.status = status
        item.closed_at = None if item.is_open else at
        item.save(update_fields=["status", "closed_at"])
        _event(
            item.postmortem.incident,
            EventKind.POSTMORTEM_EDITED,
            f"{_actor_name(actor)} moved action item “{item.title}” from {previous} to {item.get_status_display()}",
            actor=actor,
            at=at,
            action_item_id=item.pk,
        )
        return item


def submit_postmortem(postmortem: Postmortem, *, actor: Actor, at: datetime | None = None) -> Postmortem:
    """Draft → in review: the summary and the root cause must be written."""
    at = at or timezone.now()
    _require_staff(actor, "send a post-mortem for review")
    with transaction.atomic():
        postmortem = _lock_postmortem(postmortem)
        if postmortem.state != PostmortemState.DRAFT:
            raise ActionRefused(
                f"Only a draft can be sent for review; this one is {postmortem.get_state_display().lower()}.",
                code="not_draft",
            )
        missing = [
            s.get_key_display().lower()
            for s in postmortem.sections.filter(key__in=[SectionKey.SUMMARY, SectionKey.ROOT_CAUSE])
            if not s.body.strip()
        ]
        if missing:
            raise ActionRefused(f"Write the {' and the '.join(missing)} before sending it for review.", code="missing")
        postmortem.state = PostmortemState.IN_REVIEW
        postmortem.submitted_at = at
        postmortem.updated_at = at
        postmortem.save(update_fields=["state", "submitted_at", "updated_at"])
        _event(
            postmortem.incident,
            EventKind.POSTMORTEM_REVIEW,
            f"{_actor_name(actor)} sent the post-mortem for review",
            actor=actor,
            at=at,
            postmortem_id=postmortem.pk,
        )
        return postmortem


def return_postmortem_to_draft(
    postmortem: Postmortem, *, actor: Actor, reason: str, at: datetime | None = None
) -> Postmortem:
    """In review → draft, with what the reviewer wants changed."""
    at = at or timezone.now()
    _require_staff(actor, "review a post-mortem")
    reason = reason.strip()
    if not reason:
        raise ActionRefused("Say what should change.", field="reason")
    with transaction.atomic():
        postmortem = _lock_postmortem(postmortem)
        if postmortem.state != PostmortemState.IN_REVIEW:
            raise ActionRefused("Only a post-mortem in review can go back to draft.", code="not_in_review")
        postmortem.state = PostmortemState.DRAFT
        postmortem.updated_at = at
        postmortem.save(update_fields=["state", "updated_at"])
        _event(
            postmortem.incident,
            EventKind.POSTMORTEM_EDITED,
            f"{_actor_name(actor)} sent the post-mortem back to draft: {reason}",
            actor=actor,
            at=at,
            postmortem_id=postmortem.pk,
            reason=reason,
        )
        return postmortem


def publish_postmortem(postmortem: Postmortem, *, actor: Actor, at: datetime | None = None) -> Postmortem:
    """In review → published: its public sections go on the incident's public page and into the v2
    API (status "postmortem"), and subscribers who chose post-mortems are emailed, once. For an
    incident that was never public it is completed for staff only: nothing is shown or sent."""
    at = at or timezone.now()
    _require_staff(actor, "publish a post-mortem")
    with transaction.atomic():
        postmortem = _lock_postmortem(postmortem)
        incident = _lock(postmortem.incident)
        if postmortem.state == PostmortemState.PUBLISHED:
            raise ActionRefused("This post-mortem is already published.", code="already_published")
        if postmortem.state != PostmortemState.IN_REVIEW:
            raise ActionRefused("Send the post-mortem for review before publishing it.", code="not_in_review")
        internal = incident.published_at is None
        if not internal and not postmortem.sections.filter(is_public=True).exclude(body="").exists():
            raise ActionRefused("Mark at least one written section public before publishing.", code="nothing_public")
        postmortem.state = PostmortemState.PUBLISHED
        postmortem.published_at = at
        postmortem.updated_at = at
        postmortem.save(update_fields=["state", "published_at", "updated_at"])
        _stop_clock(_clock(incident, Metric.POSTMORTEM), at)
        if internal:
            # Never public: nothing to show customers or send them. It is finished, for staff only.
            _event(
                incident,
                EventKind.POSTMORTEM_PUBLISHED,
                f"{_actor_name(actor)} completed the post-mortem (staff only: the incident was never public)",
                actor=actor,
                at=at,
                postmortem_id=postmortem.pk,
            )
            return postmortem
        request_publish()
        message = Message.objects.create(
            kind=MessageKind.POSTMORTEM,
            key=f"postmortem:{postmortem.pk}",
            incident=incident,
            postmortem=postmortem,
            impact=incident.impact,
            component_ids=sorted(c.pk for c in incident.components.all()),
            created_at=at,
        )
        _notify(message)
        _event(
            incident,
            EventKind.POSTMORTEM_PUBLISHED,
            f"{_actor_name(actor)} published the post-mortem",
            actor=actor,
            at=at,
            postmortem_id=postmortem.pk,
        )
        return postmortem
