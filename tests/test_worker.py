"""A real Celery worker and beat drive the clock sweep; concurrent sweeps record each threshold once.

These run against PostgreSQL (a subprocess cannot share SQLite's test database) and, for the worker,
Redis. They skip on a laptop without the services and fail in CI, through the conftest fixtures.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from django.conf import settings
from django.db import connection
from django.test import Client
from django.utils import timezone

from incidents import actions, clocks, publishing
from incidents.models import (
    ClockEvent,
    ClockEventKind,
    ClockState,
    EscalationStep,
    EventKind,
    Incident,
    Metric,
    NoticeStatus,
    PageStep,
    PublishRequest,
    Snapshot,
    StaffNotice,
    TimelineEvent,
)
from statuspage.celery import app as celery_app
from tests import factories
from tests.smtp import SmtpServer

pytestmark = [
    pytest.mark.worker,
    # The subprocesses and threads must see committed rows. (A transactional test's flush removes the
    # seeded severities; factories.severity() puts them back. serialized_rollback would clash with the
    # content types that other transactional tests' flushes recreate.)
    pytest.mark.django_db(transaction=True),
]

BASE_DIR = Path(settings.BASE_DIR)
SWEEP_RESULT = re.compile(r"Task incidents\.tasks\.sweep_clocks\[[^]]+\] succeeded in [0-9.e-]+s: (\d+)")


def database_url_for_subprocess() -> str:
    """DATABASE_URL of the database this test uses (pytest-django has renamed NAME to the test one)."""
    db = connection.settings_dict
    auth = quote(db.get("USER") or "", safe="")
    if db.get("PASSWORD"):
        auth += ":" + quote(db["PASSWORD"], safe="")
    netloc = db.get("HOST") or "localhost"
    if db.get("PORT"):
        netloc += f":{db['PORT']}"
    if auth:
        netloc = f"{auth}@{netloc}"
    return f"postgres://{netloc}/{quote(db['NAME'], safe='')}"


class Celery:
    """Celery subprocesses (worker, beat) on a queue of their own, with their logs kept for failures."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.queue = f"signalpost-test-{uuid.uuid4().hex[:10]}"
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "statuspage.settings",
            "DATABASE_URL": database_url_for_subprocess(),
            "REDIS_URL": settings.REDIS_URL,
            "CELERY_QUEUE": self.queue,
            "TIMER_SWEEP_SECONDS": "1",
            "SNAPSHOT_DIR": str(settings.SNAPSHOT_DIR),
            "PYTHONUNBUFFERED": "1",
        }

    def start(self, name: str, *args: str) -> None:
        log = (self.tmp_path / f"{name}.log").open("wb")
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "statuspage", name, "--loglevel=INFO", *args],
            cwd=BASE_DIR,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so killpg stops it and any children
        )
        log.close()

    def start_worker(self) -> None:
        self.start(
            "worker",
            "--pool=solo",
            f"--queues={self.queue}",
            f"--hostname={self.queue}@%h",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        )

    def start_worker_with_beat(self) -> None:
        """What `make worker` used to run: beat as a child of the worker."""
        self.start(
            "worker",
            "--pool=solo",
            "--beat",
            f"--queues={self.queue}",
            f"--hostname={self.queue}@%h",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        )

    def start_beat(self) -> None:
        self.start("beat", f"--pidfile={self.tmp_path / 'beat.pid'}")

    def log(self, name: str) -> str:
        path = self.tmp_path / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def logs(self) -> str:
        return "\n".join(f"--- {name} log ---\n{self.log(name)}" for name in self.processes)

    def sweep_results(self) -> list[int]:
        """What each sweep the worker finished returned ("... succeeded in 0.01s: 3")."""
        return [int(m) for m in SWEEP_RESULT.findall(self.log("worker"))]

    def wait_for(self, condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
        """Poll until `condition` holds; fail with the logs if it doesn't in time or a process dies."""
        deadline = time.monotonic() + timeout
        while not condition():
            for name, process in self.processes.items():
                if process.poll() is not None:
                    pytest.fail(
                        f"celery {name} exited with {process.returncode} while waiting for {what}\n{self.logs()}"
                    )
            if time.monotonic() > deadline:
                pytest.fail(f"no {what} after {timeout:.0f} s\n{self.logs()}")
            time.sleep(0.2)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)
        import redis

        # Beat may have sent a few sweeps nobody will consume; don't leave the queue behind in Redis.
        redis.Redis.from_url(settings.REDIS_URL).delete(self.queue, f"_kombu.binding.{self.queue}")


@pytest.fixture
def celery_processes(requires_postgres: None, requires_redis: None, tmp_path: Path) -> Iterator[Celery]:
    processes = Celery(tmp_path)
    try:
        yield processes
    finally:
        processes.stop()


def test_beat_and_worker_record_a_breach_once(celery_processes: Celery) -> None:
    staff = factories.make_user(username="alice")
    # SEV1: acknowledge within 5 min. Declared 6 min ago and never acknowledged, so its 75%, 90% and
    # breach thresholds have all fallen due; the other clocks have not reached 75% yet.
    incident = factories.declare(actor=staff, severity_key="sev1", at=timezone.now() - timedelta(minutes=6))
    ack_clock = incident.clocks.get(metric=Metric.ACKNOWLEDGE)
    assert not ClockEvent.objects.exists()

    def breaches() -> int:
        return ClockEvent.objects.filter(clock=ack_clock, kind=ClockEventKind.BREACH).count()

    started = time.monotonic()
    celery_processes.start_worker()
    celery_processes.start_beat()
    celery_processes.wait_for(lambda: breaches() > 0, "breach recorded by the worker")
    breach_seen_after = time.monotonic() - started

    # Several more sweeps run over the same (now settled) clock and must add nothing.
    sweeps = len(celery_processes.sweep_results())
    celery_processes.wait_for(lambda: len(celery_processes.sweep_results()) >= sweeps + 3, "three more sweeps")

    logs = celery_processes.logs()
    assert breaches() == 1, logs
    kinds = sorted(ClockEvent.objects.filter(clock=ack_clock).values_list("kind", flat=True))
    assert kinds == ["breach", "warning_75", "warning_90"], logs
    assert ClockEvent.objects.count() == 3, logs  # nothing on the clocks that are not due
    breached = TimelineEvent.objects.filter(incident=incident, kind=EventKind.CLOCK_BREACHED)
    assert breached.count() == 1, logs
    assert breached.get().data == {"metric": "acknowledge", "threshold": "breach", "cycle": 1}
    ack_clock.refresh_from_db()
    assert ack_clock.state == ClockState.BREACHED, logs
    assert ack_clock.breached_at == ack_clock.started_at + timedelta(minutes=5)
    assert ack_clock.next_check_at is None
    assert sum(celery_processes.sweep_results()) == 3, logs  # the worker's sweeps, not anything in this process
    assert breach_seen_after < 30


def test_concurrent_sweeps_record_each_threshold_once(requires_postgres: None, monkeypatch: pytest.MonkeyPatch) -> None:
    staff = factories.make_user(username="alice")
    declared_at = timezone.now() - timedelta(minutes=20)
    # SEV1, no public message: the acknowledge (5 min) and first update (15 min) clocks are both past
    # every threshold; the resolve clock (4 h) is not due.
    incidents = [
        factories.declare(actor=staff, title=f"Queries are slow #{n}", message="", at=declared_at) for n in range(30)
    ]
    expected = len(incidents) * 2 * len(clocks.THRESHOLDS)
    monkeypatch.setattr(clocks, "SWEEP_BATCH", 7)  # many small batches, so the sweeps interleave

    now = timezone.now()
    sweepers = 4
    start = threading.Barrier(sweepers)
    recorded: list[int] = []
    errors: list[BaseException] = []

    def sweep() -> None:
        try:
            start.wait(timeout=10)
            recorded.append(clocks.sweep_due(now))
        except BaseException as error:  # reported by the test below
            errors.append(error)
        finally:
            connection.close()  # each thread has its own connection; leave none open for the flush

    threads = [threading.Thread(target=sweep) for _ in range(sweepers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert not errors, errors
    assert len(recorded) == sweepers
    assert sum(recorded) == expected
    assert ClockEvent.objects.count() == expected
    per_threshold = ClockEvent.objects.values_list("clock_id", "kind", "cycle")
    assert len(set(per_threshold)) == expected
    timeline = TimelineEvent.objects.filter(kind__in=[EventKind.CLOCK_WARNING, EventKind.CLOCK_BREACHED])
    assert timeline.count() == expected
    assert Incident.objects.filter(clocks__state=ClockState.BREACHED).distinct().count() == len(incidents)
    assert clocks.sweep_due(now) == 0


PUBLISH_RECEIVED = re.compile(r"Task incidents\.tasks\.publish_snapshot\[[^]]+\] received")
PUBLISH_DONE = re.compile(r"Task incidents\.tasks\.publish_snapshot\[[^]]+\] succeeded")


def test_a_burst_of_changes_is_published_in_one_or_two_builds(celery_processes: Celery) -> None:
    staff = factories.make_user(username="alice")
    component = factories.make_component(name="Query API", actor=staff)
    Snapshot.objects.all().delete()  # the component's creation published eagerly, before the worker
    celery_processes.start_worker()
    celery_processes.wait_for(lambda: " ready." in celery_processes.log("worker"), "the worker to start")
    saved = celery_app.conf.task_always_eager, celery_app.conf.task_default_queue
    celery_app.conf.task_always_eager = False
    celery_app.conf.task_default_queue = celery_processes.queue
    try:
        statuses = ["degraded_performance", "partial_outage", "major_outage", "operational"]
        started = time.monotonic()
        for i in range(50):  # 50 separate transactions, each asking for a publish after it commits
            actions.set_component_status(component, actor=staff, status=statuses[i % 4])
        burst_seconds = time.monotonic() - started
    finally:
        celery_app.conf.task_always_eager, celery_app.conf.task_default_queue = saved

    def settled() -> bool:
        log = celery_processes.log("worker")
        received, done = len(PUBLISH_RECEIVED.findall(log)), len(PUBLISH_DONE.findall(log))
        return received > 0 and received == done and not cache_has_pending()

    def cache_has_pending() -> bool:
        from django.core.cache import cache

        return cache.get(publishing.PENDING_KEY) is not None

    celery_processes.wait_for(settled, "the publishes to settle")
    logs = celery_processes.logs()
    assert burst_seconds < 1.5, f"the burst took {burst_seconds:.2f} s, too slow to test coalescing"
    assert 1 <= Snapshot.objects.count() <= 2, logs
    latest = Snapshot.objects.latest()
    row = next(c for c in latest.document["components"] if c["name"] == "Query API")
    assert row["status"] == statuses[49 % 4], "the last build saw the last change"


def test_beat_and_worker_page_once_and_stop_on_acknowledgment(celery_processes: Celery) -> None:
    alice = factories.make_user(username="alice")
    bob = factories.make_user(username="bob")
    sev1 = factories.severity("sev1")
    EscalationStep.objects.create(severity=sev1, position=1, after_minutes=0).users.set([alice])
    EscalationStep.objects.create(severity=sev1, position=2, after_minutes=2).users.set([bob])
    # Declared a minute ago: alice's step is due, bob's is a minute away.
    incident = factories.declare(actor=alice, at=timezone.now() - timedelta(minutes=1))

    with SmtpServer() as smtp:
        celery_processes.env.update(smtp.env())
        celery_processes.start_worker()
        celery_processes.start_beat()
        celery_processes.wait_for(lambda: len(smtp.inbox("alice@example.com")) > 0, "alice's page")
        actions.acknowledge_incident(incident, actor=alice)
        sweeps = len(celery_processes.sweep_results())
        celery_processes.wait_for(lambda: len(celery_processes.sweep_results()) >= sweeps + 3, "three more sweeps")

        logs = celery_processes.logs()
        assert smtp.copies() == {"alice@example.com": 1}, logs
        assert "[Page] SEV1" in smtp.inbox("alice@example.com")[0]["Subject"]
    assert StaffNotice.objects.get().status == NoticeStatus.SENT
    assert PageStep.objects.get(position=2).stop_reason == "acknowledged by alice"


def test_a_killed_beat_shows_on_the_dashboard_and_nobody_is_paged_until_it_is_back(
    celery_processes: Celery, settings: Any
) -> None:
    """Beat is the only clock driver: when it dies the worker looks healthy while nothing fires. The
    dashboard must say so within two sweep intervals, and paging must resume when beat is back."""
    settings.TIMER_SWEEP_SECONDS = 1  # as the subprocesses run (Celery.env)
    alice = factories.make_user(username="alice")
    bob = factories.make_user(username="bob")
    EscalationStep.objects.create(severity=factories.severity("sev1"), position=1, after_minutes=0).users.set([bob])
    client = Client()
    client.force_login(alice)

    def dashboard() -> str:
        return client.get("/manage/", headers={"HX-Request": "true"}).content.decode()

    with SmtpServer() as smtp:
        celery_processes.env.update(smtp.env())
        celery_processes.start_worker()
        celery_processes.start_beat()
        celery_processes.wait_for(lambda: clocks.last_sweep() is not None, "a sweep's heartbeat")
        assert "nobody is being paged" not in dashboard()

        beat = celery_processes.processes.pop("beat")
        os.killpg(beat.pid, signal.SIGKILL)  # what an OOM kill or a crash does; the worker lives on
        beat.wait(10)
        celery_processes.wait_for(lambda: "nobody is being paged" in dashboard(), "the 'timers stopped' banner")
        stopped_at = clocks.last_sweep()
        assert stopped_at is not None
        assert celery_processes.processes["worker"].poll() is None, "the worker looks healthy"
        html = dashboard()
        assert "Timers stopped at " in html and 'class="message message--error"' in html

        incident = factories.declare(actor=alice)  # bob's step is due at once, but no clock fires
        step = PageStep.objects.get(incident=incident)
        restarted = timezone.now()
        celery_processes.start_beat()
        celery_processes.wait_for(lambda: len(smtp.inbox("bob@example.com")) > 0, "bob's page once beat is back")
        celery_processes.wait_for(lambda: "nobody is being paged" not in dashboard(), "the banner to go")

    step.refresh_from_db()
    assert step.fired_at is not None and step.fired_at >= restarted, "nobody was paged while beat was dead"
    assert clocks.last_sweep() > stopped_at  # type: ignore[operator]


def test_a_worker_with_beat_built_in_warns_that_beat_is_not_supervised(celery_processes: Celery) -> None:
    celery_processes.start_worker_with_beat()
    celery_processes.wait_for(
        lambda: "beat is running inside this worker (worker --beat)" in celery_processes.log("worker"),
        "the embedded-beat warning",
    )


CLOSED_PORT = 1  # nothing listens on a privileged port this low


def reconnect_producer() -> None:
    """Drop this process's broker connections, so the next message connects to conf.broker_url."""
    app: Any = celery_app  # private attributes: Celery has no public way to drop its producer pool
    app.pool.force_close_all()
    app._pool = None
    app.amqp._producer_pool = None


def test_a_change_whose_publish_was_lost_with_the_broker_is_public_within_a_sweep(
    celery_processes: Celery, settings: Any
) -> None:
    """The change commits while this process cannot reach Redis (its broker and cache point at a closed
    port), so its publish request is lost. Beat's sweep, on a worker that can reach Redis, publishes it
    within seconds, long before the 300 s safety republish."""
    factories.ensure_severities()
    staff = factories.make_user(username="alice")
    component = factories.make_component(name="Query API", actor=staff)
    publishing.publish()
    celery_processes.start_worker()
    celery_processes.start_beat()
    celery_processes.wait_for(lambda: clocks.last_sweep() is not None, "a first sweep")

    def published_names() -> list[str]:
        return [row["name"] for row in Snapshot.objects.latest().document["incidents"]]

    saved = celery_app.conf.task_always_eager, celery_app.conf.broker_url
    celery_app.conf.task_always_eager = False
    celery_app.conf.update(broker_url=f"redis://127.0.0.1:{CLOSED_PORT}/0")
    reconnect_producer()  # to the closed port
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{CLOSED_PORT}/0",
        }
    }
    try:
        declared = time.monotonic()
        factories.declare(actor=staff, title="Queries fail in US", components={component: "major_outage"})
    finally:
        celery_app.conf.update(task_always_eager=saved[0], broker_url=saved[1])
        reconnect_producer()
    assert published_names() == [], "the publish request was lost with the broker"
    assert PublishRequest.objects.count() == 1

    celery_processes.wait_for(lambda: published_names() == ["Queries fail in US"], "the sweep's publish", timeout=20)
    public_after = time.monotonic() - declared
    assert public_after < publishing.STALE_AFTER_SECONDS + 5, f"public after {public_after:.1f} s"
    celery_processes.wait_for(lambda: not PublishRequest.objects.exists(), "the request to be marked published")
    print(f"lost publish request: public {public_after:.1f} s after the change (sweep every 1 s)")
