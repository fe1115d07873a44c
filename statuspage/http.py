"""Responses rendered from the published snapshot: cached per version, revalidated with ETags.

A public request finds the current snapshot in memory (statuspage/snapshot.py), answers 304 when the
client already has this version, and otherwise serves bytes rendered once per version and route.
It never touches the database.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, HttpResponseNotModified
from django.utils.cache import patch_vary_headers

from statuspage.snapshot import Published, current

CACHE_CONTROL = "public, max-age=15, stale-while-revalidate=30, stale-if-error=86400"
# The page's own htmx poll must see each new version at once: it revalidates every time (a 304 when
# nothing changed), where a cached copy with stale-while-revalidate would show every change a poll late.
POLL_CACHE_CONTROL = "no-cache"
MAX_CACHED = 512

_rendered: OrderedDict[tuple[int, str], bytes] = OrderedDict()
_lock = threading.Lock()


class SnapshotUnavailable(Exception):
    """No store has a snapshot and the database cannot build one."""


def published() -> Published:
    snapshot = current()
    if snapshot is None:
        raise SnapshotUnavailable
    return snapshot


def cached_render(snapshot: Published, key: str, render: Callable[[Published], bytes]) -> bytes:
    """The bytes for `key` at this version, rendered once per process."""
    cache_key = (snapshot.version, key)
    with _lock:
        body = _rendered.get(cache_key)
        if body is not None:
            _rendered.move_to_end(cache_key)
            return body
    body = render(snapshot)
    with _lock:
        _rendered[cache_key] = body
        while len(_rendered) > MAX_CACHED:
            _rendered.popitem(last=False)
    return body


def snapshot_response(
    request: HttpRequest,
    key: str,
    render: Callable[[Published], bytes],
    content_type: str,
    *,
    vary_on_htmx: bool = False,
) -> HttpResponse:
    """A 200 with the rendered bytes, or a 304 when the client's ETag is this version's."""
    snapshot = published()
    polled = vary_on_htmx and bool(request.headers.get("HX-Request"))
    etag = f'"v{snapshot.version}-hx"' if polled else snapshot.etag
    if etag in presented_etags(request):
        response: HttpResponse = HttpResponseNotModified()
    else:
        cache_key = f"{key}#hx" if polled else key
        response = HttpResponse(cached_render(snapshot, cache_key, render), content_type=content_type)
    response["ETag"] = etag
    response["Last-Modified"] = snapshot.last_modified
    response["Cache-Control"] = POLL_CACHE_CONTROL if polled else CACHE_CONTROL
    if vary_on_htmx:
        patch_vary_headers(response, ["HX-Request"])
    return response


def presented_etags(request: HttpRequest) -> set[str]:
    # Weak comparison, as RFC 9110 allows for GET: a CDN may have marked our tag weak (W/"v12").
    return {tag.strip().removeprefix("W/") for tag in request.headers.get("If-None-Match", "").split(",")}


def bytes_response(request: HttpRequest, body: bytes, content_type: str) -> HttpResponse:
    """A 200 for bytes rendered outside the snapshot's cache (a page read from the database), tagged by
    their content, or a 304 when the client has these bytes already."""
    etag = f'"c{hashlib.sha256(body).hexdigest()[:24]}"'
    response = (
        HttpResponseNotModified() if etag in presented_etags(request) else HttpResponse(body, content_type=content_type)
    )
    response["ETag"] = etag
    response["Cache-Control"] = CACHE_CONTROL
    return response


def clear_rendered() -> None:
    with _lock:
        _rendered.clear()
