"""Thin Celery tasks: ids in, domain code does the work, safe to run twice."""

from __future__ import annotations

import logging

from celery import shared_task


@shared_task(name="incidents.tasks.sweep_clocks", ignore_result=True)
def sweep_clocks() -> int:
    """Record clock warnings and breaches that have fallen due (beat runs this every 15 s), then publish
    any public change whose own publish request was lost (returns the clock events recorded)."""
    from incidents.clocks import sweep_due
    from incidents.publishing import publish_if_stale

    recorded = sweep_due()
    try:
        publish_if_stale()
    except Exception:  # the clocks are swept; a failed publish is tried again by the next sweep
        logging.getLogger(__name__).exception("publishing a waiting public change failed")
    return recorded


@shared_task(name="incidents.tasks.publish_snapshot", ignore_result=True)
def publish_snapshot() -> int:
    """Build and store the public snapshot; returns its version (unchanged content keeps the old one)."""
    from incidents.publishing import publish

    return publish().version


@shared_task(name="incidents.tasks.notify", ignore_result=True)
def notify(message_id: int) -> int:
    """Fan a message out to its subscribers and send what is due; safe to run twice."""
    from incidents.notifications import deliver_due, fan_out

    fan_out(message_id)
    return deliver_due()


@shared_task(name="incidents.tasks.sweep_deliveries", ignore_result=True)
def sweep_deliveries() -> int:
    """Beat's safety net: fan out messages a lost task left, take back rows a dead worker held, and
    send whatever is due (retries after their backoff included)."""
    from django.utils import timezone

    from incidents import escalation
    from incidents.notifications import deliver_due, fan_out, pending_messages, requeue_stale

    now = timezone.now()
    escalation.requeue_stale(now)
    paged = escalation.send_due()  # pages and nudges first: they are few and they are urgent
    for message_id in list(pending_messages()):
        fan_out(message_id)
    requeue_stale(now)
    return paged + deliver_due()


@shared_task(name="incidents.tasks.send_staff_notices", ignore_result=True)
def send_staff_notices() -> int:
    """Send the pages and nudges that are due (the delivery sweep also does, as a safety net)."""
    from incidents import escalation

    return escalation.send_due()
