"""Components: create them and set their status outside an incident."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from django.db import IntegrityError, transaction
from django.utils import timezone

from incidents.actions.errors import ActionRefused
from incidents.actions.impact import ComponentChange, apply_component_changes, refresh_impact
from incidents.actions.locking import lock_incident
from incidents.actions.timeline import Actor, acting_user, actor_name, record_event
from incidents.actions.validation import check_component_status
from incidents.models import (
    COMPONENT_STATUS_RANK,
    Component,
    ComponentStatus,
    ComponentStatusChange,
    EventKind,
    Incident,
)
from incidents.publishing import request_publish


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
    check_component_status(status)
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
                actor=acting_user(actor),
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
    check_component_status(status)
    with transaction.atomic():
        if incident is not None:
            incident = lock_incident(incident)
            if incident.is_resolved:
                raise ActionRefused("This incident is resolved; reopen it first.")
        at = at or timezone.now()  # after the incident's lock, so time order is commit order
        applied = apply_component_changes(incident, [ComponentChange(component, status)], actor=actor, at=at)
        if applied:
            request_publish()
        if incident is not None and applied:
            incident.components.add(component)
            refresh_impact(incident, [status])
            incident.updated_at = at
            incident.save(update_fields=["impact", "updated_at"])
            record_event(
                incident,
                EventKind.COMPONENT_CHANGED,
                f"{actor_name(actor)} set {component.display_name} to {ComponentStatus(status).label.lower()}",
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
