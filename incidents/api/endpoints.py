"""The staff API's operations. Objects load through incidents.access; every write is an action.

An ActionRefused becomes 409 (impossible in the current state) or 422 (names a field); see errors.py.
Writes answer with the object read back fresh, so the client sees every consequence (clocks,
milestones, impact) of its change.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from django.db import transaction
from django.http import Http404, HttpRequest
from django.utils import timezone
from ninja import Query, Router, Status
from ninja.params import HeaderEx, P

from incidents import access, actions, analytics
from incidents.actions import ActionRefused
from incidents.api.schemas import (
    READ_ERRORS,
    WRITE_ERRORS,
    ComponentIn,
    ComponentOut,
    ComponentPatchIn,
    ComponentStatusIn,
    DeclareIn,
    IncidentListOut,
    IncidentListQuery,
    IncidentOut,
    IncidentPatchIn,
    MetricsOut,
    MetricsQuery,
    PagingOut,
    ReopenIn,
    ResolveIn,
    SeverityOut,
    StopPagingIn,
    UpdateIn,
    component_out,
    incident_out,
    paging_out,
    severity_out,
)
from incidents.models import Component, IncidentStatus, Severity

router = Router()

_SCOPE_FIELDS = ("customer_impact_percent", "regions", "workaround", "impact_override")


# --- loading what a request body refers to (unknown ids there are bad input: 422, not 404) ------


def _severity(user: Any, key: str) -> Severity:
    severity = access.severities_for(user).filter(key__iexact=key.strip()).first()
    if severity is None:
        keys = ", ".join(access.severities_for(user).values_list("key", flat=True))
        raise ActionRefused(f"Unknown severity {key!r}; use one of {keys}.", field="severity", code="unknown")
    return severity


def _component_statuses(user: Any, items: list[ComponentStatusIn]) -> dict[Component, str]:
    ids = [item.id for item in items]
    if len(set(ids)) != len(ids):
        raise ActionRefused("Each component may be listed once.", field="components", code="duplicate")
    found = access.components_for(user).in_bulk(ids)
    for component_id in ids:
        if component_id not in found:
            raise ActionRefused(f"No component with id {component_id}.", field="components", code="unknown")
    return {found[item.id]: item.status for item in items}


def _referenced(load: Any, user: Any, object_id: int, field: str) -> Any:
    try:
        return load(user, object_id)
    except Http404 as exc:
        raise ActionRefused(f"{str(exc).rstrip('.')} with id {object_id}.", field=field, code="unknown") from None


def _renamed(refused: ActionRefused, fields: dict[str, str]) -> ActionRefused:
    """The domain names its own arguments; the client should see the field it sent."""
    if refused.field not in fields:
        return refused
    return ActionRefused(refused.message, field=fields[refused.field], code=refused.code)


_VISIBLE_ASCII = re.compile(r"[\x21-\x7e]+")


def _idempotency_key(value: str) -> str:
    """The key as sent, without the spaces around it; a 422 for one no client means to send."""
    key = value.strip(" ")
    if not key:
        raise ActionRefused(
            "Idempotency-Key is empty: send a key, or leave the header out.", field="Idempotency-Key", code="invalid"
        )
    if "," in key:
        # Two Idempotency-Key headers arrive joined by a comma: neither key would match a retry.
        raise ActionRefused(
            "Send one Idempotency-Key, without commas (two headers arrive joined into one).",
            field="Idempotency-Key",
            code="invalid",
        )
    if not _VISIBLE_ASCII.fullmatch(key):
        # A control character (NUL, a tab, \x01) or a non-ASCII one is a client's bug, and some would not
        # survive a proxy or the database unchanged: a retry might then not find the first request.
        raise ActionRefused(
            "Idempotency-Key may hold only visible ASCII characters (no spaces, tabs or control characters).",
            field="Idempotency-Key",
            code="invalid",
        )
    return key


def unless_unchanged(change: Callable[[], object]) -> None:
    """Make a change a PATCH asks for, where the object may already be as asked.

    The API's rule for every PATCH: one that changes nothing answers 200 with the object as it is, and
    records and sends nothing. PATCH is a statement of the state wanted, so a client that retries after a
    lost answer, or sends the whole form again, learns it has what it asked for instead of a 409 it must
    tell apart from a real conflict. The actions refuse "no change" (code "unchanged") for the staff UI,
    which says "Nothing changed."; here it is simply done."""
    try:
        change()
    except ActionRefused as refused:
        if refused.code != "unchanged":
            raise


def _incident_read(user: Any, incident_id: int) -> dict[str, Any]:
    return incident_out(access.get_full_incident_for_user(user, incident_id), now=timezone.now())


# --- incidents ----------------------------------------------------------------------------------


@router.post(
    "/incidents",
    response={200: IncidentOut, 201: IncidentOut, **WRITE_ERRORS},
    tags=["incidents"],
    summary="Declare an incident",
    description=(
        "201 with the new incident. With an `Idempotency-Key` header, a retry with the same key by the "
        "same user answers 200 with the incident the first request declared, and declares nothing."
    ),
)
def declare_incident(
    request: HttpRequest,
    payload: DeclareIn,
    idempotency_key: HeaderEx[
        str | None,
        P(
            alias="Idempotency-Key",
            max_length=200,
            description="Visible ASCII characters (no spaces, tabs or control characters), at most 200.",
        ),
    ] = None,
) -> Status[dict[str, Any]]:
    user = request.auth  # type: ignore[attr-defined]
    key = None if idempotency_key is None else _idempotency_key(idempotency_key)
    severity = _severity(user, payload.severity)
    components = _component_statuses(user, payload.components)
    incident = actions.declare_incident(
        actor=user,
        title=payload.title,
        severity=severity,
        message=payload.message,
        message_is_public=payload.is_public,
        public_status=payload.public_status,
        components=components,
        customer_impact_percent=payload.customer_impact_percent,
        regions=payload.regions,
        workaround=payload.workaround,
        impact_override=payload.impact_override or "",
        idempotency_key=key,
    )
    return Status(200 if incident.replayed else 201, _incident_read(user, incident.pk))


@router.get(
    "/incidents",
    response={200: IncidentListOut, **READ_ERRORS},
    tags=["incidents"],
    summary="List incidents, newest first",
    description="Paginated with `limit` (1–100, default 50) and `offset`; `count` is the total.",
)
def list_incidents(request: HttpRequest, filters: Query[IncidentListQuery]) -> dict[str, Any]:
    incidents = access.incidents_in_full_for(request.auth)  # type: ignore[attr-defined]
    if filters.state == "open":
        incidents = incidents.exclude(status=IncidentStatus.RESOLVED)
    elif filters.state == "resolved":
        incidents = incidents.filter(status=IncidentStatus.RESOLVED)
    incidents = incidents.order_by("-declared_at", "-id")
    now = timezone.now()
    page = incidents[filters.offset : filters.offset + filters.limit]
    return {
        "count": incidents.count(),
        "limit": filters.limit,
        "offset": filters.offset,
        "items": [incident_out(incident, now=now) for incident in page],
    }


@router.get("/incidents/{int:incident_id}", response={200: IncidentOut, **READ_ERRORS}, tags=["incidents"])
def get_incident(request: HttpRequest, incident_id: int) -> dict[str, Any]:
    return _incident_read(request.auth, incident_id)  # type: ignore[attr-defined]


@router.patch(
    "/incidents/{int:incident_id}",
    response={200: IncidentOut, **WRITE_ERRORS},
    tags=["incidents"],
    summary="Change severity and/or impact scope",
    description="Only the fields present change. Both kinds of change in one request apply together or not at all. "
    "Fields that already hold the value sent are no change: nothing is recorded for them (and a PATCH that changes "
    "nothing answers 200 with the incident as it is).",
)
def patch_incident(request: HttpRequest, incident_id: int, payload: IncidentPatchIn) -> dict[str, Any]:
    user = request.auth  # type: ignore[attr-defined]
    incident = access.get_incident_for_user(user, incident_id)
    given = payload.model_fields_set
    if not given:
        raise ActionRefused(
            "Nothing to change: send severity, commander and/or " + ", ".join(_SCOPE_FIELDS) + ".",
            field="body",
            code="empty",
        )
    scope: dict[str, Any] = {name: getattr(payload, name) for name in _SCOPE_FIELDS if name in given}
    if "impact_override" in scope:
        scope["impact_override"] = scope["impact_override"] or ""
    with transaction.atomic():
        if "severity" in given:
            if payload.severity is None:
                raise ActionRefused("Severity cannot be empty.", field="severity", code="invalid")
            severity = _severity(user, payload.severity)
            unless_unchanged(lambda: actions.change_severity(incident, actor=user, severity=severity))
        if "commander" in given:
            if not (payload.commander or "").strip():
                raise ActionRefused(
                    "Commander cannot be empty: give the username of an active staff user.",
                    field="commander",
                    code="invalid",
                )
            commander = access.staff_users_for(user).filter(username=payload.commander).first()
            if commander is None:
                raise ActionRefused(
                    f"No active staff user is called {payload.commander!r}.", field="commander", code="unknown"
                )
            unless_unchanged(lambda: actions.assign_commander(incident, actor=user, commander=commander))
        if scope:
            unless_unchanged(lambda: actions.update_impact_scope(incident, actor=user, **scope))
    return _incident_read(user, incident_id)


@router.post(
    "/incidents/{int:incident_id}/acknowledge", response={200: IncidentOut, **WRITE_ERRORS}, tags=["incidents"]
)
def acknowledge_incident(request: HttpRequest, incident_id: int) -> dict[str, Any]:
    user = request.auth  # type: ignore[attr-defined]
    actions.acknowledge_incident(access.get_incident_for_user(user, incident_id), actor=user)
    return _incident_read(user, incident_id)


@router.get(
    "/incidents/{int:incident_id}/paging",
    response={200: PagingOut, **READ_ERRORS},
    tags=["incidents"],
    summary="Who is paged, which step, when next",
    description="The incident's escalation steps (copied from its severity at declaration), each with its "
    "pages and their state, and the nudges sent to the commander.",
)
def paging(request: HttpRequest, incident_id: int) -> dict[str, Any]:
    user = request.auth  # type: ignore[attr-defined]
    return paging_out(access.paging_for(user, access.get_incident_for_user(user, incident_id)))


@router.post(
    "/incidents/{int:incident_id}/stop-paging",
    response={200: PagingOut, **WRITE_ERRORS},
    tags=["incidents"],
    summary="Stop paging",
    description="Stops the steps not yet fired (the acknowledge clock keeps running); 409 when none are left.",
)
def stop_paging(request: HttpRequest, incident_id: int, payload: StopPagingIn) -> dict[str, Any]:
    user = request.auth  # type: ignore[attr-defined]
    incident = access.get_incident_for_user(user, incident_id)
    actions.stop_paging(incident, actor=user, reason=payload.reason)
    return paging_out(access.paging_for(user, incident))


@router.post(
    "/incidents/{int:incident_id}/updates",
    response={201: IncidentOut, **WRITE_ERRORS},
    tags=["incidents"],
    summary="Post an update",
    description="201 with the incident; the new update is first in `updates`.",
)
def post_update(request: HttpRequest, incident_id: int, payload: UpdateIn) -> Status[dict[str, Any]]:
    user = request.auth  # type: ignore[attr-defined]
    incident = access.get_incident_for_user(user, incident_id)
    actions.post_update(
        incident,
        actor=user,
        body=payload.body,
        public_status=payload.status,
        is_public=payload.is_public,
        components=_component_statuses(user, payload.components),
    )
    return Status(201, _incident_read(user, incident_id))


@router.post("/incidents/{int:incident_id}/resolve", response={200: IncidentOut, **WRITE_ERRORS}, tags=["incidents"])
def resolve_incident(request: HttpRequest, incident_id: int, payload: ResolveIn | None = None) -> dict[str, Any]:
    user = request.auth  # type: ignore[attr-defined]
    incident = access.get_incident_for_user(user, incident_id)
    if payload is None:
        actions.resolve_incident(incident, actor=user)
    else:
        actions.resolve_incident(incident, actor=user, message=payload.message, is_public=payload.is_public)
    return _incident_read(user, incident_id)


@router.post("/incidents/{int:incident_id}/reopen", response={200: IncidentOut, **WRITE_ERRORS}, tags=["incidents"])
def reopen_incident(request: HttpRequest, incident_id: int, payload: ReopenIn) -> dict[str, Any]:
    user = request.auth  # type: ignore[attr-defined]
    actions.reopen_incident(
        access.get_incident_for_user(user, incident_id),
        actor=user,
        reason=payload.reason,
        message=payload.message,
        is_public=payload.is_public,
    )
    return _incident_read(user, incident_id)


# --- components and severities ------------------------------------------------------------------


@router.get("/components", response={200: list[ComponentOut], **READ_ERRORS}, tags=["components"])
def list_components(request: HttpRequest) -> list[dict[str, Any]]:
    """Every component and group, in display order (not paginated: a status page has few)."""
    user = request.auth  # type: ignore[attr-defined]
    statuses = access.component_statuses_for(user)
    return [component_out(component, statuses) for component in access.components_for(user)]


@router.post("/components", response={201: ComponentOut, **WRITE_ERRORS}, tags=["components"])
def create_component(request: HttpRequest, payload: ComponentIn) -> Status[dict[str, Any]]:
    user = request.auth  # type: ignore[attr-defined]
    if payload.is_group and "status" in payload.model_fields_set:
        raise ActionRefused(
            "A group has no status of its own: it shows its worst component's. Leave status out.",
            field="status",
            code="invalid",
        )
    group = None
    if payload.group_id is not None:
        group = _referenced(access.get_component_for_user, user, payload.group_id, "group_id")
    try:
        component = actions.create_component(
            actor=user,
            name=payload.name,
            group=group,
            is_group=payload.is_group,
            description=payload.description,
            position=payload.position,
            status=payload.status,
            showcase=payload.showcase,
            only_show_if_degraded=payload.only_show_if_degraded,
        )
    except ActionRefused as refused:
        raise _renamed(refused, {"group": "group_id"}) from None
    statuses = access.component_statuses_for(user)
    return Status(201, component_out(access.get_component_for_user(user, component.pk), statuses))


@router.patch(
    "/components/{int:component_id}",
    response={200: ComponentOut, **WRITE_ERRORS},
    tags=["components"],
    summary="Set a component's status",
    description="With `incident_id`, the change is recorded on that incident's timeline and raises its impact.",
)
def patch_component(request: HttpRequest, component_id: int, payload: ComponentPatchIn) -> dict[str, Any]:
    user = request.auth  # type: ignore[attr-defined]
    component = access.get_component_for_user(user, component_id)
    incident = None
    if payload.incident_id is not None:
        incident = _referenced(access.get_incident_for_user, user, payload.incident_id, "incident_id")
    try:
        actions.set_component_status(component, actor=user, status=payload.status, incident=incident)
    except ActionRefused as refused:
        # "components" is the domain's name for the list of changes; here it is this one status.
        raise _renamed(refused, {"components": "status"}) from None
    return component_out(access.get_component_for_user(user, component_id))


@router.get("/severities", response={200: list[SeverityOut], **READ_ERRORS}, tags=["severities"])
def list_severities(request: HttpRequest) -> list[dict[str, Any]]:
    """The severity keys to declare with, and their response targets in seconds."""
    return [severity_out(severity) for severity in access.severities_for(request.auth)]  # type: ignore[attr-defined]


# --- metrics ------------------------------------------------------------------------------------


@router.get(
    "/metrics",
    response={200: MetricsOut, **READ_ERRORS},
    tags=["metrics"],
    summary="Response metrics: time to acknowledge, to first public update, to resolve",
    description="Incidents declared in [since, until), of one severity or all: count, and per metric the "
    "median and p90 (PostgreSQL's percentile_cont), mean, attainment against each incident's target, how many "
    "were measured and how many breached (incidents still waiting past their target included).",
)
def metrics(request: HttpRequest, filters: Query[MetricsQuery]) -> dict[str, Any]:
    user = request.auth  # type: ignore[attr-defined]
    access.require_staff(user)
    severity = _severity(user, filters.severity) if filters.severity else None
    if filters.since and filters.until and filters.until <= filters.since:
        raise ActionRefused("until must be after since.", field="until", code="invalid")
    return analytics.compute(filters.since, filters.until, severity).as_dict()
