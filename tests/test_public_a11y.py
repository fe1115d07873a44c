"""The public pages in a real browser: axe-core finds no serious or critical problem, in the light and
the dark scheme, and the small script does its work under the strict CSP.

axe-core comes from npm (`npm install` at the repository root; package-lock.json pins it). Under the
CSP a <script> tag cannot be added, so its source is evaluated through Playwright instead.
"""

from __future__ import annotations

import json
import time
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


def active_element(page: Page) -> dict[str, Any]:
    return dict(
        page.evaluate(
            """() => {
                const e = document.activeElement;
                const group = e.closest('details');
                return {tag: e.tagName, id: e.id, text: e.textContent.trim().replace(/\\s+/g, ' '),
                        inLive: !!e.closest('#live'), groupOpen: group ? group.open : null};
            }"""
        )
    )


def wait_for_refresh(page: Page) -> None:
    """Let the page's own 30 s poll fire (the clock is Playwright's), and wait for its swap to settle."""
    page.evaluate("window.oldLive = document.getElementById('live')")
    page.clock.run_for(31_000)
    # Polled from here: under the strict CSP, with Playwright's clock, wait_for_function cannot eval.
    deadline = time.monotonic() + 10
    swapped = "() => document.getElementById('live') !== window.oldLive && !document.querySelector('.htmx-settling')"
    while not page.evaluate(swapped):
        assert time.monotonic() < deadline, "the page did not refresh itself"
        page.clock.run_for(50)  # htmx swaps and settles after short timeouts
        time.sleep(0.05)
    page.clock.run_for(100)


def test_the_30_second_refresh_keeps_keyboard_focus_and_open_groups_where_they_were(
    requires_chromium: None, live_server: Any, page: Page, published: dict[str, int]
) -> None:
    problems = watch_console(page)
    page.clock.install()
    page.goto(f"{live_server.url}/")

    # A keyboard reader opens the quiet "Dashboards" group with Enter, and stays on it.
    page.locator("summary", has_text="Dashboards").focus()
    page.keyboard.press("Enter")
    before = active_element(page)
    assert before["text"].startswith("Dashboards") and before["groupOpen"] is True

    wait_for_refresh(page)
    after = active_element(page)
    assert after == before, "focus stays on the same group, which stays open"
    assert page.evaluate("document.activeElement.closest('#live') === document.getElementById('live')")
    page.keyboard.press("Tab")  # and the next Tab goes on from there, not from the top of the page
    following = active_element(page)
    assert following["inLive"], following
    assert following["text"] != "Skip to content"

    # A link in an incident's card keeps focus too.
    page.locator("#live .card__title a", has_text="Slow dashboards in EU").focus()
    wait_for_refresh(page)
    assert active_element(page)["text"] == "Slow dashboards in EU"
    assert active_element(page)["tag"] == "A"
    assert problems == []


def test_a_form_error_moves_focus_to_the_error_summary(
    requires_chromium: None, live_server: Any, page: Page, published: dict[str, int]
) -> None:
    problems = watch_console(page)
    page.goto(f"{live_server.url}/subscribe")
    page.fill("#id_email", "not an address")
    page.locator("#id_kinds_0").uncheck()
    page.locator("#id_kinds_1").uncheck()
    page.locator("#id_kinds_2").uncheck()
    page.get_by_role("button", name="Subscribe").click()
    page.wait_for_selector("[data-error-summary]")

    focused = active_element(page)
    assert focused["id"] == "error-summary"
    assert "Please fix these 2 things and try again" in focused["text"]
    assert "Enter a valid email address, like name@example.com." in focused["text"]
    assert "Choose at least one kind of update." in focused["text"]
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")  # the first error's link goes to its field
    assert active_element(page)["id"] == "id_email"
    assert problems == []
