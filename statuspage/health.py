"""Health endpoints for load balancers and monitors: /healthz (liveness) and /readyz (readiness).

HealthMiddleware answers them first, ahead of the https redirect, the allowed-hosts check, sessions,
CSRF and sign-in throttling: a probe on plain HTTP, sending its own address as Host, gets the answer
and nothing else, and no limit ever counts it. Both answer JSON with `Cache-Control: no-store`, so
no proxy or browser keeps a copy, and say what failed without saying anything a visitor should not
know (no host names, addresses, users or error texts: those go to the log).

- /healthz: the process is up and answering. It touches no database, Redis or file.
- /readyz: each check below, 200 when all pass, 503 when one fails. `?check=database,redis` (or the
  parameter repeated) runs and counts only those, for a load balancer that should take a web node out
  only when it cannot reach the database, say.

The database part is three small indexed queries; Redis is one PING with the public side's short
timeouts (incidents/publishing.py).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from incidents import clocks, publishing
from incidents.models import BreakerState, CircuitBreaker, Snapshot, SweepHeartbeat

log = logging.getLogger(__name__)

LIVENESS_PATHS = frozenset({"/healthz", "/healthz/"})
READINESS_PATHS = frozenset({"/readyz", "/readyz/"})
CHECKS = ("database", "redis", "sweep", "publish", "breakers")
NEEDS_DATABASE = frozenset({"database", "sweep", "publish", "breakers"})
EMAIL_BREAKER = "email"

Facts = dict[str, Any]


class UnknownCheck(ValueError):
    pass


def stamp(moment: datetime | None) -> str | None:
    """UTC, to the second, ending in Z."""
    if moment is None:
        return None
    return moment.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def age(moment: datetime | None, now: datetime) -> int | None:
    """Whole seconds, rounded up, so an age just past the limit never reads as the limit itself; a
    heartbeat a little ahead of this host's clock (another host's) is 0, not negative."""
    return None if moment is None else max(0, math.ceil((now - moment).total_seconds()))


def publish_overdue_after() -> timedelta:
    """The periodic republish runs every REPUBLISH_SECONDS: one missed run is not an alarm, two are."""
    return timedelta(seconds=2 * settings.REPUBLISH_SECONDS)


def wanted_checks(request: HttpRequest) -> tuple[str, ...]:
    """The checks `?check=` names (comma-separated or repeated), in CHECKS order; all without it."""
    named = {name.strip() for value in request.GET.getlist("check") for name in value.split(",") if name.strip()}
    unknown = sorted(named - set(CHECKS))
    if unknown:
        raise UnknownCheck(f"Unknown check {', '.join(map(repr, unknown))}: choose from {', '.join(CHECKS)}.")
    return tuple(name for name in CHECKS if name in named) if named else CHECKS


def read_database(now: datetime) -> tuple[Facts | None, str | None]:
    """Everything the database checks need, in three queries; (None, the error's kind) when it fails."""
    started = time.perf_counter()
    try:
        beats = dict(
            SweepHeartbeat.objects.filter(name__in=[clocks.HEARTBEAT, publishing.PUBLISH_HEARTBEAT]).values_list(
                "name", "swept_at"
            )
        )
        elapsed_ms = (time.perf_counter() - started) * 1000
        latest = Snapshot.objects.order_by("-version").values_list("version", "created_at").first()
        breakers = list(CircuitBreaker.objects.exclude(state=BreakerState.CLOSED).values_list("transport", "state"))
    except DatabaseError as error:
        # The full error (host, user, database) is for the log only.
        log.warning("readiness: the database check failed: %s", error)
        return None, type(error).__name__
    return {"beats": beats, "latest": latest, "breakers": breakers, "ms": round(elapsed_ms, 1)}, None


def check_database(facts: Facts) -> Facts:
    return {"ok": True, "ms": facts["ms"]}


def check_redis() -> Facts:
    client = publishing.redis_client()
    if client is None:
        return {"ok": True, "configured": False}  # one box: eager tasks, run_timers --loop
    started = time.perf_counter()
    try:
        client.ping()
    except Exception as error:
        log.warning("readiness: the Redis check failed: %s", error)
        return {"ok": False, "configured": True, "error": type(error).__name__}
    finally:
        client.close()
    return {"ok": True, "configured": True, "ms": round((time.perf_counter() - started) * 1000, 1)}


def check_sweep(facts: Facts, now: datetime) -> Facts:
    """The clock sweep (beat, or run_timers --loop) fires clocks and pages: stale as the dashboard says."""
    last = facts["beats"].get(clocks.HEARTBEAT)
    limit = clocks.sweep_overdue_after()
    return {
        "ok": last is not None and now - last <= limit,
        "last_at": stamp(last),
        "age_seconds": age(last, now),
        "max_age_seconds": int(limit.total_seconds()),
    }


def check_publish(facts: Facts, now: datetime) -> Facts:
    """The last completed publish (the periodic republish included), and the public version it left.

    Snapshot rows are written only when the public content changes, so a quiet page's newest row can
    be days old on a healthy install: the heartbeat that every publish stamps is what shows publishing
    still runs. The newest row's time (`changed_at`) counts too, for an install whose publishes all
    predate the heartbeat.
    """
    latest = facts["latest"]
    version, changed_at = latest if latest else (None, None)
    last = max((t for t in (facts["beats"].get(publishing.PUBLISH_HEARTBEAT), changed_at) if t), default=None)
    limit = publish_overdue_after()
    return {
        "ok": last is not None and now - last <= limit,
        "last_at": stamp(last),
        "age_seconds": age(last, now),
        "max_age_seconds": int(limit.total_seconds()),
        "version": version,
        "changed_at": stamp(changed_at),
    }


def check_breakers(facts: Facts) -> Facts:
    """Fails while email is paused (our mail server refuses). A paused webhook host is counted but does
    not fail: one subscriber's endpoint being down is theirs, and every other delivery goes on."""
    states = dict(facts["breakers"])
    email = states.pop(EMAIL_BREAKER, BreakerState.CLOSED)
    return {
        "ok": email == BreakerState.CLOSED,
        "email": str(email),
        "webhook_hosts_paused": sum(1 for transport in states if transport.startswith("webhook")),
    }


def readiness(checks: tuple[str, ...], now: datetime) -> dict[str, Facts]:
    results: dict[str, Facts] = {}
    facts: Facts | None = None
    error = None
    if NEEDS_DATABASE.intersection(checks):
        facts, error = read_database(now)
    for name in checks:
        if name == "redis":
            results[name] = check_redis()
        elif facts is None:
            results[name] = {"ok": False, "error": error if name == "database" else "needs the database"}
        elif name == "database":
            results[name] = check_database(facts)
        elif name == "sweep":
            results[name] = check_sweep(facts, now)
        elif name == "publish":
            results[name] = check_publish(facts, now)
        else:
            results[name] = check_breakers(facts)
    return results


def json_response(request: HttpRequest, body: dict[str, Any], status: int) -> HttpResponse:
    content = b"" if request.method == "HEAD" else json.dumps(body).encode() + b"\n"
    response = HttpResponse(content, content_type="application/json", status=status)
    response["Cache-Control"] = "no-store"
    response["X-Content-Type-Options"] = "nosniff"
    return response


def liveness(request: HttpRequest) -> HttpResponse:
    return json_response(request, {"status": "ok"}, 200)


def ready(request: HttpRequest) -> HttpResponse:
    try:
        checks = wanted_checks(request)
    except UnknownCheck as error:
        return json_response(request, {"detail": str(error), "code": "invalid"}, 400)
    now = timezone.now()
    results = readiness(checks, now)
    failing = [name for name, result in results.items() if not result["ok"]]
    body = {"status": "failing" if failing else "ok", "failing": failing, "checked_at": stamp(now), "checks": results}
    response = json_response(request, body, 503 if failing else 200)
    # Each failing check has logged what failed; Django's "Service Unavailable: /readyz" on every probe
    # (a load balancer asks every few seconds) would only bury it.
    response._has_been_logged = True  # type: ignore[attr-defined]
    return response


class HealthMiddleware:
    """First in MIDDLEWARE: answers /healthz and /readyz (GET and HEAD) before anything else runs."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        path = request.path_info
        if path in LIVENESS_PATHS:
            view = liveness
        elif path in READINESS_PATHS:
            view = ready
        else:
            return self.get_response(request)
        if request.method not in ("GET", "HEAD"):
            response = json_response(request, {"detail": "Use GET or HEAD.", "code": "method_not_allowed"}, 405)
            response["Allow"] = "GET, HEAD"
            return response
        return view(request)
