"""Request and response shapes of the staff API, and the functions that fill the response shapes.

Responses are built from objects loaded with incidents.access.incidents_in_full_for, whose prefetches
make the serialisers below query-free.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from ninja import Field, Schema
from pydantic import AliasChoices, BeforeValidator, model_validator
from pydantic_core import PydanticCustomError

from incidents.api.fields import (
    BodyIn,
    Choice,
    ComponentDescription,
    Id,
    Moment,
    NonBlank,
    NonBlankMarkdown,
    NonBlankReason,
    OptionalMarkdown,
    OptionalReason,
    Percent,
    QueryIn,
    QueryInt,
    Regions,
    Workaround,
)
from incidents.models import (
    ClockState,
    Component,
    ComponentStatus,
    Impact,
    Incident,
    IncidentStatus,
    IncidentUpdate,
    Maintenance,
    MaintenanceStatus,
    MaintenanceUpdate,
    MaintenanceUpdateStatus,
    Metric,
    PublicStatus,
    Severity,
)

# --- errors -------------------------------------------------------------------------------------


class FieldErrorOut(Schema):
    field: str = Field(description='Dotted path of the bad input, e.g. "components.0.status".')
    msg: str
    type: str


class ErrorOut(Schema):
    detail: str = Field(description="A message fit to show a person.")
    code: str = Field(description='Machine-readable, e.g. "not_found", "invalid", "already_acknowledged".')
    field: str | None = Field(None, description="The refused field, for a 422 from the domain.")
    errors: list[FieldErrorOut] | None = Field(None, description="Every problem found, for a 422.")


_AUTH_ERRORS: dict[int, type[Schema]] = {401: ErrorOut, 403: ErrorOut}
READ_ERRORS: dict[int, type[Schema]] = {**_AUTH_ERRORS, 404: ErrorOut, 422: ErrorOut}
WRITE_ERRORS: dict[int, type[Schema]] = {**READ_ERRORS, 409: ErrorOut}

# --- input --------------------------------------------------------------------------------------


def _blank_is_none(value: Any) -> Any:
    return None if value == "" else value


# Null or "" both mean "no override": the model stores "", clients usually send null.
ImpactOverride = Annotated[Impact | None, Choice, BeforeValidator(_blank_is_none)]


def _optional_id(description: str) -> Any:
    return Field(None, description=description)


def _percent() -> Any:
    return Field(
        None,
        description="Share of customers affected, 0–100, with at most 2 decimal places (as the staff UI).",
    )


class ComponentStatusIn(BodyIn):
    id: Id
    status: Annotated[ComponentStatus, Choice]


_VISIBILITY = "Public (shown on the status page, sent to subscribers) or internal (staff only)."
_REGIONS = "Regions or segments affected: at most 20, each 1–100 characters."


class VisibilityIn(BodyIn):
    """Visibility is `is_public` wherever a message is posted."""

    is_public: bool = Field(True, description=_VISIBILITY)


class DeclareIn(VisibilityIn):
    # Declarations once called it message_is_public: that older name is still read (not together with
    # is_public), but the schema shows one name.
    is_public: bool = Field(
        True, validation_alias=AliasChoices("is_public", "message_is_public"), description=_VISIBILITY
    )
    title: NonBlank = Field(min_length=1, max_length=200)
    severity: NonBlank = Field(max_length=16, description='A severity key, e.g. "sev1" (see GET /severities).')
    message: OptionalMarkdown = Field(
        "", description="The first update (Markdown); none if empty. is_public says who sees it."
    )
    public_status: Annotated[PublicStatus, Choice] = PublicStatus.INVESTIGATING
    components: list[ComponentStatusIn] = Field(default_factory=list)
    customer_impact_percent: Percent | None = _percent()
    regions: Regions = Field(default_factory=list, description=_REGIONS)
    workaround: Workaround = ""
    impact_override: ImpactOverride = Field(None, description="Null or empty: impact derives from components.")

    @model_validator(mode="before")
    @classmethod
    def one_name_at_a_time(cls, data: Any) -> Any:
        if isinstance(data, dict) and "message_is_public" in data and "is_public" in data:
            raise PydanticCustomError("duplicate_field", "Send is_public only (message_is_public is its older name).")
        return data


class UpdateIn(VisibilityIn):
    body: NonBlankMarkdown = Field(description="Markdown.")
    status: Annotated[PublicStatus | None, Choice] = Field(None, description="The public status; unchanged if omitted.")
    components: list[ComponentStatusIn] = Field(default_factory=list)


class ResolveIn(VisibilityIn):
    message: OptionalMarkdown = Field("", description="A closing update (Markdown); none if empty.")


class ReopenIn(VisibilityIn):
    reason: NonBlankReason = Field(description="Why the incident is reopened (required, recorded on the timeline).")
    message: OptionalMarkdown = Field("", description="An update to post at once (otherwise the next one falls due).")


class IncidentPatchIn(BodyIn):
    """Only the fields present in the request change."""

    severity: str | None = Field(None, max_length=16, description="A severity key such as sev1 (any case).")
    commander: str | None = Field(
        None, max_length=150, description="Username of the active staff user to command the incident."
    )
    customer_impact_percent: Percent | None = _percent()
    regions: Regions | None = Field(None, description=_REGIONS)
    workaround: Workaround | None = None
    impact_override: ImpactOverride = Field(None, description="Null or empty clears the override.")


class ComponentIn(BodyIn):
    name: NonBlank = Field(min_length=1, max_length=200)
    group_id: Id | None = _optional_id("The group to put the component in.")
    is_group: bool = False
    description: ComponentDescription = Field("", description="Shown under the name on the status page.")
    position: int | None = Field(None, ge=0, le=2_147_483_647, description="Default: after the last one.")
    status: Annotated[ComponentStatus, Choice] = ComponentStatus.OPERATIONAL
    showcase: bool = True
    only_show_if_degraded: bool = False


class ComponentPatchIn(BodyIn):
    status: Annotated[ComponentStatus, Choice]
    incident_id: Id | None = _optional_id("Record the change as part of this (open) incident.")


class IncidentListQuery(QueryIn):
    state: Literal["open", "resolved"] | None = Field(None, description="Open (unresolved) or resolved only.")
    limit: QueryInt = Field(50, ge=1, le=100)
    offset: QueryInt = Field(0, ge=0, le=1_000_000_000)


class MetricsQuery(QueryIn):
    since: Moment | None = Field(None, description="Incidents declared at or after this (ISO 8601 with an offset).")
    until: Moment | None = Field(None, description="Incidents declared before this; must be after since.")
    severity: str | None = Field(
        None, min_length=1, max_length=16, description="A severity key (sev1…); all severities when left out."
    )


# --- output -------------------------------------------------------------------------------------


class ClockOut(Schema):
    metric: Metric
    target_seconds: int
    started_at: datetime
    due_at: datetime | None
    stopped_at: datetime | None
    elapsed_seconds: float
    state: ClockState


class ComponentChangeOut(Schema):
    component_id: int
    name: str
    old_status: ComponentStatus
    new_status: ComponentStatus


class UpdateOut(Schema):
    id: int
    status: PublicStatus
    body: str
    body_html: str
    is_public: bool
    created_at: datetime
    author: str | None
    component_changes: list[ComponentChangeOut]


class IncidentComponentOut(Schema):
    id: int
    name: str
    display_name: str = Field(description='"Group - Component", as on the public page.')
    status: ComponentStatus


class IncidentOut(Schema):
    id: int
    title: str
    severity: str = Field(description='The severity key, e.g. "sev1".')
    status: IncidentStatus
    public_status: PublicStatus
    impact: Impact
    impact_override: Impact | None
    customer_impact_percent: float | None
    regions: list[str]
    workaround: str
    commander: str | None
    declared_by: str | None
    acknowledged_by: str | None
    components: list[IncidentComponentOut]
    declared_at: datetime
    acknowledged_at: datetime | None
    identified_at: datetime | None
    mitigated_at: datetime | None
    resolved_at: datetime | None
    published_at: datetime | None
    reopened_count: int
    updated_at: datetime
    updates: list[UpdateOut] = Field(description="Newest first.")
    clocks: list[ClockOut]


class IncidentListOut(Schema):
    count: int = Field(description="Incidents matching the filter, across all pages.")
    limit: int
    offset: int
    items: list[IncidentOut] = Field(description="Newest first.")


class ComponentOut(Schema):
    id: int
    name: str
    display_name: str
    group_id: int | None
    is_group: bool
    description: str
    position: int
    status: ComponentStatus
    showcase: bool
    only_show_if_degraded: bool
    start_date: date | None
    updated_at: datetime


class SeverityOut(Schema):
    key: str
    name: str
    description: str
    rank: int
    acknowledge_target: int | None = Field(description="Seconds; null means no target.")
    first_update_target: int | None
    update_cadence_target: int | None
    resolve_target: int | None


# --- serialisers --------------------------------------------------------------------------------


def _username(user: Any) -> str | None:
    return user.get_username() if user is not None else None


def update_out(update: IncidentUpdate) -> dict[str, Any]:
    return {
        "id": update.pk,
        "status": update.status,
        "body": update.body,
        "body_html": update.body_html,
        "is_public": update.is_public,
        "created_at": update.created_at,
        "author": _username(update.author),
        "component_changes": update.component_changes,
    }


def incident_out(incident: Incident, *, now: datetime) -> dict[str, Any]:
    """An incident as the API reads it back; clocks' elapsed time is measured at `now`."""
    percent = incident.customer_impact_percent
    return {
        "id": incident.pk,
        "title": incident.title,
        "severity": incident.severity.key,
        "status": incident.status,
        "public_status": incident.public_status,
        "impact": incident.impact,
        "impact_override": incident.impact_override or None,
        "customer_impact_percent": None if percent is None else float(percent),
        "regions": incident.regions,
        "workaround": incident.workaround,
        "commander": _username(incident.commander),
        "declared_by": _username(incident.declared_by),
        "acknowledged_by": _username(incident.acknowledged_by),
        "components": [
            {"id": c.pk, "name": c.name, "display_name": c.display_name, "status": c.status}
            for c in incident.components.all()
        ],
        "declared_at": incident.declared_at,
        "acknowledged_at": incident.acknowledged_at,
        "identified_at": incident.identified_at,
        "mitigated_at": incident.mitigated_at,
        "resolved_at": incident.resolved_at,
        "published_at": incident.published_at,
        "reopened_count": incident.reopened_count,
        "updated_at": incident.updated_at,
        "updates": [update_out(update) for update in incident.updates.all()],
        "clocks": [clock.as_dict(now) for clock in incident.clocks.all()],
    }


def component_out(component: Component, statuses: dict[int, str] | None = None) -> dict[str, Any]:
    """A component; `statuses` (access.component_statuses_for) gives a group the status v2 shows, its
    worst component's, rather than the one stored on it."""
    return {
        "id": component.pk,
        "name": component.name,
        "display_name": component.display_name,
        "group_id": component.group_id,
        "is_group": component.is_group,
        "description": component.description,
        "position": component.position,
        "status": (statuses or {}).get(component.pk, component.status),
        "showcase": component.showcase,
        "only_show_if_degraded": component.only_show_if_degraded,
        "start_date": component.start_date,
        "updated_at": component.updated_at,
    }


def severity_out(severity: Severity) -> dict[str, Any]:
    return {
        "key": severity.key,
        "name": severity.name,
        "description": severity.description,
        "rank": severity.rank,
        "acknowledge_target": severity.acknowledge_target,
        "first_update_target": severity.first_update_target,
        "update_cadence_target": severity.update_cadence_target,
        "resolve_target": severity.resolve_target,
    }


# --- maintenance --------------------------------------------------------------------------------


_WINDOW_END = "ISO 8601 with an offset; after scheduled_for and in the future (a window may not end in the past)."


class MaintenanceIn(BodyIn):
    title: NonBlank = Field(min_length=1, max_length=200)
    scheduled_for: Moment = Field(
        description="ISO 8601 with an offset, e.g. 2026-03-14T22:00:00+01:00. May be in the past only for a "
        "window in progress now (one whose end is in the future)."
    )
    scheduled_until: Moment = Field(description=_WINDOW_END)
    components: list[Id] = Field(
        default_factory=list, description="Ids of the components (not groups) the window affects."
    )
    message: OptionalMarkdown = Field(
        "", description="The announcement (Markdown); a default naming the window if empty."
    )
    auto_start: bool = Field(True, description="The sweep starts the window at scheduled_for.")
    auto_complete: bool = Field(True, description="The sweep completes the window at scheduled_until.")


class MaintenancePatchIn(BodyIn):
    """Reschedule: a time left out keeps its current value. Once started, only the end can move."""

    scheduled_for: Moment | None = Field(None, description="ISO 8601 with an offset.")
    scheduled_until: Moment | None = Field(None, description=_WINDOW_END)
    message: OptionalMarkdown = Field(
        "", description="The update announcing the new window (Markdown); a default if empty."
    )


class MaintenanceUpdateIn(BodyIn):
    body: NonBlankMarkdown = Field(description="Markdown.")
    status: Annotated[MaintenanceStatus | None, Choice] = Field(
        None, description="in_progress starts a scheduled window, completed completes it; unchanged if omitted."
    )


class MaintenanceMessageIn(BodyIn):
    message: OptionalMarkdown = Field(
        "", description="The update posted with the change (Markdown); a default if empty."
    )


class MaintenanceCancelIn(BodyIn):
    reason: OptionalReason = Field("", description="Posted as the cancellation notice (Markdown); a default if empty.")


class MaintenanceListQuery(QueryIn):
    state: Literal["upcoming", "active", "past"] | None = Field(
        None,
        description="upcoming: scheduled, not cancelled (soonest first); active: in progress or verifying (soonest "
        "first); past: completed or cancelled (latest first). Without it, every window, latest first.",
    )
    limit: QueryInt = Field(50, ge=1, le=100)
    offset: QueryInt = Field(0, ge=0, le=1_000_000_000)


class MaintenanceUpdateOut(Schema):
    id: int
    public_id: str = Field(description="Its id in the public v2 API, webhooks and feeds.")
    status: MaintenanceUpdateStatus = Field(description="The update that cancels a window says cancelled.")
    body: str
    body_html: str
    created_at: datetime
    author: str | None = Field(description="Null for an automatic start or completion.")
    component_changes: list[ComponentChangeOut]


class MaintenanceOut(Schema):
    id: int
    public_id: str = Field(
        description="Its id on the status page (/maintenance/<public_id>), in the public v2 API, webhooks and feeds."
    )
    title: str
    status: Literal["scheduled", "in_progress", "verifying", "completed", "cancelled"] = Field(
        description="cancelled once cancelled (when: cancelled_at), whatever it was before."
    )
    scheduled_for: datetime
    scheduled_until: datetime
    started_at: datetime | None
    completed_at: datetime | None
    cancelled_at: datetime | None
    auto_start: bool
    auto_complete: bool
    components: list[IncidentComponentOut]
    updates: list[MaintenanceUpdateOut] = Field(description="Newest first.")


class MaintenanceListOut(Schema):
    count: int = Field(description="Windows matching the filter, across all pages.")
    limit: int
    offset: int
    items: list[MaintenanceOut]


def maintenance_update_out(update: MaintenanceUpdate) -> dict[str, Any]:
    return {
        "id": update.pk,
        "public_id": update.public_id,
        "status": update.status,
        "body": update.body,
        "body_html": update.body_html,
        "created_at": update.created_at,
        "author": _username(update.author),
        "component_changes": update.component_changes,
    }


def maintenance_out(maintenance: Maintenance) -> dict[str, Any]:
    """A window as the API reads it back, from access.maintenances_in_full_for (query-free here)."""
    return {
        "id": maintenance.pk,
        "public_id": maintenance.public_id,
        "title": maintenance.title,
        "status": "cancelled" if maintenance.cancelled_at is not None else maintenance.status,
        "scheduled_for": maintenance.scheduled_for,
        "scheduled_until": maintenance.scheduled_until,
        "started_at": maintenance.started_at,
        "completed_at": maintenance.completed_at,
        "cancelled_at": maintenance.cancelled_at,
        "auto_start": maintenance.auto_start,
        "auto_complete": maintenance.auto_complete,
        "components": [
            {"id": c.pk, "name": c.name, "display_name": c.display_name, "status": c.status}
            for c in maintenance.components.all()
        ],
        "updates": [maintenance_update_out(update) for update in maintenance.updates.all()],
    }


class FigureOut(Schema):
    median_seconds: float | None
    p90_seconds: float | None
    mean_seconds: float | None
    attainment_percent: float | None = Field(description="Met / (met + breached), of incidents with a target.")
    measured: int = Field(description="Incidents with a value.")
    breached: int = Field(description="Past the target: measured over it, or still waiting past it.")


class MetricsOut(Schema):
    count: int
    acknowledge: FigureOut
    first_update: FigureOut
    resolve: FigureOut


# --- paging -------------------------------------------------------------------------------------


class PageNoticeOut(Schema):
    email: str
    status: str = Field(description="pending, sending, sent, failed, or cancelled (not needed any more).")
    sent_at: datetime | None
    link_used_at: datetime | None = Field(description="When its acknowledgment link was used.")
    failing_since: datetime | None = Field(description="While it is being retried: when its failures began.")
    last_error: str = Field(description="The mail server's last answer, or why it was not sent.")


class PageTargetOut(Schema):
    username: str = Field(description="The person's username, or the address for an address in the step.")
    state: Literal["queued", "retrying", "sent", "failed", "not_fired", "skipped", "unreachable"] = Field(
        description="queued (waiting to be sent), retrying (the mail server refused or failed; since = when the "
        "failures began), sent (accepted by the mail server at since), failed (gave up), not_fired (the step "
        "has not fired), skipped (left out on purpose, or paging stopped first: error says why), unreachable "
        "(no email address or a deactivated account: error says which)."
    )
    since: datetime | None = Field(description="When it entered that state (null for not_fired).")
    error: str = Field(description="The mail server's last answer, or why they were not paged.")


class PageStepOut(Schema):
    number: int
    run: int
    runs: int
    position: int
    positions: int
    due_at: datetime
    fired_at: datetime | None
    stopped_at: datetime | None
    stop_reason: str
    recipients: list[str] = Field(description="Usernames and addresses, as copied at declaration.")
    paged: list[str] = Field(
        description="Who the mail server accepted a page for (empty until it has; never someone still queued)."
    )
    targets: list[PageTargetOut] = Field(description="Everyone in the step, with what became of their page.")
    problems: list[str] = Field(
        description="Who it could not page (or, before it fires, will not be able to page), and why "
        "('could not page x: no email address')."
    )
    not_paged: list[str] = Field(description="Who it left out on purpose (the declarer, unless alone in the step).")
    notices: list[PageNoticeOut]


class NudgeOut(Schema):
    reason: str = Field(description="update_due, update_overdue or first_update_late.")
    email: str
    status: str
    created_at: datetime
    sent_at: datetime | None


class PagingOut(Schema):
    paging: bool = Field(description="Whether a step is still waiting to fire.")
    next_due_at: datetime | None
    steps: list[PageStepOut]
    nudges: list[NudgeOut]


class StopPagingIn(BodyIn):
    reason: NonBlankReason = Field(description="Why paging stops (required, recorded on the timeline).")


def paging_out(paging: Any) -> dict[str, Any]:
    """From incidents.access.paging_for."""
    escalation = paging.escalation
    next_step = escalation.next_step
    return {
        "paging": escalation.is_paging,
        "next_due_at": next_step.due_at if next_step else None,
        "steps": [
            {
                "number": step.number,
                "run": step.run,
                "runs": step.runs,
                "position": step.position,
                "positions": step.positions,
                "due_at": step.due_at,
                "fired_at": step.fired_at,
                "stopped_at": step.stopped_at,
                "stop_reason": step.stop_reason,
                "recipients": step.names,
                "paged": [t.username for t in step.targets if t.state == "sent"],
                "targets": [
                    {"username": t.username, "state": t.state, "since": t.since, "error": t.error} for t in step.targets
                ],
                "problems": [
                    f"could not page {t.username}: {t.error}" for t in step.targets if t.state == "unreachable"
                ],
                "not_paged": step.not_paged,
                "notices": [
                    {
                        "email": n.email,
                        "status": n.status,
                        "sent_at": n.sent_at,
                        "link_used_at": n.used_at,
                        "failing_since": n.failing_since,
                        "last_error": n.last_error,
                    }
                    for n in step.sent_notices
                ],
            }
            for step in escalation.steps
        ],
        "nudges": [
            {"reason": n.reason, "email": n.email, "status": n.status, "created_at": n.created_at, "sent_at": n.sent_at}
            for n in paging.nudges
        ],
    }
