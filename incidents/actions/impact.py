"""Component status changes and the impact they give an incident: each real change recorded in the
component's history (and sent to webhook subscribers), outages held as maintenance while a window covers
them, and the incident's impact derived from its components' statuses."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from incidents.actions.errors import ActionRefused
from incidents.actions.notify import notify_after_commit
from incidents.actions.timeline import Actor, acting_user
from incidents.actions.validation import check_component_status
from incidents.models import (
    IMPACT_FOR_COMPONENT_STATUS,
    IMPACT_RANK,
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
)


@dataclass(frozen=True)
class ComponentChange:
    component: Component
    status: str


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


def apply_component_changes(
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
        check_component_status(change.status, field="components")
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
            actor=acting_user(actor),
        )
        if webhooks is None:
            webhooks = Subscriber.objects.filter(kind=SubscriberKind.WEBHOOK, unsubscribed_at__isnull=True).exists()
        if webhooks:
            notify_after_commit(
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


def derived_impact(statuses: Iterable[str]) -> str:
    worst = Impact.NONE
    for status in statuses:
        impact = IMPACT_FOR_COMPONENT_STATUS[ComponentStatus(status)]
        if IMPACT_RANK[impact] > IMPACT_RANK[Impact(worst)]:
            worst = impact
    return worst


def refresh_impact(incident: Incident, statuses: Iterable[str]) -> None:
    """Impact is the worst the incident has reached (peak), unless staff override it."""
    if incident.impact_override:
        incident.impact = incident.impact_override
        return
    derived = derived_impact(statuses)
    if IMPACT_RANK[Impact(derived)] > IMPACT_RANK[Impact(incident.impact)]:
        incident.impact = derived
