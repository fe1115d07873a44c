"""Thin Celery tasks: ids in, domain code does the work, safe to run twice."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="incidents.tasks.sweep_clocks", ignore_result=True)
def sweep_clocks() -> int:
    """Record clock warnings and breaches that have fallen due (beat runs this every 15 s)."""
    from incidents.clocks import sweep_due

    return sweep_due()


@shared_task(name="incidents.tasks.publish_snapshot", ignore_result=True)
def publish_snapshot() -> int:
    """Build and store the public snapshot; returns its version (unchanged content keeps the old one)."""
    from incidents.publishing import publish

    return publish().version
