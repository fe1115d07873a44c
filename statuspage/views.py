"""Public pages (status, history, incident, maintenance, uptime), served from the published snapshot.

Every page renders from the snapshot document alone, once per version and route (statuspage/http.py
caches the bytes and answers 304 to a client that has them), without touching the database. The one
exception keeps old links working: an incident or maintenance window older than the document keeps
(the newest 500 incidents, the windows of the last 90 days) has its page read from the database, and
while the database is down that page says it is temporarily unavailable (503) instead.
The templates get a plain context, with no request and no context processors, so nothing in them
can reach for `user`, `messages` or a per-request CSP nonce: the scripts are same-origin files that
the policy's 'self' admits, and the cached bytes are the same for every reader.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import date, datetime
from functools import wraps
from typing import Any

from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, HttpResponsePermanentRedirect
from django.template.loader import render_to_string
from django.urls import reverse
from django.views.decorators.http import require_safe

from incidents import public
from incidents.models import is_public_id
from statuspage.http import (
    CACHE_CONTROL,
    SnapshotUnavailable,
    bytes_response,
    cached_render,
    published,
    snapshot_response,
)
from statuspage.snapshot import Published

log = logging.getLogger(__name__)

HTML = "text/html; charset=utf-8"
# History pages hold this many calendar months each, newest first (page 1 ends with the current month).
HISTORY_MONTHS_PER_PAGE = 3
RECENT_DAYS = 7
RETRY_AFTER_SECONDS = 30
FINISHED = {"resolved", "postmortem"}
ACTIVE_MAINTENANCE = {"in_progress", "verifying"}

View = Callable[..., HttpResponse]


def public_page(view: View) -> View:
    """GET and HEAD only; with no snapshot anywhere, a 503 page that asks to come back, never a 500."""

    @require_safe
    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            return view(request, *args, **kwargs)
        except SnapshotUnavailable:
            response = HttpResponse(render_to_string("public/unavailable.html"), content_type=HTML, status=503)
            response["Retry-After"] = str(RETRY_AFTER_SECONDS)
            response["Cache-Control"] = "no-store"
            return response

    return wrapper


def document_context(document: dict[str, Any]) -> dict[str, Any]:
    """What public/base.html needs from a snapshot document."""
    return {
        "document": document,
        "page": document["page"],
        "time_zone": document["page"].get("time_zone") or "UTC",
        "indicator": document["status"]["indicator"],
    }


def _render(template_name: str, snapshot: Published, context: dict[str, Any]) -> bytes:
    return render_to_string(template_name, {**document_context(snapshot.document), **context}).encode()


def _is_htmx(request: HttpRequest) -> bool:
    # The same test snapshot_response uses to pick the fragment's ETag and cache key.
    return bool(request.headers.get("HX-Request"))


def _not_found(request: HttpRequest, snapshot: Published, what: str) -> HttpResponse:
    """The 404 page, rendered from the snapshot (one body per version: the unknown id is not in it)."""
    body = cached_render(snapshot, f"404:{what}", lambda s: _render("public/not_found.html", s, {"what": what}))
    response = HttpResponse(body, content_type=HTML, status=404)
    response["Cache-Control"] = CACHE_CONTROL
    return response


# --- reading the document -----------------------------------------------------------------------


def _visible(component: dict[str, Any]) -> bool:
    return not (component.get("only_show_if_degraded") and component["status"] == "operational")


def component_tree(document: dict[str, Any]) -> list[dict[str, Any]]:
    """Top-level rows in the document's order; a group carries its visible children."""
    by_id = {c["id"]: c for c in document["components"]}
    tree = []
    for row in document["components"]:
        if row.get("group_id"):
            continue
        if row.get("group"):
            children = [by_id[i] for i in row.get("components", []) if i in by_id and _visible(by_id[i])]
            if children:
                tree.append({"component": row, "children": children, "open": row["status"] != "operational"})
        elif _visible(row):
            tree.append({"component": row, "children": None, "open": False})
    return tree


def display_names(document: dict[str, Any]) -> dict[str, str]:
    """Component id → 'Group - Component', as Statuspage names affected components."""
    by_id = {c["id"]: c for c in document["components"]}
    names = {}
    for row in document["components"]:
        group = by_id.get(row.get("group_id") or "")
        names[row["id"]] = f"{group['name']} - {row['name']}" if group else row["name"]
    return names


def _named(components: list[dict[str, Any]], names: dict[str, str]) -> list[dict[str, Any]]:
    return [{**c, "display_name": names.get(c["id"], c["name"])} for c in components]


def _moment(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _month_of(value: str) -> str:
    # Stamps carry the page zone's offset, so their own date is the page's calendar date.
    return datetime.fromisoformat(value).strftime("%Y-%m")


def _add_months(month: date, count: int) -> date:
    index = month.year * 12 + month.month - 1 + count
    return date(index // 12, index % 12 + 1, 1)


def _live_maintenances(document: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(in progress, upcoming): cancelled and completed windows are left out."""
    rows = [m for m in document.get("scheduled_maintenances", []) if not m.get("cancelled_at")]
    active = [m for m in rows if m["status"] in ACTIVE_MAINTENANCE]
    upcoming = sorted((m for m in rows if m["status"] == "scheduled"), key=lambda m: m["scheduled_for"])
    return active, upcoming


def status_context(document: dict[str, Any]) -> dict[str, Any]:
    names = display_names(document)
    incidents = document.get("incidents", [])
    generated = datetime.fromisoformat(document["generated_at"])
    active = [{**i, "components": _named(i["components"], names)} for i in incidents if i["status"] not in FINISHED]
    recent = [
        i
        for i in incidents
        if i["status"] in FINISHED
        and (resolved := _moment(i.get("resolved_at") or i.get("updated_at"))) is not None
        and (generated - resolved).days < RECENT_DAYS
    ]
    maintenance_active, maintenance_upcoming = _live_maintenances(document)
    leaves = [c for c in document["components"] if not c.get("group")]
    return {
        "under_maintenance": document["status"]["indicator"] == "none"
        and any(c["status"] == "under_maintenance" for c in leaves),
        "tree": component_tree(document),
        "active_incidents": active,
        "recent_incidents": recent,
        # Components a running window covers, shown beside their own status when an outage wins over it.
        "in_maintenance": {c["id"] for m in maintenance_active for c in m["components"]},
        "maintenance_active": [{**m, "components": _named(m["components"], names)} for m in maintenance_active],
        "maintenance_upcoming": [{**m, "components": _named(m["components"], names)} for m in maintenance_upcoming],
        "recent_days": RECENT_DAYS,
    }


def completed_maintenance(document: dict[str, Any]) -> list[dict[str, Any]]:
    """Windows that were carried out (the document keeps those of the last 90 days), for the history."""
    return [w for w in document.get("scheduled_maintenances", []) if w["status"] == "completed"]


def history_pages(document: dict[str, Any]) -> tuple[date, int]:
    """The current month (page zone) and how many pages reach back to the oldest incident or window."""
    current = datetime.fromisoformat(document["generated_at"]).date().replace(day=1)
    months = [_month_of(i["created_at"]) for i in document.get("incidents", [])]
    months += [_month_of(w["started_at"]) for w in completed_maintenance(document)]
    oldest = date.fromisoformat(min(months) + "-01") if months else current
    span = (current.year - oldest.year) * 12 + current.month - oldest.month + 1
    return current, max(1, -(-span // HISTORY_MONTHS_PER_PAGE))


def history_context(document: dict[str, Any], page: int) -> dict[str, Any]:
    current, pages = history_pages(document)
    first = _add_months(current, -(page - 1) * HISTORY_MONTHS_PER_PAGE)
    keys = [_add_months(first, -n).strftime("%Y-%m") for n in range(HISTORY_MONTHS_PER_PAGE)]
    by_month: dict[str, list[dict[str, Any]]] = {key: [] for key in keys}
    for incident in document.get("incidents", []):
        month = _month_of(incident["created_at"])
        if month in by_month:
            by_month[month].append(incident)
    for window in completed_maintenance(document):
        month = _month_of(window["started_at"])
        if month in by_month:
            by_month[month].append({**window, "is_maintenance": True})
    for items in by_month.values():
        items.sort(key=lambda item: item["started_at"], reverse=True)  # stable: the document's order on ties
    # Months before the oldest incident the document keeps are not "no incidents": they are not listed.
    since = document.get("incidents_listed_since")
    cutoff = _month_of(since) if since else ""
    return {
        "months": [
            {"key": key, "incidents": by_month[key], "unlisted": key < cutoff, "partial": key == cutoff} for key in keys
        ],
        "history_limit": len(document.get("incidents", [])),
        "page_number": page,
        "pages": pages,
        "newer_page": page - 1 if page > 1 else None,
        "older_page": page + 1 if page < pages else None,
        "range_start": keys[-1],
        "range_end": keys[0],
    }


def uptime_context(document: dict[str, Any]) -> dict[str, Any]:
    rows = []
    for entry in component_tree(document):  # the status page's order: each group's children together
        group = entry["component"] if entry["children"] else None
        for row in entry["children"] or [entry["component"]]:
            if "uptime" in row:
                rows.append({**row, "group_name": group["name"] if group else ""})
    months = [m["month"] for m in rows[0]["uptime"]["months"]] if rows else []
    # Leave out the oldest months in which no component existed yet (newest month first).
    known = [i for i in range(len(months)) if any(r["uptime"]["months"][i]["uptime_percent"] is not None for r in rows)]
    shown = (known[-1] + 1) if known else min(1, len(months))
    for row in rows:
        row["months_shown"] = row["uptime"]["months"][:shown]
    return {"rows": rows, "months": months[:shown]}


# --- views --------------------------------------------------------------------------------------


@public_page
def status(request: HttpRequest) -> HttpResponse:
    """The status page; an htmx poll (HX-Request) gets only its live part."""
    template = "public/status.html#live" if _is_htmx(request) else "public/status.html"
    return snapshot_response(
        request,
        "status",
        lambda s: _render(template, s, status_context(s.document)),
        HTML,
        vary_on_htmx=True,
    )


def history_paths(document: dict[str, Any]) -> list[str]:
    """Every history page's path, for the static export: /history, /history/2, …"""
    _, pages = history_pages(document)
    return ["/history", *(f"/history/{n}" for n in range(2, pages + 1))]


@public_page
def history(request: HttpRequest, page: int | None = None) -> HttpResponse:
    """Three calendar months a page; pages are paths (/history/2), so the static export has a file each."""
    snapshot = published()
    _, pages = history_pages(snapshot.document)
    number = 1 if page is None else page
    if not 1 <= number <= pages:
        return _not_found(request, snapshot, "history page")
    if page == 1:
        return HttpResponsePermanentRedirect(reverse("history"))
    return snapshot_response(
        request,
        f"history/{number}",
        lambda s: _render("public/history.html", s, history_context(s.document, number)),
        HTML,
    )


def _find(rows: list[dict[str, Any]], row_id: str) -> dict[str, Any] | None:
    return next((row for row in rows if row["id"] == row_id), None)


def _incident_context(row: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    return {"incident": {**row, "components": _named(row["components"], names)}}


def _maintenance_context(row: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    return {"incident": {**row, "components": _named(row["components"], names)}, "is_maintenance": True}


def _database_unavailable(snapshot: Published, what: str) -> HttpResponse:
    """The page of an old incident or window while the database is down: a 503 in the page's style."""
    body = cached_render(
        snapshot, f"503:{what}", lambda s: _render("public/database_unavailable.html", s, {"what": what})
    )
    response = HttpResponse(body, content_type=HTML, status=503)
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    response["Cache-Control"] = "no-store"
    return response


def _from_database(
    request: HttpRequest,
    snapshot: Published,
    what: str,
    read: Callable[[], dict[str, Any] | None],
    context: Callable[[dict[str, Any], dict[str, str]], dict[str, Any]],
) -> HttpResponse:
    """The page of an incident or window the snapshot no longer holds, read from the database (a few
    queries, on the rare visit to an old link), in the current snapshot's frame."""
    try:
        row = read()
    except DatabaseError:
        log.warning("public page of an old %s: the database is unavailable", what, exc_info=True)
        return _database_unavailable(snapshot, what)
    if row is None:
        return _not_found(request, snapshot, what)
    body = _render("public/incident.html", snapshot, context(row, display_names(snapshot.document)))
    return bytes_response(request, body, HTML)


# Primary keys as the database keeps them (bigint): longer digit strings are no id of ours.
MAX_ID_DIGITS = 18


def _as_id(value: str) -> int | None:
    """A primary key written as our URLs write it (digits, no sign or leading zero), else None."""
    if not (value.isascii() and value.isdigit()) or len(value) > MAX_ID_DIGITS or value != str(int(value)):
        return None
    return int(value)


@public_page
def incident(request: HttpRequest, incident_id: str) -> HttpResponse:
    snapshot = published()
    found = _find(snapshot.document.get("incidents", []), incident_id)
    if found is None:
        number = _as_id(incident_id)
        if number is None:
            return _not_found(request, snapshot, "incident")
        return _from_database(
            request, snapshot, "incident", lambda: public.archived_incident_row(number), _incident_context
        )

    def render(s: Published) -> bytes:
        row = _find(s.document.get("incidents", []), incident_id) or found
        return _render("public/incident.html", s, _incident_context(row, display_names(s.document)))

    return snapshot_response(request, f"incident/{found['id']}", render, HTML)


def _redirect_to_maintenance(request: HttpRequest, public_id: str) -> HttpResponse:
    query = request.META.get("QUERY_STRING", "")
    return HttpResponsePermanentRedirect(reverse("maintenance", args=[public_id]) + (f"?{query}" if query else ""))


def _legacy_maintenance(request: HttpRequest, snapshot: Published, legacy_id: int) -> HttpResponse:
    """/maintenance/<number>, the page's address before windows had public ids: 301 to the new one."""
    rows = snapshot.document.get("scheduled_maintenances", [])
    found = next((row for row in rows if row.get("legacy_id") == str(legacy_id)), None)
    if found is not None:
        return _redirect_to_maintenance(request, found["id"])
    try:
        public_id = public.maintenance_public_id(legacy_id)
    except DatabaseError:
        log.warning("old maintenance link: the database is unavailable", exc_info=True)
        return _database_unavailable(snapshot, "maintenance")
    if public_id is None:
        return _not_found(request, snapshot, "maintenance")
    return _redirect_to_maintenance(request, public_id)


@public_page
def maintenance(request: HttpRequest, maintenance_id: str) -> HttpResponse:
    snapshot = published()
    found = _find(snapshot.document.get("scheduled_maintenances", []), maintenance_id)
    if found is None:
        legacy_id = _as_id(maintenance_id)
        if legacy_id is not None:
            return _legacy_maintenance(request, snapshot, legacy_id)
        if not is_public_id(maintenance_id):
            return _not_found(request, snapshot, "maintenance")
        return _from_database(
            request,
            snapshot,
            "maintenance",
            lambda: public.archived_maintenance_row(maintenance_id),
            _maintenance_context,
        )

    def render(s: Published) -> bytes:
        row = _find(s.document.get("scheduled_maintenances", []), maintenance_id) or found
        return _render("public/incident.html", s, _maintenance_context(row, display_names(s.document)))

    return snapshot_response(request, f"maintenance/{found['id']}", render, HTML)


@public_page
def uptime(request: HttpRequest) -> HttpResponse:
    return snapshot_response(
        request, "uptime", lambda s: _render("public/uptime.html", s, uptime_context(s.document)), HTML
    )


@require_safe
def without_trailing_slash(request: HttpRequest, path: str) -> HttpResponse:
    """/history/ and the like: the page lives without the slash, so send the reader there (301)."""
    query = request.META.get("QUERY_STRING", "")
    return HttpResponsePermanentRedirect(f"/{path}" + (f"?{query}" if query else ""))
