"""The response report at /manage/reports/: figures, trends, benchmarks, and exports of what is behind them."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from django import forms
from django.http import HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from incidents import access, analytics, reports
from incidents.forms import SeverityChoiceField
from incidents.models import Benchmark, Severity
from incidents.templatetags.incident_ui import METRIC_LABELS
from incidents.views import HtmxHttpRequest, staff_login_required

DEFAULT_DAYS = 90


class ReportForm(forms.Form):
    since = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}), label="From (UTC)")
    until = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}), label="To (UTC, inclusive)")
    severity = SeverityChoiceField(
        queryset=Severity.objects.none(), required=False, empty_label="All severities", to_field_name="key", short=True
    )
    unit = forms.ChoiceField(choices=[("week", "Week"), ("month", "Month")], required=False, label="Trend per")

    def __init__(self, *args: Any, severities: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        severity_field = self.fields["severity"]
        assert isinstance(severity_field, forms.ModelChoiceField)
        severity_field.queryset = severities

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        for name in ("since", "until", "severity", "unit"):
            if hasattr(self.data, "getlist") and len(self.data.getlist(name)) > 1:
                self.add_error(name, "Give this once.")  # not the last of several, silently
        since, until = cleaned.get("since"), cleaned.get("until")
        if since and until and until < since:
            self.add_error("until", "The end comes before the start.")
        elif since and not until and since > timezone.now().date():
            self.add_error("since", "The start is after today: choose an earlier day, or an end after it.")
        return cleaned


def _period(form: ReportForm, today: date) -> tuple[datetime, datetime, Severity | None, str]:
    data = form.cleaned_data if form.is_valid() else {}
    last = data.get("until") or today
    first = data.get("since") or last - timedelta(days=DEFAULT_DAYS - 1)
    since = datetime.combine(first, time.min, tzinfo=UTC)
    until = datetime.combine(last + timedelta(days=1), time.min, tzinfo=UTC)
    unit = data.get("unit") or ("week" if (until - since).days <= 120 else "month")
    return since, until, data.get("severity"), unit


def _form(request: HtmxHttpRequest) -> ReportForm:
    severities = access.severities_for(request.user)
    if request.GET:
        return ReportForm(request.GET, severities=severities)
    today = timezone.now().date()
    initial = {"since": today - timedelta(days=DEFAULT_DAYS - 1), "until": today, "unit": "week"}
    return ReportForm(initial=initial, severities=severities)


@staff_login_required
@require_GET
def report(request: HtmxHttpRequest) -> HttpResponse:
    form = _form(request)
    now = timezone.now()
    since, until, severity, unit = _period(form, now.date())
    metrics = analytics.compute(since, until, severity, now=now)
    trend = reports.trend(since, until, unit, severity, now)
    charts = [
        reports.chart(name, trend, severity.target_for(name) if severity else None, unit) for name in analytics.METRICS
    ]
    benchmarks = list(Benchmark.objects.all())
    rows = [
        {
            "name": name,
            "label": METRIC_LABELS[name],
            "target": severity.target_for(name) if severity else None,
            "figure": metrics.figures[name],
        }
        for name in analytics.METRICS
    ]
    query = request.GET.urlencode()
    context = {
        "form": form,
        "since": since,
        "until": until - timedelta(days=1),
        "severity": severity,
        "unit": unit,
        "metrics": metrics,
        "rows": rows,
        "charts": charts,
        "comparisons": reports.compare(benchmarks, metrics),
        "query": query,
        "severities": list(access.severities_for(request.user)),
    }
    return render(
        request, "incidents/reports.html", context, status=422 if form.is_bound and not form.is_valid() else 200
    )


def _export(request: HtmxHttpRequest) -> tuple[ReportForm, datetime, datetime, Severity | None]:
    form = _form(request)
    since, until, severity, _ = _period(form, timezone.now().date())
    return form, since, until, severity


def _bad_filter(form: ReportForm) -> HttpResponse:
    errors = {field: [str(e) for e in errs] for field, errs in form.errors.items()}
    return HttpResponse(
        json.dumps({"detail": "Check the report's filters.", "errors": errors}),
        status=422,
        content_type="application/json",
    )


@staff_login_required
@require_GET
def export_csv(request: HtmxHttpRequest) -> HttpResponse:
    form, since, until, severity = _export(request)
    if form.is_bound and not form.is_valid():
        return _bad_filter(form)
    body = reports.to_csv(reports.export_rows(since, until, severity))
    response = HttpResponse(body, content_type="text/csv; charset=utf-8")
    name = f"incidents-{since:%Y%m%d}-{until - timedelta(days=1):%Y%m%d}.csv"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


@staff_login_required
@require_GET
def export_json(request: HtmxHttpRequest) -> HttpResponse:
    form, since, until, severity = _export(request)
    if form.is_bound and not form.is_valid():
        return _bad_filter(form)
    payload = {
        "since": since.isoformat().replace("+00:00", "Z"),
        "until": until.isoformat().replace("+00:00", "Z"),
        "severity": severity.key if severity else None,
        "metrics": analytics.compute(since, until, severity).as_dict(),
        "incidents": reports.export_rows(since, until, severity),
    }
    response = HttpResponse(json.dumps(payload, indent=1), content_type="application/json")
    response["Content-Disposition"] = (
        f'attachment; filename="report-{since:%Y%m%d}-{until - timedelta(days=1):%Y%m%d}.json"'
    )
    return response
