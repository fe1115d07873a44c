"""The Statuspage-compatible public API (`/api/v2/…`), served from the published snapshot.

Existing Statuspage clients (monitoring checks, widgets, chat bots) read these endpoints unchanged:
the objects keep Statuspage's field names, order, types and enums. The snapshot document carries a
few extra keys of ours (uptime, impact scope, body_html, sequence, …), so every object is rebuilt
from a whitelist of Statuspage's fields rather than passed through. Each endpoint's bytes are
rendered once per snapshot version (statuspage/http.py); a request makes no database query.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, JsonResponse

from incidents.statuspage_format import (
    component,
    incident,
    maintenance,
    moment,
    page,
    status,
)
from statuspage.http import SnapshotUnavailable, snapshot_response
from statuspage.snapshot import Published

# Statuspage caps its lists at 50 objects.
LIST_LIMIT = 50
RETRY_AFTER_SECONDS = 30
JSON = "application/json"

UNRESOLVED_EXCLUDED = frozenset({"resolved", "postmortem"})
UPCOMING_STATUSES = frozenset({"scheduled"})
ACTIVE_STATUSES = frozenset({"in_progress", "verifying"})


# --- selections ---------------------------------------------------------------------------------


def components(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [component(row) for row in document.get("components", [])]


def incidents(document: dict[str, Any]) -> list[dict[str, Any]]:
    """The 50 most recent, any status (the document lists the newest first)."""
    return [incident(row) for row in document.get("incidents", [])[:LIST_LIMIT]]


def unresolved_incidents(document: dict[str, Any]) -> list[dict[str, Any]]:
    rows = [row for row in document.get("incidents", []) if row.get("status") not in UNRESOLVED_EXCLUDED]
    return [incident(row) for row in rows[:LIST_LIMIT]]


def _maintenance_rows(document: dict[str, Any], statuses: frozenset[str] | None = None) -> list[dict[str, Any]]:
    """Maintenances that are not cancelled (cancelled ones stay in the document for the calendar)."""
    return [
        row
        for row in document.get("scheduled_maintenances", [])
        if row.get("cancelled_at") is None and (statuses is None or row.get("status") in statuses)
    ]


def maintenances(document: dict[str, Any]) -> list[dict[str, Any]]:
    """The 50 most recent windows, latest start first."""
    rows = sorted(_maintenance_rows(document), key=lambda r: (moment(r["scheduled_for"]), r["id"]), reverse=True)
    return [maintenance(row) for row in rows[:LIST_LIMIT]]


def _soonest_first(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = sorted(rows, key=lambda r: (moment(r["scheduled_for"]), r["id"]))
    return [maintenance(row) for row in rows[:LIST_LIMIT]]


def upcoming_maintenances(document: dict[str, Any]) -> list[dict[str, Any]]:
    return _soonest_first(_maintenance_rows(document, UPCOMING_STATUSES))


def active_maintenances(document: dict[str, Any]) -> list[dict[str, Any]]:
    return _soonest_first(_maintenance_rows(document, ACTIVE_STATUSES))


# --- payloads -----------------------------------------------------------------------------------


def summary_payload(document: dict[str, Any]) -> dict[str, Any]:
    return {
        "page": page(document),
        "components": components(document),
        "incidents": unresolved_incidents(document),
        "scheduled_maintenances": _soonest_first(_maintenance_rows(document, ACTIVE_STATUSES | UPCOMING_STATUSES)),
        "status": status(document),
    }


PAYLOADS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "summary": summary_payload,
    "status": lambda d: {"page": page(d), "status": status(d)},
    "components": lambda d: {"page": page(d), "components": components(d)},
    "incidents": lambda d: {"page": page(d), "incidents": incidents(d)},
    "incidents/unresolved": lambda d: {"page": page(d), "incidents": unresolved_incidents(d)},
    "scheduled-maintenances": lambda d: {"page": page(d), "scheduled_maintenances": maintenances(d)},
    "scheduled-maintenances/upcoming": lambda d: {"page": page(d), "scheduled_maintenances": upcoming_maintenances(d)},
    "scheduled-maintenances/active": lambda d: {"page": page(d), "scheduled_maintenances": active_maintenances(d)},
}


def encode(payload: dict[str, Any]) -> bytes:
    """Compact and pure ASCII, so no client can get the charset wrong; key order as Statuspage's."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=True).encode()


# --- responses ----------------------------------------------------------------------------------


def public_response(
    request: HttpRequest, key: str, render: Callable[[Published], bytes], content_type: str
) -> HttpResponse:
    """GET/HEAD from the snapshot (ETag, 304), CORS open to every origin, a 503 without a snapshot."""
    if request.method == "OPTIONS":
        response = HttpResponse(status=204)
        response["Allow"] = "GET, HEAD, OPTIONS"
        response["Access-Control-Allow-Methods"] = "GET, HEAD, OPTIONS"
        response["Access-Control-Allow-Headers"] = "If-None-Match, If-Modified-Since"
        response["Access-Control-Max-Age"] = "86400"
    elif request.method not in ("GET", "HEAD"):
        response = HttpResponseNotAllowed(["GET", "HEAD", "OPTIONS"])
    else:
        try:
            response = snapshot_response(request, key, render, content_type)
        except SnapshotUnavailable:
            response = JsonResponse({"error": "The status page has not been published yet; retry shortly."}, status=503)
            response["Retry-After"] = str(RETRY_AFTER_SECONDS)
            response["Cache-Control"] = "no-store"
    response["Access-Control-Allow-Origin"] = "*"
    response["Access-Control-Expose-Headers"] = "ETag, Last-Modified, Retry-After"
    return response


def _endpoint(name: str) -> Callable[[HttpRequest], HttpResponse]:
    build = PAYLOADS[name]

    def render(snapshot: Published) -> bytes:
        return encode(build(snapshot.document))

    def view(request: HttpRequest) -> HttpResponse:
        return public_response(request, f"api/v2/{name}.json", render, JSON)

    view.__name__ = view.__qualname__ = name.replace("/", "_").replace("-", "_")
    view.__doc__ = f"/api/v2/{name}.json, Statuspage-compatible."
    return view


summary = _endpoint("summary")
status_json = _endpoint("status")
components_json = _endpoint("components")
incidents_json = _endpoint("incidents")
unresolved_json = _endpoint("incidents/unresolved")
maintenances_json = _endpoint("scheduled-maintenances")
upcoming_json = _endpoint("scheduled-maintenances/upcoming")
active_json = _endpoint("scheduled-maintenances/active")
