"""The response report: figures per period, trends as server-drawn SVG, benchmarks compared like with like,
and the incidents behind it as CSV or JSON. Reads only; the figures come from incidents.analytics."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from incidents import analytics
from incidents.models import Benchmark, Incident, Severity
from incidents.templatetags.incident_ui import METRIC_LABELS
from incidents.templatetags.incident_ui import duration as format_duration

STATISTIC_FIELDS = {"mean": "mean_seconds", "median": "median_seconds"}
# Chart gridlines fall on round durations: 1, 5, 10, 15, 30 min, 1, 2, 4, 8, 12 h, 1, 2, 7 d…
NICE_STEPS = [60, 300, 600, 900, 1800, 3600, 7200, 14400, 28800, 43200, 86400, 172800, 604800, 2592000]


def duration(seconds: float | None) -> str:
    """'2 h 30 min', '45 s'; an en dash for no value."""
    return "–" if seconds is None else format_duration(seconds)


@dataclass
class Comparison:
    benchmark: Benchmark
    ours: float | None
    verdict: str


def compare(benchmarks: Iterable[Benchmark], metrics: analytics.Metrics) -> list[Comparison]:
    """Each benchmark against our same statistic of the same metric; a band against our median."""
    found = []
    for benchmark in benchmarks:
        figure = metrics.figures.get(benchmark.metric)
        if figure is None:
            continue
        if benchmark.statistic == Benchmark.Statistic.BAND:
            ours = figure.median_seconds
            low, high = benchmark.value_seconds or 0, benchmark.upper_seconds
            if ours is None:
                verdict = "no data"
            elif ours >= low and (high is None or ours < high):
                verdict = "our median is in this band"
            else:
                verdict = "our median is outside this band"
        else:
            ours = getattr(figure, STATISTIC_FIELDS[benchmark.statistic])
            if ours is None or benchmark.value_seconds is None:
                verdict = "no data"
            else:
                ratio = ours / benchmark.value_seconds if benchmark.value_seconds else float("inf")
                verdict = f"ours is {ratio:.1f}× the benchmark" if ratio >= 1 else f"ours is {1 / ratio:.1f}× faster"
        found.append(Comparison(benchmark, ours, verdict))
    return found


# --- trends ---------------------------------------------------------------------------------------


@dataclass
class Bucket:
    start: datetime
    end: datetime
    metrics: analytics.Metrics


def buckets(since: datetime, until: datetime, unit: str) -> list[tuple[datetime, datetime]]:
    """Calendar weeks (from Monday) or months covering [since, until), in UTC."""
    spans = []
    if unit == "week":
        start = (since - timedelta(days=since.weekday())).replace(hour=0, minute=0, second=0, microsecond=0)
        while start < until:
            spans.append((start, start + timedelta(days=7)))
            start += timedelta(days=7)
    else:
        start = since.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        while start < until:
            following = (start + timedelta(days=32)).replace(day=1)
            spans.append((start, following))
            start = following
    return spans


def trend(since: datetime, until: datetime, unit: str, severity: Severity | None, now: datetime) -> list[Bucket]:
    return [
        Bucket(start, end, analytics.compute(start, end, severity, now=now))
        for start, end in buckets(since, until, unit)
    ]


@dataclass
class Chart:
    title: str
    svg: SafeString
    rows: list[tuple[str, str, str]] = field(default_factory=list)  # label, median, p90: the table fallback


def chart(metric: str, trend_buckets: list[Bucket], target: int | None, unit: str) -> Chart:
    """A line chart of the median (and p90, dashed) per bucket, with the target as a line: plain SVG."""
    width, height, left, bottom, top, right = 640, 220, 76, 28, 12, 12
    medians = [b.metrics.figures[metric].median_seconds for b in trend_buckets]
    p90s = [b.metrics.figures[metric].p90_seconds for b in trend_buckets]
    highest = max([v for v in (*medians, *p90s) if v is not None] + [target or 0, 60])
    step = next((step for step in NICE_STEPS if highest / step <= 4), math.ceil(highest / 4))
    scale_top = step * math.ceil(highest * 1.05 / step)
    plot_w, plot_h = width - left - right, height - top - bottom

    def x(index: int) -> float:
        return left + (plot_w * (index + 0.5) / max(1, len(trend_buckets)))

    def y(value: float) -> float:
        return top + plot_h * (1 - value / scale_top)

    def line(values: list[float | None], css: str) -> SafeString:
        points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(values) if v is not None)
        dots = format_html_join(
            "",
            '<circle cx="{}" cy="{}" r="3" class="{}"><title>{}</title></circle>',
            ((f"{x(i):.1f}", f"{y(v):.1f}", css, duration(v)) for i, v in enumerate(values) if v is not None),
        )
        return format_html('<polyline points="{}" class="{}" fill="none"/>{}', points, css, dots)

    label_format = "%d %b" if unit == "week" else "%b %Y"
    labels = format_html_join(
        "",
        '<text x="{}" y="{}" text-anchor="middle" class="chart__axis">{}</text>',
        (
            (f"{x(i):.1f}", height - 8, b.start.strftime(label_format))
            for i, b in enumerate(trend_buckets)
            if i % math.ceil(len(trend_buckets) / 8) == 0  # at most eight labels, so they never overlap
        ),
    )
    ticks = format_html_join(
        "",
        '<line x1="{}" x2="{}" y1="{}" y2="{}" class="chart__grid"/>'
        '<text x="{}" y="{}" text-anchor="end" class="chart__axis">{}</text>',
        (
            (left, width - right, f"{y(v):.1f}", f"{y(v):.1f}", left - 6, f"{y(v) + 4:.1f}", duration(v))
            for v in range(0, int(scale_top) + 1, int(step))
        ),
    )
    target_line = (
        format_html(
            '<line x1="{}" x2="{}" y1="{}" y2="{}" class="chart__target"/>'
            '<text x="{}" y="{}" text-anchor="end" class="chart__target-label">target {}</text>',
            left,
            width - right,
            f"{y(target):.1f}",
            f"{y(target):.1f}",
            width - right,
            f"{y(target) - 4:.1f}",
            duration(target),
        )
        if target
        else ""
    )
    title = f"{METRIC_LABELS[metric]} per {unit}"
    description = "Median (solid) and 90th percentile (dashed) per period" + (
        f", against the {duration(target)} target." if target else "."
    )
    svg = format_html(
        '<svg class="chart" viewBox="0 0 {} {}" role="img" aria-labelledby="chart-{}-title chart-{}-desc">'
        '<title id="chart-{}-title">{}</title><desc id="chart-{}-desc">{}</desc>{}{}{}{}{}</svg>',
        width, height, metric, metric, metric, title, metric, description, ticks, target_line,
        line(p90s, "chart__p90"), line(medians, "chart__median"), labels,
    )  # fmt: skip
    rows = [
        (b.start.strftime(label_format), duration(m), duration(p))
        for b, m, p in zip(trend_buckets, medians, p90s, strict=True)
    ]
    return Chart(title, svg, rows)


# --- export ---------------------------------------------------------------------------------------

EXPORT_FIELDS = [
    "id", "title", "severity", "declared_at", "acknowledged_at", "first_public_update_at", "resolved_at", "reopened",
    "acknowledge_seconds", "acknowledge_target_seconds", "first_update_seconds", "first_update_target_seconds",
    "resolve_seconds", "resolve_target_seconds", "customer_impact_percent", "regions", "impact",
]  # fmt: skip


def export_rows(since: datetime | None, until: datetime | None, severity: Severity | None) -> list[dict[str, Any]]:
    """One row per incident declared in the period: milestones, durations and targets (one query)."""
    incidents = Incident.objects.select_related("severity").order_by("declared_at", "id")
    if since is not None:
        incidents = incidents.filter(declared_at__gte=since)
    if until is not None:
        incidents = incidents.filter(declared_at__lt=until)
    if severity is not None:
        incidents = incidents.filter(severity=severity)
    rows = []
    for incident in incidents:
        row: dict[str, Any] = {
            "id": incident.pk,
            "title": incident.title,
            "severity": incident.severity.key,
            "declared_at": _iso(incident.declared_at),
            "acknowledged_at": _iso(incident.acknowledged_at),
            "first_public_update_at": _iso(incident.published_at),
            "resolved_at": _iso(incident.resolved_at),
            "reopened": incident.reopened_count,
            "customer_impact_percent": (
                float(incident.customer_impact_percent) if incident.customer_impact_percent is not None else None
            ),
            "regions": incident.regions,
            "impact": incident.impact,
        }
        for name, (column, _) in analytics.METRICS.items():
            moment = getattr(incident, column)
            row[f"{name}_seconds"] = round((moment - incident.declared_at).total_seconds()) if moment else None
            row[f"{name}_target_seconds"] = getattr(incident, f"{name}_target")
        rows.append(row)
    return rows


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment else None


def _cell(value: Any) -> Any:
    """A spreadsheet must not run a title as a formula: text starting with = + - @ gets a leading '."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return f"'{value}"
    return value


def to_csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=EXPORT_FIELDS, lineterminator="\r\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {key: _cell(value) for key, value in {**row, "regions": "; ".join(row["regions"] or [])}.items()}
        )
    return out.getvalue()
