"""Delivery through a real Celery worker and beat to a real SMTP server (aiosmtpd), with faults: the SMTP
server down, the worker killed mid-batch, Redis unreachable when an update is posted.

These need PostgreSQL (the worker shares the test database) and Redis; they skip without them and fail
in CI (conftest). The worker's delivery timings are shortened through its environment (DELIVERY_*,
BREAKER_*), so retries, the breaker and the stale-claim sweep happen within seconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.test import override_settings
from django.utils import timezone

from incidents import actions
from incidents.models import BreakerState, CircuitBreaker, Delivery, DeliveryStatus, Message, MessageKind, Subscriber
from incidents.notifications import EMAIL
from incidents.tokens import read_token
from statuspage.celery import app as celery_app
from tests import factories
from tests.smtp import SmtpServer
from tests.test_worker import Celery

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

# Fast retries for the worker: a backoff of up to 1–2 s, a breaker that probes after 2 s, and rows held
# by a dead worker taken back after 5 s (a batch of 100 at 10 ms a message takes about 2 s).
FAST_DELIVERY = {
    "DELIVERY_BACKOFF_SECONDS": "1",
    "DELIVERY_BACKOFF_CAP_SECONDS": "2",
    "BREAKER_COOLDOWN_SECONDS": "2",
    "DELIVERY_CLAIM_TIMEOUT_SECONDS": "5",
}


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    with SmtpServer() as server:
        yield server


@pytest.fixture
def worker(requires_postgres: None, requires_redis: None, tmp_path: Path, smtp: SmtpServer) -> Iterator[Celery]:
    """Celery worker and beat (started by each test) that send through the test's SMTP server."""
    processes = Celery(tmp_path)
    processes.env.update(smtp.env())
    processes.env.update(FAST_DELIVERY)
    try:
        yield processes
    finally:
        processes.stop()
        forget_unacked(processes.queue)


def forget_unacked(queue: str) -> None:
    """A killed worker leaves its task in Redis's unacked hash, to be restored an hour later into a queue
    nobody reads: remove this test's entries so they don't linger."""
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL)
    for tag, raw in client.hgetall("unacked").items():
        with contextlib.suppress(ValueError, IndexError, TypeError):
            if json.loads(raw)[2] == queue:
                client.hdel("unacked", tag)
                client.zrem("unacked_index", tag)


def start(worker: Celery) -> None:
    worker.start_worker()
    worker.start_beat()
    worker.wait_for(lambda: " ready." in worker.log("worker"), "the worker to start")


@contextlib.contextmanager
def producing_to(worker: Celery, broker_url: str | None = None) -> Iterator[None]:
    """Tasks the test process enqueues go to the worker's queue (through `broker_url` if given)."""
    conf = celery_app.conf
    saved = conf.task_always_eager, conf.task_default_queue, conf.broker_url
    conf.task_always_eager = False
    conf.task_default_queue = worker.queue
    if broker_url:
        conf.update(broker_url=broker_url)
        forget_broker_connections()
    try:
        yield
    finally:
        conf.task_always_eager, conf.task_default_queue = saved[:2]
        if broker_url:
            conf.update(broker_url=saved[2])
            forget_broker_connections()


def forget_broker_connections() -> None:
    """Celery keeps its connection and producer pools; drop them so the next publish uses broker_url."""
    vars(celery_app)["_pool"] = None
    with contextlib.suppress(AttributeError, KeyError):
        vars(celery_app)["amqp"]._producer_pool = None


def confirmed(*emails: str) -> list[Subscriber]:
    """Confirmed subscribers (their confirmations go out eagerly to the test's locmem outbox)."""
    return [actions.confirm_subscription(actions.subscribe(email=email)) for email in emails]


def update_rows() -> Any:
    return Delivery.objects.filter(message__kind=MessageKind.INCIDENT_UPDATE)


def plain_text(email: EmailMessage) -> str:
    body = email.get_body(("plain",))
    assert body is not None
    return str(body.get_content())


def sent_all(count: int) -> Callable[[], bool]:
    return lambda: update_rows().filter(status=DeliveryStatus.SENT).count() == count


# --- the happy path through the worker --------------------------------------------------------------


def test_a_subscriber_confirms_and_receives_an_update_through_the_worker(
    worker: Celery, smtp: SmtpServer, staff: User
) -> None:
    start(worker)
    with producing_to(worker):
        ann = actions.subscribe(email="ann@example.com")
        worker.wait_for(lambda: len(smtp.inbox("ann@example.com")) == 1, "the confirmation email")
        [confirmation] = smtp.inbox("ann@example.com")
        text = plain_text(confirmation)
        [token] = re.findall(rf"{re.escape(settings.SITE_URL)}/subscribe/confirm/(\S+)", text)
        actions.confirm_subscription(read_token(token, "confirm"))

        incident = factories.declare(actor=staff, title="Queries are slow")
        worker.wait_for(lambda: len(smtp.inbox("ann@example.com")) == 2, "the update email")

    update = smtp.inbox("ann@example.com")[1]
    assert update["Subject"] == "[Investigating] Queries are slow"
    assert f"{settings.SITE_URL}/incidents/{incident.pk}" in plain_text(update)
    row = Delivery.objects.get(subscriber=ann, message__kind=MessageKind.INCIDENT_UPDATE)
    assert (row.status, row.attempts) == (DeliveryStatus.SENT, 1)
    assert smtp.copies() == {"ann@example.com": 2}


# --- faults -------------------------------------------------------------------------------------------


def test_mail_posted_while_the_smtp_server_is_down_arrives_once_when_it_is_back(
    worker: Celery, smtp: SmtpServer, staff: User
) -> None:
    names = [f"reader{n:02}@example.com" for n in range(20)]
    confirmed(*names)
    smtp.stop()
    start(worker)

    with producing_to(worker):
        factories.declare(actor=staff)

    def breaker_open() -> bool:
        return CircuitBreaker.objects.filter(transport=EMAIL, state=BreakerState.OPEN).exists()

    worker.wait_for(breaker_open, "the breaker to open")
    assert update_rows().count() == 20
    assert not update_rows().filter(status=DeliveryStatus.SENT).exists()

    smtp.start()
    worker.wait_for(sent_all(20), "every update sent once the server is back", timeout=60)
    # A few more sweeps must send nothing more.
    sweeps = len(re.findall(r"sweep_deliveries\[[^]]+\] succeeded", worker.log("worker")))
    worker.wait_for(
        lambda: len(re.findall(r"sweep_deliveries\[[^]]+\] succeeded", worker.log("worker"))) >= sweeps + 3,
        "three more sweeps",
    )

    logs = worker.logs()
    assert smtp.copies() == dict.fromkeys(names, 1), logs
    attempts = list(update_rows().values_list("attempts", flat=True))
    # One attempt that worked each, plus one per failed batch or probe while the server was down.
    assert min(attempts) >= 1
    assert max(attempts) <= settings.BREAKER_THRESHOLD + 3, attempts
    breaker = CircuitBreaker.objects.get(transport=EMAIL)
    assert (breaker.state, breaker.consecutive_failures) == (BreakerState.CLOSED, 0)


def test_a_worker_killed_mid_batch_loses_nothing_and_duplicates_at_most_the_email_in_flight(
    worker: Celery, smtp: SmtpServer, staff: User
) -> None:
    names = [f"reader{n:03}@example.com" for n in range(200)]
    confirmed(*names)
    smtp.handler.delay = 0.01  # each email is accepted, then answered 10 ms later
    start(worker)

    with producing_to(worker):
        factories.declare(actor=staff)
    worker.wait_for(lambda: len(smtp.received) >= 30, "the first emails of the first batch")
    os.killpg(worker.processes["worker"].pid, signal.SIGKILL)
    worker.processes["worker"].wait(10)
    received_before_kill = len(smtp.received)
    held_rows = dict(update_rows().filter(status=DeliveryStatus.SENDING).values_list("pk", "claimed_at"))
    assert 0 < len(held_rows) < 100, "killed mid-batch"
    assert received_before_kill < 100
    (Path(worker.tmp_path) / "worker.log").rename(Path(worker.tmp_path) / "killed-worker.log")

    worker.start_worker()  # beat kept running; its sweeps take the dead worker's rows back
    worker.wait_for(sent_all(200), "every update sent after the restart", timeout=60)
    logs = worker.logs() + "\n--- killed worker ---\n" + (Path(worker.tmp_path) / "killed-worker.log").read_text()

    copies = smtp.copies()
    assert set(copies) == set(names), f"missing: {sorted(set(names) - set(copies))}\n{logs}"
    duplicates = {address: n for address, n in copies.items() if n > 1}
    # At least once, and at most one extra copy per crash: the email the server had accepted when the
    # worker died, before its row could be marked sent.
    assert sum(n - 1 for n in duplicates.values()) <= 1, duplicates
    for address in duplicates:  # the repeat is the same email: mail clients that de-duplicate show one
        assert len({email["Message-ID"] for email in smtp.inbox(address)}) == 1
    held_addresses = set(update_rows().filter(pk__in=held_rows).values_list("subscriber__email", flat=True))
    assert set(duplicates) <= held_addresses, "only a row the dead worker held can have gone out twice"
    assert not update_rows().exclude(status=DeliveryStatus.SENT).exists()
    # The rows the dead worker held were sent again only after the claim timeout.
    timeout = timedelta(seconds=int(FAST_DELIVERY["DELIVERY_CLAIM_TIMEOUT_SECONDS"]))
    for row in update_rows().filter(pk__in=held_rows):
        assert row.sent_at is not None
        assert row.sent_at >= held_rows[row.pk] + timeout


def test_a_poisoned_address_between_two_good_ones_does_not_hold_up_the_worker(
    worker: Celery, smtp: SmtpServer, staff: User
) -> None:
    """Before, Django's SMTP backend raised ValueError for the middle address inside the batch: the task
    crashed, cat's update waited for the claim timeout, came back in a batch with the poisoned row, and
    so on until every row was marked failed (and the sweep crashed each time)."""
    ann, cat = "ann@example.com", "cat@example.com"
    confirmed(ann)
    # Written before sign-up was strict (the actions refuse it now).
    poisoned = Subscriber.objects.create(
        email="=?utf-8?q?p?=@example.test", secret="s" * 16, confirmed_at=timezone.now()
    )
    confirmed(cat)
    start(worker)

    with producing_to(worker):
        factories.declare(actor=staff)
    worker.wait_for(lambda: smtp.copies() == {ann: 1, cat: 1}, "both good addresses' updates")
    # The emails arrive before the task has marked its rows and logged that it finished: wait for both.
    worker.wait_for(
        lambda: (
            update_rows().filter(status=DeliveryStatus.SENT).count() == 2
            and update_rows().filter(subscriber=poisoned, status=DeliveryStatus.FAILED).exists()
        ),
        "the good rows marked sent and the poisoned one failed",
    )
    worker.wait_for(
        lambda: re.search(r"Task incidents\.tasks\.notify\[[^]]+\] succeeded", worker.log("worker")) is not None,
        "the notify task's 'succeeded' line in the worker's log",
    )
    poisoned_row = update_rows().get(subscriber=poisoned)
    assert poisoned_row.last_error.startswith("cannot send to this address:")
    assert "raised unexpected" not in worker.log("worker"), worker.logs()


def start_second_worker(worker: Celery) -> None:
    """Another worker on the same queue (its log: worker2.log), as a deployment with two runs."""
    log = (worker.tmp_path / "worker2.log").open("wb")
    worker.processes["worker2"] = subprocess.Popen(
        [
            sys.executable, "-m", "celery", "-A", "statuspage", "worker", "--loglevel=INFO", "--pool=solo",
            f"--queues={worker.queue}", f"--hostname=second-{worker.queue}@%h",
            "--without-gossip", "--without-mingle", "--without-heartbeat",
        ],
        cwd=settings.BASE_DIR, env=worker.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    log.close()
    worker.wait_for(lambda: " ready." in worker.log("worker2"), "the second worker to start")


def test_a_living_worker_keeps_its_claim_however_long_one_email_takes(
    worker: Celery, smtp: SmtpServer, staff: User
) -> None:
    """The claim timeout is short (3 s here), and one email takes twice as long (the server holds it 6 s
    before its 250). The worker's heartbeat keeps the batch's claim fresh, so the second worker's sweeps,
    every second meanwhile, take nothing back and nothing is sent twice. Before, the sweep took the batch
    after the timeout and sent it again (or, with the old 300 s timeout, a dead worker's rows waited five
    minutes)."""
    worker.env["DELIVERY_CLAIM_TIMEOUT_SECONDS"] = "3"
    names = ["ann@example.com", "bob@example.com", "cat@example.com"]
    confirmed(*names)
    smtp.handler.slow["bob@example.com"] = 6.0  # under EMAIL_TIMEOUT (10 s): slow, not failed
    start(worker)
    start_second_worker(worker)

    with producing_to(worker):
        factories.declare(actor=staff)
    worker.wait_for(sent_all(3), "every update sent", timeout=40)

    def sweeps() -> int:
        return len(re.findall(r"sweep_deliveries\[[^]]+\] succeeded", worker.log("worker") + worker.log("worker2")))

    done = sweeps()
    worker.wait_for(lambda: sweeps() >= done + 3, "three more sweeps")
    assert smtp.copies() == dict.fromkeys(names, 1), worker.logs()
    assert set(update_rows().values_list("status", "attempts")) == {(DeliveryStatus.SENT, 1)}  # none taken back


def test_a_dead_workers_rows_go_out_within_about_a_minute(
    worker: Celery, smtp: SmtpServer, staff: User, record_property: Callable[[str, object], None]
) -> None:
    """Two workers; the one sending the fan-out is SIGKILLed mid-batch. The other sends what was never
    claimed at once, and the rows the dead worker held once its claim times out, which the heartbeat
    lets be short. Measured from the kill to the last of those rows sent: with the default claim
    timeout when FAULT_CLAIM_TIMEOUT_SECONDS=default (and FAULT_SWEEP_SECONDS=15 for beat's production
    pace), else with a 6 s timeout, to keep the suite quick."""
    timeout = os.environ.get("FAULT_CLAIM_TIMEOUT_SECONDS", "6")
    timeout_seconds = int(timeout) if timeout != "default" else settings.DELIVERY_CLAIM_TIMEOUT_SECONDS
    sweep_seconds = int(os.environ.get("FAULT_SWEEP_SECONDS", "1"))
    worker.env["DELIVERY_CLAIM_TIMEOUT_SECONDS"] = str(timeout_seconds)
    worker.env["TIMER_SWEEP_SECONDS"] = str(sweep_seconds)
    names = [f"reader{n:03}@example.com" for n in range(300)]
    confirmed(*names)
    smtp.handler.delay = 0.03  # a batch of 100 takes 3 s or more
    start(worker)
    start_second_worker(worker)

    with producing_to(worker):
        factories.declare(actor=staff)
    worker.wait_for(lambda: len(smtp.received) >= 40, "the first emails of the fan-out")
    received = re.compile(r"Task incidents\.tasks\.notify\[[^]]+\] received")
    busy = "worker" if received.search(worker.log("worker")) else "worker2"  # the one sending the fan-out
    assert received.search(worker.log(busy)), worker.logs()
    os.killpg(worker.processes[busy].pid, signal.SIGKILL)
    killed_at = timezone.now()
    worker.processes[busy].wait(10)
    del worker.processes[busy]  # dead on purpose: wait_for must not fail on it
    (Path(worker.tmp_path) / f"{busy}.log").rename(Path(worker.tmp_path) / "killed-worker.log")
    assert update_rows().filter(status=DeliveryStatus.SENDING).exists(), "killed mid-batch"

    worker.wait_for(sent_all(300), "every update sent", timeout=timeout_seconds + 4 * sweep_seconds + 60)
    # The dead worker's rows are those taken back, which counted an attempt (the other worker's rows, held
    # at the kill too, went out on its first try).
    taken_back = update_rows().filter(attempts__gte=2)
    assert taken_back.exists()
    last_held = max(taken_back.values_list("sent_at", flat=True))
    last_any = max(update_rows().values_list("sent_at", flat=True))
    held_after, all_after = (last_held - killed_at).total_seconds(), (last_any - killed_at).total_seconds()
    record_property("seconds_from_kill_to_held_rows_sent", round(held_after, 1))
    print(
        f"\nclaim timeout {timeout_seconds} s, sweep every {sweep_seconds} s: the {taken_back.count()} rows the "
        f"dead worker held were sent {held_after:.1f} s after the kill; all 300 by {all_after:.1f} s"
    )
    # Within one claim timeout (the heartbeat renewed it until the kill), a sweep or two, and the time the
    # other worker (one task at a time) takes to finish the batch it is sending before it sweeps.
    assert held_after <= timeout_seconds + 2 * sweep_seconds + 15, held_after
    copies = smtp.copies()
    assert set(copies) == set(names)
    assert sum(n - 1 for n in copies.values()) <= 1, {a: n for a, n in copies.items() if n > 1}


UNREACHABLE = "redis://127.0.0.1:1/0"  # nothing listens there


def test_posting_while_redis_is_down_does_not_raise(worker: Celery, staff: User) -> None:
    incident = factories.declare(actor=staff)
    with redis_down(UNREACHABLE), producing_to(worker, broker_url=UNREACHABLE):
        actions.post_update(incident, actor=staff, body="Still investigating.")


def test_an_update_posted_while_redis_was_down_is_sent_when_it_returns(
    worker: Celery, smtp: SmtpServer, staff: User
) -> None:
    names = ["ann@example.com", "bob@example.com", "cat@example.com"]
    confirmed(*names)

    started = time.monotonic()
    # The action must not raise (the test above); whatever it does, the update is committed.
    with redis_down(UNREACHABLE), producing_to(worker, broker_url=UNREACHABLE), contextlib.suppress(Exception):
        factories.declare(actor=staff, title="Queries are slow")
    post_seconds = time.monotonic() - started
    message = Message.objects.get(kind=MessageKind.INCIDENT_UPDATE)
    assert message.fanned_out_at is None  # the notify task never reached a broker

    start(worker)  # "Redis is back": beat's delivery sweep finds the message
    worker.wait_for(sent_all(3), "the update sent by the sweep")
    message.refresh_from_db()
    assert message.fanned_out_at is not None
    assert smtp.copies() == dict.fromkeys(names, 1), worker.logs()
    assert post_seconds < 10, f"posting took {post_seconds:.1f} s with Redis down"


@contextlib.contextmanager
def redis_down(url: str) -> Iterator[None]:
    """The producer's Redis (cache, snapshot store) at a closed port; the broker is producing_to's."""
    caches = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": url}}
    with override_settings(REDIS_URL=url, CACHES=caches):
        yield
