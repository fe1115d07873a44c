"""Queueing a message for subscribers: fanned out and sent once the action's transaction commits."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import transaction

from incidents.models import Message

log = logging.getLogger(__name__)


def notify_after_commit(message: Message) -> None:
    """Fan the message out and send it once the transaction commits (the sweep catches a lost task)."""

    def enqueue() -> None:
        from incidents.tasks import notify

        if notify.app.conf.task_always_eager and not settings.DELIVER_EAGERLY:
            # No broker: the timer loop's delivery sweep sends it within TIMER_SWEEP_SECONDS. Sending here
            # would hold the web request for as long as the mail server takes, and how long a sign-up
            # takes would tell whether the address was new.
            return
        try:
            notify.delay(message.pk)
        except Exception:  # a broker outage must not undo the change: the sweep sends it later
            log.warning("could not enqueue message %s; the delivery sweep will send it", message.pk, exc_info=True)

    def freeze() -> None:
        from incidents.webhooks import freeze_body

        freeze_body(message)

    transaction.on_commit(freeze, robust=True)  # first: the state this change committed
    transaction.on_commit(enqueue, robust=True)
