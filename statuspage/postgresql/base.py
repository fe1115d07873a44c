"""Django's PostgreSQL backend, with a bulkhead on opening connections in the web process.

A database that accepts connections and never answers holds each request that connects for the whole
DATABASE_CONNECT_TIMEOUT. gunicorn's threads are shared by every page, so enough such requests at once
would hold them all and leave the public pages (served from memory) waiting for a free thread. Here at
most DATABASE_CONNECT_SLOTS threads of a process wait on a new connection; another waits for a slot
while the attempts in the slots go at a normal pace (each younger than DATABASE_CONNECT_QUEUE_SECONDS),
so a burst on a busy machine takes turns; as soon as one is slower than that, or fails, the waiting
ones give up as if the database had refused them (their requests answer 503). After a connection
attempt fails for unavailability (refused, timed out), new ones fail at once for
DATABASE_CONNECT_RETRY_SECONDS: the first requests to find the database down
pay the timeout, the next ones answer 503 without waiting.

Used by the web process only (statuspage/settings.py chooses it); workers and commands connect as
Django does.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
from django.conf import settings
from django.db.backends.postgresql import base


class ConnectGate:
    def __init__(self) -> None:
        self.slots = threading.BoundedSemaphore(settings.DATABASE_CONNECT_SLOTS)
        self.lock = threading.Lock()
        self.down_until = 0.0
        self.down_because = ""
        self.connecting: dict[int, float] = {}  # thread id -> when its attempt began

    def _refuse_now(self) -> str | None:
        """Why a request should not wait for a slot now: the database was just found unavailable, or an
        attempt in a slot has taken longer than a healthy one would (it may be hanging)."""
        threshold = settings.DATABASE_CONNECT_QUEUE_SECONDS
        with self.lock:
            now = time.monotonic()
            if now < self.down_until:
                return f"the database was unavailable just now ({self.down_because})"
            if any(now - began > threshold for began in self.connecting.values()):
                return (
                    f"{settings.DATABASE_CONNECT_SLOTS} requests of this process are already waiting for the "
                    f"database, one of them for over {threshold:g} s"
                )
        return None

    def connect(self, open_connection: Any) -> Any:
        # Wait for a slot while connecting goes at a normal pace (a burst of requests on a busy machine
        # takes turns, however long that takes, up to the connect timeout); stop waiting as soon as an
        # attempt in a slot is slow or fails: then the database is down or hanging, and this request
        # answers 503 rather than hold its thread.
        with self.lock:
            if time.monotonic() < self.down_until:
                raise psycopg.OperationalError(
                    f"not connecting: the database was unavailable just now ({self.down_because})"
                )
        deadline = time.monotonic() + settings.DATABASE_CONNECT_TIMEOUT
        while not self.slots.acquire(timeout=0.02):
            problem = self._refuse_now()
            if problem is None and time.monotonic() > deadline:
                problem = "no connection slot came free within the connect timeout"
            if problem is not None:
                raise psycopg.OperationalError(f"not connecting: {problem}")
        me = threading.get_ident()
        try:
            with self.lock:
                self.connecting[me] = time.monotonic()
            connection = open_connection()
        except psycopg.OperationalError as error:
            text = str(error).strip()
            with self.lock:
                self.down_until = time.monotonic() + settings.DATABASE_CONNECT_RETRY_SECONDS
                self.down_because = text.splitlines()[0][:200] if text else type(error).__name__
            raise
        finally:
            with self.lock:
                self.connecting.pop(me, None)
            self.slots.release()
        with self.lock:
            self.down_until = 0.0
        return connection


_gate: ConnectGate | None = None
_gate_lock = threading.Lock()


def gate() -> ConnectGate:
    global _gate
    with _gate_lock:
        if _gate is None:
            _gate = ConnectGate()
        return _gate


class DatabaseWrapper(base.DatabaseWrapper):
    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        parent = super().get_new_connection
        return gate().connect(lambda: parent(conn_params))
