"""The public pages in a real browser: axe-core finds no serious or critical problem, in the light and
the dark scheme, and the small script does its work under the strict CSP.

axe-core comes from npm (`npm install` at the repository root; package-lock.json pins it). Under the
CSP a <script> tag cannot be added, so its source is evaluated through Playwright instead.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import pytest
import time_machine
from playwright.sync_api import Browser, ConsoleMessage, Page

from incidents import actions, publishing
from tests import factories
from tests.conftest import need

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

AXE = Path(__file__).resolve().parent.parent / "node_modules" / "axe-core" / "axe.min.js"
T0 = datetime(2026, 11, 8, 14, 5, tzinfo=UTC)  # 15:05 CET, 09:05 EST
CSP_WORDS = ("Content Security Policy", "Content-Security-Policy", "Refused to")


@pytest.fixture
def axe_source() -> str:
    need(AXE.exists(), "needs axe-core: run `npm install` in the repository root")
    return AXE.read_text()


@pytest.fixture
def published(settings: Any) -> dict[str, int | str]:
    """A realistic page: groups, an open and a resolved incident, upcoming maintenance."""
    settings.DISPLAY_TIME_ZONE = "Europe/Berlin"
    factories.ensure_severities()  # a transactional test's flush removes the seeded ones
    start = T0 - timedelta(days=120)
    with time_machine.travel(T0, tick=False):
        query_api = actions.create_component(actor=None, name="Query API", is_group=True, at=start)
        us = actions.create_component(actor=None, name="US", group=query_api, at=start, description="US region.")
        eu = actions.create_component(actor=None, name="EU", group=query_api, at=start)
        dashboards = actions.create_component(actor=None, name="Dashboards", is_group=True, at=start)
        actions.create_component(actor=None, name="Web app", group=dashboards, at=start)
        actions.create_component(actor=None, name="Website", at=start)
        resolved = factories.declare(
            actor=None,
            title="Query API down for US customers",
            components={us: "major_outage"},
            customer_impact_percent="45",
            regions=["US"],
            at=T0 - timedelta(days=3),
        )
        actions.resolve_incident(
            resolved, actor=None, message="Queries work again.", at=T0 - timedelta(days=3) + timedelta(hours=2)
        )
        incident = factories.declare(
            actor=None,
            title="Slow dashboards in EU",
            components={eu: "partial_outage"},
            customer_impact_percent="12.5",
            regions=["EU"],
            workaround="Download the data with Export → CSV.",
            at=T0 - timedelta(minutes=30),
        )
        actions.post_update(incident, actor=None, body="We found a **slow query**.", public_status="identified")
        maintenance = actions.schedule_maintenance(
            actor=None,
            title="Database upgrade in EU",
            scheduled_for=T0 + timedelta(days=2),
            scheduled_until=T0 + timedelta(days=2, hours=2),
            components=[eu],
            at=T0 - timedelta(days=1),
        )
        publishing.publish()
    return {"open": incident.pk, "resolved": resolved.pk, "maintenance": maintenance.public_id}


def watch_console(page: Page) -> list[str]:
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if any(word in message.text for word in CSP_WORDS):
            problems.append(f"console {message.type}: {message.text}")

    page.on("console", on_console)
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    return problems


def serious_violations(page: Page, axe_source: str) -> list[dict[str, Any]]:
    # Open every group first, so axe checks the components inside them too.
    page.evaluate("document.querySelectorAll('details').forEach((d) => { d.open = true; })")
    page.evaluate(axe_source)
    violations: list[dict[str, Any]] = page.evaluate("async () => (await axe.run(document)).violations")
    return [
        {"id": v["id"], "impact": v["impact"], "help": v["help"], "nodes": [n["target"] for n in v["nodes"][:5]]}
        for v in violations
        if v["impact"] in {"serious", "critical"}
    ]


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_it_has_no_serious_accessibility_problems(
    requires_chromium: None,
    live_server: Any,
    page: Page,
    published: dict[str, int | str],
    axe_source: str,
    scheme: Literal["light", "dark"],
) -> None:
    page.emulate_media(color_scheme=scheme)
    problems = watch_console(page)
    paths = [
        "/",
        "/history",
        f"/incidents/{published['open']}",
        f"/incidents/{published['resolved']}",
        f"/maintenance/{published['maintenance']}",
        "/uptime",
        "/incidents/404",
    ]
    found = {}
    for path in paths:
        page.goto(f"{live_server.url}{path}")
        if violations := serious_violations(page, axe_source):
            found[path] = violations

    assert found == {}, json.dumps(found, indent=1)
    assert problems == []


def test_it_shows_times_in_the_readers_zone_and_keeps_open_groups_open(
    requires_chromium: None, live_server: Any, browser: Browser, published: dict[str, int | str]
) -> None:
    context = browser.new_context(timezone_id="America/New_York")
    page = context.new_page()
    problems = watch_console(page)
    page.goto(f"{live_server.url}/")

    updated = page.locator(".banner__updated time")
    assert updated.inner_text() == "8 Nov 2026, 09:05 EST"
    assert updated.get_attribute("title") == "8 Nov 2026, 15:05 CET"  # the page's own zone, on hover
    assert "Times are shown in your time zone (America/New_York)." in page.locator("footer").inner_text()

    # The reader opens a quiet group; a refresh from htmx swaps the live part and keeps it open.
    dashboards = page.locator("details", has=page.get_by_text("Dashboards", exact=True))
    assert dashboards.get_attribute("open") is None
    dashboards.locator("summary").click()
    page.evaluate("window.oldLive = document.getElementById('live')")
    page.evaluate("htmx.ajax('GET', '/', {source: '#live', target: '#live', swap: 'outerHTML', select: '#live'})")
    page.wait_for_function("document.getElementById('live') !== window.oldLive")
    page.wait_for_function("document.querySelector('.banner__updated time[data-localised]') !== null")

    assert page.locator("details", has=page.get_by_text("Dashboards", exact=True)).get_attribute("open") == ""
    assert page.locator(".banner__updated time").inner_text() == "8 Nov 2026, 09:05 EST"
    assert problems == []
    context.close()
