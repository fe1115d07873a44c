"""The public site as plain files: every page, the v2 API, the feeds and the static assets.

After each publish the worker writes the site for that version into SNAPSHOT_DIR/site-v<version>/
and points the symlink SNAPSHOT_DIR/site at it (an atomic rename), so nginx (deploy/nginx.conf)
serves the public side straight from disk and keeps serving it while gunicorn or the database is
down. `manage.py export_static DIR` writes the same files into any folder, for object storage or a CDN.
Pages are laid out as folders with an index.html (/history → history/index.html), which is how nginx,
S3 website hosting and most CDNs resolve clean URLs.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.staticfiles import finders
from django.template.loader import render_to_string
from django.test import Client

log = logging.getLogger(__name__)

KEEP_VERSIONS = 3
FEEDS_AND_API = [
    "/api/v2/summary.json",
    "/api/v2/status.json",
    "/api/v2/components.json",
    "/api/v2/incidents.json",
    "/api/v2/incidents/unresolved.json",
    "/api/v2/scheduled-maintenances.json",
    "/api/v2/scheduled-maintenances/upcoming.json",
    "/api/v2/scheduled-maintenances/active.json",
    "/history.atom",
    "/history.rss",
    "/maintenance.ics",
]
# The page nginx shows while gunicorn is down (deploy/nginx.conf: error_page), in the public page's style
# with the status as published.
APP_DOWN_PAGE = "errors/503.html"
STATIC_REFERENCE = re.compile(r"""(?:src|href)=["']([^"'#?]+)|url\(["']?([^"')#?]+)""")


def page_paths(document: dict[str, Any]) -> list[str]:
    """Every HTML route of the public site for this document."""
    from statuspage import views

    _, history_pages = views.history_pages(document)
    paths = ["/", "/uptime", "/history", *(f"/history/{page}" for page in range(2, history_pages + 1))]
    paths += [f"/incidents/{row['id']}" for row in document["incidents"]]
    paths += [f"/maintenance/{row['id']}" for row in document["scheduled_maintenances"]]
    return paths


def file_for(path: str) -> str:
    """/ → index.html, /history → history/index.html, /api/v2/summary.json → api/v2/summary.json."""
    stripped = path.strip("/")
    if not stripped:
        return "index.html"
    if "." in stripped.rsplit("/", 1)[-1]:
        return stripped
    return f"{stripped}/index.html"


def write_site(directory: Path, document: dict[str, Any]) -> list[str]:
    """Render every public route into `directory`; returns the files written (relative paths)."""
    host = urlsplit(settings.SITE_URL).netloc or "127.0.0.1"
    client = Client(HTTP_HOST=host)
    written: list[str] = []
    assets: set[str] = set()
    for path in [*page_paths(document), *FEEDS_AND_API]:
        response = client.get(path)
        if response.status_code != 200:
            raise RuntimeError(f"exporting {path} answered {response.status_code}")
        target = directory / file_for(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(response.content)
        written.append(file_for(path))
        if response["Content-Type"].startswith("text/html"):
            assets.update(_static_references(response.content.decode()))
    from statuspage import views

    down = render_to_string("public/app_down.html", views.document_context(document))
    (directory / APP_DOWN_PAGE).parent.mkdir(parents=True, exist_ok=True)
    (directory / APP_DOWN_PAGE).write_text(down)
    written.append(APP_DOWN_PAGE)
    assets.update(_static_references(down))
    written += _copy_static(directory, assets)
    return written


def _static_references(text: str, base: str = "") -> set[str]:
    """The static files a page or stylesheet refers to, as paths below STATIC_URL."""
    found = set()
    for match in STATIC_REFERENCE.finditer(text):
        url = match.group(1) or match.group(2)
        if url.startswith(settings.STATIC_URL):
            found.add(url.removeprefix(settings.STATIC_URL))
        elif base and match.group(2) and not url.startswith(("/", "data:", "http:", "https:")):
            found.add(os.path.normpath(os.path.join(os.path.dirname(base), url)))
    return found


def _copy_static(directory: Path, assets: set[str]) -> list[str]:
    """Copy the referenced assets (and what their stylesheets refer to) under STATIC_URL's folder."""
    copied: list[str] = []
    pending = sorted(assets)
    seen = set(pending)
    while pending:
        relative = pending.pop()
        collected = Path(settings.STATIC_ROOT) / relative  # hashed names in production (collectstatic)
        source = collected if collected.is_file() else finders.find(relative)
        if not source:
            raise RuntimeError(f"exporting: the page refers to {settings.STATIC_URL}{relative}, which is missing")
        target = directory / settings.STATIC_URL.strip("/") / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        copied.append(str(target.relative_to(directory)))
        if relative.endswith(".css"):
            for nested in _static_references(target.read_text(errors="replace"), base=relative) - seen:
                seen.add(nested)
                pending.append(nested)
    return copied


SOURCE_FILE = ".source"  # in each site-v<N>: the database it was published from (publishing.database_identity)


def _live_version(link: Path) -> int | None:
    try:
        name = os.readlink(link)
    except OSError:
        return None
    number = name.removeprefix("site-v")
    return int(number) if number.isdigit() else None


def on_published(sender: object, snapshot: Any, **kwargs: object) -> None:
    """Write this version's site beside the snapshot file and switch the `site` link to it.

    One export at a time (a lock file in SNAPSHOT_DIR: two publishes at once, in two worker processes,
    shared one staging folder and deleted each other's pages), never back to an older version than the
    live one, and never over the site of another database while that one is kept up to date (two
    instances given one SNAPSHOT_DIR by mistake: nginx would serve whichever exported last). A site whose
    database has not touched it for two republish periods is taken over: that instance is gone, or it
    is this one after a move to a new database.
    """
    if not settings.PUBLISH_STATIC_SITE:
        return
    root = Path(settings.SNAPSHOT_DIR)
    root.mkdir(parents=True, exist_ok=True)
    link = root / "site"
    source = str(snapshot.document.get("source") or "")
    with open(root / ".site.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if this process dies
        live = _live_version(link)
        marker = link / SOURCE_FILE
        owner = marker.read_text().strip() if marker.is_file() else ""
        if owner and source and owner != source:
            idle = time.time() - marker.stat().st_mtime
            if idle < 2 * settings.REPUBLISH_SECONDS:
                log.error(
                    "static site: SNAPSHOT_DIR %s holds the site of another database (kept up to date %.0f s "
                    "ago); not overwriting it. Give each instance its own SNAPSHOT_DIR.",
                    root,
                    idle,
                )
                return
            live = None  # the other instance stopped publishing here: take the folder over
        if live is not None and live >= snapshot.version:
            if marker.is_file() and owner == source:
                marker.touch()  # still ours, still current: a heartbeat for the check above
            return  # this version (or a newer one) is already live
        from statuspage.snapshot import reader

        reader.reset()  # render from the version just published, not a copy this process had before
        target = root / f"site-v{snapshot.version}"
        staging = root / f".site-v{snapshot.version}.{os.getpid()}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        write_site(staging, snapshot.document)
        (staging / SOURCE_FILE).write_text(source)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
        temporary_link = root / f".site-link-{snapshot.version}.{os.getpid()}"
        temporary_link.unlink(missing_ok=True)
        temporary_link.symlink_to(target.name)
        os.replace(temporary_link, link)  # atomic: readers see the old site or the new, never half
        _prune(root, keep=target.name)


def _prune(root: Path, keep: str) -> None:
    versions = sorted(
        (p for p in root.glob("site-v*") if p.is_dir() and p.name != keep),
        key=lambda p: int(p.name.removeprefix("site-v")),
    )
    for old in versions[: max(0, len(versions) - (KEEP_VERSIONS - 1))]:
        shutil.rmtree(old, ignore_errors=True)
