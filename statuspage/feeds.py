"""Feeds from the published snapshot: Atom and RSS of incident and maintenance updates, iCalendar of maintenance.

Like the v2 API, each is rendered once per snapshot version and served without the database.
Feed readers get one entry per public update (newest first); calendar apps get one event per
maintenance window, with a stable UID and the window's SEQUENCE, so a reschedule moves the event
and a cancellation (STATUS:CANCELLED) removes it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from django.http import HttpRequest, HttpResponse
from django.utils import feedgenerator

from statuspage.api_v2 import public_response
from statuspage.snapshot import Published

FEED_LIMIT = 50
STATUS_LABELS = {
    "investigating": "Investigating",
    "identified": "Identified",
    "monitoring": "Monitoring",
    "resolved": "Resolved",
    "postmortem": "Post-mortem",
}
# XML 1.0 allows no C0 control character but tab, newline and carriage return; Django's feed writer
# raises on them, so a stray one pasted into an update must not take the feed down.
XML_FORBIDDEN = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
ICS_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
ICS_LINE_OCTETS = 75


def _moment(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _xml_text(value: str | None) -> str:
    return XML_FORBIDDEN.sub("", value or "")


# --- Atom and RSS -------------------------------------------------------------------------------


def feed_entries(document: dict[str, Any], limit: int = FEED_LIMIT) -> list[dict[str, Any]]:
    """The newest public incident and maintenance updates, one entry each (the document holds only
    public ones, and the maintenance windows of the last 90 days)."""
    site = document["page"]["url"].rstrip("/")
    entries: list[dict[str, Any]] = []
    pages = [(f"{site}/incidents/{row['id']}", row) for row in document.get("incidents", [])]
    pages += [(f"{site}/maintenance/{row['id']}", row) for row in document.get("scheduled_maintenances", [])]
    for link, incident in pages:
        for update in incident.get("incident_updates", []):
            label = STATUS_LABELS.get(update["status"], update["status"].replace("_", " ").capitalize())
            entries.append(
                {
                    "title": _xml_text(f"[{label}] {incident['name']}"),
                    "link": link,
                    "unique_id": f"{link}#update-{update['id']}",
                    "description": _xml_text(update.get("body_html") or update.get("body")),
                    "pubdate": _moment(update["display_at"]),
                    "updateddate": _moment(update["updated_at"]),
                }
            )
    entries.sort(key=lambda e: e["pubdate"], reverse=True)  # stable: ties keep the document's order
    return entries[:limit]


class _SnapshotFeedMixin:
    """Without entries, date the feed by the snapshot rather than by the clock (same bytes per version)."""

    items: list[dict[str, Any]]
    snapshot_date: datetime

    def latest_post_date(self) -> datetime:
        dates = [item["updateddate"] or item["pubdate"] for item in self.items]
        return max(dates, default=self.snapshot_date)


class HistoryAtomFeed(_SnapshotFeedMixin, feedgenerator.Atom1Feed):
    pass


class HistoryRssFeed(_SnapshotFeedMixin, feedgenerator.Rss201rev2Feed):
    pass


def render_feed(snapshot: Published, feed_class: type[HistoryAtomFeed] | type[HistoryRssFeed], path: str) -> bytes:
    document = snapshot.document
    site = document["page"]["url"].rstrip("/")
    name = _xml_text(document["page"]["name"])
    feed = feed_class(
        title=f"{name} status history",
        link=f"{site}/",
        description=f"Incident updates from the {name} status page",
        language="en",
        author_name=name,
        feed_url=f"{site}{path}",
        feed_guid=f"{site}{path}",
    )
    feed.snapshot_date = snapshot.generated_at
    for entry in feed_entries(document):
        feed.add_item(unique_id_is_permalink=False, **entry)
    return feed.writeString("utf-8").encode()


def history_atom(request: HttpRequest) -> HttpResponse:
    return public_response(
        request,
        "history.atom",
        lambda snapshot: render_feed(snapshot, HistoryAtomFeed, "/history.atom"),
        HistoryAtomFeed.content_type,
    )


def history_rss(request: HttpRequest) -> HttpResponse:
    return public_response(
        request,
        "history.rss",
        lambda snapshot: render_feed(snapshot, HistoryRssFeed, "/history.rss"),
        HistoryRssFeed.content_type,
    )


# --- iCalendar (RFC 5545, written by hand: a handful of properties needs no library) -----------


def ics_text(value: str) -> str:
    """A TEXT value: backslash, semicolon, comma and newlines escaped, other controls dropped."""
    value = value.replace("\r\n", "\n").replace("\r", "\n")
    value = value.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,")
    return "\\n".join(ICS_CONTROL.sub("", line) for line in value.split("\n"))


def fold(line: str) -> str:
    """Fold a content line at 75 octets, never inside a UTF-8 sequence; continuations start with a space."""
    if len(line.encode()) <= ICS_LINE_OCTETS:
        return line
    parts: list[str] = []
    current: list[str] = []
    size, limit = 0, ICS_LINE_OCTETS
    for char in line:
        octets = len(char.encode())
        if size + octets > limit:
            parts.append("".join(current))
            current, size, limit = [], 0, ICS_LINE_OCTETS - 1
        current.append(char)
        size += octets
    parts.append("".join(current))
    return "\r\n ".join(parts)


def ics_utc(value: str) -> str:
    return _moment(value).astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def _component_names(document: dict[str, Any], rows: Iterable[dict[str, Any]]) -> list[str]:
    groups = {c["id"]: c["name"] for c in document.get("components", []) if c.get("group")}
    return [f"{groups[c['group_id']]} - {c['name']}" if c.get("group_id") in groups else c["name"] for c in rows]


def _event_lines(document: dict[str, Any], window: dict[str, Any], host: str) -> Iterator[str]:
    updates = window.get("incident_updates") or []  # newest first
    affected = _component_names(document, window.get("components") or [])
    # The latest word (started, rescheduled, cancelled: why) above the announcement of the work.
    bodies = [updates[0]["body"], updates[-1]["body"]] if updates else []
    description = "\n\n".join(dict.fromkeys(body.strip() for body in bodies if body.strip()))
    if affected:
        description += f"\n\nAffected: {', '.join(affected)}"
    url = window.get("shortlink") or document["page"]["url"]
    description += f"\n\n{url}"
    yield "BEGIN:VEVENT"
    yield f"UID:maintenance-{window['id']}@{host}"
    yield f"SEQUENCE:{int(window.get('sequence') or 0)}"
    # The last change to the window, so a calendar can tell a newer copy from an older one.
    yield f"DTSTAMP:{ics_utc(window['updated_at'])}"
    yield f"CREATED:{ics_utc(window['created_at'])}"
    yield f"LAST-MODIFIED:{ics_utc(window['updated_at'])}"
    yield f"DTSTART:{ics_utc(window['scheduled_for'])}"
    yield f"DTEND:{ics_utc(window['scheduled_until'])}"
    yield f"SUMMARY:{ics_text(window['name'])}"
    yield f"DESCRIPTION:{ics_text(description.strip())}"
    yield f"URL:{url}"
    yield "STATUS:CANCELLED" if window.get("cancelled_at") else "STATUS:CONFIRMED"
    yield "TRANSP:TRANSPARENT"
    yield "END:VEVENT"


def calendar_lines(document: dict[str, Any]) -> Iterator[str]:
    page = document["page"]
    host = urlsplit(page["url"]).hostname or "signalpost"
    yield "BEGIN:VCALENDAR"
    yield "VERSION:2.0"
    yield "PRODID:-//Signalpost//Maintenance calendar//EN"
    yield "CALSCALE:GREGORIAN"
    yield "METHOD:PUBLISH"
    yield f"X-WR-CALNAME:{ics_text(page['name'] + ' maintenance')}"
    yield "REFRESH-INTERVAL;VALUE=DURATION:PT1H"
    yield "X-PUBLISHED-TTL:PT1H"
    windows = sorted(document.get("scheduled_maintenances", []), key=lambda w: (_moment(w["scheduled_for"]), w["id"]))
    for window in windows:
        yield from _event_lines(document, window, host)
    yield "END:VCALENDAR"


def render_calendar(snapshot: Published) -> bytes:
    return "".join(f"{fold(line)}\r\n" for line in calendar_lines(snapshot.document)).encode()


def maintenance_ics(request: HttpRequest) -> HttpResponse:
    return public_response(request, "maintenance.ics", render_calendar, "text/calendar; charset=utf-8")
