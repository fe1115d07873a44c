"""Response metrics against figures worked out by hand, on SQLite and PostgreSQL alike.

Six SEV2 incidents (targets: acknowledge 15 min, first public update 30 min, resolve 8 h):
  A  acknowledged at 5 min, public at once, resolved at 2 h
  B  acknowledged at 30 min, first public update at 40 min, resolved at 10 h
  C  never acknowledged, never public, resolved at 1 h (the resolve fills the acknowledgment in)
  D  acknowledged at 10 min, public at once, resolved at 1 h, reopened at 2 h, resolved at 5 h
  E  open, public at once, unacknowledged for 1 h (past its target: a breach, never dropped)
  F  open for 5 min, internal, unacknowledged (within every target: not judged yet)
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client

from incidents import actions, analytics
from tests import factories

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 2, 2, 9, 0, tzinfo=UTC)
NOW = T0 + timedelta(days=10)
MIN, HOUR = 60, 3600

EXPECTED = {
    "count": 6,
    # [300, 600, 1800, 3600]; met A, D; breached B, C, E
    "acknowledge": {
        "median_seconds": 1200.0, "p90_seconds": 3060.0, "mean_seconds": 1575.0,
        "attainment_percent": 40.0, "measured": 4, "breached": 3,
    },
    # [0, 0, 0, 2400]; met A, D, E; breached B (late), C (resolved after the target, never told)
    "first_update": {
        "median_seconds": 0.0, "p90_seconds": 1680.0, "mean_seconds": 600.0,
        "attainment_percent": 60.0, "measured": 4, "breached": 2,
    },
    # [3600, 7200, 18000, 36000]; met A, C, D; breached B; E and F still within 8 h
    "resolve": {
        "median_seconds": 12600.0, "p90_seconds": 30600.0, "mean_seconds": 16200.0,
        "attainment_percent": 75.0, "measured": 4, "breached": 1,
    },
}  # fmt: skip


def sev2(staff: User, title: str, at: datetime, *, public: bool = True) -> Any:
    return factories.declare(actor=staff, title=title, severity_key="sev2", is_public=public, at=at)


@pytest.fixture
def incidents(staff: User) -> dict[str, Any]:
    a = sev2(staff, "A", T0)
    actions.acknowledge_incident(a, actor=staff, at=T0 + timedelta(minutes=5))
    actions.resolve_incident(a, actor=staff, at=T0 + timedelta(hours=2))

    b_start = T0 + timedelta(days=1)
    b = sev2(staff, "B", b_start, public=False)
    actions.acknowledge_incident(b, actor=staff, at=b_start + timedelta(minutes=30))
    actions.post_update(
        b, actor=staff, body="Looking.", public_status="investigating", at=b_start + timedelta(minutes=40)
    )
    actions.resolve_incident(b, actor=staff, at=b_start + timedelta(hours=10))

    c_start = T0 + timedelta(days=2)
    c = sev2(staff, "C", c_start, public=False)
    actions.resolve_incident(c, actor=staff, at=c_start + timedelta(hours=1))

    d_start = T0 + timedelta(days=3)
    d = sev2(staff, "D", d_start)
    actions.acknowledge_incident(d, actor=staff, at=d_start + timedelta(minutes=10))
    actions.resolve_incident(d, actor=staff, at=d_start + timedelta(hours=1))
    actions.reopen_incident(d, actor=staff, reason="Errors again", at=d_start + timedelta(hours=2))
    actions.resolve_incident(d, actor=staff, at=d_start + timedelta(hours=5))

    e = sev2(staff, "E", NOW - timedelta(hours=1))
    f = sev2(staff, "F", NOW - timedelta(minutes=5), public=False)
    return {"a": a, "b": b, "c": c, "d": d, "e": e, "f": f}


def test_it_computes_the_figures_worked_out_by_hand(incidents: dict[str, Any]) -> None:
    assert analytics.compute(now=NOW).as_dict() == EXPECTED


def test_the_sql_and_the_fallback_agree(incidents: dict[str, Any]) -> None:
    fallback = analytics.compute(now=NOW, in_sql=False).as_dict()
    assert fallback == EXPECTED
    if connection.vendor == "postgresql":
        assert analytics.compute(now=NOW, in_sql=True).as_dict() == fallback


def test_it_filters_by_period_and_severity(incidents: dict[str, Any], staff: User) -> None:
    other = factories.declare(actor=staff, title="SEV1", severity_key="sev1", at=T0 + timedelta(days=4))
    actions.acknowledge_incident(other, actor=staff, at=T0 + timedelta(days=4, minutes=1))

    assert analytics.compute(now=NOW, severity=factories.severity("sev2")).as_dict() == EXPECTED
    everything = analytics.compute(now=NOW)
    assert everything.count == 7
    assert everything.figures["acknowledge"].measured == 5

    first_two_days = analytics.compute(T0, T0 + timedelta(days=2), now=NOW)
    assert first_two_days.count == 2  # A and B: C was declared at the start of day 2, which is excluded
    assert first_two_days.figures["acknowledge"].median_seconds == (300 + 1800) / 2


def test_no_incidents_give_empty_figures(db: None) -> None:
    figures = analytics.compute(now=NOW).as_dict()
    assert figures["count"] == 0
    assert figures["resolve"] == {
        "median_seconds": None, "p90_seconds": None, "mean_seconds": None,
        "attainment_percent": None, "measured": 0, "breached": 0,
    }  # fmt: skip


def test_the_incident_row_carries_its_clocks_targets(staff: User) -> None:
    incident = sev2(staff, "retargeted", T0)
    assert (incident.acknowledge_target, incident.first_update_target, incident.resolve_target) == (900, 1800, 28800)
    actions.change_severity(incident, actor=staff, severity=factories.severity("sev1"), at=T0 + timedelta(minutes=1))
    incident.refresh_from_db()
    targets = dict(incident.clocks.values_list("metric", "target_seconds"))
    assert (
        (incident.acknowledge_target, incident.first_update_target, incident.resolve_target)
        == (targets["acknowledge"], targets["first_update"], targets["resolve"])
        == (300, 1800, 14400)
    )  # first update was already met: its clock keeps the target it ran against


def test_percentile_cont_is_postgresqls() -> None:
    assert analytics.percentile_cont([1.0], 0.9) == 1.0
    assert analytics.percentile_cont([1.0, 2.0, 3.0, 4.0, 5.0], 0.5) == 3.0
    assert analytics.percentile_cont([10.0, 20.0], 0.9) == pytest.approx(19.0)
    assert analytics.percentile_cont([], 0.5) is None


# --- GET /api/v1/metrics ----------------------------------------------------------------------


@pytest.fixture
def token(staff: User) -> str:
    from incidents.models import ApiToken

    return ApiToken.issue(staff, name="metrics")[1] if hasattr(ApiToken, "issue") else _token(staff)


def _token(staff: User) -> str:
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    call_command("create_api_token", staff.get_username(), stdout=out)
    return out.getvalue().strip().split()[-1]


def test_the_api_answers_the_metrics(incidents: dict[str, Any], client: Client, token: str) -> None:
    import time_machine

    auth = {"Authorization": f"Bearer {token}"}
    with time_machine.travel(NOW, tick=False):
        everything = client.get("/api/v1/metrics", headers=auth)
        sev2_only = client.get("/api/v1/metrics?severity=sev2&since=2026-02-02T09:00:00Z", headers=auth)
        period = client.get("/api/v1/metrics?since=2026-02-02T09:00:00Z&until=2026-02-04T09:00:00Z", headers=auth)
        bad = client.get("/api/v1/metrics?severity=sev9", headers=auth)
        backwards = client.get("/api/v1/metrics?since=2026-03-01T00:00:00Z&until=2026-02-01T00:00:00Z", headers=auth)
    assert everything.status_code == 200
    assert everything.json() == EXPECTED
    assert sev2_only.json() == EXPECTED
    assert period.json()["count"] == 2
    assert bad.status_code == 422
    assert "sev9" in bad.json()["detail"]
    assert backwards.status_code == 422
    assert client.get("/api/v1/metrics").status_code == 401


# --- the report page and its exports ----------------------------------------------------------------


def test_the_report_shows_the_figures_the_benchmarks_and_the_trends(
    incidents: dict[str, Any], staff_client: Client, outsider_client: Client
) -> None:
    import importlib

    import time_machine
    from django.apps import apps

    importlib.import_module("incidents.migrations.0009_benchmarks").seed(apps, None)  # gone if a flush ran
    with time_machine.travel(NOW, tick=False):
        page = staff_client.get("/manage/reports/?since=2026-02-01&until=2026-02-12&severity=sev2&unit=week")
        assert outsider_client.get("/manage/reports/").status_code == 403
    html = page.content.decode()
    assert page.status_code == 200
    assert "6 incidents" in html
    assert "20 min" in html  # the median time to acknowledge (1,200 s)
    assert "40.0%" in html and "60.0%" in html and "75.0%" in html
    assert "Industry average (reported)" in html and "Unverified." in html
    assert "DORA" in html
    assert html.count('<svg class="chart"') == 3
    assert "target 15 min" in html  # SEV2's acknowledge target drawn on the chart


def test_the_report_refuses_backwards_periods_next_to_the_field(staff_client: Client, db: None) -> None:
    page = staff_client.get("/manage/reports/?since=2026-03-01&until=2026-02-01")
    assert page.status_code == 422
    assert "The end comes before the start." in page.content.decode()
    export = staff_client.get("/manage/reports/export.csv?since=2026-03-01&until=2026-02-01")
    assert export.status_code == 422
    assert export.json()["errors"]["until"] == ["The end comes before the start."]


def test_it_exports_the_incidents_behind_the_figures(incidents: dict[str, Any], staff_client: Client) -> None:
    import csv
    import io

    actions.update_impact_scope(incidents["a"], actor=incidents["a"].declared_by, customer_impact_percent=45)
    query = "?since=2026-02-01&until=2026-02-10&severity=sev2"  # E and F come later
    response = staff_client.get(f"/manage/reports/export.csv{query}")
    assert response["Content-Type"].startswith("text/csv")
    assert 'filename="incidents-20260201-20260210.csv"' in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert [row["title"] for row in rows] == ["A", "B", "C", "D"]
    d = rows[3]
    assert (d["acknowledge_seconds"], d["resolve_seconds"], d["reopened"]) == ("600", "18000", "1")
    assert (d["acknowledge_target_seconds"], d["resolve_target_seconds"]) == ("900", "28800")
    assert rows[1]["first_update_seconds"] == "2400"
    assert rows[2]["first_update_seconds"] == ""  # C was never public
    assert rows[2]["first_public_update_at"] == ""
    assert rows[1]["first_public_update_at"].endswith("Z")
    assert rows[0]["customer_impact_percent"] == "45.0"

    exported = staff_client.get(f"/manage/reports/export.json{query}").json()
    assert exported["severity"] == "sev2"
    assert [row["title"] for row in exported["incidents"]] == ["A", "B", "C", "D"]
    assert exported["metrics"]["count"] == 4


def test_csv_cells_never_start_a_formula(staff: User, staff_client: Client) -> None:
    factories.declare(actor=staff, title='=HYPERLINK("http://evil")', severity_key="sev3")
    body = staff_client.get("/manage/reports/export.csv").content.decode()
    assert "'=HYPERLINK" in body


def test_the_report_refuses_a_start_after_today_and_a_field_given_twice(staff_client: Client, db: None) -> None:
    future = staff_client.get("/manage/reports/?since=9999-12-31")
    assert future.status_code == 422
    assert "The start is after today" in future.content.decode()
    twice = staff_client.get("/manage/reports/export.csv?severity=sev1&severity=sev2")
    assert twice.status_code == 422
    assert twice.json()["errors"]["severity"] == ["Give this once."]
