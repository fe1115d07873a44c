"""Statuspage's object shapes: the v2 public API and the webhooks both speak them.

The snapshot document (incidents/public.py) carries a few extra keys of ours, so every object is
rebuilt from a whitelist of Statuspage's fields, in Statuspage's order, rather than passed through.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

PAGE_FIELDS = ("id", "name", "url", "time_zone", "updated_at")
STATUS_FIELDS = ("indicator", "description")
COMPONENT_FIELDS = (
    "id", "name", "status", "created_at", "updated_at", "position", "description", "showcase", "start_date",
    "group_id", "page_id", "group", "only_show_if_degraded",
)  # fmt: skip
GROUP_FIELDS = (*COMPONENT_FIELDS, "components")
INCIDENT_FIELDS = (
    "id", "name", "status", "created_at", "updated_at", "monitoring_at", "resolved_at", "impact", "shortlink",
    "started_at", "page_id", "incident_updates", "components",
)  # fmt: skip
MAINTENANCE_FIELDS = (*INCIDENT_FIELDS, "scheduled_for", "scheduled_until")
UPDATE_FIELDS = (
    "id", "status", "body", "incident_id", "created_at", "updated_at", "display_at", "affected_components",
    "deliver_notifications", "custom_tweet", "tweet_id",
)  # fmt: skip
AFFECTED_COMPONENT_FIELDS = ("code", "name", "old_status", "new_status")


# --- objects ------------------------------------------------------------------------------------


def _pick(row: dict[str, Any], fields: Iterable[str]) -> dict[str, Any]:
    return {field: row.get(field) for field in fields}


def page(document: dict[str, Any]) -> dict[str, Any]:
    return _pick(document["page"], PAGE_FIELDS)


def status(document: dict[str, Any]) -> dict[str, Any]:
    return _pick(document["status"], STATUS_FIELDS)


def component(row: dict[str, Any]) -> dict[str, Any]:
    result = _pick(row, GROUP_FIELDS if row.get("group") else COMPONENT_FIELDS)
    result["description"] = row.get("description") or None
    if row.get("group"):
        result["components"] = list(row.get("components") or [])
        # Statuspage dates uptime from a component's start_date; a group has none of its own.
        result["start_date"] = None
    return result


def _update(row: dict[str, Any]) -> dict[str, Any]:
    result = _pick(row, UPDATE_FIELDS)
    affected = row.get("affected_components")
    result["affected_components"] = [_pick(a, AFFECTED_COMPONENT_FIELDS) for a in affected] if affected else None
    return result


def _with_updates(row: dict[str, Any], fields: Iterable[str]) -> dict[str, Any]:
    result = _pick(row, fields)
    updates = sorted(row.get("incident_updates") or [], key=lambda u: moment(u.get("display_at")), reverse=True)
    result["incident_updates"] = [_update(u) for u in updates]
    result["components"] = [component(c) for c in row.get("components") or []]
    return result


# Statuspage's post-mortem fields, on incidents whose post-mortem is published.
POSTMORTEM_FIELDS = ("postmortem_body", "postmortem_body_last_updated_at", "postmortem_published_at")


def incident(row: dict[str, Any]) -> dict[str, Any]:
    result = _with_updates(row, INCIDENT_FIELDS)
    if row.get("postmortem_body") is not None:
        result.update(_pick(row, POSTMORTEM_FIELDS))
    return result


def maintenance(row: dict[str, Any]) -> dict[str, Any]:
    return _with_updates(row, MAINTENANCE_FIELDS)


def moment(value: str | None) -> datetime:
    return datetime.fromisoformat(value) if value else datetime.min.replace(tzinfo=UTC)
