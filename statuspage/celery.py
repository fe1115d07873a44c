"""The Celery app. Without REDIS_URL tasks run eagerly in the web process (settings.py)."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "statuspage.settings")

app = Celery("statuspage")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.on_after_finalize.connect
def setup_periodic_tasks(sender: Celery, **kwargs: object) -> None:
    from django.conf import settings

    # The sweep is the only clock driver: deadlines live in database columns, never in broker ETAs.
    sender.add_periodic_task(
        float(settings.TIMER_SWEEP_SECONDS), sender.signature("incidents.tasks.sweep_clocks"), name="sweep clocks"
    )
    # Retries after their backoff, messages a lost task left, rows a dead worker held.
    sender.add_periodic_task(
        float(settings.TIMER_SWEEP_SECONDS),
        sender.signature("incidents.tasks.sweep_deliveries"),
        name="sweep deliveries",
    )
    # The safety net for a lost publish request, and what keeps today's uptime current.
    sender.add_periodic_task(
        float(settings.REPUBLISH_SECONDS), sender.signature("incidents.tasks.publish_snapshot"), name="republish"
    )
