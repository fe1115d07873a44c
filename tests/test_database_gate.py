"""The web process's bulkhead on new database connections (statuspage/postgresql/base.py).

tests/test_database_hanging.py measures it end to end (gunicorn, a database that never answers, 16
clients); these pin its rules with threads and events, no database needed.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pytest

from incidents import publishing
from statuspage.postgresql.base import ConnectGate

# Threads waiting with timeouts: under faketime (the shifted-clock run) a timed wait never ends, and these
# rules are about time; they run in the main suite.
pytestmark = pytest.mark.timing


@pytest.fixture
def gate(settings: Any) -> ConnectGate:
    settings.DATABASE_CONNECT_SLOTS = 1
    settings.DATABASE_CONNECT_QUEUE_SECONDS = 0.25
    settings.DATABASE_CONNECT_RETRY_SECONDS = 30
    return ConnectGate()


def hold_a_slot(gate: ConnectGate) -> tuple[threading.Event, threading.Event, threading.Thread]:
    """A thread connecting until `release` is set; `inside` is set once it holds the slot."""
    inside, release = threading.Event(), threading.Event()

    def slow() -> str:
        inside.set()
        release.wait(10)
        return "connection"

    thread = threading.Thread(target=gate.connect, args=(slow,))
    thread.start()
    assert inside.wait(5)
    return inside, release, thread


def test_a_request_does_not_wait_behind_an_attempt_that_is_already_slow(gate: ConnectGate) -> None:
    _, release, thread = hold_a_slot(gate)
    try:
        time.sleep(0.3)  # the attempt in the slot has now taken longer than the queue allows
        started = time.monotonic()
        with pytest.raises(psycopg.OperationalError, match="1 requests of this process are already waiting"):
            gate.connect(lambda: pytest.fail("must not connect"))
        assert time.monotonic() - started < 0.2  # not the 0.25 s a request waits while connecting is quick
    finally:
        release.set()
        thread.join()


def test_while_connecting_is_quick_a_request_waits_its_turn(gate: ConnectGate) -> None:
    _, release, thread = hold_a_slot(gate)
    threading.Timer(0.05, release.set).start()  # the attempt in the slot ends quickly

    assert gate.connect(lambda: "second") == "second"
    thread.join()


def test_a_request_that_cannot_get_a_slot_in_time_answers_unavailable(gate: ConnectGate, settings: Any) -> None:
    settings.DATABASE_CONNECT_QUEUE_SECONDS = 0.1
    _, release, thread = hold_a_slot(gate)
    try:
        started = time.monotonic()
        with pytest.raises(psycopg.OperationalError, match="already waiting for the database"):
            gate.connect(lambda: pytest.fail("must not connect"))
        assert 0.09 < time.monotonic() - started < 1
    finally:
        release.set()
        thread.join()


def test_after_a_failed_attempt_new_ones_answer_at_once_for_a_while(gate: ConnectGate, settings: Any) -> None:
    def refused() -> Any:
        raise psycopg.OperationalError("connection refused")

    with pytest.raises(psycopg.OperationalError, match="connection refused"):
        gate.connect(refused)
    with pytest.raises(psycopg.OperationalError, match=r"unavailable just now \(connection refused\)"):
        gate.connect(lambda: pytest.fail("must not connect while the database was just found down"))

    gate.down_until = time.monotonic()  # the retry window has passed
    assert gate.connect(lambda: "back") == "back"
    assert gate.connect(lambda: "again") == "again"  # a success closes the window


def test_the_web_process_s_engine_is_the_same_database_for_the_snapshot() -> None:
    # The workers publish with Django's backend; the web process, with the bulkhead, must still take
    # their snapshot for its own.
    ours = {"ENGINE": "statuspage.postgresql", "HOST": "db", "PORT": "5432", "NAME": "signalpost"}
    theirs = {**ours, "ENGINE": "django.db.backends.postgresql"}
    assert publishing.identity_of(ours) == publishing.identity_of(theirs)
    assert publishing.identity_of(ours) != publishing.identity_of({**theirs, "NAME": "other"})


def test_a_burst_on_a_healthy_database_takes_turns_however_long_the_queue(gate: ConnectGate) -> None:
    # The seventh review: 20 staff requests at once on a busy machine got "the database is not answering"
    # (503) from a healthy database, because a request waited at most 0.25 s for a slot.
    outcomes: list[object] = []

    def slow_connection() -> str:
        time.sleep(0.1)
        return "connection"

    def connect_for_a_while() -> None:
        try:
            outcomes.append(gate.connect(slow_connection))
        except psycopg.OperationalError as error:
            outcomes.append(error)

    threads = [threading.Thread(target=connect_for_a_while) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert outcomes == ["connection"] * 8  # 0.8 s of connecting through one slot, each attempt 0.1 s
