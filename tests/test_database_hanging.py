"""A database that accepts connections and never answers must not freeze the public side.

gunicorn runs with deploy/gunicorn.conf.py and DATABASE_URL pointing at a local listener that accepts
every connection and never says a word (as a PostgreSQL stuck behind a full disk or a dead storage
volume looks to a client). Eight clients keep trying to subscribe, which needs the database, while
the status page is fetched over and over: `/` must keep a p99 under a second, the sign-up page must
render from the snapshot, and subscribing must answer a clear 503 within the connect timeout.

Ports: the kernel's free ones, or the first free ones in SIGNALPOST_TEST_PORTS (e.g. 8400-8499).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import dj_database_url
import pytest
from django.conf import settings

from incidents import publishing
from tests import factories

# Latency bounds: measured in the main suite, not beside another suite on the same cores.
pytestmark = [pytest.mark.django_db, pytest.mark.timing]

BASE_DIR = Path(settings.BASE_DIR)
LOAD_SECONDS = 12.0
# As many clients as gunicorn has threads (2 processes of 8): without the connection bulkhead
# (statuspage/postgresql/base.py) they could hold every thread, and `/` would wait the connect timeout.
SUBSCRIBERS = 16
CONNECT_TIMEOUT = 3


def free_port() -> int:
    """A free port: from SIGNALPOST_TEST_PORTS ("8400-8499") when set, else one the kernel picks."""
    wanted = os.environ.get("SIGNALPOST_TEST_PORTS", "")
    candidates = range(int(wanted.split("-")[0]), int(wanted.split("-")[1]) + 1) if wanted else [0]
    for port in candidates:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise RuntimeError(f"no free port in {wanted}")


class HangingDatabase:
    """Accepts connections and never answers: no PostgreSQL greeting, no error, nothing."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", free_port()))
        self.listener.listen(256)
        self.port = self.listener.getsockname()[1]
        self.held: list[socket.socket] = []
        self.accepted = 0
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return  # closed
            self.accepted += 1
            self.held.append(connection)

    def close(self) -> None:
        self.listener.close()
        for connection in self.held:
            connection.close()


def request(port: int, method: str, path: str, **kwargs: Any) -> tuple[int, dict[str, str], str, float]:
    started = time.monotonic()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request(method, path, **kwargs)
        response = connection.getresponse()
        body = response.read().decode()
        headers = {name.lower(): value for name, value in response.getheaders()}
        return response.status, headers, body, time.monotonic() - started
    finally:
        connection.close()


@pytest.fixture
def hanging_database() -> Iterator[HangingDatabase]:
    database = HangingDatabase()
    try:
        yield database
    finally:
        database.close()


@pytest.fixture
def gunicorn(hanging_database: HangingDatabase, tmp_path: Path) -> Iterator[int]:
    """gunicorn with the shipped configuration, its database hanging, its snapshot published before."""
    database_url = f"postgres://signalpost@127.0.0.1:{hanging_database.port}/signalpost"
    factories.ensure_severities()
    us = factories.make_component(name="Query API")
    factories.declare(actor=None, title="Queries fail in US", components={us: "major_outage"})
    snapshot = publishing.publish()
    # The same database, now hanging: the snapshot it published is its own.
    document = {**snapshot.document, "source": publishing.identity_of(dj_database_url.parse(database_url))}
    publishing.snapshot_path().write_text(json.dumps(document))

    port = free_port()
    log = (tmp_path / "gunicorn.log").open("wb")
    environment = {
        **{k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "PUBLISH_STATIC_SITE"}},
        "DATABASE_URL": database_url,
        "DATABASE_CONNECT_TIMEOUT": str(CONNECT_TIMEOUT),
        "SNAPSHOT_DIR": str(settings.SNAPSHOT_DIR),
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "GUNICORN_ACCESS_LOG": "off",
        "DEBUG": "true",  # static files from the finders, no collectstatic needed
        "DJANGO_SETTINGS_MODULE": "statuspage.settings",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py"],
        cwd=BASE_DIR,
        env=environment,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if request(port, "GET", "/")[0] == 200:
                    break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail("gunicorn did not start:\n" + (tmp_path / "gunicorn.log").read_text(errors="replace"))
            time.sleep(0.2)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


CSRF_INPUT = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


def test_the_public_side_keeps_answering_while_the_database_hangs(
    gunicorn: int, hanging_database: HangingDatabase
) -> None:
    port = gunicorn
    stop = time.monotonic() + LOAD_SECONDS
    attempts: list[tuple[int, int, str, float]] = []  # GET status, POST status, POST body, POST seconds
    sign_up_pages: list[float] = []  # seconds each GET /subscribe took
    errors: list[BaseException] = []

    def subscribe_repeatedly(number: int) -> None:
        try:
            while time.monotonic() < stop:
                status, headers, page, took = request(port, "GET", "/subscribe")
                sign_up_pages.append(took)
                token = CSRF_INPUT.search(page)
                cookie = headers.get("set-cookie", "").split(";")[0]
                if status != 200 or token is None:
                    attempts.append((status, 0, page, 0.0))
                    continue
                fields = {"csrfmiddlewaretoken": token.group(1), "email": f"reader{number}@example.com"}
                form = urlencode({**fields, "scope": "all", "kinds": "incidents", "minimum_impact": "none"})
                posted = request(
                    port,
                    "POST",
                    "/subscribe",
                    body=form,
                    headers={
                        "Content-Type": "application/x-www-form-urlencoded",
                        "Cookie": cookie,
                        "Referer": f"http://127.0.0.1:{port}/subscribe",
                    },
                )
                attempts.append((status, posted[0], posted[2], posted[3]))
                # Again at once, as an impatient person would: a fifth of a second to read the answer. (In a
                # loop with no pause at all, 16 clients only measure how busy 2 cores are.)
                time.sleep(0.2)
        except BaseException as error:  # reported below
            errors.append(error)

    subscribers = [threading.Thread(target=subscribe_repeatedly, args=(n,)) for n in range(SUBSCRIBERS)]
    for thread in subscribers:
        thread.start()
    time.sleep(0.5)  # the subscribe attempts are waiting on the database now
    status_page: list[tuple[int, float, str]] = []
    while time.monotonic() < stop:
        status, _, body, took = request(port, "GET", "/")
        status_page.append((status, took, body))
    for thread in subscribers:
        thread.join(timeout=60)

    assert not errors, errors
    assert hanging_database.accepted >= 2, "the subscribe attempts really waited on the database"
    assert {status for status, _, _ in status_page} == {200}
    assert all("Queries fail in US" in body for _, _, body in status_page)
    seconds = sorted(s for _, s, _ in status_page)
    p99 = seconds[min(len(seconds) - 1, int(len(seconds) * 0.99))]
    print(
        f"\n/ under a hanging database and {SUBSCRIBERS} subscribers: {len(seconds)} requests, "
        f"p50 {statistics.median(seconds) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, max {seconds[-1] * 1000:.0f} ms; "
        f"sign-up page max {max(sign_up_pages, default=0) * 1000:.0f} ms; "
        f"{len(attempts)} subscribe attempts, POST took {min(a[3] for a in attempts):.1f}–"
        f"{max(a[3] for a in attempts):.1f} s"
    )
    assert p99 < 1.0, f"p99 of / was {p99:.2f} s"
    # Not one public request waited on the database: the slowest, not only the p99.
    assert seconds[-1] < 1.0, f"the slowest / took {seconds[-1]:.2f} s"
    assert sign_up_pages and max(sign_up_pages) < 1.0, f"the slowest sign-up page took {max(sign_up_pages):.2f} s"

    assert attempts, "no subscribe attempt finished"
    assert {get for get, _, _, _ in attempts} == {200}, "the sign-up page renders from the snapshot"
    assert {post for _, post, _, _ in attempts} == {503}
    body = attempts[0][2]
    assert "Subscribing is unavailable for a few minutes; the status above is current" in body
    assert "Major System Outage" in body  # the status above it, from the snapshot
    assert max(a[3] for a in attempts) < CONNECT_TIMEOUT + 2, "a subscribe attempt waits no longer than the timeout"
