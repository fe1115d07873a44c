"""Presentation of the incident domain: times in the display zone, durations, clocks and badges.

The models carry no labels or CSS classes; this library maps domain values to what the staff pages
show, so a colour never stands alone (every level also has an icon and a word).
"""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from functools import cache
from typing import Any

from django import template
from django.conf import settings
from django.utils import timezone

from incidents import clocks
from incidents.models import Clock, ClockState, ComponentStatus, Incident, Metric

register = template.Library()


@cache
def _display_zone(name: str) -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(name)


def to_display_zone(value: datetime) -> datetime:
    return value.astimezone(_display_zone(settings.DISPLAY_TIME_ZONE))


def _zone_label(local: datetime) -> str:
    name = local.tzname() or settings.DISPLAY_TIME_ZONE
    # Zones without an abbreviation report a bare offset ("+04"); say what it is an offset from.
    return f"UTC{name}" if name[:1] in "+-" else name


@register.filter
def display_time(value: datetime | None, now: datetime | None = None) -> str:
    """'14:05 UTC' today (in the display zone), '27 Nov, 14:05 UTC' otherwise, with the year if not this one."""
    if value is None:
        return ""
    local = to_display_zone(value)
    today = to_display_zone(now or timezone.now())
    if local.date() == today.date():
        text = f"{local:%H:%M}"
    elif local.year == today.year:
        text = f"{local.day} {local:%b}, {local:%H:%M}"
    else:
        text = f"{local.day} {local:%b} {local.year}, {local:%H:%M}"
    return f"{text} {_zone_label(local)}"


@register.filter
def display_datetime(value: datetime | None) -> str:
    """Always with the date: '28 Nov 2026, 14:05:09 UTC' (timeline and milestones)."""
    if value is None:
        return ""
    local = to_display_zone(value)
    return f"{local.day} {local:%b %Y}, {local:%H:%M:%S} {_zone_label(local)}"


@register.filter
def iso(value: datetime | None) -> str:
    """Machine-readable UTC for <time datetime> and data attributes."""
    if value is None:
        return ""
    return value.astimezone(zoneinfo.ZoneInfo("UTC")).isoformat().replace("+00:00", "Z")


_UNITS = (("d", 86400), ("h", 3600), ("min", 60), ("s", 1))


@register.filter
def duration(value: timedelta | float | int | Decimal | None) -> str:
    """The two largest units, the smaller left out when zero: '2 h 30 min', '3 d', '4 min 5 s', '45 s'.
    Rounded to the second, as the timeline's events are ('acknowledged after 55 s' in both for 54.6 s)."""
    if value is None:
        return ""
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    total = round(abs(seconds))
    for index, (label, size) in enumerate(_UNITS):
        if total >= size or label == "s":
            amount, rest = divmod(total, size)
            text = f"{amount} {label}"
            if index + 1 < len(_UNITS):
                smaller_label, smaller_size = _UNITS[index + 1]
                if smaller := rest // smaller_size:
                    text += f" {smaller} {smaller_label}"
            return text
    return "0 s"


@register.filter
def seconds_text(value: float | None) -> str:
    """A duration for a report cell; an en dash when there is no value."""
    return "–" if value is None else duration(value)


METRIC_LABELS = {
    "acknowledge": "Time to acknowledge",
    "first_update": "Time to first public update",
    "resolve": "Time to resolve",
}


@register.filter
def metric_label(value: str) -> str:
    return METRIC_LABELS.get(value, value)


@register.filter
def since(start: datetime | None, end: datetime | None = None) -> str:
    """The time from `start` to `end` (default: now) as a duration: `declared_at|since:resolved_at`."""
    if start is None:
        return ""
    return duration((end or timezone.now()) - start)


@register.filter
def percent(value: Decimal | float | None) -> str:
    """'25%', '12.5%'; empty when unknown."""
    if value is None:
        return ""
    return f"{Decimal(value).normalize():f}%"


# --- clocks -------------------------------------------------------------------------------------

LEVEL_WORDS = {"ok": "On track", "warning": "Due soon", "breached": "Overdue"}


@dataclass(frozen=True)
class ClockView:
    """What a countdown shows for one clock at one moment."""

    clock: Clock
    label: str
    running: bool
    level: str  # ok | warning | breached
    state: str
    state_label: str
    due_at: datetime | None
    warn_at: datetime | None
    remaining_seconds: float
    elapsed_seconds: float

    @property
    def level_word(self) -> str:
        if not self.running:
            return self.state_label
        return LEVEL_WORDS[self.level]

    @property
    def overdue(self) -> bool:
        return self.remaining_seconds < 0


def clock_view(clock: Clock, now: datetime) -> ClockView:
    running = clock.running_since is not None
    return ClockView(
        clock=clock,
        label=Metric(clock.metric).label,
        running=running,
        level=clocks.display_level(clock, now),
        state=clock.state,
        state_label=ClockState(clock.state).label,
        due_at=clock.due_at,
        warn_at=clocks.threshold_at(clock, clocks.THRESHOLDS[0][0]),
        remaining_seconds=clocks.remaining(clock, now),
        elapsed_seconds=clocks.elapsed(clock, now),
    )


def _clocks_by_metric(incident: Incident) -> dict[str, Clock]:
    # .all() reads the prefetched clocks; no query per incident.
    return {clock.metric: clock for clock in incident.clocks.all()}


@register.simple_tag(takes_context=True)
def incident_clocks(context: template.Context, incident: Incident) -> list[ClockView]:
    """Every clock of the incident, in the order of the response it measures."""
    now = context.get("now") or timezone.now()
    order = list(Metric.values)
    found = sorted(_clocks_by_metric(incident).values(), key=lambda c: order.index(c.metric))
    return [clock_view(clock, now) for clock in found]


@register.simple_tag(takes_context=True)
def dashboard_clock(context: template.Context, incident: Incident, which: str) -> ClockView | None:
    """The clock a dashboard column shows: 'acknowledge', 'next_update' or 'resolve'.

    The next update is promised by the cadence clock once the first public update is out, and by the
    first-update clock before that.
    """
    now = context.get("now") or timezone.now()
    by_metric = _clocks_by_metric(incident)
    if which == "next_update":
        clock = by_metric.get(Metric.UPDATE_CADENCE) or by_metric.get(Metric.FIRST_UPDATE)
    else:
        clock = by_metric.get(which)
    return clock_view(clock, now) if clock is not None else None


@register.inclusion_tag("incidents/countdown.html")
def countdown(view: ClockView | None, compact: bool = False) -> dict[str, Any]:
    return {"view": view, "compact": compact}


# --- badges -------------------------------------------------------------------------------------


@register.filter
def css_token(value: str) -> str:
    """A domain value as a class-name suffix ('partial_outage' → 'partial-outage').

    The stylesheet gives each such class a colour AND an icon, so no state is told by colour alone.
    """
    return str(value).replace("_", "-")


@register.simple_tag
def server_now() -> str:
    """The server's time, so countdown.js can correct for a client clock that is off."""
    return iso(timezone.now())


@register.filter
def component_status_label(value: str) -> str:
    """'partial_outage' → 'Partial outage' (component changes are stored as raw values)."""
    try:
        return str(ComponentStatus(value).label)
    except ValueError:
        return value


@dataclass(frozen=True)
class Milestone:
    label: str
    at: datetime | None
    after: timedelta | None  # since the declaration


@register.simple_tag
def milestones(incident: Incident) -> list[Milestone]:
    stamps = (
        ("Declared", incident.declared_at),
        ("Acknowledged", incident.acknowledged_at),
        ("Identified", incident.identified_at),
        ("Mitigated", incident.mitigated_at),
        ("Resolved", incident.resolved_at),
    )
    return [Milestone(label, at, at - incident.declared_at if at else None) for label, at in stamps]


@register.simple_tag
def brand_name() -> str:
    """settings.SITE_NAME. The auth views put the request's host into `site_name`, so read the setting."""
    return str(settings.SITE_NAME)
