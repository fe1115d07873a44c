"""Permission-checked getters: the only way views and the API load domain objects."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db.models import Case, Count, F, Prefetch, Q, QuerySet, Value, When
from django.http import Http404

from incidents import clocks
from incidents.escalation import (
    Escalation,
    UnreachableTarget,
    escalations,
    page_targets,
    resolve_recipients,
    unreachable_targets,
)
from incidents.models import (
    ActionItem,
    ActionStatus,
    ApiToken,
    CircuitBreaker,
    Clock,
    Component,
    Delivery,
    DeliveryStatus,
    Incident,
    IncidentQuerySet,
    IncidentTemplate,
    IncidentUpdate,
    Maintenance,
    MaintenanceUpdate,
    NoticeKind,
    NoticeStatus,
    Postmortem,
    PostmortemEntry,
    PostmortemState,
    PublishRequest,
    Severity,
    Snapshot,
    StaffNotice,
    Subscriber,
    TimelineEvent,
)


def require_staff(user: Any) -> None:
    if not (user.is_authenticated and user.is_active and user.is_staff):
        raise PermissionDenied("Staff only.")


def incidents_for(user: Any) -> IncidentQuerySet:
    require_staff(user)
    return Incident.objects.select_related("severity", "commander", "acknowledged_by").prefetch_related(
        Prefetch("clocks", queryset=Clock.objects.order_by("id"))
    )


def get_incident_for_user(user: Any, incident_id: int | str) -> Incident:
    try:
        pk = int(incident_id)
    except (TypeError, ValueError):
        raise Http404("No such incident.") from None
    incident = (
        incidents_for(user)
        .prefetch_related(
            Prefetch("updates", queryset=IncidentUpdate.objects.select_related("author")),
            "components__group",
        )
        .filter(pk=pk)
        .first()
    )
    if incident is None:
        raise Http404("No such incident.")
    return incident


def components_for(user: Any) -> QuerySet[Component]:
    require_staff(user)
    return Component.objects.select_related("group")


def component_statuses_for(user: Any) -> dict[int, str]:
    """Each component's status as the public page tells it: a group's is its worst component's (one query)."""
    from incidents.public import worst_status

    require_staff(user)
    rows = list(Component.objects.values_list("pk", "group_id", "is_group", "status"))
    children: dict[int, list[str]] = {}
    for _pk, group_id, _is_group, status in rows:
        if group_id is not None:
            children.setdefault(group_id, []).append(status)
    return {pk: worst_status(children.get(pk, [])) if is_group else status for pk, _, is_group, status in rows}


def get_component_for_user(user: Any, component_id: int | str) -> Component:
    try:
        return components_for(user).get(pk=int(component_id))
    except (Component.DoesNotExist, TypeError, ValueError):
        raise Http404("No such component.") from None


def severities_for(user: Any) -> QuerySet[Severity]:
    require_staff(user)
    return Severity.objects.all()


def timeline_for(user: Any, incident: Incident) -> QuerySet[TimelineEvent]:
    """An incident's timeline, oldest first, with the people who acted."""
    require_staff(user)
    return TimelineEvent.objects.filter(incident=incident).select_related("actor").order_by("created_at", "id")


def incident_templates_for(user: Any) -> QuerySet[IncidentTemplate]:
    require_staff(user)
    return IncidentTemplate.objects.select_related("severity").prefetch_related("components")


def get_incident_template_for_user(user: Any, template_id: int | str) -> IncidentTemplate:
    try:
        return incident_templates_for(user).get(pk=int(template_id))
    except (IncidentTemplate.DoesNotExist, TypeError, ValueError):
        raise Http404("No such incident template.") from None


def incidents_in_full_for(user: Any) -> QuerySet[Incident]:
    """Incidents with everything the staff API reads back prefetched: a constant number of queries per page."""
    return (
        incidents_for(user)
        .select_related("declared_by")
        .prefetch_related(
            Prefetch("updates", queryset=IncidentUpdate.objects.select_related("author")),
            Prefetch("components", queryset=Component.objects.select_related("group")),
        )
    )


def get_full_incident_for_user(user: Any, incident_id: int | str) -> Incident:
    try:
        pk = int(incident_id)
    except (TypeError, ValueError):
        raise Http404("No such incident.") from None
    incident = incidents_in_full_for(user).filter(pk=pk).first()
    if incident is None:
        raise Http404("No such incident.")
    return incident


def api_token_for(token: str) -> ApiToken | None:
    """The token row (with its user) for a presented bearer token. Only SHA-256 hashes are stored."""
    if not token:
        return None
    return ApiToken.objects.select_related("user").filter(token_hash=ApiToken.hash(token)).first()


def staff_users_for(user: Any) -> QuerySet[Any]:
    """The people who can command an incident: active staff."""
    require_staff(user)
    return get_user_model().objects.filter(is_staff=True, is_active=True).order_by("username")


def maintenances_for(user: Any) -> QuerySet[Maintenance]:
    """Maintenance windows with their components (and the components' groups)."""
    require_staff(user)
    return Maintenance.objects.select_related("created_by").prefetch_related(
        Prefetch("components", queryset=Component.objects.select_related("group"))
    )


def maintenances_in_full_for(user: Any) -> QuerySet[Maintenance]:
    """Also their updates, newest first, with authors: a constant number of queries per page."""
    return maintenances_for(user).prefetch_related(
        Prefetch("updates", queryset=MaintenanceUpdate.objects.select_related("author"))
    )


def get_maintenance_for_user(user: Any, maintenance_id: int | str) -> Maintenance:
    try:
        pk = int(maintenance_id)
    except (TypeError, ValueError):
        raise Http404("No such maintenance.") from None
    maintenance = maintenances_in_full_for(user).filter(pk=pk).first()
    if maintenance is None:
        raise Http404("No such maintenance.")
    return maintenance


def maintenance_timeline_for(user: Any, maintenance: Maintenance) -> QuerySet[TimelineEvent]:
    """A maintenance window's timeline, oldest first, with the people who acted."""
    require_staff(user)
    return TimelineEvent.objects.filter(maintenance=maintenance).select_related("actor").order_by("created_at", "id")


# Not failures: the subscriber left before the message went out (an unsubscribe stops what is pending).
STOPPED_REASONS = ["unsubscribed before it was sent", "the subscriber left before it was sent"]


def delivery_counts_for(user: Any, incident: Incident) -> dict[int, dict[str, int]]:
    """Per public update of the incident: how many of its emails and webhooks are sent, pending, failed."""
    require_staff(user)
    counts: dict[int, dict[str, int]] = {}
    stopped = Q(status="failed", last_error__in=STOPPED_REASONS)
    rows = (
        Delivery.objects.filter(message__incident=incident, message__incident_update__isnull=False)
        .annotate(stopped=Case(When(stopped, then=Value(True)), default=Value(False)))
        .values_list("message__incident_update_id", "status", "stopped")
        .annotate(n=Count("id"))
    )
    for update_id, status, was_stopped, n in rows:
        bucket = counts.setdefault(update_id, {"sent": 0, "pending": 0, "failed": 0, "stopped": 0})
        if was_stopped:
            bucket["stopped"] += n
        else:
            bucket["pending" if status in ("pending", "sending") else status] += n
    return counts


@dataclass
class Timers:
    """The timer sweep as the dashboard tells it: stopped when its last run is older than two intervals."""

    last_sweep: datetime | None
    stopped: bool


def timers_for(user: Any, now: datetime) -> Timers:
    """Whether the sweep that fires pages and clocks is running (one query)."""
    require_staff(user)
    last = clocks.last_sweep()
    return Timers(last, last is None or now - last > clocks.sweep_overdue_after())


@dataclass
class PublicPage:
    """The public page as the dashboard tells it: when it was last published, and whether a public change
    has waited longer than publishing.OVERDUE_AFTER_SECONDS without being published."""

    last_published: datetime | None
    waiting_since: datetime | None
    behind: bool


def public_page_for(user: Any, now: datetime) -> PublicPage:
    """When the public snapshot was last published, and the oldest change still waiting (two queries)."""
    from incidents import publishing

    require_staff(user)
    last_published = Snapshot.objects.order_by("-version").values_list("created_at", flat=True).first()
    waiting_since = PublishRequest.objects.order_by("requested_at", "id").values_list("requested_at", flat=True).first()
    overdue = now - timedelta(seconds=publishing.OVERDUE_AFTER_SECONDS)
    return PublicPage(last_published, waiting_since, waiting_since is not None and waiting_since < overdue)


@dataclass
class PagesStuck:
    """Pages waiting on a mail server that refuses them: since when, and what it last said."""

    since: datetime
    last_error: str


def stuck_pages_for(user: Any) -> PagesStuck | None:
    """The oldest failure among pages still waiting to go out, or None when none is failing (one query)."""
    require_staff(user)
    row = (
        StaffNotice.objects.filter(
            kind=NoticeKind.PAGE,
            status__in=[NoticeStatus.PENDING, NoticeStatus.SENDING],
            failing_since__isnull=False,
        )
        .order_by("failing_since", "id")
        .values_list("failing_since", "last_error")
        .first()
    )
    return PagesStuck(row[0], row[1]) if row and row[0] else None


def unreachable_targets_for(user: Any) -> list[UnreachableTarget]:
    """People the escalation steps would fail to page (one query)."""
    require_staff(user)
    return unreachable_targets()


def troubled_breakers_for(user: Any) -> list[CircuitBreaker]:
    """Transports whose circuit breaker is not closed: sending is paused or probing."""
    require_staff(user)
    troubled = list(CircuitBreaker.objects.exclude(state="closed").order_by("transport"))
    if any(breaker.transport.startswith("webhook ") for breaker in troubled):
        from incidents.webhooks import destination

        hosts = {destination(s) for s in Subscriber.objects.filter(kind="webhook", unsubscribed_at__isnull=True)}
        # A host whose webhooks have all been removed has nothing waiting: no notice.
        troubled = [b for b in troubled if not b.transport.startswith("webhook ") or b.transport in hosts]
    if troubled:
        _next_tries(troubled)
    return troubled


def _next_tries(breakers: list[CircuitBreaker]) -> None:
    """Set each breaker's `next_try_at`: the later of its cool-down's end and the first time a pending
    row for it comes due (a row backing off for longer than the cool-down waits for itself), or None
    when nothing is waiting. Two queries, only while some breaker is not closed."""
    from django.db.models import Min

    from incidents.webhooks import destination_of

    first_due: dict[str, Any] = {}
    email = Delivery.objects.filter(status=DeliveryStatus.PENDING, transport="email")
    first_due["email"] = email.aggregate(first=Min("next_attempt_at"))["first"]
    if any(breaker.transport.startswith("webhook ") for breaker in breakers):
        rows = (
            Delivery.objects.filter(status=DeliveryStatus.PENDING, transport="webhook")
            .values("subscriber")
            .annotate(first=Min("next_attempt_at"))
        )
        urls = dict(Subscriber.objects.filter(kind="webhook").values_list("pk", "webhook_url"))
        for row in rows:
            host = destination_of(urls.get(row["subscriber"], ""))
            if host not in first_due or row["first"] < first_due[host]:
                first_due[host] = row["first"]
    for breaker in breakers:
        due = first_due.get(breaker.transport)
        breaker.next_try_at = max(breaker.retry_at, due) if breaker.retry_at and due else None  # type: ignore[attr-defined]


def get_postmortem_for_user(user: Any, incident_id: int | str) -> Postmortem:
    """An incident's post-mortem with its sections, timeline and action items (and their owners)."""
    require_staff(user)
    try:
        pk = int(incident_id)
    except (TypeError, ValueError):
        raise Http404("No such post-mortem.") from None
    postmortem = (
        Postmortem.objects.select_related("incident__severity", "incident__commander", "owner")
        .prefetch_related(
            "sections", "entries", Prefetch("action_items", queryset=ActionItem.objects.select_related("owner"))
        )
        .filter(incident_id=pk)
        .first()
    )
    if postmortem is None:
        raise Http404("This incident has no post-mortem.")
    return postmortem


def get_action_item_for_user(user: Any, postmortem: Postmortem, item_id: int | str) -> ActionItem:
    require_staff(user)
    try:
        return postmortem.action_items.get(pk=int(item_id))
    except (TypeError, ValueError, ActionItem.DoesNotExist):
        raise Http404("No such action item.") from None


def get_postmortem_entry_for_user(user: Any, postmortem: Postmortem, entry_id: int | str) -> PostmortemEntry:
    require_staff(user)
    try:
        return postmortem.entries.get(pk=int(entry_id))
    except (TypeError, ValueError, PostmortemEntry.DoesNotExist):
        raise Http404("No such timeline entry.") from None


def overdue_action_items_for(user: Any, today: date) -> list[ActionItem]:
    """Open action items past their due date, most overdue first, with their incident and owner."""
    require_staff(user)
    return list(
        ActionItem.objects.filter(status__in=[ActionStatus.OPEN, ActionStatus.IN_PROGRESS], due_date__lt=today)
        .select_related("owner", "postmortem__incident")
        .order_by("due_date", "priority", "id")[:50]
    )


def unfinished_postmortems_for(user: Any) -> list[Postmortem]:
    """Post-mortems not yet published, the soonest due first, for the dashboard."""
    require_staff(user)
    return list(
        Postmortem.objects.exclude(state=PostmortemState.PUBLISHED)
        .select_related("incident__severity", "owner")
        .order_by(F("due_at").asc(nulls_last=True), "id")[:20]
    )


def postmortem_of(user: Any, incident: Incident) -> Postmortem | None:
    require_staff(user)
    return Postmortem.objects.select_related("owner").filter(incident=incident).first()


def escalations_for(user: Any, incident_ids: Iterable[int]) -> dict[int, Escalation]:
    """Each incident's paging (its page steps), one query."""
    require_staff(user)
    return escalations(incident_ids)


def paging_for(user: Any, incident: Incident) -> Paging:
    """An incident's paging with who was sent what, and each person's state (escalation.page_targets):
    three queries (the steps, the notices, the people of steps that have not fired)."""
    require_staff(user)
    found = escalations([incident.pk]).get(incident.pk, Escalation())
    found.declared_at = incident.declared_at
    notices = list(StaffNotice.objects.filter(incident=incident).order_by("created_at", "id"))
    by_step: dict[int, list[StaffNotice]] = {}
    for notice in notices:
        if notice.step_id is not None:
            by_step.setdefault(notice.step_id, []).append(notice)
    # Steps still to fire: who they would fail to page, as resolve_recipients will find it when they fire.
    pending = [step for step in found.steps if step.is_pending]
    ids = {r["user_id"] for step in pending for r in step.recipients if r.get("user_id")}
    people = get_user_model().objects.in_bulk(list(ids)) if ids else {}
    for step in found.steps:
        step.sent_notices = by_step.get(step.pk, [])  # type: ignore[attr-defined]
        resolved = (
            resolve_recipients(step.recipients, declared_by_id=incident.declared_by_id, users=people)
            if step.is_pending
            else step.recipients
        )
        step.targets = page_targets(step, step.sent_notices, resolved=resolved)  # type: ignore[attr-defined]
    return Paging(found, [notice for notice in notices if notice.kind == NoticeKind.NUDGE])


@dataclass
class Paging:
    escalation: Escalation
    nudges: list[StaffNotice]


def last_return_of(user: Any, postmortem: Postmortem) -> TimelineEvent | None:
    """The reviewer's last "send back to draft", with its reason (one query)."""
    require_staff(user)
    return (
        TimelineEvent.objects.filter(incident=postmortem.incident_id, data__postmortem_id=postmortem.pk)
        .filter(data__has_key="reason")
        .select_related("actor")
        .order_by("-created_at", "-id")
        .first()
    )
