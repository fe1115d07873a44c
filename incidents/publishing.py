"""Publishing: build the public snapshot and store it where the public side reads it.

Any public-facing change asks for a publish after it commits (`request_publish`). Requests coalesce:
the first one in a window enqueues one task a second later, the rest find it pending, so a burst of
changes gives one or two builds. The task builds the document (incidents/public.py) and, unless its
content is unchanged, stores a new version in the database, in Redis (when configured) and in a file
(atomic rename).

A request also writes a PublishRequest row in the change's own transaction, which the publish that
includes the change deletes. The broker's message can be lost (Redis down at commit, a worker that
never runs the task); the row cannot: the sweep (beat's sweep_clocks, or run_timers) publishes while
one has waited longer than a publish takes, so a change is public within one sweep of the broker's
return, and the dashboard warns when one has waited longer than a minute. A periodic republish keeps
time-dependent parts (today's uptime) current.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, connections, transaction
from django.dispatch import Signal
from django.utils import timezone

from incidents.clocks import record_sweep
from incidents.models import PublishRequest, Snapshot
from incidents.public import build_document, content_hash

log = logging.getLogger(__name__)

PENDING_KEY = "signalpost:publish-pending"
COALESCE_SECONDS = 1.0
KEEP_SNAPSHOTS = 50
REDIS_DOCUMENT_KEY = "signalpost:snapshot:document"
REDIS_VERSION_KEY = "signalpost:snapshot:version"
REDIS_SOURCE_KEY = "signalpost:snapshot:source"
SNAPSHOT_FILE = "snapshot.json"
# Stamped by every completed publish, changed content or not (a SweepHeartbeat row): /readyz reads it.
PUBLISH_HEARTBEAT = "publish"
# The sweep publishes a change that has waited this long: longer than the coalesced task takes when
# the broker and a worker are there, so the sweep does not build the same change a second time.
STALE_AFTER_SECONDS = 5
# The dashboard turns red when a change has waited this long unpublished.
OVERDUE_AFTER_SECONDS = 60

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
    return identity_of(connections["default"].settings_dict)


def identity_of(database: Mapping[str, object]) -> str:
    """The identity of a database given its settings (a DATABASES entry)."""
    # The web process's engine is Django's PostgreSQL backend with a connection bulkhead
    # (statuspage.postgresql): the same database as the workers', which publish.
    engine = str(database.get("ENGINE") or "").replace("statuspage.postgresql", "django.db.backends.postgresql")
    key = "|".join([engine, *(str(database.get(part) or "") for part in ("HOST", "PORT", "NAME"))])
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def is_foreign(document: dict[str, Any]) -> bool:
    """Published from another database (a document written before sources were recorded counts as ours)."""
    source = document.get("source")
    return source is not None and source != database_identity()


_redis_clients: dict[str, Any] = {}


def redis_client() -> Any:
    """A client with short timeouts: a Redis outage must cost the public side milliseconds.

    One per URL and process, so its connections are pooled (a connection per call cost a TCP handshake
    at every recheck of every public request's snapshot). redis-py's pool is thread-safe and starts
    afresh in a forked child."""
    url = settings.REDIS_URL
    if not url:
        return None
    client = _redis_clients.get(url)
    if client is None:
        import redis

        client = _redis_clients.setdefault(
            url,
            redis.Redis.from_url(
                url, socket_connect_timeout=0.25, socket_timeout=0.5, health_check_interval=30, max_connections=64
            ),
        )
    return client


def request_publish() -> None:
    """Ask for a publish once the current transaction commits (once per transaction)."""
    connection = transaction.get_connection()
    if any(callback is _enqueue_publish for _, callback, _ in connection.run_on_commit):
        return
    PublishRequest.objects.create()  # durable: commits with the change, whatever happens to the message
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
            # The change is committed; a broker outage must not turn it into an error. Its PublishRequest
            # row committed with it, so the first sweep after the broker is back publishes it (or the
            # next change does). Let the next change try again at once.
            log.warning("could not enqueue a publish; the next sweep publishes the change", exc_info=True)
            with contextlib.suppress(Exception):
                cache.delete(PENDING_KEY)


def publish(*, force: bool = False) -> Snapshot:
    """Build the document and store it; returns the newest snapshot (new, or unchanged content)."""
    try:
        cache.delete(PENDING_KEY)  # changes from now on ask for another build
    except Exception:
        log.warning("could not clear the publish-pending flag", exc_info=True)
    # The changes this build includes: every request committed before it starts reading. One committed
    # later (even with a smaller id) stays, and is published by the next build or sweep.
    covered = list(PublishRequest.objects.order_by().values_list("id", flat=True))
    now = timezone.now()
    document = {**build_document(now), "source": database_identity()}
    digest = content_hash(document)
    snapshot = _save(document, digest, force=force)
    if write_stores(snapshot.document) and covered:
        PublishRequest.objects.filter(id__in=covered).delete()
    for receiver, error in snapshot_published.send_robust(sender=Snapshot, snapshot=snapshot):
        if error is not None:
            log.error("after publishing, %s failed", receiver, exc_info=error)
    record_sweep(now, name=PUBLISH_HEARTBEAT)
    return snapshot


def _save(document: dict[str, Any], digest: str, *, force: bool) -> Snapshot:
    floor = stores_version(document["source"])
    for _ in range(5):
        try:
            with transaction.atomic():
                latest = Snapshot.objects.order_by("-version").first()
                if latest is not None and latest.content_hash == digest and not force and latest.version >= floor:
                    return latest
                # Above the stores' too: after a restore of an older dump they hold newer numbers, and
                # only move forward, so a smaller one would never reach the public side.
                version = max(latest.version if latest else 0, floor) + 1
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


def publish_if_stale(now: datetime | None = None) -> Snapshot | None:
    """The sweep's check: publish when a public change has waited longer than STALE_AFTER_SECONDS (its
    publish request was lost, or no worker ran it), or when nothing was ever published. Two small queries
    when there is nothing to do."""
    now = now or timezone.now()
    waiting = PublishRequest.objects.filter(requested_at__lte=now - timedelta(seconds=STALE_AFTER_SECONDS))
    if waiting.exists() or not Snapshot.objects.exists():
        return publish()
    return None


def write_stores(document: dict[str, Any]) -> bool:
    """Write the document to the file and to Redis, newest version only; each store on its own.

    True when at least one store the public side reads now holds this version (or a newer one).
    """
    payload = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
    path = snapshot_path()
    stored = False
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
        stored = True
    except OSError:
        log.exception("could not write the snapshot file %s", path)
    client = redis_client()
    if client is None:
        return stored
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
        return stored
    return True


def stores_version(source: str) -> int:
    """The newest version of this database's documents in the file and in Redis (0 when none)."""
    versions = [0]
    current, file_source = _file_version(snapshot_path())
    if current is not None and file_source in (source, None):
        versions.append(current)
    client = redis_client()
    if client is not None:
        try:
            version, redis_source = client.mget(REDIS_VERSION_KEY, REDIS_SOURCE_KEY)
            if version is not None and (redis_source is None or redis_source.decode() == source):
                versions.append(int(version))
        except Exception:
            log.warning("could not read the snapshot version in Redis", exc_info=True)
    return max(versions)


def _file_version(path: Path) -> tuple[int | None, str | None]:
    """The version and source of the snapshot file, (None, None) when there is none to read."""
    try:
        with path.open("rb") as handle:
            document = json.load(handle)
            version = document.get("version")
            return (int(version) if version is not None else None), document.get("source")
    except (OSError, ValueError, AttributeError):
        return None, None
