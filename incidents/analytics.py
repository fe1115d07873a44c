"""Response analytics: how fast incidents were acknowledged, first told to customers, and resolved.

For a period (incidents declared in [since, until)) and optionally one severity, each metric has:
  measured            incidents with a value (acknowledged, first public update posted, resolved)
  median_seconds,     over the measured values; median and p90 as PostgreSQL's percentile_cont
  p90_seconds,        defines them (linear interpolation between the two nearest ranks)
  mean_seconds
  breached            incidents past their target: measured over it, or still waiting past it (an
                      incident never acknowledged, never told, or not yet resolved is never dropped)
  attainment_percent  met / (met + breached), over incidents that had a target for the metric
Values and targets are the incident's own: acknowledged_at, published_at (first public update) and
resolved_at minus declared_at, against the targets its clocks were given when it was declared (or
retargeted), which the actions copy onto the incident row for this. A reopened incident counts
until its final resolve. An incident resolved without ever being acknowledged has its acknowledgment
filled in at the resolve (the lifecycle's rule), so it is measured, usually as a breach. An incident
resolved without a public update has no first-update value; it is a breach if the target passed
before it was resolved.

On PostgreSQL everything is one SQL statement over one scan of the incidents (percentile_cont,
FILTER; bench/analytics.py times it on 100,000 incidents). Elsewhere (SQLite) the database returns
each incident's values and targets and this module computes the same figures.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connection
from django.utils import timezone

from incidents.models import Incident, Metric, Severity

METRICS = {
    # name in the API → (the incident's timestamp, the clock that holds the target)
    "acknowledge": ("acknowledged_at", Metric.ACKNOWLEDGE),
    "first_update": ("published_at", Metric.FIRST_UPDATE),
    "resolve": ("resolved_at", Metric.RESOLVE),
}


@dataclass
class Figure:
    measured: int = 0
    breached: int = 0
    met: int = 0
    median_seconds: float | None = None
    p90_seconds: float | None = None
    mean_seconds: float | None = None

    @property
    def attainment_percent(self) -> float | None:
        judged = self.met + self.breached
        return round(100 * self.met / judged, 1) if judged else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "median_seconds": _round(self.median_seconds),
            "p90_seconds": _round(self.p90_seconds),
            "mean_seconds": _round(self.mean_seconds),
            "attainment_percent": self.attainment_percent,
            "measured": self.measured,
            "breached": self.breached,
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


@dataclass
class Metrics:
    count: int
    figures: dict[str, Figure]

    def as_dict(self) -> dict[str, Any]:
        return {"count": self.count, **{name: figure.as_dict() for name, figure in self.figures.items()}}


def percentile_cont(values: Sequence[float], fraction: float) -> float | None:
    """PostgreSQL's percentile_cont over sorted values: interpolate between the two nearest ranks."""
    if not values:
        return None
    position = fraction * (len(values) - 1)
    lower, upper = math.floor(position), math.ceil(position)
    return values[lower] + (values[upper] - values[lower]) * (position - lower)


def compute(
    since: datetime | None = None,
    until: datetime | None = None,
    severity: Severity | None = None,
    *,
    now: datetime | None = None,
    in_sql: bool | None = None,
) -> Metrics:
    """The figures for incidents declared in [since, until), of one severity or all."""
    now = now or timezone.now()
    if in_sql is None:
        in_sql = connection.vendor == "postgresql"
    return _in_postgresql(since, until, severity, now) if in_sql else _in_python(since, until, severity, now)


def _filters(since: datetime | None, until: datetime | None, severity: Severity | None) -> tuple[str, list[Any]]:
    clauses: list[str] = ["TRUE"]
    params: list[Any] = []
    if since is not None:
        clauses.append("i.declared_at >= %s")
        params.append(since)
    if until is not None:
        clauses.append("i.declared_at < %s")
        params.append(until)
    if severity is not None:
        clauses.append("i.severity_id = %s")
        params.append(severity.pk)
    return " AND ".join(clauses), params


def _in_postgresql(since: datetime | None, until: datetime | None, severity: Severity | None, now: datetime) -> Metrics:
    """One scan of the incidents (their targets are on their rows) and every figure of every metric from
    it: one sort per metric gives both percentiles."""
    where, params = _filters(since, until, severity)
    incident = Incident._meta.db_table
    # date_part gives double precision directly (EXTRACT gives numeric, slower to compute and to sort).
    columns = ", ".join(
        f"date_part('epoch', i.{column} - i.declared_at) AS {name}, i.{name}_target"
        for name, (column, _) in METRICS.items()
    )
    figures_sql = ", ".join(
        f"count({name}), "
        f"percentile_cont(ARRAY[0.5, 0.9]) WITHIN GROUP (ORDER BY {name}), "  # ordered-set aggregates skip NULLs
        f"avg({name}), "
        f"count(*) FILTER (WHERE {name} <= {name}_target), "
        f"count(*) FILTER (WHERE {name} > {name}_target OR ({name} IS NULL AND waited > {name}_target))"
        for name in METRICS
    )
    # Names from the models and METRICS only; every value is a parameter.
    sql = f"""
        WITH m AS (
            SELECT {columns}, date_part('epoch', COALESCE(i.resolved_at, %s) - i.declared_at) AS waited
            FROM {incident} i
            WHERE {where}
        )
        SELECT count(*), {figures_sql} FROM m
    """  # noqa: S608
    with connection.cursor() as cursor:
        cursor.execute(sql, [now, *params])
        row = cursor.fetchone()
    assert row is not None
    figures = {}
    for index, name in enumerate(METRICS):
        measured, percentiles, mean, met, breached = row[1 + 5 * index : 6 + 5 * index]
        median, p90 = percentiles if percentiles is not None else (None, None)
        figures[name] = Figure(
            measured=measured,
            breached=breached,
            met=met,
            median_seconds=None if median is None else float(median),
            p90_seconds=None if p90 is None else float(p90),
            mean_seconds=None if mean is None else float(mean),
        )
    return Metrics(row[0], figures)


def _in_python(since: datetime | None, until: datetime | None, severity: Severity | None, now: datetime) -> Metrics:
    incidents = Incident.objects.all()
    if since is not None:
        incidents = incidents.filter(declared_at__gte=since)
    if until is not None:
        incidents = incidents.filter(declared_at__lt=until)
    if severity is not None:
        incidents = incidents.filter(severity=severity)
    rows = list(incidents.values_list("id", "declared_at", "acknowledged_at", "published_at", "resolved_at"))
    targets: dict[tuple[int, str], int] = {}
    for incident_id, *row_targets in incidents.values_list("id", *(f"{name}_target" for name in METRICS)):
        for name, value in zip(METRICS, row_targets, strict=True):
            if value is not None:
                targets[(incident_id, name)] = value
    figures = {}
    for name, (column, _) in METRICS.items():
        values: list[float] = []
        figure = Figure()
        for incident_id, declared, acknowledged, published, resolved in rows:
            moment = {"acknowledged_at": acknowledged, "published_at": published, "resolved_at": resolved}[column]
            value = (moment - declared).total_seconds() if moment is not None else None
            target = targets.get((incident_id, name))
            if value is not None:
                values.append(value)
            if target is None:
                continue
            waited = ((resolved or now) - declared).total_seconds()
            if value is not None and value <= target:
                figure.met += 1
            elif value is not None or waited > target:
                figure.breached += 1
        values.sort()
        figure.measured = len(values)
        figure.median_seconds = percentile_cont(values, 0.5)
        figure.p90_seconds = percentile_cont(values, 0.9)
        figure.mean_seconds = sum(values) / len(values) if values else None
        figures[name] = figure
    return Metrics(len(rows), figures)
