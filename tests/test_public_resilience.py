"""The public pages stay up when we are down.

The database is made truly unreachable (PostgreSQL: the connection is closed and pointed at a closed
port, so the next connect is refused; SQLite: the open in-memory connection is set aside and the next
connect goes to a path that cannot be opened) and Redis is pointed at a closed port. Each test checks
that a query really fails before it asks for pages.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import time_machine
from django.db import OperationalError, connection
from django.test import Client

from incidents import actions, publishing
from incidents.models import Incident, Snapshot
from statuspage.http import clear_rendered
from statuspage.snapshot import reader
from tests import factories

pytestmark = pytest.mark.django_db(transaction=True)

T0 = datetime(2026, 11, 8, 14, 5, tzinfo=UTC)
CLOSED_PORT = 1  # nothing listens on a privileged port this low
LAST_UPDATED = (
    'Last updated <time datetime="2026-11-08T15:05:00+01:00" data-local="datetime">8 Nov 2026, 15:05 CET</time>'
)


@contextmanager
def database_down() -> Iterator[None]:
    """Every new connection fails until the block ends; the current one is put out of reach."""
    saved = dict(connection.settings_dict)
    kept = None
    if connection.vendor == "sqlite":
        # Django never closes an in-memory SQLite database (that would destroy it): set it aside.
        kept, connection.connection = connection.connection, None
        connection.settings_dict["NAME"] = "/nonexistent-signalpost-dir/db.sqlite3"
    else:
        connection.close()
        connection.settings_dict.update(HOST="127.0.0.1", PORT=str(CLOSED_PORT))
    try:
        yield
    finally:
        if connection.vendor == "sqlite":
            connection.connection = kept
        else:
            connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(saved)


def assert_database_unreachable() -> None:
    with pytest.raises(OperationalError):
        Incident.objects.count()


@pytest.fixture
def redis_down(settings: Any) -> None:
    settings.REDIS_URL = f"redis://127.0.0.1:{CLOSED_PORT}/0"


def cold() -> None:
    """A process that has just started: nothing in memory, nothing rendered."""
    reader.reset()
    clear_rendered()


@pytest.fixture
def published(settings: Any) -> dict[str, int]:
    """A component in trouble and an open incident, published at T0 (15:05 CET)."""
    settings.DISPLAY_TIME_ZONE = "Europe/Berlin"
    factories.ensure_severities()  # a transactional test's flush removes the seeded ones
    with time_machine.travel(T0 - timedelta(hours=1), tick=False):
        us = factories.make_component(name="US")
        incident = factories.declare(
            actor=None, title="Queries fail in US", components={us: "major_outage"}, customer_impact_percent="45"
        )
    with time_machine.travel(T0, tick=False):
        actions.post_update(incident, actor=None, body="We are failing over to the standby database.")
        publishing.publish()
    cold()
    return {"incident": incident.pk}


def urls(ids: dict[str, int]) -> list[str]:
    return ["/", "/history", "/uptime", f"/incidents/{ids['incident']}"]


def assert_pages_answer_from_the_snapshot(client: Client, ids: dict[str, int]) -> None:
    for url in urls(ids):
        response = client.get(url)
        assert response.status_code == 200, url
        assert LAST_UPDATED in response.content.decode(), url
    home = client.get("/")
    html = home.content.decode()
    assert "Major System Outage" in html
    assert "We are failing over to the standby database." in html
    assert "About 45% of customers affected" in html
    assert re.fullmatch(r'"v\d+"', home["ETag"])


def test_it_serves_the_last_snapshot_with_the_database_down(client: Client, published: dict[str, int]) -> None:
    with database_down():
        assert_database_unreachable()
        assert_pages_answer_from_the_snapshot(client, published)  # cold: read from Redis or the file
        assert_pages_answer_from_the_snapshot(client, published)  # warm: from memory
        assert client.get("/incidents/not-an-id").status_code == 404
        # An id the snapshot lacks may be an older incident's, whose page needs the database.
        assert client.get("/incidents/123456").status_code == 503
        assert_database_unreachable()

    assert Snapshot.objects.exists()  # and the database is back afterwards


def test_it_serves_the_snapshot_file_with_redis_down(
    client: Client, published: dict[str, int], redis_down: None, django_assert_num_queries: Any
) -> None:
    with django_assert_num_queries(0):  # from the file, not rebuilt from the database
        assert_pages_answer_from_the_snapshot(client, published)


def test_it_serves_the_snapshot_file_with_the_database_and_redis_down(
    client: Client, published: dict[str, int], redis_down: None
) -> None:
    with database_down():
        assert_database_unreachable()
        assert_pages_answer_from_the_snapshot(client, published)


def test_it_serves_the_newest_snapshot_it_can_find_while_down(
    client: Client, published: dict[str, int], redis_down: None
) -> None:
    incident = Incident.objects.get(pk=published["incident"])
    with time_machine.travel(T0 + timedelta(minutes=5), tick=False):
        actions.resolve_incident(incident, actor=None, message="Queries work again.")
        publishing.publish()
    cold()

    with database_down():
        html = client.get("/").content.decode()

    assert "All Systems Operational" in html
    assert "Queries work again." in html
    assert "8 Nov 2026, 15:10 CET" in html


def test_it_answers_503_when_there_is_no_snapshot_and_no_database(client: Client, redis_down: None) -> None:
    cold()
    with database_down():
        assert_database_unreachable()
        responses = [client.get(url) for url in ("/", "/history", "/uptime", "/incidents/1")]
        head = client.head("/")

    for response in [*responses, head]:
        assert response.status_code == 503
        assert response["Retry-After"] == "30"
        assert response["Cache-Control"] == "no-store"
    assert "Status temporarily unavailable" in responses[0].content.decode()


def test_it_builds_the_first_snapshot_itself_when_no_store_has_one(client: Client) -> None:
    factories.ensure_severities()
    factories.make_component(name="US")
    publishing.snapshot_path().unlink(missing_ok=True)  # as if nothing had ever been published
    client_redis = publishing.redis_client()
    if client_redis is not None:
        client_redis.delete(publishing.REDIS_DOCUMENT_KEY, publishing.REDIS_VERSION_KEY)
    cold()

    response = client.get("/")

    assert response.status_code == 200
    assert "US" in response.content.decode()
    assert publishing.snapshot_path().exists()


def test_a_fresh_install_answers_its_first_request_with_the_static_site_on(client: Client, settings: Any) -> None:
    """Empty stores (nothing in Redis, no file) and PUBLISH_STATIC_SITE on, as in production: the first
    request builds the snapshot, whose publish writes the static site by rendering every page through
    the same reader. That nested read deadlocked on the reader's lock (a 30 s hang, then gunicorn's 500)."""
    settings.PUBLISH_STATIC_SITE = True
    factories.ensure_severities()
    us = factories.make_component(name="US")
    factories.declare(actor=None, title="Queries fail in US", components={us: "major_outage"})
    publishing.snapshot_path().unlink(missing_ok=True)
    client_redis = publishing.redis_client()
    if client_redis is not None:
        client_redis.delete(publishing.REDIS_DOCUMENT_KEY, publishing.REDIS_VERSION_KEY)
    Snapshot.objects.all().delete()
    cold()

    answers: list[Any] = []

    def first_request() -> None:
        try:
            answers.append(client.get("/"))
        finally:
            connection.close()  # the thread's own connection, so the test database can be dropped

    first = threading.Thread(target=first_request, daemon=True)
    first.start()
    first.join(timeout=20)

    assert not first.is_alive(), "the first request hangs (the snapshot reader deadlocked)"
    response = answers[0]
    assert response.status_code == 200
    assert "Queries fail in US" in response.content.decode()
    site = publishing.snapshot_path().parent / "site"
    assert (site / "index.html").is_file(), "the static site was written by that first publish"
    assert "Queries fail in US" in (site / "index.html").read_text()
    assert client.get("/history").status_code == 200


INSTANCE_B = """
import django
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
from django.test import Client
from tests import factories
factories.make_component(name="Billing of instance B")
print(Client().get("/").content.decode())
"""


def test_two_instances_sharing_the_snapshot_folder_never_serve_each_others_pages(
    client: Client, published: dict[str, int], settings: Any, tmp_path: Path
) -> None:
    """Instance B (another database, SQLite here) runs from the same checkout, with the same SNAPSHOT_DIR
    and Redis database: each document records the database it came from, and neither serves the other's."""
    environment = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'instance-b.sqlite3'}",
        "SNAPSHOT_DIR": str(settings.SNAPSHOT_DIR),
        "REDIS_URL": settings.REDIS_URL or "",
        "PUBLISH_STATIC_SITE": "false",
        "DJANGO_SETTINGS_MODULE": "statuspage.settings",
    }
    b = subprocess.run(
        [sys.executable, "-c", INSTANCE_B],
        cwd=settings.BASE_DIR,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert b.returncode == 0, b.stderr
    assert "Billing of instance B" in b.stdout, "B serves its own page"
    assert "Queries fail in US" not in b.stdout, "B served A's snapshot"
    document = json.loads(publishing.snapshot_path().read_text())
    assert document["source"] != publishing.database_identity(), "B's publish replaced the shared file"

    cold()
    with database_down():  # A cannot rebuild: the shared stores hold only B's document
        assert_database_unreachable()
        refused = client.get("/")
    assert refused.status_code == 503
    assert "Billing of instance B" not in refused.content.decode()

    cold()
    mine = client.get("/").content.decode()  # the database is back: A rebuilds its own page
    assert "Queries fail in US" in mine
    assert "Billing of instance B" not in mine
    assert json.loads(publishing.snapshot_path().read_text())["source"] == publishing.database_identity()


# --- what needs the database, with the database down ----------------------------------------------


def test_the_sign_up_page_renders_from_the_snapshot_without_a_query(
    client: Client, published: dict[str, int], django_assert_num_queries: Any
) -> None:
    with django_assert_num_queries(0):
        response = client.get("/subscribe")
    assert response.status_code == 200
    html = response.content.decode()
    assert "<span>US</span>" in html  # the component's checkbox, from the snapshot
    assert 'name="csrfmiddlewaretoken"' in html


SIGN_UP = {"email": "reader@example.com", "scope": "all", "kinds": "incidents", "minimum_impact": "none"}


def test_subscribing_with_the_database_down_answers_503_under_the_current_status(
    client: Client, published: dict[str, int]
) -> None:
    from incidents import actions as domain
    from incidents.tokens import make_token

    subscriber = domain.subscribe(email="known@example.com")
    manage_url = f"/subscribe/manage/{make_token(subscriber, 'manage')}"
    cold()
    with database_down():
        assert_database_unreachable()
        page = client.get("/subscribe")
        signed_up = client.post("/subscribe", SIGN_UP)
        managed = client.get(manage_url)

    assert page.status_code == 200, "the sign-up page needs no database"
    assert signed_up.status_code == 503
    assert signed_up["Retry-After"] == "120"
    assert signed_up["Cache-Control"] == "no-store"
    html = signed_up.content.decode()
    assert "Subscribing is unavailable for a few minutes; the status above is current" in html
    assert "Major System Outage" in html and LAST_UPDATED in html  # the status above, from the snapshot
    assert managed.status_code == 503
    assert (
        "Your subscription cannot be changed for a few minutes; the status above is current" in managed.content.decode()
    )


def test_the_staff_side_and_its_api_answer_503_with_the_database_down(published: dict[str, int]) -> None:
    from io import StringIO

    from django.core.management import call_command

    staff = factories.make_user(username="alice", is_staff=True)
    browser = Client()
    browser.force_login(staff)
    out = StringIO()
    call_command("create_api_token", "alice", stdout=out)
    api = Client(headers={"Authorization": f"Bearer {out.getvalue().strip()}"})
    with database_down():
        assert_database_unreachable()
        dashboard = browser.get("/manage/")
        listed = api.get("/api/v1/incidents")

    assert dashboard.status_code == 503
    assert "The database is not answering" in dashboard.content.decode()
    assert listed.status_code == 503
    assert listed.json()["code"] == "database_unavailable"


def test_it_tells_an_unavailable_database_from_a_bug(requires_postgres: None) -> None:
    """A statement ended by the statement timeout is unavailability (503); a missing table is a bug (500)."""
    from django.db import DatabaseError

    from incidents.database import is_unavailable

    with connection.cursor() as cursor:
        cursor.execute("SET statement_timeout = 50")  # as DATABASE_STATEMENT_TIMEOUT sets it, shorter
        try:
            with pytest.raises(OperationalError) as timed_out:
                cursor.execute("SELECT pg_sleep(1)")
        finally:
            cursor.execute("RESET statement_timeout")
    assert is_unavailable(timed_out.value)
    with pytest.raises(DatabaseError) as missing, connection.cursor() as cursor:
        cursor.execute("SELECT * FROM no_such_table")
    assert not is_unavailable(missing.value)
    with database_down(), pytest.raises(OperationalError) as refused:
        Incident.objects.count()
    assert is_unavailable(refused.value)
