"""Presentation of the published snapshot on the public pages.

Everything here works on the snapshot document alone (strings, numbers, lists): no model is loaded
and no query is made. Each state is shown with an icon AND a word; the stylesheet adds the colour.
Times are written in the page's zone with the zone named, inside <time datetime>, and
static/js/public.js rewrites them into the reader's own zone when JavaScript runs.
"""

from __future__ import annotations

import html
import math
import zoneinfo
from datetime import date, datetime
from functools import cache
from typing import Any

from django import template
from django.utils.html import format_html, format_html_join, strip_tags
from django.utils.safestring import SafeString
from django.utils.text import Truncator

from incidents.templatetags.incident_ui import duration

register = template.Library()

COMPONENT_STATUS_LABELS = {
    "operational": "Operational",
    "degraded_performance": "Degraded performance",
    "partial_outage": "Partial outage",
    "major_outage": "Major outage",
    "under_maintenance": "Under maintenance",
}
UPDATE_STATUS_LABELS = {
    "investigating": "Investigating",
    "identified": "Identified",
    "monitoring": "Monitoring",
    "resolved": "Resolved",
    "postmortem": "Post-mortem",
    "scheduled": "Scheduled",
    "in_progress": "In progress",
    "verifying": "Verifying",
    "completed": "Completed",
    "cancelled": "Cancelled",
}
IMPACT_LABELS = {
    "none": "No impact",
    "minor": "Minor impact",
    "major": "Major impact",
    "critical": "Critical impact",
    "maintenance": "Maintenance",
}
# A bar's class: one letter per worst status of the day (n: no data; none for a clean day), to keep
# 90 bars a component light.
BAR_CLASSES = {
    "operational": "",
    "under_maintenance": "u",
    "degraded_performance": "d",
    "partial_outage": "p",
    "major_outage": "m",
}
INDICATOR_TOKENS = {"none": "operational", "minor": "minor", "major": "major", "critical": "critical"}


@cache
def _zone(name: str) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return zoneinfo.ZoneInfo("UTC")


def parse(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def zone_label(local: datetime, zone_name: str) -> str:
    name = local.tzname() or zone_name
    # Zones without an abbreviation report a bare offset ("+04"); say what it is an offset from.
    return f"UTC{name}" if name[:1] in "+-" else name


def in_zone(value: str | None, zone_name: str) -> datetime | None:
    moment = parse(value)
    return moment.astimezone(_zone(zone_name)) if moment is not None else None


def day_text(day: date) -> str:
    return f"{day.day} {day:%b %Y}"


def _time_text(local: datetime, style: str, zone_name: str) -> str:
    clock = f"{local:%H:%M}"
    if style == "time":
        return f"{clock} {zone_label(local, zone_name)}"
    if style == "date":
        return day_text(local.date())
    return f"{day_text(local.date())}, {clock} {zone_label(local, zone_name)}"


@register.simple_tag(takes_context=True)
def when(context: template.Context, value: str | None, style: str = "datetime") -> SafeString | str:
    """<time datetime="…" data-local="datetime">8 Nov 2026, 14:05 CET</time>, in the page's zone.

    style: "datetime" (the default), "time" (14:05 CET) or "date" (8 Nov 2026).
    """
    zone_name = context.get("time_zone") or "UTC"
    local = in_zone(value, zone_name)
    if local is None:
        return ""
    return format_html(
        '<time datetime="{}" data-local="{}">{}</time>',
        local.isoformat(timespec="seconds"),
        style,
        _time_text(local, style, zone_name),
    )


@register.simple_tag(takes_context=True)
def when_range(context: template.Context, start: str | None, end: str | None) -> SafeString | str:
    """'8 Nov 2026, 15:05 CET to 20:20 CET': the end's date is left out when it is the same day.

    The end carries its start (data-start), so that public.js, which writes both in the reader's zone,
    shows the end's date whenever it falls on another day there ('21:17 PST to 2 Mar 2026, 00:16 PST').
    """
    zone_name = context.get("time_zone") or "UTC"
    first, last = in_zone(start, zone_name), in_zone(end, zone_name)
    if first is None or last is None:
        return when(context, start) if last is None else when(context, end)
    style = "time" if first.date() == last.date() else "datetime"
    end_html = format_html(
        '<time datetime="{}" data-local="end" data-start="{}">{}</time>',
        last.isoformat(timespec="seconds"),
        first.isoformat(timespec="seconds"),
        _time_text(last, style, zone_name),
    )
    return format_html("{} to {}", when(context, start), end_html)


@register.simple_tag(takes_context=True)
def next_update(
    context: template.Context,
    incident: dict[str, Any],
    promise: str = "Next update by",
    overdue: str = "Update overdue since",
    tag: str = "p",
    css: str = "next-update",
) -> SafeString | str:
    """'Next update by 03:09 UTC', or once that time has passed 'Update overdue since 03:09 UTC'; a time
    on another day than the page's shows its date.

    The words are the server's judgement when the document was built (publishing republishes when the
    promised time passes), for readers without JavaScript. The page itself may be a static file or a
    cached copy, so public.js judges again against the reader's clock (data-due and the two phrasings)
    and keeps judging while the page stays open.
    """
    zone_name = context.get("time_zone") or "UTC"
    due = in_zone(incident.get("next_update_at"), zone_name)
    if due is None or tag not in {"p", "span"}:
        return ""
    document = context.get("document") or {}
    built = in_zone(document.get("generated_at"), zone_name)
    is_overdue = bool(incident.get("next_update_overdue")) or (built is not None and due < built)
    style = "time" if built is not None and due.date() == built.date() else "datetime"
    return format_html(
        '<{tag} class="{css}{state}" data-due="{due}" data-promise="{promise}" data-overdue="{overdue}">'
        '<span><span data-due-label>{label}</span> <time datetime="{due}" data-local="nearby">{text}</time></span>'
        "</{tag}>",
        tag=tag,
        css=css,
        state=" is-overdue" if is_overdue else "",
        due=due.isoformat(timespec="seconds"),
        promise=promise,
        overdue=overdue,
        label=overdue if is_overdue else promise,
        text=_time_text(due, style, zone_name),
    )


@register.filter
def status_label(value: str) -> str:
    """A component status in words: 'partial_outage' → 'Partial outage'."""
    return COMPONENT_STATUS_LABELS.get(value, value.replace("_", " ").capitalize())


@register.filter
def update_status_label(value: str) -> str:
    """An incident or maintenance status in words: 'in_progress' → 'In progress'."""
    return UPDATE_STATUS_LABELS.get(value, value.replace("_", " ").capitalize())


@register.filter
def impact_label(value: str) -> str:
    return IMPACT_LABELS.get(value, value.capitalize())


@register.filter
def token(value: str) -> str:
    """A document value as a class-name suffix ('partial_outage' → 'partial-outage')."""
    return str(value).replace("_", "-")


@register.filter
def indicator_token(value: str) -> str:
    return INDICATOR_TOKENS.get(value, "operational")


def percent_text(value: float | None) -> str:
    """Uptime as people read it: '100%', '99.95%', '92.4%'. Rounded down, so a bad day never shows 100%."""
    if value is None:
        return ""
    if value >= 100:
        return "100%"
    floored = math.floor(value * 100) / 100
    return f"{floored:.2f}".rstrip("0").rstrip(".") + "%"


@register.filter
def uptime_percent(value: float | None) -> str:
    return percent_text(value)


@register.filter
def seconds_duration(value: int | float | None) -> str:
    return duration(value) if value is not None else ""


@register.filter
def scope_text(scope: dict[str, Any] | None) -> str:
    """'About 45% of customers in US affected' from an incident's impact_scope; empty when unknown."""
    if not scope:
        return ""
    share = scope.get("customer_impact_percent")
    regions = [str(r) for r in scope.get("regions") or [] if str(r).strip()]
    where = ""
    if regions:
        where = " in " + (regions[0] if len(regions) == 1 else f"{', '.join(regions[:-1])} and {regions[-1]}")
    if share is not None:
        amount = f"{float(share):.2f}".rstrip("0").rstrip(".")
        return f"About {amount}% of customers{where} affected"
    if where:
        return f"Customers{where} affected"
    return ""


def bar_label(day: dict[str, Any]) -> str:
    """'8 Nov 2026: 92.4% uptime, major outage (2 h 10 min down)': what one uptime bar says."""
    text = day_text(date.fromisoformat(day["date"]))
    percent = day.get("uptime_percent")
    if percent is None:
        return f"{text}: no data"
    label = f"{text}: {percent_text(percent)} uptime"
    worst = day.get("worst_status") or "operational"
    if worst != "operational":
        label += f", {status_label(worst).lower()}"
    if seconds := day.get("outage_seconds"):
        # Whole minutes once there is one: "17 min down", not "17 min 24 s down".
        # Weighted by the uptime rule (a partial outage counts 0.3), so say so rather than "down".
        label += f" ({duration(seconds if seconds < 60 else round(seconds / 60) * 60)} of counted downtime)"
    return label


def _bar_class(day: dict[str, Any]) -> str:
    if day.get("uptime_percent") is None:
        return "n"
    return BAR_CLASSES.get(day.get("worst_status") or "operational", "")


@register.simple_tag
def uptime_bars(component: dict[str, Any]) -> SafeString:
    """One list item per day holding its words: what a screen reader reads, and public.js shows on hover.

    The lightest markup that still gives every bar its own label: a clean day is a bare <li> (the
    stylesheet's default colour), no SVG coordinates, no duplicated title and text. 90 days cost
    about 3 KB of HTML per component, a few hundred bytes gzipped.
    """
    days = component.get("uptime", {}).get("days", [])
    bars = format_html_join(
        "",
        "<li{}>{}</li>",
        ((format_html(' class="{}"', css) if (css := _bar_class(d)) else "", bar_label(d)) for d in days),
    )
    return format_html(
        '<ol class="bars" aria-label="{}">{}</ol>', f"{component['name']}: uptime per day, last {len(days)} days", bars
    )


@register.filter
def uptime_summary(component: dict[str, Any]) -> str:
    """A sentence for screen readers: the 90-day uptime and the days that were not clean."""
    uptime = component.get("uptime") or {}
    days = uptime.get("days", [])
    overall = uptime.get("uptime_percent")
    name = component["name"]
    if overall is None:
        return f"{name}: no uptime data for the last {len(days)} days."
    bad = [
        d
        for d in days
        if d.get("uptime_percent") is not None and (d.get("worst_status") or "operational") != "operational"
    ]
    text = f"{name}: {percent_text(overall)} uptime over the last {len(days)} days."
    if not bad:
        return text + " No incidents recorded."
    worst = min(bad, key=lambda d: (d["uptime_percent"], d["date"]))
    days_word = "day" if len(bad) == 1 else "days"
    return f"{text} {len(bad)} {days_word} with incidents or maintenance; the worst was {bar_label(worst)}."


@register.filter
def month_label(value: str) -> str:
    """'2026-11' → 'November 2026'."""
    try:
        return f"{date.fromisoformat(value + '-01'):%B %Y}"
    except ValueError:
        return value


@register.filter
def month_short(value: str) -> str:
    """'2026-11' → 'Nov 2026'."""
    try:
        return f"{date.fromisoformat(value + '-01'):%b %Y}"
    except ValueError:
        return value


@register.filter
def excerpt(body_html: str, words: int = 40) -> str:
    """The text of an update's (sanitised) HTML, cut to a number of words; escaped again on output."""
    text = " ".join(html.unescape(strip_tags(body_html or "")).split())
    return Truncator(text).words(words, truncate="…")


@register.filter
def uptime_level(value: float | None) -> str:
    """A class-name suffix for an uptime figure: good (99.9% and up), fair (99% and up) or poor."""
    if value is None:
        return "none"
    if value >= 99.9:
        return "good"
    return "fair" if value >= 99 else "poor"
