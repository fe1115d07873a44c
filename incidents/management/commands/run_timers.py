"""Run the sweeps beat runs: once, or every TIMER_SWEEP_SECONDS with --loop (when there is no Celery beat).

Each pass records clock warnings and breaches, takes maintenance steps, sends notifications that are
due (new messages, retries after a backoff, rows a dead worker held) and publishes any public change
still waiting for its publish; every REPUBLISH_SECONDS it also rebuilds the public snapshot. Each
completed clock sweep stamps the heartbeat the dashboard reads: its "Timers stopped" banner appears
when the last one is older than two TIMER_SWEEP_SECONDS, so an --interval longer than that shows it too.
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.db import close_old_connections

from incidents.clocks import sweep_due
from incidents.publishing import publish, publish_if_stale
from incidents.tasks import sweep_deliveries


class Command(BaseCommand):
    help = "Record clock warnings and breaches, take maintenance steps and send notifications that have fallen due."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--loop", action="store_true", help="Keep sweeping until interrupted.")
        parser.add_argument(
            "--interval", type=float, default=None, help="Seconds between sweeps (default TIMER_SWEEP_SECONDS)."
        )

    def handle(self, *args: Any, loop: bool, interval: float | None, **options: Any) -> None:
        interval = interval or float(settings.TIMER_SWEEP_SECONDS)
        stop = threading.Event()
        last_publish = time.monotonic()
        if loop:
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: stop.set())
        while True:
            try:
                recorded = sweep_due()
            except Exception:
                if not loop:
                    raise
                # A failed sweep loses nothing: the due rows stay due and the next sweep claims them.
                self.stderr.write("clock sweep failed; retrying next interval")
                recorded = 0
            if recorded or not loop:
                self.stdout.write(f"recorded {recorded} clock event(s) and maintenance step(s)")
            try:
                sent = sweep_deliveries()
            except Exception:
                if not loop:
                    raise
                self.stderr.write("delivery sweep failed; retrying next interval")
                sent = 0
            if sent or not loop:
                self.stdout.write(f"sent {sent} notification(s)")
            try:
                # A public change whose publish did not happen (lost, or it failed) is published now.
                if publish_if_stale() is not None:
                    last_publish = time.monotonic()
            except Exception:
                if not loop:
                    raise
                self.stderr.write("publishing a waiting change failed; retrying next interval")
            if loop and time.monotonic() - last_publish >= settings.REPUBLISH_SECONDS:
                # As beat does in production: a lost publish is caught up, today's uptime stays current.
                last_publish = time.monotonic()
                try:
                    publish()
                except Exception:
                    self.stderr.write("republishing failed; retrying next interval")
            if not loop or stop.wait(interval):
                return
            # A long-running loop must not hold a connection the database has dropped or aged out.
            close_old_connections()
