"""Django's PostgreSQL backend, with a bulkhead on opening connections in the web process.

A database that accepts connections and never answers holds each request that connects for the whole
DATABASE_CONNECT_TIMEOUT. gunicorn's threads are shared by every page, so enough such requests at once
would hold them all and leave the public pages (served from memory) waiting for a free thread. Here at
most DATABASE_CONNECT_SLOTS threads of a process wait on a new connection; another waits at most
DATABASE_CONNECT_QUEUE_SECONDS for a slot (only while connecting is quick: when an attempt in a slot has
already taken longer than that, it does not wait at all), then gives up as if the database had refused
it (its request answers 503). After a connection attempt fails for unavailability (refused, timed out), new
ones fail at once for DATABASE_CONNECT_RETRY_SECONDS: the first requests to find the database down
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

    def connect(self, open_connection: Any) -> Any:
        queue = settings.DATABASE_CONNECT_QUEUE_SECONDS
        with self.lock:
            now = time.monotonic()
            waited_out = now < self.down_until
            because = self.down_because
            # Connecting is slow right now (the database may be hanging): waiting for a slot would only
            # hold this thread too.
            slow = any(now - began > queue for began in self.connecting.values())
        if waited_out:
            raise psycopg.OperationalError(f"not connecting: the database was unavailable just now ({because})")
        if not self.slots.acquire(timeout=0 if slow else queue):
            raise psycopg.OperationalError(
                f"not connecting: {settings.DATABASE_CONNECT_SLOTS} requests of this process are already "
                "waiting for the database"
            )
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
