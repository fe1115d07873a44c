"""The public read model: builds the snapshot document of everything public, from the database.

The document is the contract between publishing and the public site: the public pages, the
Statuspage v2 API, the feeds and the static export all render from it and never touch the database.
Its objects are shaped like Statuspage's v2 payloads (ids as strings, timestamps with milliseconds
in the page's zone) with a few extra keys of ours, which the v2 API leaves out:
  incidents[*]: body_html on updates, impact_scope, next_update_at and next_update_overdue (whether it
    had passed when the document was built; the page judges it again when it is read), duration_seconds,
    postmortem (the published post-mortem's public sections as HTML and its public timeline, or null). An incident
    with a published post-mortem has status "postmortem" and Statuspage's postmortem_body (Markdown),
    postmortem_body_last_updated_at and postmortem_published_at, which the v2 API keeps.
  components[*]: uptime (for showcased components)
  scheduled_maintenances[*]: body_html on updates, cancelled_at, sequence (cancelled windows stay in
    the document, with status "cancelled", so calendars can remove them; the v2 API leaves them out),
    legacy_id (the number its page had before windows got public ids, for the redirect from old links)
Maintenance windows and their updates carry their public ids (Maintenance.public_id: opaque strings
that start with a letter), never their primary keys, so no id is shared with an incident or an
incident update (decimal ids).
"""

from __future__ import annotations

import hashlib
import json
import zoneinfo
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Prefetch, QuerySet
from django.utils import timezone

from incidents.markup import render_markdown
from incidents.models import (
    COMPONENT_STATUS_RANK,
    IMPACT_FOR_COMPONENT_STATUS,
    Clock,
    ClockState,
    Component,
    ComponentStatus,
    ComponentStatusChange,
    Incident,
    IncidentUpdate,
    Maintenance,
    MaintenanceUpdate,
    Metric,
    Postmortem,
    PostmortemEntry,
    PostmortemSection,
    PostmortemState,
)

SCHEMA = 1
UPTIME_DAYS = 90
UPTIME_MONTHS = 12
HISTORY_LIMIT = 500
# Share of a period that counts as down: a major outage fully, a partial one for 0.3, a degraded
# component not at all. Time under maintenance is left out of the period altogether.
OUTAGE_WEIGHT = {
    ComponentStatus.MAJOR_OUTAGE: 1.0,
    ComponentStatus.PARTIAL_OUTAGE: 0.3,
    ComponentStatus.DEGRADED_PERFORMANCE: 0.0,
    ComponentStatus.OPERATIONAL: 0.0,
}
INDICATOR_DESCRIPTIONS = {
    "none": "All Systems Operational",
    "minor": "Minor Service Outage",
    "major": "Partial System Outage",
    "critical": "Major System Outage",
}
IMPACT_RANK = {"none": 0, "minor": 1, "major": 2, "critical": 3, "maintenance": 0}


def page_zone() -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(settings.DISPLAY_TIME_ZONE)


# Statuspage (Rails) writes "Z" for a time in UTC itself, and the offset for any other zone, even one
# at +00:00 that day (Europe/London in winter is "+00:00"): the zone's abbreviation decides.
UTC_ABBREVIATIONS = frozenset({"UTC", "UCT"})


def stamp(moment: datetime | None) -> str | None:
    """Statuspage's timestamps: milliseconds and the page's UTC offset ("Z" on a page in UTC)."""
    if moment is None:
        return None
    local = moment.astimezone(page_zone())
    text = local.isoformat(timespec="milliseconds")
    if local.tzname() in UTC_ABBREVIATIONS and text.endswith("+00:00"):
        return text.removesuffix("+00:00") + "Z"
    return text


def page_id() -> str:
    return hashlib.sha256(settings.SITE_URL.encode()).hexdigest()[:12]


def content_hash(document: dict[str, Any]) -> str:
    """A hash of what the document says, leaving out when and as which version it was built."""
    content = {k: v for k, v in document.items() if k not in {"version", "generated_at"}}
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()


# --- uptime -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Span:
    start: datetime
    end: datetime
    status: str


def status_spans(components: Iterable[Component], since: datetime, until: datetime) -> dict[int, list[Span]]:
    """Each component's statuses over [since, until), from its recorded history (one query)."""
    spans: dict[int, list[Span]] = {}
    changes: dict[int, list[ComponentStatusChange]] = defaultdict(list)
    ids = [c.pk for c in components]
    for change in ComponentStatusChange.objects.filter(component_id__in=ids, changed_at__gte=since).order_by(
        "changed_at", "id"
    ):
        changes[change.component_id].append(change)
    for component in components:
        history = changes.get(component.pk, [])
        begin = max(since, component.created_at)
        # The status at `since` is the first later change's old status, or today's if none changed.
        status = history[0].old_status if history else component.status
        result: list[Span] = []
        cursor = begin
        for change in history:
            if change.changed_at > cursor:
                result.append(Span(cursor, min(change.changed_at, until), status))
            cursor = max(cursor, change.changed_at)
            status = change.new_status
        if cursor < until:
            result.append(Span(cursor, until, status))
        spans[component.pk] = result
    return spans


def uptime_between(spans: list[Span], start: datetime, end: datetime) -> dict[str, Any] | None:
    """Uptime of one component over [start, end); None when it did not exist then."""
    counted = 0.0
    down = 0.0
    worst = ComponentStatus.OPERATIONAL
    for span in spans:
        lo, hi = max(span.start, start), min(span.end, end)
        if hi <= lo:
            continue
        seconds = (hi - lo).total_seconds()
        status = ComponentStatus(span.status)
        if COMPONENT_STATUS_RANK[status] > COMPONENT_STATUS_RANK[worst]:
            worst = status
        if status == ComponentStatus.UNDER_MAINTENANCE:
            continue
        counted += seconds
        down += seconds * OUTAGE_WEIGHT[status]
    if counted == 0 and worst == ComponentStatus.OPERATIONAL:
        return None
    percent = 100.0 if counted == 0 else round(100 * (1 - down / counted), 3)
    return {"uptime_percent": percent, "outage_seconds": round(down), "worst_status": worst.value}


def component_uptime(spans: list[Span], now: datetime) -> dict[str, Any]:
    zone = page_zone()
    today = now.astimezone(zone).date()
    days = []
    for offset in range(UPTIME_DAYS - 1, -1, -1):
        day = today - timedelta(days=offset)
        start = datetime.combine(day, time.min, zone)
        end = min(datetime.combine(day + timedelta(days=1), time.min, zone), now)
        days.append({"date": day.isoformat(), **(uptime_between(spans, start, end) or {"uptime_percent": None})})
    months = []
    first = date(today.year, today.month, 1)
    for _ in range(UPTIME_MONTHS):
        start = datetime.combine(first, time.min, zone)
        next_month = (first + timedelta(days=32)).replace(day=1)
        end = min(datetime.combine(next_month, time.min, zone), now)
        months.append(
            {"month": first.strftime("%Y-%m"), **(uptime_between(spans, start, end) or {"uptime_percent": None})}
        )
        first = (first - timedelta(days=1)).replace(day=1)
    window_start = datetime.combine(today - timedelta(days=UPTIME_DAYS - 1), time.min, zone)
    overall = uptime_between(spans, window_start, now)
    # Narrow screens show the last 30 days' bars, and this figure beside them.
    recent = uptime_between(spans, datetime.combine(today - timedelta(days=29), time.min, zone), now)
    return {
        "days": days,
        "months": months,
        "uptime_percent": overall["uptime_percent"] if overall else None,
        "uptime_percent_30_days": recent["uptime_percent"] if recent else None,
    }


# --- the document -------------------------------------------------------------------------------


def _component_row(component: Component, children: list[Component], statuses: dict[int, str]) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": str(component.pk),
        "name": component.name,
        "status": statuses[component.pk],
        "created_at": stamp(component.created_at),
        "updated_at": stamp(component.updated_at),
        "position": component.position,
        "description": component.description or None,
        "showcase": component.showcase,
        # Statuspage gives groups no start date; their children have their own.
        "start_date": component.start_date.isoformat() if component.start_date and not component.is_group else None,
        "group_id": str(component.group_id) if component.group_id else None,
        "page_id": page_id(),
        "group": component.is_group,
        "only_show_if_degraded": component.only_show_if_degraded,
    }
    if component.is_group:
        row["components"] = [str(child.pk) for child in children]
    return row


def worst_status(statuses: Iterable[str]) -> str:
    """The worst of some component statuses (operational when there are none): a group's status."""
    worst = ComponentStatus.OPERATIONAL.value
    for status in statuses:
        if COMPONENT_STATUS_RANK[ComponentStatus(status)] > COMPONENT_STATUS_RANK[ComponentStatus(worst)]:
            worst = status
    return worst


def overall_status(component_statuses: Iterable[str], open_impacts: Iterable[str]) -> dict[str, str]:
    """Statuspage's page indicator, from the worst component and the worst unresolved incident."""
    statuses = list(component_statuses)
    worst = worst_status(statuses)
    indicator = {
        ComponentStatus.MAJOR_OUTAGE: "critical",
        ComponentStatus.PARTIAL_OUTAGE: "major",
        ComponentStatus.DEGRADED_PERFORMANCE: "minor",
    }.get(ComponentStatus(worst), "none")
    for impact in open_impacts:
        if IMPACT_RANK.get(impact, 0) > IMPACT_RANK[indicator]:
            indicator = impact
    if worst == ComponentStatus.DEGRADED_PERFORMANCE and indicator == "minor":
        description = "Partially Degraded Service"
    elif indicator == "none" and ComponentStatus.UNDER_MAINTENANCE in statuses:
        description = "Service Under Maintenance"
    else:
        description = INDICATOR_DESCRIPTIONS[indicator]
    return {"indicator": indicator, "description": description}


def _update_row(update: IncidentUpdate | MaintenanceUpdate, incident_id: str) -> dict[str, Any]:
    return {
        "id": update.public_id if isinstance(update, MaintenanceUpdate) else str(update.pk),
        "status": update.status,
        "body": update.body,
        "incident_id": incident_id,
        "created_at": stamp(update.created_at),
        "updated_at": stamp(update.created_at),
        "display_at": stamp(update.created_at),
        "affected_components": [
            {
                "code": str(c["component_id"]),
                "name": c["name"],
                "old_status": c["old_status"],
                "new_status": c["new_status"],
            }
            for c in update.component_changes
        ]
        or None,
        "deliver_notifications": True,
        "custom_tweet": None,
        "tweet_id": None,
        "body_html": update.body_html,
    }


def published_postmortems(incident_ids: Iterable[int]) -> dict[int, Postmortem]:
    """The published post-mortems of these incidents, with only their public parts (three queries)."""
    found = Postmortem.objects.filter(
        incident__in=list(incident_ids), state=PostmortemState.PUBLISHED
    ).prefetch_related(
        Prefetch("sections", queryset=PostmortemSection.objects.filter(is_public=True).exclude(body="")),
        Prefetch("entries", queryset=PostmortemEntry.objects.filter(is_public=True, is_hidden=False)),
    )
    return {postmortem.incident_id: postmortem for postmortem in found}


def postmortem_markdown(postmortem: Postmortem) -> str:
    """The public sections as one Markdown text (Statuspage's postmortem_body)."""
    return "\n\n".join(f"## {s.get_key_display()}\n\n{s.body}" for s in postmortem.sections.all())


def _postmortem_part(postmortem: Postmortem) -> dict[str, Any]:
    return {
        "published_at": stamp(postmortem.published_at),
        "updated_at": stamp(postmortem.updated_at),
        "sections": [
            {"key": s.key, "title": s.get_key_display(), "body_html": render_markdown(s.body)}
            for s in postmortem.sections.all()
        ],
        "timeline": [
            {"at": stamp(entry.at), "text": entry.text, "starred": entry.is_starred}
            for entry in postmortem.entries.all()
        ],
    }


def _incident_row(
    incident: Incident,
    component_rows: dict[int, dict[str, Any]],
    now: datetime,
    postmortem: Postmortem | None = None,
) -> dict[str, Any]:
    incident_id = str(incident.pk)
    updates = [u for u in incident.updates.all() if u.is_public]  # prefetched, newest first
    cadence = next((c for c in incident.clocks.all() if c.metric == Metric.UPDATE_CADENCE), None)
    next_update = (
        cadence.due_at
        if cadence is not None and cadence.state != ClockState.STOPPED and cadence.running_since
        else None
    )
    monitoring = next((u.created_at for u in reversed(updates) if u.status == "monitoring"), None)
    row = {
        "id": incident_id,
        "name": incident.title,
        "status": "postmortem" if postmortem is not None else incident.public_status,
        "created_at": stamp(incident.published_at or incident.declared_at),
        "updated_at": stamp(updates[0].created_at if updates else incident.updated_at),
        "monitoring_at": stamp(monitoring),
        "resolved_at": stamp(incident.resolved_at) if incident.is_resolved else None,
        "impact": incident.impact,
        "shortlink": f"{settings.SITE_URL}/incidents/{incident_id}",
        "started_at": stamp(incident.impact_started_at or incident.declared_at),
        "page_id": page_id(),
        "incident_updates": [_update_row(u, incident_id) for u in updates],
        "components": [
            _without_uptime(component_rows[c.pk]) for c in incident.components.all() if c.pk in component_rows
        ],
        "impact_scope": {
            "customer_impact_percent": float(incident.customer_impact_percent)
            if incident.customer_impact_percent is not None
            else None,
            "regions": incident.regions,
            "workaround": incident.workaround,
        },
        "next_update_at": stamp(next_update) if not incident.is_resolved else None,
        "next_update_overdue": next_update is not None and not incident.is_resolved and next_update < now,
        # Only once resolved: a running duration would make every build differ.
        "duration_seconds": round(incident.duration().total_seconds()) if incident.is_resolved else None,
        "postmortem": _postmortem_part(postmortem) if postmortem is not None else None,
    }
    if postmortem is not None:
        row["postmortem_body"] = postmortem_markdown(postmortem)
        row["postmortem_body_last_updated_at"] = stamp(postmortem.updated_at)
        row["postmortem_published_at"] = stamp(postmortem.published_at)
    return row


def _without_uptime(row: dict[str, Any]) -> dict[str, Any]:
    """A component as incidents and maintenances embed it: the v2 fields, not 90 days of uptime."""
    return {key: value for key, value in row.items() if key != "uptime"}


def _maintenance_row(maintenance: Maintenance, component_rows: dict[int, dict[str, Any]]) -> dict[str, Any]:
    maintenance_id = maintenance.public_id
    updates = list(maintenance.updates.all())  # prefetched, newest first
    return {
        "id": maintenance_id,
        "name": maintenance.title,
        # A cancelled window says so (its update too): it never reads "scheduled" in a webhook or a badge.
        "status": "cancelled" if maintenance.is_cancelled else maintenance.status,
        "created_at": stamp(maintenance.created_at),
        "updated_at": stamp(maintenance.updated_at),
        "monitoring_at": stamp(next((u.created_at for u in reversed(updates) if u.status == "verifying"), None)),
        "resolved_at": stamp(maintenance.completed_at),
        "impact": "maintenance",
        "shortlink": f"{settings.SITE_URL}/maintenance/{maintenance_id}",
        "started_at": stamp(maintenance.started_at or maintenance.scheduled_for),
        "page_id": page_id(),
        "incident_updates": [_update_row(u, maintenance_id) for u in updates],
        "components": [
            _without_uptime(component_rows[c.pk]) for c in maintenance.components.all() if c.pk in component_rows
        ],
        "scheduled_for": stamp(maintenance.scheduled_for),
        "scheduled_until": stamp(maintenance.scheduled_until),
        "cancelled_at": stamp(maintenance.cancelled_at),
        "sequence": maintenance.sequence,
        # Its page was /maintenance/<legacy_id> before windows had public ids: that URL redirects here.
        "legacy_id": str(maintenance.pk),
    }


def component_rows() -> tuple[list[Component], dict[int, str], dict[int, dict[str, Any]]]:
    """Every component (display order), its status (groups: their worst child's) and its row."""
    components = list(Component.objects.select_related("group").order_by("position", "-is_group", "name", "id"))
    children: dict[int, list[Component]] = defaultdict(list)
    for component in components:
        if component.group_id:
            children[component.group_id].append(component)
    statuses = {c.pk: c.status for c in components}
    for component in components:
        if component.is_group:
            statuses[component.pk] = worst_status(statuses[child.pk] for child in children[component.pk])
    return components, statuses, {c.pk: _component_row(c, children[c.pk], statuses) for c in components}


def _incidents_with_rows() -> QuerySet[Incident]:
    """Incidents with what their rows need, prefetched (three queries more)."""
    return Incident.objects.prefetch_related(
        Prefetch("updates", queryset=IncidentUpdate.objects.filter(is_public=True).order_by("-created_at", "-id")),
        Prefetch("clocks", queryset=Clock.objects.filter(metric=Metric.UPDATE_CADENCE)),
        "components",
    )


def _maintenances_with_rows() -> QuerySet[Maintenance]:
    return Maintenance.objects.prefetch_related(
        Prefetch("updates", queryset=MaintenanceUpdate.objects.order_by("-created_at", "-id")), "components"
    )


def incident_row(incident: Incident, now: datetime | None = None) -> dict[str, Any]:
    """One incident as the document has it (for webhooks, which tell about one incident at a time)."""
    _, _, rows = component_rows()
    fresh = _incidents_with_rows().get(pk=incident.pk)
    return _incident_row(fresh, rows, now or timezone.now(), published_postmortems([incident.pk]).get(incident.pk))


def maintenance_rows(ids: list[int]) -> list[dict[str, Any]]:
    """Some maintenance windows as the document has them."""
    _, _, rows = component_rows()
    return [_maintenance_row(window, rows) for window in _maintenances_with_rows().filter(pk__in=ids)]


# --- pages older than the document --------------------------------------------------------------
# The document keeps the newest HISTORY_LIMIT incidents and the windows of the last UPTIME_DAYS; the
# public pages of older ones are read from the database, one at a time, as the document would have them.


def archived_incident_row(incident_id: int, now: datetime | None = None) -> dict[str, Any] | None:
    """A public incident's row, or None when there is no public incident with that id."""
    incident = _incidents_with_rows().filter(pk=incident_id, published_at__isnull=False).first()
    if incident is None:
        return None
    _, _, rows = component_rows()
    postmortem = published_postmortems([incident.pk]).get(incident.pk)
    return _incident_row(incident, rows, now or timezone.now(), postmortem)


def archived_maintenance_row(public_id: str) -> dict[str, Any] | None:
    """A maintenance window's row by its public id, or None when there is none."""
    window = _maintenances_with_rows().filter(public_id=public_id).first()
    if window is None:
        return None
    _, _, rows = component_rows()
    return _maintenance_row(window, rows)


def maintenance_public_id(legacy_id: int) -> str | None:
    """The public id of the window whose page was /maintenance/<legacy_id> (its primary key)."""
    return Maintenance.objects.filter(pk=legacy_id).values_list("public_id", flat=True).first()


def current_impact(incident: Incident, statuses: dict[int, str]) -> str:
    """An open incident's impact now, for the page banner: its override, else what its components'
    statuses say now (its `impact` field keeps the worst it reached, for the record)."""
    if incident.impact_override:
        return incident.impact_override
    affected = [statuses[c.pk] for c in incident.components.all() if c.pk in statuses]
    if not affected:
        return incident.impact
    return max((IMPACT_FOR_COMPONENT_STATUS[ComponentStatus(s)] for s in affected), key=lambda i: IMPACT_RANK[i])


def build_document(now: datetime | None = None) -> dict[str, Any]:
    """Everything the public side shows, as one JSON-ready document (a fixed number of queries)."""
    now = now or timezone.now()
    components, statuses, rows = component_rows()

    since = now - timedelta(days=max(UPTIME_DAYS, 31 * UPTIME_MONTHS) + 1)
    showcased = [c for c in components if c.showcase and not c.is_group]
    spans = status_spans(showcased, since, now)
    for component in showcased:
        rows[component.pk]["uptime"] = component_uptime(spans[component.pk], now)

    incidents = list(
        Incident.objects.filter(published_at__isnull=False)
        .order_by("-declared_at", "-id")
        .prefetch_related(
            Prefetch("updates", queryset=IncidentUpdate.objects.filter(is_public=True).order_by("-created_at", "-id")),
            Prefetch("clocks", queryset=Clock.objects.filter(metric=Metric.UPDATE_CADENCE)),
            "components",
        )[:HISTORY_LIMIT]
    )
    postmortems = published_postmortems(incident.pk for incident in incidents)
    incident_rows = [_incident_row(incident, rows, now, postmortems.get(incident.pk)) for incident in incidents]
    maintenances = (
        Maintenance.objects.filter(scheduled_until__gte=now - timedelta(days=UPTIME_DAYS))
        .order_by("-scheduled_for", "-id")
        .prefetch_related(
            Prefetch("updates", queryset=MaintenanceUpdate.objects.order_by("-created_at", "-id")), "components"
        )[:HISTORY_LIMIT]
    )
    maintenance_rows = [_maintenance_row(maintenance, rows) for maintenance in maintenances]
    open_impacts = [current_impact(i, statuses) for i in incidents if not i.is_resolved]
    leaf_statuses = [statuses[c.pk] for c in components if not c.is_group]
    latest = max(
        [c.updated_at for c in components] + [datetime.fromisoformat(r["updated_at"]) for r in incident_rows],
        default=now,
    )
    return {
        "schema": SCHEMA,
        "generated_at": stamp(now),
        "page": {
            "id": page_id(),
            "name": settings.SITE_NAME,
            "url": settings.SITE_URL,
            "time_zone": settings.DISPLAY_TIME_ZONE,
            "updated_at": stamp(latest),
        },
        "status": overall_status(leaf_statuses, open_impacts),
        "components": [rows[c.pk] for c in components],
        "incidents": incident_rows,
        # When more public incidents exist than the document keeps: the history lists none declared
        # before the oldest one here, and must not say there were none (their pages still answer).
        "incidents_listed_since": incident_rows[-1]["created_at"] if len(incidents) >= HISTORY_LIMIT else None,
        "scheduled_maintenances": maintenance_rows,
    }
