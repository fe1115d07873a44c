"""What every action shares: the refusal, the actor, timeline events, row locks, component changes,
and queueing a message for subscribers."""

from __future__ import annotations

import logging
import zoneinfo
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import transaction

from incidents.models import (
    IMPACT_FOR_COMPONENT_STATUS,
    IMPACT_RANK,
    MAX_REGION_LENGTH,
    MAX_REGIONS,
    Component,
    ComponentStatus,
    ComponentStatusChange,
    Impact,
    Incident,
    Maintenance,
    MaintenanceStatus,
    Message,
    MessageKind,
    Subscriber,
    SubscriberKind,
    TimelineEvent,
)

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
    return Incident.objects.locked(incident.pk)


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
    """Regions without blanks or repeats (ignoring case: "US" and "us" are one region, spelled as first
    given); more than MAX_REGIONS, or one longer than MAX_REGION_LENGTH,
    is refused (naming it) rather than cut, so what was typed is never silently lost."""
    if regions is None:
        return []
    if isinstance(regions, str):
        regions = regions.split(",")
    cleaned: list[str] = []
    for region in regions:
        region = region.strip()
        if len(region) > MAX_REGION_LENGTH:
            raise ActionRefused(
                f"A region may be at most {MAX_REGION_LENGTH} characters; “{region[:30]}…” has {len(region)}.",
                field="regions",
                code="too_long",
            )
        if region and region.casefold() not in {seen.casefold() for seen in cleaned}:
            cleaned.append(region)
    if len(cleaned) > MAX_REGIONS:
        raise ActionRefused(
            f"At most {MAX_REGIONS} regions; {len(cleaned)} were given.", field="regions", code="too_many"
        )
    return cleaned


def _check_status(status: str, field: str = "status") -> str:
    if status not in ComponentStatus.values:
        allowed = ", ".join(ComponentStatus.values)
        raise ActionRefused(f"Unknown component status {status!r}; use one of {allowed}.", field=field)
    return status


# Statuses that say a component is (partly) down. Set by an open incident, each wins over maintenance:
# a window never hides an outage, on the page or in the uptime figures (the window shows beside it).
OUTAGE_STATUSES = frozenset(
    {ComponentStatus.DEGRADED_PERFORMANCE, ComponentStatus.PARTIAL_OUTAGE, ComponentStatus.MAJOR_OUTAGE}
)
RUNNING_MAINTENANCE = (MaintenanceStatus.IN_PROGRESS, MaintenanceStatus.VERIFYING)


def components_in_running_maintenance(component_ids: Iterable[int], *, besides: Maintenance | None = None) -> set[int]:
    """Which of these components a running (started, not completed or cancelled) window covers."""
    ids = list(component_ids)
    if not ids:
        return set()
    running = Maintenance.objects.filter(status__in=RUNNING_MAINTENANCE, cancelled_at__isnull=True)
    if besides is not None:
        running = running.exclude(pk=besides.pk)
    return set(running.filter(components__in=ids).values_list("components", flat=True)) & set(ids)


def components_in_open_incidents(component_ids: Iterable[int]) -> set[int]:
    """Which of these components an unresolved incident lists."""
    ids = list(component_ids)
    if not ids:
        return set()
    return set(Incident.objects.open().filter(components__in=ids).values_list("components", flat=True)) & set(ids)


def _apply_component_changes(
    incident: Incident | None,
    changes: Iterable[ComponentChange],
    *,
    actor: Actor,
    at: datetime,
    completing: Maintenance | None = None,
) -> list[dict[str, Any]]:
    """Set component statuses, recording each real change in the component's history (and telling
    webhook subscribers, who get component updates as Statuspage sends them).

    A component whose outage ends while a running window covers it (an incident resolved during the
    window) is under maintenance, not operational; `completing` is the window whose completion this is."""
    changes = list(changes)
    held = components_in_running_maintenance(
        (c.component.pk for c in changes if c.status == ComponentStatus.OPERATIONAL), besides=completing
    )
    applied: list[dict[str, Any]] = []
    webhooks = None
    for change in changes:
        _check_status(change.status, field="components")
        component = Component.objects.select_for_update().get(pk=change.component.pk)
        if component.is_group:
            raise ActionRefused(
                f"{component.name} is a group; set the status of its components instead.", field="components"
            )
        status = change.status
        if component.pk in held and component.status in OUTAGE_STATUSES:
            status = ComponentStatus.UNDER_MAINTENANCE
        if component.status == status:
            continue
        recorded = ComponentStatusChange.objects.create(
            component=component,
            old_status=component.status,
            new_status=status,
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
                "new_status": status,
            }
        )
        component.status = status
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


def _when(moment: datetime) -> str:
    zone = zoneinfo.ZoneInfo(settings.DISPLAY_TIME_ZONE)
    local = moment.astimezone(zone)
    return f"{local:%d %b %Y %H:%M} {local.tzname() or settings.DISPLAY_TIME_ZONE}"


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

    def freeze() -> None:
        from incidents.webhooks import freeze_body

        freeze_body(message)

    transaction.on_commit(freeze, robust=True)  # first: the state this change committed
    transaction.on_commit(enqueue, robust=True)
