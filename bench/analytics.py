"""How long the response metrics take on 100,000 incidents, against a baseline measured in the same run.

    .venv/bin/python bench/analytics.py --postgres postgres://root@127.0.0.1:5432/postgres [--incidents 100000]

Creates a scratch database on the server, bulk-loads N incidents (four severities, a spread of
acknowledge / first-update / resolve times, some still open) with their three clocks, runs ANALYZE, and
then times, in alternating rounds:
  1. the baseline: `SELECT count(*), avg(acknowledged_at - declared_at)` over the same incidents, the
     least any metric query must do (read every incident once);
  2. analytics.compute() for all incidents, and for one severity over the last 90 days.
Prints the median of each and the ratio to the baseline, and rewrites the analytics section of
bench/README.md (--no-readme to leave it alone). Target: compute() for all incidents under 0.5 s.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "bench" / "README.md"
MARK_START, MARK_END = "<!-- analytics:start -->", "<!-- analytics:end -->"
NOW = datetime(2026, 6, 1, tzinfo=UTC)


def setup(database_url: str) -> None:
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "statuspage.settings",
            "DATABASE_URL": database_url,
            "DEBUG": "false",
            "SECRET_KEY": "bench-only-not-secret",
            "EMAIL_BACKEND": "console",  # no email is sent; DEBUG=false otherwise demands EMAIL_HOST
            "LOG_LEVEL": "ERROR",
            "PUBLISH_STATIC_SITE": "false",
        }
    )
    os.environ.pop("REDIS_URL", None)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def load(count: int) -> None:
    """N incidents over two years with clocks, written in bulk (the actions would take an hour)."""
    from django.core.management import call_command
    from django.db import connection

    from incidents.models import Incident, Severity

    call_command("migrate", verbosity=0)
    severities = list(Severity.objects.all())
    rng = random.Random(42)  # noqa: S311 - repeatable test data, not secrets
    batch: list[Incident] = []
    for number in range(count):
        severity = severities[number % len(severities)]
        declared = NOW - timedelta(seconds=rng.uniform(0, 730 * 86400))
        ack = declared + timedelta(seconds=rng.lognormvariate(6.5, 1.2)) if rng.random() > 0.02 else None
        published = declared + timedelta(seconds=rng.lognormvariate(7, 1)) if rng.random() > 0.1 else None
        resolved = declared + timedelta(seconds=rng.lognormvariate(9, 1.3)) if rng.random() > 0.03 else None
        if resolved is not None and ack is None:
            ack = resolved
        batch.append(
            Incident(
                acknowledge_target=severity.acknowledge_target,
                first_update_target=severity.first_update_target,
                resolve_target=severity.resolve_target,
                title=f"Incident {number}",
                severity=severity,
                declared_at=declared,
                acknowledged_at=ack,
                published_at=published,
                resolved_at=resolved,
                status="resolved" if resolved else "declared",
            )
        )
        if len(batch) == 5000:
            _save(batch)
            batch = []
    if batch:
        _save(batch)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")


def _save(batch: list[Any]) -> None:
    from incidents.models import Clock, Incident, Metric

    created = Incident.objects.bulk_create(batch)
    clocks = []
    for incident in created:
        for metric in (Metric.ACKNOWLEDGE, Metric.FIRST_UPDATE, Metric.RESOLVE):
            target = incident.severity.target_for(metric)
            if target:
                clocks.append(
                    Clock(
                        incident=incident,
                        metric=metric,
                        target_seconds=target,
                        started_at=incident.declared_at,
                        state="stopped",
                    )
                )
    Clock.objects.bulk_create(clocks, batch_size=5000)


def timed(function: object, rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        function()  # type: ignore[operator]
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--postgres", required=True, help="A PostgreSQL server URL; a scratch database is made there.")
    parser.add_argument("--incidents", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--no-readme", action="store_true")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT / "bench"))
    from emails import create_postgres_database, drop_postgres_database

    database_url, scratch = create_postgres_database(args.postgres)
    try:
        setup(database_url)
        started = time.perf_counter()
        load(args.incidents)
        loaded = time.perf_counter() - started
        report = measure(args, loaded)
    finally:
        from django.db import connections

        connections.close_all()
        drop_postgres_database(args.postgres, scratch)
    print(report)
    if not args.no_readme:
        from readme import rewrite_section  # bench/, which is sys.path[0] when a bench script runs

        rewrite_section(README, MARK_START, MARK_END, report)


def measure(args: argparse.Namespace, loaded: float) -> str:
    from django.db import connection

    from incidents import analytics
    from incidents.models import Severity

    sev2 = Severity.objects.get(key="sev2")

    def baseline() -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*), avg(acknowledged_at - declared_at) FROM incidents_incident")
            cursor.fetchall()

    def everything() -> None:
        analytics.compute(now=NOW)

    def one_severity_90_days() -> None:
        analytics.compute(NOW - timedelta(days=90), NOW, sev2, now=NOW)

    everything()  # warm the caches once, as a running server would have them
    results: dict[str, list[float]] = {"baseline": [], "all": [], "sev2": []}
    for _ in range(args.rounds):  # alternating, so drift hits all three alike
        results["baseline"].append(timed(baseline, 1))
        results["all"].append(timed(everything, 1))
        results["sev2"].append(timed(one_severity_90_days, 1))
    median = {key: statistics.median(values) for key, values in results.items()}
    figures = analytics.compute(now=NOW)
    verdict = "meets" if median["all"] < 0.5 else "MISSES"
    return "\n".join(
        [
            f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} cores, PostgreSQL "
            f"{connection.cursor().connection.info.server_version // 10000}: {args.incidents:,} incidents "
            f"({figures.figures['acknowledge'].measured:,} acknowledged), loaded in {loaded:.0f} s, "
            f"{args.rounds} alternating rounds, medians.",
            "",
            "| query | seconds (median) | × baseline |",
            "|---|---|---|",
            f"| baseline: count and mean time to acknowledge, one scan | {median['baseline']:.3f} | 1.00 |",
            f"| analytics.compute(), all incidents | {median['all']:.3f} | {median['all'] / median['baseline']:.2f} |",
            f"| analytics.compute(), SEV2, last 90 days | {median['sev2']:.3f} | "
            f"{median['sev2'] / median['baseline']:.2f} |",
            "",
            f"- all incidents in **{median['all']:.2f} s** (target under 0.5 s: {verdict})",
        ]
    )


if __name__ == "__main__":
    main()
