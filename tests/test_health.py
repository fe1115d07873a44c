"""/healthz and /readyz: liveness without the database, readiness with each of its checks failing."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import time_machine
from django.conf import settings as django_settings
from django.test import Client

from incidents import clocks, notifications, publishing
from incidents.models import Snapshot
from tests import factories, nginx
from tests.conftest import need
from tests.test_public_resilience import CLOSED_PORT, database_down

T0 = datetime(2026, 11, 8, 14, 5, tzinfo=UTC)
READY_QUERIES = 3  # heartbeats, the newest snapshot, the breakers that are not closed


def readyz(client: Client, query: str = "") -> tuple[int, dict[str, Any]]:
    response = client.get(f"/readyz{query}")
    assert response["Content-Type"] == "application/json"
    assert response["Cache-Control"] == "no-store"
    return response.status_code, json.loads(response.content)


@pytest.fixture
def healthy(db: None, settings: Any) -> Iterator[None]:
    """A page with a component, a sweep and a publish just done, at T0 (time stands still there until the
    test ends)."""
    with time_machine.travel(T0 - timedelta(days=2), tick=False):
        factories.make_component(name="Query API")
    with time_machine.travel(T0, tick=False):
        publishing.publish()
        clocks.record_sweep(T0)
        yield


def test_it_answers_liveness_without_touching_anything(
    client: Client, db: None, django_assert_num_queries: Any
) -> None:
    with django_assert_num_queries(0):
        response = client.get("/healthz")

    assert response.status_code == 200
    assert json.loads(response.content) == {"status": "ok"}
    assert response["Cache-Control"] == "no-store"
    assert "sessionid" not in response.cookies


@pytest.mark.django_db(transaction=True)
def test_liveness_holds_and_readiness_fails_with_the_database_down(settings: Any) -> None:
    settings.REDIS_URL = ""  # one box without Redis: only the database fails here
    client = Client()

    with database_down():
        live = client.get("/healthz")
        status, body = readyz(client)

    assert live.status_code == 200
    assert status == 503
    assert body["status"] == "failing"
    assert body["failing"] == ["database", "sweep", "publish", "breakers"]
    assert body["checks"]["database"] == {"ok": False, "error": "OperationalError"}
    assert body["checks"]["sweep"] == {"ok": False, "error": "needs the database"}
    assert body["checks"]["redis"] == {"ok": True, "configured": False}


def test_it_is_ready_when_everything_is_fresh(
    healthy: None, settings: Any, django_assert_num_queries: Any, requires_redis: None
) -> None:
    with django_assert_num_queries(READY_QUERIES):
        status, body = readyz(Client())

    assert status == 200
    assert (body["status"], body["failing"], body["checked_at"]) == ("ok", [], "2026-11-08T14:05:00Z")
    checks = body["checks"]
    assert list(checks) == ["database", "redis", "sweep", "publish", "breakers"]
    assert all(check["ok"] for check in checks.values())
    assert checks["redis"]["configured"] is True
    assert checks["sweep"] == {
        "ok": True,
        "last_at": "2026-11-08T14:05:00Z",
        "age_seconds": 0,
        "max_age_seconds": 2 * settings.TIMER_SWEEP_SECONDS,
    }
    latest = Snapshot.objects.latest()
    assert checks["publish"] == {
        "ok": True,
        "last_at": "2026-11-08T14:05:00Z",
        "age_seconds": 0,
        "max_age_seconds": 2 * settings.REPUBLISH_SECONDS,
        "version": latest.version,
        "changed_at": "2026-11-08T14:05:00Z",
    }
    assert checks["breakers"] == {"ok": True, "email": "closed", "webhook_hosts_paused": 0}


def test_it_says_nothing_secret(healthy: None, settings: Any) -> None:
    settings.REDIS_URL = f"redis://:hunter2@127.0.0.1:{CLOSED_PORT}/0"
    database = django_settings.DATABASES["default"]

    status, body = readyz(Client())

    text = json.dumps(body)
    assert status == 503
    secrets = ["hunter2", "127.0.0.1", settings.SECRET_KEY, str(database["NAME"]), str(database.get("USER") or "")]
    for secret in filter(None, secrets):
        assert secret not in text, secret


def test_it_fails_with_redis_down(healthy: None, settings: Any, caplog: pytest.LogCaptureFixture) -> None:
    settings.REDIS_URL = f"redis://127.0.0.1:{CLOSED_PORT}/0"

    started = time.monotonic()
    status, body = readyz(Client())

    assert time.monotonic() - started < 2  # the public side's short Redis timeouts
    assert status == 503
    assert body["failing"] == ["redis"]
    assert body["checks"]["redis"] == {"ok": False, "configured": True, "error": "ConnectionError"}
    # The log says what failed, once, and not Django's "Service Unavailable: /readyz" on every probe.
    assert [r.name for r in caplog.records if r.levelno >= logging.WARNING] == ["statuspage.health"]
    assert "Connection refused" in caplog.records[-1].getMessage()


def test_it_fails_when_the_sweep_is_stale(healthy: None, settings: Any) -> None:
    limit = 2 * settings.TIMER_SWEEP_SECONDS
    settings.REDIS_URL = ""

    with time_machine.travel(T0 + timedelta(seconds=limit), tick=False):
        assert readyz(Client())[0] == 200  # one late sweep is not an alarm
    with time_machine.travel(T0 + timedelta(seconds=limit + 0.4), tick=False):
        status, body = readyz(Client())

    assert status == 503
    assert body["failing"] == ["sweep"]
    assert body["checks"]["sweep"]["age_seconds"] == limit + 1  # past the limit, never shown as the limit


def test_it_fails_before_the_first_sweep(db: None, settings: Any) -> None:
    settings.REDIS_URL = ""
    publishing.publish()

    status, body = readyz(Client())

    assert status == 503
    assert body["failing"] == ["sweep"]
    assert body["checks"]["sweep"]["last_at"] is None


def test_it_fails_when_publishing_stops(healthy: None, settings: Any) -> None:
    settings.REDIS_URL = ""
    limit = 2 * settings.REPUBLISH_SECONDS
    later = T0 + timedelta(seconds=limit + 1)

    with time_machine.travel(later, tick=False):
        clocks.record_sweep(later)  # the sweep runs; only publishing has stopped
        status, body = readyz(Client())

    assert status == 503
    assert body["failing"] == ["publish"]
    assert body["checks"]["publish"]["age_seconds"] == limit + 1


def test_a_publish_with_nothing_new_still_counts(healthy: None, settings: Any) -> None:
    """The periodic republish of an unchanged page writes no new Snapshot row; publishing still runs."""
    settings.REDIS_URL = ""
    later = T0 + timedelta(hours=3)  # the same day: the uptime bars have not moved
    version = Snapshot.objects.latest().version

    with time_machine.travel(later, tick=False):
        publishing.publish()
        clocks.record_sweep(later)
        status, body = readyz(Client())

    assert status == 200
    assert body["checks"]["publish"]["version"] == version
    assert body["checks"]["publish"]["changed_at"] == "2026-11-08T14:05:00Z"
    assert body["checks"]["publish"]["last_at"] == "2026-11-08T17:05:00Z"


def test_it_fails_while_email_is_paused_and_recovers(healthy: None, settings: Any) -> None:
    settings.REDIS_URL = ""
    for _ in range(settings.BREAKER_THRESHOLD):
        notifications.record_failure("email", "421 try later", T0)

    status, body = readyz(Client())
    assert status == 503
    assert body["failing"] == ["breakers"]
    assert body["checks"]["breakers"] == {"ok": False, "email": "open", "webhook_hosts_paused": 0}
    assert "421" not in json.dumps(body)

    notifications.record_success("email")
    assert readyz(Client())[0] == 200


def test_a_paused_webhook_host_is_counted_but_not_a_failure(healthy: None, settings: Any) -> None:
    settings.REDIS_URL = ""
    for _ in range(settings.BREAKER_THRESHOLD):
        notifications.record_failure("webhook hooks.customer.example", "HTTP 500", T0)

    status, body = readyz(Client())

    assert status == 200
    assert body["checks"]["breakers"] == {"ok": True, "email": "closed", "webhook_hosts_paused": 1}
    assert "customer" not in json.dumps(body)


def test_it_runs_only_the_checks_asked_for(db: None, settings: Any, django_assert_num_queries: Any) -> None:
    settings.REDIS_URL = ""  # nothing swept or published yet: sweep and publish would fail

    with django_assert_num_queries(0):
        status, body = readyz(Client(), "?check=redis")
    assert (status, list(body["checks"])) == (200, ["redis"])

    status, body = readyz(Client(), "?check=breakers&check=database")
    assert (status, list(body["checks"])) == (200, ["database", "breakers"])

    status, body = readyz(Client(), "?check=database,sweep")
    assert (status, body["failing"]) == (503, ["sweep"])


def test_an_unknown_check_is_refused(db: None) -> None:
    status, body = readyz(Client(), "?check=databse")

    assert status == 400
    assert body == {
        "detail": "Unknown check 'databse': choose from database, redis, sweep, publish, breakers.",
        "code": "invalid",
    }


def test_it_answers_head_and_refuses_writes(healthy: None, settings: Any) -> None:
    settings.REDIS_URL = ""
    client = Client()

    head = client.head("/readyz")
    post = client.post("/healthz")

    assert (head.status_code, head.content) == (200, b"")
    assert post.status_code == 405
    assert post["Allow"] == "GET, HEAD"
    assert json.loads(post.content)["code"] == "method_not_allowed"


def test_no_limit_counts_probes(healthy: None, settings: Any) -> None:
    """A monitor polling every second is never throttled (the sign-up limit is 5 per 10 minutes)."""
    settings.REDIS_URL = ""
    client = Client()

    statuses = {client.get(path).status_code for _ in range(30) for path in ("/healthz", "/readyz")}

    assert statuses == {200}


# --- the production shape: gunicorn behind deploy/nginx.conf, the database unreachable ----------------


class NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


OPENER = urllib.request.build_opener(NoRedirects)


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with OPENER.open(request, timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


@pytest.fixture
def gunicorn_without_database(tmp_path: Path) -> Iterator[int]:
    """gunicorn serving production settings (https SITE_URL, DEBUG off) with PostgreSQL refusing."""
    port = nginx.free_port()
    env = {
        **{k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "DJANGO_SETTINGS_MODULE"}},
        "DEBUG": "false",
        "SECRET_KEY": "health-test-only",
        "SITE_URL": "https://status.example.com",
        "DATABASE_URL": f"postgres://signalpost:s3cret-pw@127.0.0.1:{CLOSED_PORT}/signalpost",
        "EMAIL_BACKEND": "console",
        "SNAPSHOT_DIR": str(tmp_path / "snapshot"),
        "LOG_LEVEL": "ERROR",
    }
    command = [sys.executable, "-m", "gunicorn", "--workers", "1", "--bind", f"127.0.0.1:{port}", "statuspage.wsgi"]
    log = (tmp_path / "gunicorn.log").open("wb")
    process = subprocess.Popen(
        command, env=env, cwd=nginx.ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 20
        while fetch_or_none(f"http://127.0.0.1:{port}/healthz") is None:
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"gunicorn did not start: {(tmp_path / 'gunicorn.log').read_text()}")
            time.sleep(0.1)
        yield port
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(15)
        log.close()


def fetch_or_none(url: str) -> int | None:
    try:
        return fetch(url)[0]
    except OSError:
        return None


def test_probes_through_nginx_reach_the_app_on_plain_http_with_any_host(
    tmp_path: Path, gunicorn_without_database: int
) -> None:
    need(Path(nginx.binary()).exists(), "needs nginx (apt-get install nginx-light)")
    app = f"http://127.0.0.1:{gunicorn_without_database}"
    # Straight to gunicorn, as a load balancer probes it: its own address as Host, plain HTTP, and the
    # https SITE_URL would redirect (and ALLOWED_HOSTS refuse) any other path.
    status, headers, body = fetch(f"{app}/healthz", {"Host": "10.0.0.7:8000"})
    assert (status, json.loads(body)) == (200, {"status": "ok"})
    assert fetch(f"{app}/login/", {"Host": "status.example.com"})[0] == 301

    status, headers, body = fetch(f"{app}/readyz", {"Host": "10.0.0.7:8000"})
    assert status == 503
    assert json.loads(body)["checks"]["database"] == {"ok": False, "error": "OperationalError"}
    assert b"s3cret" not in body and b"signalpost" not in body

    port = nginx.free_port()
    config = nginx.local_config(
        tmp=tmp_path,
        port=port,
        app_port=gunicorn_without_database,
        snapshot_site=tmp_path / "snapshot" / "site",
        static_root=tmp_path / "static",
    )
    # A file where a probe's path would be served from, were it served from files: it must not be.
    (tmp_path / "snapshot" / "site").mkdir(parents=True)
    (tmp_path / "snapshot" / "site" / "healthz").write_text("stale copy")
    with nginx.running(config, tmp_path, port):
        for _ in range(2):
            status, headers, body = fetch(f"http://127.0.0.1:{port}/healthz")
            assert (status, json.loads(body)) == (200, {"status": "ok"})
            assert headers["Cache-Control"] == "no-store"
            assert "Expires" not in headers
            status, headers, body = fetch(f"http://127.0.0.1:{port}/readyz")
            # The app's own 503 and JSON, not nginx's app-down page.
            assert (status, headers["Content-Type"]) == (503, "application/json")
            assert json.loads(body)["failing"][0] == "database"


def test_probes_through_nginx_answer_json_when_gunicorn_is_down(tmp_path: Path) -> None:
    """Before, nginx's own HTML 502: a monitor parsing JSON saw an error page instead of a status."""
    need(Path(nginx.binary()).exists(), "needs nginx (apt-get install nginx-light)")
    port = nginx.free_port()
    config = nginx.local_config(
        tmp=tmp_path,
        port=port,
        app_port=nginx.free_port(),  # nothing listens there: gunicorn is down
        snapshot_site=tmp_path / "snapshot" / "site",
        static_root=tmp_path / "static",
    )
    (tmp_path / "snapshot" / "site").mkdir(parents=True)
    with nginx.running(config, tmp_path, port):
        for path in ("/healthz", "/readyz"):
            status, headers, body = fetch(f"http://127.0.0.1:{port}{path}")
            assert (status, headers["Content-Type"], headers["Cache-Control"]) == (503, "application/json", "no-store")
            assert json.loads(body) == {"status": "down", "detail": "the application (gunicorn) is not answering"}
