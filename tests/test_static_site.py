"""The public site as files: export_static, the site written after each publish, and nginx serving it."""

from __future__ import annotations

import os
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command

from incidents import actions, publishing
from incidents.models import Snapshot
from statuspage import export
from tests import factories, nginx
from tests.conftest import need

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"""(?:href|src)="(/[^"#?]*)""")


@pytest.fixture
def page(staff: User) -> None:
    group = factories.make_component(name="Query API", is_group=True, actor=staff)
    us = factories.make_component(name="US", group=group, actor=staff)
    incident = factories.declare(actor=staff, title="Slow queries", components={us: "partial_outage"})
    actions.resolve_incident(incident, actor=staff, message="Fixed.")
    factories.declare(actor=staff, title="Exports delayed")
    from datetime import timedelta

    from django.utils import timezone

    start = timezone.now() + timedelta(days=2)
    actions.schedule_maintenance(
        actor=staff, title="Database upgrade", scheduled_for=start, scheduled_until=start + timedelta(hours=1)
    )


def exported(directory: Path) -> set[str]:
    return {str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file()}


def test_it_exports_every_route_with_working_links(page: None, tmp_path: Path) -> None:
    target = tmp_path / "site"
    call_command("export_static", str(target), stdout=open(os.devnull, "w"))  # noqa: SIM115

    files = exported(target)
    document = publishing.Snapshot.objects.latest().document
    incident_ids = [row["id"] for row in document["incidents"]]
    maintenance_ids = [row["id"] for row in document["scheduled_maintenances"]]
    assert {
        "index.html",
        "history/index.html",
        "uptime/index.html",
        *(f"incidents/{i}/index.html" for i in incident_ids),
        *(f"maintenance/{m}/index.html" for m in maintenance_ids),
        "api/v2/summary.json",
        "api/v2/status.json",
        "api/v2/components.json",
        "api/v2/incidents.json",
        "api/v2/incidents/unresolved.json",
        "api/v2/scheduled-maintenances.json",
        "api/v2/scheduled-maintenances/upcoming.json",
        "api/v2/scheduled-maintenances/active.json",
        "history.atom",
        "history.rss",
        "maintenance.ics",
    } <= files
    # Every local link and asset a page refers to is a file of the export (as a folder's index.html).
    for name in (f for f in files if f.endswith(".html")):
        for link in LINK.findall((target / name).read_text()):
            path = link.strip("/")
            assert path in files or f"{path}/index.html" in files or (not path and "index.html" in files), (
                f"{name} links to {link}, which the export lacks"
            )


def test_it_refuses_to_export_into_a_folder_with_files(page: None, tmp_path: Path) -> None:
    (tmp_path / "old.txt").write_text("keep me")
    with pytest.raises(CommandError, match="is not empty"):
        call_command("export_static", str(tmp_path))
    assert (tmp_path / "old.txt").read_text() == "keep me"


def test_it_switches_the_published_site_atomically(staff: User, settings: Any) -> None:
    settings.PUBLISH_STATIC_SITE = True
    factories.declare(actor=staff, title="First")
    publishing.publish()  # what the task does once the change commits
    site = Path(settings.SNAPSHOT_DIR) / "site"
    first = os.readlink(site)
    assert "First" in (site / "index.html").read_text()

    factories.declare(actor=staff, title="Second")
    publishing.publish()

    assert os.readlink(site) != first
    assert "Second" in (site / "index.html").read_text()
    # Nothing half-written; the lock file that keeps exports one at a time stays.
    assert sorted(p.name for p in site.parent.iterdir() if p.name.startswith(".")) == [".site.lock"]


def test_an_older_version_never_replaces_the_live_site(staff: User, settings: Any) -> None:
    # The issue 12 review: two publishes at once left `site` pointing at the older of their versions.
    settings.PUBLISH_STATIC_SITE = True
    factories.declare(actor=staff, title="First")
    older = publishing.publish()
    factories.declare(actor=staff, title="Second")
    newer = publishing.publish()
    site = Path(settings.SNAPSHOT_DIR) / "site"
    assert os.readlink(site) == f"site-v{newer.version}"

    export.on_published(sender=Snapshot, snapshot=older)  # the slower of two exports finishing last
    assert os.readlink(site) == f"site-v{newer.version}"
    export.on_published(sender=Snapshot, snapshot=newer)  # the same version again: already live

    assert os.readlink(site) == f"site-v{newer.version}"
    assert "Second" in (site / "index.html").read_text()
    assert (site / "history" / "index.html").is_file()


# Compares file times: faketime (the shifted-clock run) distorts them; it runs in the main suite.
@pytest.mark.timing
def test_the_site_of_another_database_is_not_overwritten_while_it_is_kept_up(
    staff: User, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # The review: a second instance given the same SNAPSHOT_DIR replaced the first one's site, so nginx
    # served "OtherCo status" for the first one's customers until it next published.
    settings.PUBLISH_STATIC_SITE = True
    factories.declare(actor=staff, title="Ours")
    publishing.publish()
    site = Path(settings.SNAPSHOT_DIR) / "site"
    theirs = os.readlink(site)
    (site / export.SOURCE_FILE).write_text("another-database")  # as the other instance's export left it

    factories.declare(actor=staff, title="Ours again")
    publishing.publish()

    assert os.readlink(site) == theirs
    assert "holds the site of another database" in caplog.text

    # That instance stopped publishing here two republish periods ago: the folder is taken over.
    stale = (site / export.SOURCE_FILE).stat().st_mtime - 2 * settings.REPUBLISH_SECONDS - 1
    os.utime(site / export.SOURCE_FILE, (stale, stale))
    factories.declare(actor=staff, title="Ours at last")
    publishing.publish()

    assert os.readlink(site) != theirs
    assert "Ours at last" in (site / "index.html").read_text()
    assert (site / export.SOURCE_FILE).read_text() == publishing.database_identity()


# --- nginx with deploy/nginx.conf ---------------------------------------------------------------


def fetch(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


@pytest.fixture
def nginx_without_app(tmp_path: Path, settings: Any) -> Iterator[str]:
    """nginx with deploy/nginx.conf over the published site, its upstream (gunicorn) not running."""
    need(Path(nginx.binary()).exists(), "needs nginx (apt-get install nginx-light)")
    port = nginx.free_port()
    app_port = nginx.free_port()
    while app_port == port:  # the kernel can hand the same free port out twice
        app_port = nginx.free_port()
    config = nginx.local_config(
        tmp=tmp_path,
        port=port,
        app_port=app_port,
        snapshot_site=Path(settings.SNAPSHOT_DIR) / "site",
        static_root=tmp_path / "static",
    )
    with nginx.running(config, tmp_path, port):
        yield f"http://127.0.0.1:{port}"


def test_nginx_serves_the_public_side_while_the_app_is_down(staff: User, settings: Any, nginx_without_app: str) -> None:
    settings.PUBLISH_STATIC_SITE = True
    incident = factories.declare(actor=staff, title="Slow queries")
    publishing.publish()
    base = nginx_without_app

    status, headers, body = fetch(f"{base}/")
    assert status == 200
    assert b"Slow queries" in body
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert "max-age=15" in headers["Cache-Control"]

    status, headers, body = fetch(f"{base}/incidents/{incident.pk}")
    assert (status, b"Slow queries" in body) == (200, True)

    status, headers, body = fetch(f"{base}/api/v2/summary.json")
    assert (status, headers["Access-Control-Allow-Origin"]) == (200, "*")
    assert headers["Content-Type"].startswith("application/json")
    assert b'"name":"Slow queries"' in body

    status, headers, _ = fetch(f"{base}/maintenance.ics")
    assert (status, headers["Content-Type"]) == (200, "text/calendar; charset=utf-8")

    # HSTS on what nginx serves itself, in the locations with headers of their own too (nginx drops the
    # server's add_header there unless repeated).
    for path in ("/", f"/incidents/{incident.pk}", "/api/v2/summary.json", "/history.atom", "/maintenance.ics"):
        assert fetch(f"{base}{path}")[1]["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains", path

    # A CORS preflight gets what the application would answer, from nginx alone.
    for path in ("/api/v2/summary.json", "/history.atom", "/maintenance.ics"):
        preflight = urllib.request.Request(f"{base}{path}", method="OPTIONS")
        with urllib.request.urlopen(preflight, timeout=5) as response:
            assert response.status == 204, path
            assert response.headers["Access-Control-Allow-Origin"] == "*"
            assert response.headers["Access-Control-Allow-Methods"] == "GET, HEAD, OPTIONS"
            assert "If-None-Match" in response.headers["Access-Control-Allow-Headers"]

    # Conditional requests get 304 from nginx itself.
    etag = fetch(f"{base}/")[1]["ETag"]
    request = urllib.request.Request(f"{base}/", headers={"If-None-Match": etag})
    with pytest.raises(urllib.error.HTTPError) as not_modified:
        urllib.request.urlopen(request, timeout=5)
    assert not_modified.value.code == 304

    published = Snapshot.objects.latest().document
    # Subscribing and the on-call side need the application, which is down: customers get a page in the
    # public page's style with the published status, never a bare text about "the on-call side".
    for path in ("/subscribe", "/manage/"):
        status, headers, body = fetch(f"{base}{path}")
        assert (status, headers["Retry-After"], headers["Cache-Control"]) == (503, "30", "no-store"), path
        assert headers["Content-Type"].startswith("text/html")
        assert "script-src 'self'" in headers["Content-Security-Policy"]
        page = body.decode()
        assert "This page is unavailable for a few minutes; the status above is current" in page
        assert published["status"]["description"] in page  # the status as published
        assert 'rel="stylesheet" href="/static/css/public' in page
        assert "on-call side" not in page
