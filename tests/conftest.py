"""Shared fixtures: personas, Celery modes, and the services a test needs.

Tests that need PostgreSQL, Redis or Chromium skip with a reason on a laptop without them, and fail
in CI (CI=true), where the services must be there.
"""

from __future__ import annotations

import contextlib
import os

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # pytest-playwright runs an event loop

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.core.cache import cache
from django.db import connection
from django.test import Client, override_settings

from incidents.models import Subscriber
from statuspage.celery import app as celery_app
from tests import factories
from tests.smtp import SmtpServer

IN_CI = os.environ.get("CI", "").lower() == "true"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def need(condition: bool, reason: str) -> None:
    """Skip (laptop) or fail (CI) when a service the test needs is missing."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI needs this service: {reason}")
    pytest.skip(reason)


SERVICE_MARKERS = {"requires_postgres": "postgres", "requires_redis": "redis", "requires_chromium": "browser"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test by the services it needs, so a run can leave them out: -m "not postgres"."""
    for item in items:
        for fixture, marker in SERVICE_MARKERS.items():
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(getattr(pytest.mark, marker))


@pytest.fixture
def requires_postgres(db: None) -> None:
    need(connection.vendor == "postgresql", "needs PostgreSQL (set DATABASE_URL=postgres://…)")


def redis_available() -> bool:
    if not settings.REDIS_URL:
        return False
    import redis

    try:
        return bool(redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


@pytest.fixture
def requires_redis() -> None:
    need(redis_available(), "needs Redis (set REDIS_URL=redis://…)")


@pytest.fixture(autouse=True)
def _eager_celery() -> Iterator[None]:
    """Wiring tests run tasks in-process; worker tests (tests/test_worker.py) start a real worker."""
    saved = celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates
    celery_app.conf.task_always_eager = celery_app.conf.task_eager_propagates = True
    with override_settings(DELIVER_EAGERLY=True):  # send in the test's own request (tests/test_subscriptions.py
        yield  # checks that without it nothing is sent until the timer loop runs)
    celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates = saved


@pytest.fixture(autouse=True)
def _isolated_snapshots(settings: Any, tmp_path: Path) -> Iterator[None]:
    """Each test publishes into its own folder, and starts and ends with no snapshot in Redis."""
    from incidents import publishing
    from statuspage.http import clear_rendered
    from statuspage.snapshot import reader

    settings.SNAPSHOT_DIR = tmp_path / "snapshot"
    settings.PUBLISH_STATIC_SITE = False  # tests of the static site turn it on

    def forget() -> None:
        reader.reset()
        clear_rendered()
        client = publishing.redis_client()
        if client is not None:
            with contextlib.suppress(Exception):
                client.delete(publishing.REDIS_DOCUMENT_KEY, publishing.REDIS_VERSION_KEY, publishing.REDIS_SOURCE_KEY)

    forget()
    yield
    forget()


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _clear_cache() -> Iterator[None]:
    yield
    with contextlib.suppress(Exception):  # a missing Redis is reported by the tests that need it
        cache.clear()


# A public address (example.com's) that the names tests use resolve to; nothing ever connects to it.
PUBLIC_ADDRESS = "93.184.215.14"


@pytest.fixture(autouse=True)
def dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Name resolution for webhook hosts (incidents/netguard.py), which machines running tests may not
    have: example.com and its subdomains resolve to a public address, as on the internet; other names
    (localhost) go to the system's resolver. A test adds its own answers to the returned dict, and may
    change them between adding a webhook and sending to it (DNS rebinding)."""
    import socket

    from incidents import netguard

    answers: dict[str, list[str]] = {}
    system = netguard.resolve

    def resolve(host: str, port: int) -> list[netguard.AddrInfo]:
        found = answers.get(host)
        if found is None and (host == "example.com" or host.endswith(".example.com")):
            found = [PUBLIC_ADDRESS]
        if found is None:
            return system(host, port)
        return [
            (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, port, 0, 0))
            if ":" in address
            else (socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))
            for address in found
        ]

    monkeypatch.setattr(netguard, "resolve", resolve)
    return answers


# --- personas -----------------------------------------------------------------------------------


@pytest.fixture
def staff(db: None) -> User:
    return factories.make_user(username="alice", is_staff=True)


@pytest.fixture
def other_staff(db: None) -> User:
    return factories.make_user(username="bob", is_staff=True)


@pytest.fixture
def outsider(db: None) -> User:
    """Logged in, but not staff: sees none of the on-call side."""
    return factories.make_user(username="mallory", is_staff=False)


@pytest.fixture
def staff_client(staff: User) -> Client:
    client = Client()
    client.force_login(staff)
    return client


@pytest.fixture
def outsider_client(outsider: User) -> Client:
    client = Client()
    client.force_login(outsider)
    return client


# --- browser ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    """Debian's Chromium; Playwright cannot download its own browser here."""
    return {
        **browser_type_launch_args,
        "executable_path": CHROMIUM,
        "args": ["--disable-gpu", "--disable-quic", "--disable-background-networking"],
    }


@pytest.fixture
def requires_chromium() -> None:
    need(Path(CHROMIUM).exists(), "needs Chromium (apt-get install chromium)")


SMTP_SITE_URL = "https://status.example.com"


@pytest.fixture
def smtp(settings: Any) -> Iterator[SmtpServer]:
    """A real SMTP server (aiosmtpd, on a free port) with the default mailer pointed at it, and absolute
    links to a real-looking site (SMTP_SITE_URL)."""
    settings.SITE_URL = SMTP_SITE_URL
    with SmtpServer() as server:
        settings.MAILERS = server.mailers()
        yield server


Subscribe = Callable[..., Subscriber]


@pytest.fixture
def subscribe(smtp: SmtpServer, django_capture_on_commit_callbacks: Any) -> Subscribe:
    """Subscribe an address and confirm it, as the links would; its confirmation email is then forgotten."""
    from incidents import actions

    def make(email: str, **choices: Any) -> Subscriber:
        with django_capture_on_commit_callbacks(execute=True):
            subscriber = actions.subscribe(email=email, **choices)
        subscriber = actions.confirm_subscription(subscriber)
        smtp.reset()
        return subscriber

    return make
