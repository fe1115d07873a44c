"""The snapshot store's read side: the newest published document, without the database.

Each process keeps the current document in memory and looks for a newer version at most once per
RECHECK_SECONDS: a GET of the version key in Redis, else the snapshot file's mtime. So most public
requests make no network call, and none touches the database. Only when every store is empty is the
document built once from the database (a fresh install before its first publish).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.utils.http import http_date

from incidents import publishing

log = logging.getLogger(__name__)

RECHECK_SECONDS = 1.0
# After a failed build (no store has a document and the database could not make one), requests answer
# 503 at once for this long instead of each trying the database again.
BUILD_RETRY_SECONDS = 5.0
# How long a request waits for another thread's build before it answers 503.
BUILD_WAIT_SECONDS = 10.0


@dataclass(frozen=True)
class Published:
    version: int
    document: dict[str, Any]

    @property
    def etag(self) -> str:
        return f'"v{self.version}"'

    @property
    def generated_at(self) -> datetime:
        return datetime.fromisoformat(self.document["generated_at"])

    @property
    def last_modified(self) -> str:
        """An HTTP date (GMT) for the Last-Modified header."""
        return http_date(self.generated_at.timestamp())


class SnapshotReader:
    def __init__(self) -> None:
        self._current: Published | None = None
        self._checked_at = float("-inf")
        self._file_mtime: float | None = None
        # Guards the fields above, never held while the database builds a document: a build publishes,
        # and publishing calls back into this reader (export.on_published → reset(), then renders every
        # page through current()). A plain Lock held across that deadlocked a fresh install's first request.
        self._lock = threading.Lock()
        # One build from the database at a time per process; the others wait for its result. The
        # building thread's own nested reads (the static export renders pages) must not build again.
        self._build_lock = threading.Lock()
        self._builder: int | None = None
        self._build_failed_at = float("-inf")

    def reset(self) -> None:
        with self._lock:
            self._current = None
            self._checked_at = float("-inf")
            self._file_mtime = None
            self._build_failed_at = float("-inf")

    def current(self, *, build: bool = True) -> Published | None:
        if time.monotonic() - self._checked_at < RECHECK_SECONDS and self._current is not None:
            return self._current
        with self._lock:
            if time.monotonic() - self._checked_at >= RECHECK_SECONDS or self._current is None:
                newer = self._from_redis() or self._from_file()
                if newer is not None and (self._current is None or newer.version > self._current.version):
                    self._current = newer
                self._checked_at = time.monotonic()
            if self._current is not None or not build:
                return self._current
        return self._build()

    def _build(self) -> Published | None:
        """No store has a snapshot (a fresh install): build one from the database, outside `_lock`."""
        if self._builder == threading.get_ident():
            return None  # a read from inside this thread's own build, before any store has the document
        if time.monotonic() - self._build_failed_at < BUILD_RETRY_SECONDS:
            return None
        if not self._build_lock.acquire(timeout=BUILD_WAIT_SECONDS):
            return None
        try:
            with self._lock:
                if self._current is not None:  # another thread built it while this one waited
                    return self._current
            self._builder = threading.get_ident()
            try:
                built = self._from_database()
            finally:
                self._builder = None
            with self._lock:
                if built is None:
                    self._build_failed_at = time.monotonic()
                elif self._current is None or built.version > self._current.version:
                    self._current = built
                    self._checked_at = time.monotonic()
                return self._current
        finally:
            self._build_lock.release()

    def _known_version(self) -> int:
        return self._current.version if self._current is not None else 0

    def _from_redis(self) -> Published | None:
        client = publishing.redis_client()
        if client is None:
            return None
        try:
            version, source = client.mget(publishing.REDIS_VERSION_KEY, publishing.REDIS_SOURCE_KEY)
            if version is None or int(version) <= self._known_version():
                return None
            if source is not None and source.decode() != publishing.database_identity():
                return None  # another database's document (a Redis database shared by mistake)
            payload = client.get(publishing.REDIS_DOCUMENT_KEY)
        except Exception:
            log.warning("snapshot: Redis unavailable, reading the file", exc_info=False)
            return None
        return _ours(_parse(payload), "Redis")

    def _from_file(self) -> Published | None:
        path = publishing.snapshot_path()
        try:
            mtime = path.stat().st_mtime
            if mtime == self._file_mtime:
                return None
            payload = path.read_bytes()
        except OSError:
            return None
        self._file_mtime = mtime
        return _ours(_parse(payload), str(path))

    def _from_database(self) -> Published | None:
        try:
            snapshot = publishing.publish()
        except Exception:
            log.exception("snapshot: no store has a snapshot and the database could not build one")
            return None
        return Published(snapshot.version, snapshot.document)


def _ours(published: Published | None, store: str) -> Published | None:
    """The document, unless another database published it: two instances sharing SNAPSHOT_DIR (or a
    Redis database) must never serve each other's pages."""
    if published is not None and publishing.is_foreign(published.document):
        log.warning(
            "snapshot: %s holds a document published from another database (%s); not serving it. "
            "Give each instance its own SNAPSHOT_DIR (and Redis database).",
            store,
            published.document.get("source"),
        )
        return None
    return published


def _parse(payload: bytes | None) -> Published | None:
    if not payload:
        return None
    try:
        document = json.loads(payload)
        return Published(int(document["version"]), document)
    except (ValueError, KeyError, TypeError):
        log.exception("snapshot: unreadable document")
        return None


reader = SnapshotReader()


def current() -> Published | None:
    return reader.current()


def current_without_building() -> Published | None:
    """The newest document from memory or a store, never built from the database (for pages that answer
    because the database failed)."""
    return reader.current(build=False)
