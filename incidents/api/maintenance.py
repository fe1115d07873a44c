"""The staff API's maintenance operations, under the same conventions as the incident ones (endpoints.py).

Windows load through incidents.access and change only through incidents.actions. Times must carry an
offset: a naive time is refused (422) rather than guessed in some zone. An ActionRefused becomes 409
(impossible in the window's current state, e.g. starting it twice) or 422 (names a field); see errors.py.
Writes answer with the window read back fresh: its status, its components' statuses and its updates.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Q
from django.http import HttpRequest
from ninja import Query, Router, Status

from incidents import access, actions
from incidents.actions import ActionRefused
from incidents.api.endpoints import unless_unchanged
from incidents.api.schemas import (
    READ_ERRORS,
    WRITE_ERRORS,
    MaintenanceCancelIn,
    MaintenanceIn,
    MaintenanceListOut,
    MaintenanceListQuery,
    MaintenanceMessageIn,
    MaintenanceOut,
    MaintenancePatchIn,
    MaintenanceUpdateIn,
    maintenance_out,
)
from incidents.models import Component, MaintenanceStatus

router = Router(tags=["maintenance"])

UNFINISHED = Q(completed_at__isnull=True, cancelled_at__isnull=True)


def _components(user: Any, ids: list[int]) -> list[Component]:
    """Unknown ids in a request body are bad input (422), not a missing resource (404)."""
    if len(set(ids)) != len(ids):
        raise ActionRefused("Each component may be listed once.", field="components", code="duplicate")
    found = access.components_for(user).in_bulk(ids)
    for component_id in ids:
        if component_id not in found:
            raise ActionRefused(f"No component with id {component_id}.", field="components", code="unknown")
    return [found[component_id] for component_id in ids]


def _read(user: Any, maintenance_id: int) -> dict[str, Any]:
    return maintenance_out(access.get_maintenance_for_user(user, maintenance_id))


@router.get(
    "/maintenances",
    response={200: MaintenanceListOut, **READ_ERRORS},
    summary="List maintenance windows",
    description="Paginated with `limit` (1–100, default 50) and `offset`; `count` is the total.",
)
def list_maintenances(request: HttpRequest, filters: Query[MaintenanceListQuery]) -> dict[str, Any]:
    windows = access.maintenances_in_full_for(request.auth)  # type: ignore[attr-defined]
    if filters.state == "upcoming":
        windows = windows.filter(UNFINISHED, status=MaintenanceStatus.SCHEDULED).order_by("scheduled_for", "id")
    elif filters.state == "active":
        windows = windows.filter(UNFINISHED).exclude(status=MaintenanceStatus.SCHEDULED)
        windows = windows.order_by("scheduled_for", "id")
    elif filters.state == "past":
        windows = windows.exclude(UNFINISHED).order_by("-scheduled_for", "-id")
    else:
        windows = windows.order_by("-scheduled_for", "-id")
    page = windows[filters.offset : filters.offset + filters.limit]
    return {
        "count": windows.count(),
        "limit": filters.limit,
        "offset": filters.offset,
        "items": [maintenance_out(maintenance) for maintenance in page],
    }


@router.post(
    "/maintenances",
    response={201: MaintenanceOut, **WRITE_ERRORS},
    summary="Schedule a maintenance window",
    description="201 with the window. It is announced at once; with auto_start and auto_complete (the "
    "defaults) it starts and completes on time by itself.",
)
def schedule_maintenance(request: HttpRequest, payload: MaintenanceIn) -> Status[dict[str, Any]]:
    user = request.auth  # type: ignore[attr-defined]
    maintenance = actions.schedule_maintenance(
        actor=user,
        title=payload.title,
        scheduled_for=payload.scheduled_for,
        scheduled_until=payload.scheduled_until,
        components=_components(user, payload.components),
        message=payload.message,
        auto_start=payload.auto_start,
        auto_complete=payload.auto_complete,
    )
    return Status(201, _read(user, maintenance.pk))


@router.get("/maintenances/{int:maintenance_id}", response={200: MaintenanceOut, **READ_ERRORS})
def get_maintenance(request: HttpRequest, maintenance_id: int) -> dict[str, Any]:
    return _read(request.auth, maintenance_id)  # type: ignore[attr-defined]


@router.patch(
    "/maintenances/{int:maintenance_id}",
    response={200: MaintenanceOut, **WRITE_ERRORS},
    summary="Reschedule a maintenance window",
    description="Send scheduled_for and/or scheduled_until; a time left out keeps its value. Once the window "
    "has started only its end can move (422 on scheduled_for); a finished window cannot move (409). The same "
    "times as now are no change: 200 with the window as it is, and no update is posted or sent.",
)
def reschedule_maintenance(request: HttpRequest, maintenance_id: int, payload: MaintenancePatchIn) -> dict[str, Any]:
    user = request.auth  # type: ignore[attr-defined]
    maintenance = access.get_maintenance_for_user(user, maintenance_id)
    given = payload.model_fields_set & {"scheduled_for", "scheduled_until"}
    if not given:
        raise ActionRefused("Nothing to change: send scheduled_for and/or scheduled_until.", field="body", code="empty")
    for name in sorted(given):
        if getattr(payload, name) is None:
            raise ActionRefused(f"{name} cannot be empty.", field=name, code="invalid")
    unless_unchanged(
        lambda: actions.reschedule_maintenance(
            maintenance,
            actor=user,
            scheduled_for=payload.scheduled_for or maintenance.scheduled_for,
            scheduled_until=payload.scheduled_until or maintenance.scheduled_until,
            message=payload.message,
        )
    )
    return _read(user, maintenance_id)


@router.post(
    "/maintenances/{int:maintenance_id}/updates",
    response={201: MaintenanceOut, **WRITE_ERRORS},
    summary="Post an update on a maintenance window",
    description="201 with the window; the new update is first in `updates`.",
)
def post_maintenance_update(
    request: HttpRequest, maintenance_id: int, payload: MaintenanceUpdateIn
) -> Status[dict[str, Any]]:
    user = request.auth  # type: ignore[attr-defined]
    maintenance = access.get_maintenance_for_user(user, maintenance_id)
    actions.post_maintenance_update(maintenance, actor=user, body=payload.body, status=payload.status)
    return Status(201, _read(user, maintenance_id))


@router.post(
    "/maintenances/{int:maintenance_id}/start",
    response={200: MaintenanceOut, **WRITE_ERRORS},
    summary="Start a maintenance window now",
    description="Its components go under maintenance; the status each had is kept to restore on completion.",
)
def start_maintenance(
    request: HttpRequest, maintenance_id: int, payload: MaintenanceMessageIn | None = None
) -> dict[str, Any]:
    user = request.auth  # type: ignore[attr-defined]
    maintenance = access.get_maintenance_for_user(user, maintenance_id)
    actions.start_maintenance(maintenance, actor=user, message=payload.message if payload else "")
    return _read(user, maintenance_id)


@router.post(
    "/maintenances/{int:maintenance_id}/complete",
    response={200: MaintenanceOut, **WRITE_ERRORS},
    summary="Complete a maintenance window now",
    description="Components still under maintenance get back the status they had before the start.",
)
def complete_maintenance(
    request: HttpRequest, maintenance_id: int, payload: MaintenanceMessageIn | None = None
) -> dict[str, Any]:
    user = request.auth  # type: ignore[attr-defined]
    maintenance = access.get_maintenance_for_user(user, maintenance_id)
    actions.complete_maintenance(maintenance, actor=user, message=payload.message if payload else "")
    return _read(user, maintenance_id)


@router.post(
    "/maintenances/{int:maintenance_id}/cancel",
    response={200: MaintenanceOut, **WRITE_ERRORS},
    summary="Cancel a maintenance window that has not started",
)
def cancel_maintenance(
    request: HttpRequest, maintenance_id: int, payload: MaintenanceCancelIn | None = None
) -> dict[str, Any]:
    user = request.auth  # type: ignore[attr-defined]
    maintenance = access.get_maintenance_for_user(user, maintenance_id)
    actions.cancel_maintenance(maintenance, actor=user, reason=payload.reason if payload else "")
    return _read(user, maintenance_id)
