"""Publishing: build the public snapshot and store it where the public side reads it.

Any public-facing change asks for a publish after it commits (`request_publish`). Requests coalesce:
the first one in a window enqueues one task a second later, the rest find it pending, so a burst of
changes gives one or two builds. The task builds the document (incidents/public.py) and, unless its
content is unchanged, stores a new version in the database, in Redis (when configured) and in a file
(atomic rename). A periodic republish is the safety net for a lost request.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, connections, transaction
from django.dispatch import Signal
from django.utils import timezone

from incidents.models import Snapshot
from incidents.public import build_document, content_hash

log = logging.getLogger(__name__)

PENDING_KEY = "signalpost:publish-pending"
COALESCE_SECONDS = 1.0
KEEP_SNAPSHOTS = 50
REDIS_DOCUMENT_KEY = "signalpost:snapshot:document"
REDIS_VERSION_KEY = "signalpost:snapshot:version"
REDIS_SOURCE_KEY = "signalpost:snapshot:source"
SNAPSHOT_FILE = "snapshot.json"

# Sent after every publish with `snapshot` (new or unchanged). The public site listens to write its
# static files; the domain itself never imports the public site.
snapshot_published = Signal()


@functools.cache
def database_identity() -> str:
    """Which database this process publishes from and serves: a digest of its engine, host, port and name.

    Every document records it as `source`, and the reader (statuspage/snapshot.py) serves no document
    from another database: two instances started from one checkout share SNAPSHOT_DIR (and perhaps a
    Redis database) unless told otherwise, and must never show each other's pages. It comes from the
    settings, not from a query, so the public side can check it with the database down (once per
    process: the settings do not change while it runs).
    """
    db = connections["default"].settings_dict
    key = "|".join(str(db.get(part) or "") for part in ("ENGINE", "HOST", "PORT", "NAME"))
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def is_foreign(document: dict[str, Any]) -> bool:
    """Published from another database (a document written before sources were recorded counts as ours)."""
    source = document.get("source")
    return source is not None and source != database_identity()


def redis_client() -> Any:
    """A client with short timeouts: a Redis outage must cost the public side milliseconds."""
    if not settings.REDIS_URL:
        return None
    import redis

    return redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=0.25, socket_timeout=0.5)


def request_publish() -> None:
    """Ask for a publish once the current transaction commits (once per transaction)."""
    connection = transaction.get_connection()
    if any(callback is _enqueue_publish for _, callback, _ in connection.run_on_commit):
        return
    transaction.on_commit(_enqueue_publish, robust=True)


def _enqueue_publish() -> None:
    from incidents.tasks import publish_snapshot

    try:
        first = cache.add(PENDING_KEY, 1, timeout=30)
    except Exception:  # a cache outage must not stop the change the user made
        log.warning("publish coalescing unavailable; publishing without it", exc_info=True)
        first = True
    if first:
        try:
            publish_snapshot.apply_async(countdown=COALESCE_SECONDS)
        except Exception:
            # The change is committed; a broker outage must not turn it into an error. Beat's periodic
            # republish (or the next change) publishes it. Let the next change try again at once.
            log.warning("could not enqueue a publish; the periodic republish will catch up", exc_info=True)
            with contextlib.suppress(Exception):
                cache.delete(PENDING_KEY)


def publish(*, force: bool = False) -> Snapshot:
    """Build the document and store it; returns the newest snapshot (new, or unchanged content)."""
    try:
        cache.delete(PENDING_KEY)  # changes from now on ask for another build
    except Exception:
        log.warning("could not clear the publish-pending flag", exc_info=True)
    now = timezone.now()
    document = {**build_document(now), "source": database_identity()}
    digest = content_hash(document)
    snapshot = _save(document, digest, force=force)
    write_stores(snapshot.document)
    for receiver, error in snapshot_published.send_robust(sender=Snapshot, snapshot=snapshot):
        if error is not None:
            log.error("after publishing, %s failed", receiver, exc_info=error)
    return snapshot


def _save(document: dict[str, Any], digest: str, *, force: bool) -> Snapshot:
    for _ in range(5):
        try:
            with transaction.atomic():
                latest = Snapshot.objects.order_by("-version").first()
                if latest is not None and latest.content_hash == digest and not force:
                    return latest
                version = (latest.version if latest else 0) + 1
                document = {**document, "version": version}
                snapshot = Snapshot.objects.create(version=version, document=document, content_hash=digest)
                stale = Snapshot.objects.order_by("-version").values_list("version", flat=True)[KEEP_SNAPSHOTS:]
                Snapshot.objects.filter(version__in=list(stale)).delete()
                return snapshot
        except IntegrityError:
            continue  # another publish took that version number: build on top of it
    raise RuntimeError("could not store a snapshot after 5 tries")


def snapshot_path() -> Path:
    return Path(settings.SNAPSHOT_DIR) / SNAPSHOT_FILE


def write_stores(document: dict[str, Any]) -> None:
    """Write the document to the file and to Redis, newest version only; each store on its own."""
    payload = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
    path = snapshot_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        current, source = _file_version(path)
        if source is not None and source != document["source"]:
            log.warning(
                "the snapshot file %s was published from another database (%s); replacing it with this one's. "
                "Give each instance its own SNAPSHOT_DIR (and Redis database).",
                path,
                source,
            )
        if current is None or current < document["version"] or source != document["source"]:
            with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".snapshot-", delete=False) as handle:
                handle.write(payload)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(handle.name, 0o644)
            os.replace(handle.name, path)
    except OSError:
        log.exception("could not write the snapshot file %s", path)
    client = redis_client()
    if client is None:
        return
    try:
        # Only move forward: a slow, older publish must not replace a newer document (of this database:
        # another database's document, in a Redis database shared by mistake, is replaced).
        script = (
            "local v = tonumber(redis.call('GET', KEYS[2]) or '0') "
            "if tonumber(ARGV[2]) > v or redis.call('GET', KEYS[3]) ~= ARGV[3] then "
            "redis.call('SET', KEYS[1], ARGV[1]) redis.call('SET', KEYS[2], ARGV[2]) "
            "redis.call('SET', KEYS[3], ARGV[3]) return 1 end return 0"
        )
        client.eval(
            script,
            3,
            REDIS_DOCUMENT_KEY,
            REDIS_VERSION_KEY,
            REDIS_SOURCE_KEY,
            payload,
            document["version"],
            document["source"],
        )
    except Exception:
        log.exception("could not write the snapshot to Redis")


def _file_version(path: Path) -> tuple[int | None, str | None]:
    """The version and source of the snapshot file, (None, None) when there is none to read."""
    try:
        with path.open("rb") as handle:
            document = json.load(handle)
            version = document.get("version")
            return (int(version) if version is not None else None), document.get("source")
    except (OSError, ValueError, AttributeError):
        return None, None
