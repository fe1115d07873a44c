"""The Celery app. Without REDIS_URL tasks run eagerly in the web process (settings.py)."""

from __future__ import annotations

import logging
import os

from celery import Celery
from celery.signals import beat_embedded_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "statuspage.settings")

app = Celery("statuspage")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
log = logging.getLogger(__name__)

EMBEDDED_BEAT_WARNING = (
    "beat is running inside this worker (worker --beat): if it dies it is not restarted, and no clock "
    "fires and nobody is paged while the worker looks healthy. Run beat as its own supervised process "
    "(`celery -A statuspage beat`, make beat; see the README's Production section)."
)


@beat_embedded_init.connect
def warn_of_embedded_beat(sender: object, **kwargs: object) -> None:
    log.warning(EMBEDDED_BEAT_WARNING)


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
