"""The staff UI on a phone, and what people type survives: every staff page fits 360–390 px with no
sideways scrolling (the acknowledge button and the countdowns in view), long words wrap at desktop width,
the dashboard puts open incidents before maintenance, a post-mortem keeps unsaved section text through
every other button and asks before it is left, the incident and maintenance pages keep text typed in
one form through another form's refusal and ask before they are left (and before Start a post-mortem
leaves typed reopen text), and picking a declaration template asks before it discards what was typed.

Debian's Chromium through Playwright, as in tests/test_browser.py. The data is made through actions at
the real time, relative to now: nothing here depends on a date.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone
from playwright.sync_api import Dialog, Page, expect

from incidents import actions, escalation
from incidents.clocks import sweep_due
from incidents.models import EscalationStep, Incident, IncidentTemplate, Maintenance, SectionKey, StaffNotice
from tests import factories
from tests.test_browser import watch_console

pytestmark = pytest.mark.django_db(transaction=True)

PHONE_WIDTHS = (390, 360)
WIDER_WIDTHS = (768, 961, 1280)  # a tablet (or a phone held sideways), just past the stacked tables, a desktop
# One word of 79 characters with nowhere to break a line (a hyphen would be one), as a region name
# pasted from a cloud console.
LONG_REGION = "europe_west1_frankfurt_availability_zone_c_dedicated_tenancy_pci_scope_cluster42"[:79]
assert len(LONG_REGION) == 79 and not {" ", "-"} & set(LONG_REGION)

# The page's own width, and every element that sticks out past the viewport's right edge (to say which).
MEASURE = """() => {
  const width = window.innerWidth;
  const outside = [];
  for (const element of document.querySelectorAll("body *")) {
    const box = element.getBoundingClientRect();
    if (box.width > 0 && box.right > width + 1) {
      const classes = typeof element.className === "string" ? element.className.trim().split(/\\s+/) : [];
      outside.push([element.tagName.toLowerCase() + (element.id ? "#" + element.id : ""), ...classes].join("."));
    }
  }
  const scrollers = [...document.querySelectorAll(".table-scroll")]
    .filter((element) => element.scrollWidth > element.clientWidth + 1)
    .map((element) => element.querySelector("table")?.className || "?");
  const scrollWidth = document.documentElement.scrollWidth;
  return {scrollWidth, innerWidth: width, outside: outside.slice(0, 8), scrollers};
}"""

# Stacked table cells whose content overlaps their label (the label is drawn in the cell's left 38%).
OVER_THEIR_LABEL = """() => [...document.querySelectorAll(".table--stack [data-label]")].filter((cell) => {
  const range = document.createRange();
  range.selectNodeContents(cell);
  const content = range.getBoundingClientRect();
  const box = cell.getBoundingClientRect();
  return content.width > 0 && content.left < box.left + 0.3 * box.width;
}).map((cell) => cell.dataset.label + ": " + cell.textContent.trim().slice(0, 40))"""

# Left and right edge of each element the selector matches.
EDGES = """(elements) => elements.map((element) => {
  const box = element.getBoundingClientRect();
  return [box.left, box.right];
})"""


@dataclass
class StaffPages:
    open_incident: Incident
    resolved_incident: Incident
    window: Maintenance
    ack_token: str

    def urls(self) -> list[tuple[str, str]]:
        """Every staff page, as (name, path); the login page is visited before these."""
        return [
            ("dashboard", "/manage/"),
            ("declare", "/manage/incidents/new"),
            ("open incident", f"/manage/incidents/{self.open_incident.pk}"),
            ("resolved incident", f"/manage/incidents/{self.resolved_incident.pk}"),
            ("maintenance list", "/manage/maintenance/"),
            ("schedule maintenance", "/manage/maintenance/new"),
            ("maintenance window", f"/manage/maintenance/{self.window.pk}"),
            ("post-mortem", f"/manage/incidents/{self.resolved_incident.pk}/postmortem/"),
            ("reports", "/manage/reports/"),
            ("acknowledge link", f"/manage/ack/{self.ack_token}/"),
        ]


@pytest.fixture
def staff_pages(staff: User, other_staff: User) -> StaffPages:
    """A SEV1 unacknowledged past its target and paging bob (clocks, paging panel, every form, bob's link
    to acknowledge), a resolved SEV1 with its post-mortem draft, a maintenance window, a template: each
    with the 79-character region or title word."""
    factories.ensure_severities()
    for position, after_minutes in enumerate((5, 60), start=1):
        step = EscalationStep.objects.create(
            severity=factories.severity("sev1"), position=position, after_minutes=after_minutes
        )
        step.users.set([other_staff])
    platform = factories.make_component(name="Platform", is_group=True, actor=staff)
    api = factories.make_component(name="Query API", group=platform, actor=staff)
    web = factories.make_component(name=f"Web app {LONG_REGION}", actor=staff)
    now = timezone.now()
    IncidentTemplate.objects.create(
        name="Database failover", title="Primary database failed over", severity=factories.severity("sev2")
    )
    open_incident = factories.declare(
        actor=staff,
        title="Checkout requests time out for customers in the EU",
        components={api: "major_outage", web: "partial_outage"},
        customer_impact_percent=30,
        regions=[LONG_REGION, "us-east"],
        workaround=f"Retry against {LONG_REGION}.",
        at=now - timedelta(minutes=10),
    )
    resolved_incident = factories.declare(
        actor=staff,
        title=f"Query API degraded {LONG_REGION}",
        components={api: "degraded_performance"},
        regions=[LONG_REGION],
        at=now - timedelta(hours=3),
    )
    actions.acknowledge_incident(resolved_incident, actor=other_staff, at=now - timedelta(hours=2, minutes=50))
    actions.resolve_incident(resolved_incident, actor=staff, message="Fixed.", at=now - timedelta(hours=1))
    postmortem = resolved_incident.postmortem
    actions.add_postmortem_entry(
        postmortem, actor=staff, at=now - timedelta(hours=2), text=f"Failover to {LONG_REGION}"
    )
    actions.add_action_item(postmortem, actor=staff, title=f"Alert on {LONG_REGION} latency", owner=staff)
    window = actions.schedule_maintenance(
        actor=staff,
        title=f"Database upgrade in {LONG_REGION}",
        scheduled_for=now + timedelta(hours=2),
        scheduled_until=now + timedelta(hours=4),
        components=[api, web],
        message="We upgrade the **database**.",
    )
    sweep_due()  # the acknowledge clock breaches and the first page goes to bob
    notice = StaffNotice.objects.get(incident=open_incident, user=other_staff)
    return StaffPages(
        open_incident=open_incident,
        resolved_incident=resolved_incident,
        window=window,
        ack_token=escalation.ack_token(notice),
    )


def log_in(page: Page, base: str) -> None:
    page.goto(f"{base}/login/")
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill(factories.PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Incidents", level=1)).to_be_visible()


def visit(page: Page, url: str, name: str) -> None:
    page.goto(url)
    if name == "dashboard":  # the maintenance panel arrives by htmx after the page
        expect(page.locator("#maintenance-panel")).to_contain_text("upcoming")


def assert_fits(page: Page, where: str) -> None:
    sizes = page.evaluate(MEASURE)
    assert sizes["scrollWidth"] <= sizes["innerWidth"], f"{where}: the page scrolls sideways: {sizes}"
    assert sizes["scrollers"] == [], f"{where}: a table is hidden in a sideways scroller: {sizes}"


def assert_in_view(page: Page, selector: str, where: str) -> None:
    """Every element the selector matches lies within the viewport, left to right."""
    width = page.evaluate("window.innerWidth")
    edges = page.locator(selector).evaluate_all(EDGES)
    assert edges, f"{where}: nothing matches {selector}"
    assert all(left >= 0 and right <= width for left, right in edges), f"{where}: {selector} at {edges}"


def test_every_staff_page_fits_a_phone(
    requires_chromium: None, live_server: Any, page: Page, staff_pages: StaffPages
) -> None:
    problems = watch_console(page)
    for width in PHONE_WIDTHS:
        page.context.clear_cookies()
        page.set_viewport_size({"width": width, "height": 800})
        page.goto(f"{live_server.url}/login/")
        assert_fits(page, f"login at {width} px")
        log_in(page, live_server.url)
        for name, path in staff_pages.urls():
            where = f"{name} at {width} px"
            visit(page, f"{live_server.url}{path}", name)
            assert_fits(page, where)
            assert page.evaluate(OVER_THEIR_LABEL) == [], where
            # The top bar wraps rather than pushing Declare, Reports and Log out off the screen.
            assert_in_view(page, ".site-nav a, .logout button", where)
            if name in {"dashboard", "open incident"}:
                assert_in_view(page, "main .countdown", where)
            if name == "acknowledge link":
                assert_in_view(page, "main button, main .button", where)
            if name == "open incident":
                assert_in_view(page, "#incident-header button:text-is('Acknowledge')", where)
                assert_in_view(page, "#paging form button", where)
    assert problems == []


def test_long_words_wrap_on_every_staff_page_at_tablet_and_desktop_width(
    requires_chromium: None, live_server: Any, page: Page, staff_pages: StaffPages
) -> None:
    log_in(page, live_server.url)
    for width in WIDER_WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        for name, path in staff_pages.urls():
            visit(page, f"{live_server.url}{path}", name)
            assert_fits(page, f"{name} at {width} px")
            if name not in {"declare", "schedule maintenance", "reports", "acknowledge link"}:
                expect(page.get_by_text(LONG_REGION).first).to_be_visible()


# A name of 190 characters with nowhere to break (the most a 200-character name field leaves after a
# prefix), as a component or an incident title pasted from a generated resource id.
LONGEST_WORD = ("checkoutservice" * 13)[:190]
assert len(LONGEST_WORD) == 190 and not {" ", "-"} & set(LONGEST_WORD)


def test_a_190_character_name_wraps_on_every_staff_page_on_a_phone_and_a_desktop(
    requires_chromium: None, live_server: Any, page: Page, staff: User
) -> None:
    group = factories.make_component(name=LONGEST_WORD[:-5], is_group=True, actor=staff)
    component = factories.make_component(name=LONGEST_WORD, group=group, actor=staff)
    factories.make_component(name=LONGEST_WORD[:-1], actor=staff)
    incident = factories.declare(
        actor=staff,
        title=LONGEST_WORD,
        message=f"{LONGEST_WORD} fails.",
        components={component: "major_outage"},
        regions=[LONG_REGION],
        workaround=LONGEST_WORD,
    )
    # The name quoted in a code block (which keeps its lines: white-space pre) made the page 1,389 px wide;
    # a Markdown table of 14 columns, 2,510 px (the sixth review).
    columns = [f"shard-{n:03d} error rate" for n in range(14)]
    table = "| " + " | ".join(columns) + " |\n|" + "---|" * 14 + "\n| " + " | ".join(["45.2%"] * 14) + " |"
    code_block = f"Moved:\n\n```\n{LONGEST_WORD}\n```\n\n{table}"
    actions.post_update(
        incident, actor=staff, body=code_block, components={component: "partial_outage"}, is_public=False
    )
    resolved = factories.declare(actor=staff, title=LONGEST_WORD[:-2], components={component: "major_outage"})
    actions.resolve_incident(resolved, actor=staff, message=code_block)
    actions.add_postmortem_entry(  # a SEV1's resolve opened its post-mortem
        resolved.postmortem, actor=staff, at=timezone.now(), text=f"Failover to {LONGEST_WORD}"
    )
    window = actions.schedule_maintenance(
        actor=staff,
        title=LONGEST_WORD,
        scheduled_for=timezone.now() + timedelta(hours=2),
        scheduled_until=timezone.now() + timedelta(hours=4),
        components=[component],
        message=code_block,
    )
    pages = [
        ("dashboard", "/manage/"),
        ("declare", "/manage/incidents/new"),
        ("incident", f"/manage/incidents/{incident.pk}"),
        ("resolved incident", f"/manage/incidents/{resolved.pk}"),
        ("post-mortem", f"/manage/incidents/{resolved.pk}/postmortem/"),
        ("maintenance list", "/manage/maintenance/"),
        ("schedule maintenance", "/manage/maintenance/new"),
        ("maintenance window", f"/manage/maintenance/{window.pk}"),
    ]
    problems = watch_console(page)
    log_in(page, live_server.url)
    for width in (390, 1280):
        page.set_viewport_size({"width": width, "height": 900})
        for name, path in pages:
            visit(page, f"{live_server.url}{path}", name)
            assert_fits(page, f"{name} at {width} px")
        page.goto(f"{live_server.url}/manage/incidents/{incident.pk}")
        expect(page.locator("#updates pre")).to_have_text(LONGEST_WORD)
        expect(page.locator("#updates table th").first).to_have_text("shard-000 error rate")
        expect(page.locator("#updates .changes").first).to_contain_text(LONGEST_WORD)
    assert problems == []


# 190 of the widest letters: 13 to a line on a 390 px phone.
WIDE_TITLE = "MW" * 95


def test_a_190_character_title_leaves_the_acknowledge_button_in_view_on_a_phone(
    requires_chromium: None, live_server: Any, page: Page, staff: User
) -> None:
    # The title wrapped to 15 lines above the button, which ended up below the fold of a 390 x 844 phone.
    incident = factories.declare(actor=staff, title=WIDE_TITLE)
    log_in(page, live_server.url)
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{live_server.url}/manage/incidents/{incident.pk}")

    button = page.locator("#incident-header button:text-is('Acknowledge')")
    box = button.bounding_box()
    assert box is not None and box["y"] >= 0 and box["y"] + box["height"] <= 844, box
    expect(page.locator("#incident-title")).to_have_text(WIDE_TITLE)
    assert_fits(page, "incident with a 190-character title at 390 px")


def test_the_report_with_its_benchmarks_fits_a_phone(
    requires_chromium: None, live_server: Any, page: Page, staff_pages: StaffPages
) -> None:
    # At 360 px each chart's table was 363 px wide: 3 px cut off. With the benchmarks the migration seeds
    # (a transactional test flushes them: they are put back here), as a real report has them.
    from importlib import import_module

    from django.apps import apps

    import_module("incidents.migrations.0009_benchmarks").seed(apps, None)
    log_in(page, live_server.url)
    for width in PHONE_WIDTHS:
        page.set_viewport_size({"width": width, "height": 800})
        page.goto(f"{live_server.url}/manage/reports/")
        expect(page.locator("main")).to_contain_text("DORA elite")
        # The charts' tables too, in their disclosures (closed, they are laid out all the same).
        page.locator(".chart-figure details").evaluate_all("(all) => all.forEach((d) => { d.open = true; })")
        sizes = page.evaluate(MEASURE)
        assert sizes["outside"] == [], f"reports at {width} px: {sizes}"
        assert_fits(page, f"reports at {width} px")


def test_the_admin_wraps_a_190_character_title_on_a_phone(
    requires_chromium: None, live_server: Any, page: Page, staff: User
) -> None:
    # The admin's breadcrumbs and heading quote the title: one unbroken word made the page 3,368 px wide.
    incident = factories.declare(actor=staff, title=LONGEST_WORD)
    User.objects.create_superuser("root", "root@example.com", factories.PASSWORD)
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{live_server.url}/admin/login/")
    page.get_by_label("Username").fill("root")
    page.get_by_label("Password").fill(factories.PASSWORD)
    page.get_by_role("button", name="Log in").click()
    for path in (
        f"/admin/incidents/incident/{incident.pk}/change/",
        f"/admin/incidents/incident/{incident.pk}/history/",
    ):
        page.goto(f"{live_server.url}{path}")
        expect(page.locator(".breadcrumbs")).to_contain_text(LONGEST_WORD)
        assert_fits(page, f"{path} at 390 px")


def test_the_dashboard_lists_open_incidents_before_maintenance(staff_client: Client, staff: User) -> None:
    html = staff_client.get("/manage/").content.decode()
    assert html.index('id="open-heading"') < html.index('id="maintenance-panel"')


class Dialogs:
    """Every dialog the page opens (beforeunload's "Leave site?", confirm()), answered as told."""

    def __init__(self, page: Page) -> None:
        self.seen: list[tuple[str, str]] = []
        self.accept = False
        page.on("dialog", self.answer)

    def answer(self, dialog: Dialog) -> None:
        self.seen.append((dialog.type, dialog.message))
        if self.accept:
            dialog.accept()
        else:
            dialog.dismiss()


def test_a_post_mortem_keeps_unsaved_section_text_through_every_other_button(
    requires_chromium: None, live_server: Any, page: Page, staff_pages: StaffPages
) -> None:
    incident = staff_pages.resolved_incident
    postmortem_url = f"{live_server.url}/manage/incidents/{incident.pk}/postmortem/"
    problems = watch_console(page)
    dialogs = Dialogs(page)
    log_in(page, live_server.url)

    # Nothing typed: leaving does not ask.
    page.goto(postmortem_url)
    page.get_by_role("link", name=f"#{incident.pk}").click()
    expect(page).to_have_url(f"{live_server.url}/manage/incidents/{incident.pk}")
    assert dialogs.seen == []

    page.goto(postmortem_url)
    page.evaluate("window.stillTheSamePage = true")
    summary = page.locator("#section-summary").get_by_label("Summary")
    cause = page.locator("#section-root_cause").get_by_label("Root cause")
    summary.fill("A faulty switch slowed queries.")
    cause.fill("Retries without backoff.")
    line = page.locator(".pm-timeline__entry").filter(has_text="Failover to")

    # Each of these swaps the whole body; the two sections keep what was typed, still unsaved.
    line.get_by_role("button", name="Unstar").click()
    expect(line.get_by_role("button", name="Star", exact=True)).to_be_visible()
    expect(summary).to_have_value("A faulty switch slowed queries.")
    line.get_by_role("button", name="Hide").click()
    expect(line.get_by_role("button", name="Show")).to_be_visible()
    expect(summary).to_have_value("A faulty switch slowed queries.")
    page.get_by_text("Add an action item").click()
    page.get_by_label("Title").fill("Add backoff to the query retries")
    page.locator("#items-heading").locator("..").get_by_role("button", name="Add").click()
    expect(page.locator(".action-items")).to_contain_text("Add backoff to the query retries")
    expect(summary).to_have_value("A faulty switch slowed queries.")
    page.get_by_role("button", name="Send for review").click()  # refused: nothing saved yet
    expect(page.get_by_role("alert")).to_have_text(
        "Before sending it for review, save the summary and the root cause (typed but not saved yet)."
    )
    expect(summary).to_have_value("A faulty switch slowed queries.")
    expect(cause).to_have_value("Retries without backoff.")
    expect(page.locator("#section-summary .unsaved-note")).to_be_visible()
    assert page.evaluate("window.stillTheSamePage") is True
    sections = {section.key: section.body for section in incident.postmortem.sections.all()}
    assert (sections[SectionKey.SUMMARY], sections[SectionKey.ROOT_CAUSE]) == ("", "")

    # Saving one section saves it alone; the other is still kept, and still unsaved.
    page.locator("#section-summary").get_by_role("button", name="Save summary").click()
    expect(page.locator("#section-summary").get_by_role("status")).to_have_text("Saved.")
    expect(page.locator("#section-summary .unsaved-note")).to_be_hidden()
    expect(cause).to_have_value("Retries without backoff.")
    assert incident.postmortem.sections.get(key=SectionKey.SUMMARY).body == "A faulty switch slowed queries."

    # Leaving with the root cause unsaved asks first; staying keeps it, leaving leaves.
    breadcrumb = page.get_by_role("link", name=f"#{incident.pk}")
    with page.expect_event("dialog"):
        breadcrumb.click()
    expect(cause).to_have_value("Retries without backoff.")
    assert [kind for kind, _ in dialogs.seen] == ["beforeunload"]
    assert page.evaluate("window.stillTheSamePage") is True
    dialogs.accept = True
    with page.expect_event("dialog"):
        breadcrumb.click()
    expect(page).to_have_url(f"{live_server.url}/manage/incidents/{incident.pk}")
    assert [kind for kind, _ in dialogs.seen] == ["beforeunload", "beforeunload"]
    assert problems == []


def test_picking_a_template_asks_before_it_discards_what_was_typed(
    requires_chromium: None, live_server: Any, page: Page, staff_pages: StaffPages
) -> None:
    problems = watch_console(page)
    dialogs = Dialogs(page)
    log_in(page, live_server.url)
    page.goto(f"{live_server.url}/manage/incidents/new")
    title = page.get_by_label("Title")
    template = page.get_by_role("link", name="Database failover")

    title.fill("Checkout is slow")
    page.get_by_label("First message").fill("We are looking into slow checkouts.")
    with page.expect_event("dialog"):
        template.click()
    assert dialogs.seen == [("confirm", "Replace what you typed with the template “Database failover”?")]
    expect(page).to_have_url(f"{live_server.url}/manage/incidents/new")
    expect(title).to_have_value("Checkout is slow")

    # Yes: the template's fields, asked once (not again by the browser on leaving).
    dialogs.accept = True
    with page.expect_event("dialog"):
        template.click()
    expect(page).to_have_url(re.compile(r"/manage/incidents/new\?template=\d+$"))
    expect(title).to_have_value("Primary database failed over")
    assert [kind for kind, _ in dialogs.seen] == ["confirm", "confirm"]

    # A prefilled form nobody has touched leaves without a question; declaring it does not ask either.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Incidents").click()
    expect(page.get_by_role("heading", name="Incidents", level=1)).to_be_visible()
    page.goto(f"{live_server.url}/manage/incidents/new?template={IncidentTemplate.objects.get().pk}")
    page.get_by_label("First message").fill("The primary failed over at 03:10.")
    page.get_by_role("button", name="Declare incident").last.click()
    expect(page.get_by_role("heading", name="Primary database failed over", level=1)).to_be_visible()
    assert [kind for kind, _ in dialogs.seen] == ["confirm", "confirm"]
    assert problems == []


def test_the_incident_page_keeps_typed_text_through_refusals_and_asks_before_it_is_left(
    requires_chromium: None, live_server: Any, page: Page, staff_pages: StaffPages, other_staff: User
) -> None:
    incident = staff_pages.open_incident
    url = f"{live_server.url}/manage/incidents/{incident.pk}"
    problems = watch_console(page)
    dialogs = Dialogs(page)
    page.set_viewport_size({"width": 390, "height": 900})
    log_in(page, live_server.url)
    breadcrumb = page.locator(".breadcrumbs").get_by_role("link", name="Incidents")

    # Nothing typed: leaving does not ask.
    page.goto(url)
    breadcrumb.click()
    expect(page.get_by_role("heading", name="Incidents", level=1)).to_be_visible()
    assert dialogs.seen == []

    page.goto(url)
    page.evaluate("window.stillTheSamePage = true")
    update = page.locator("#update-form").get_by_label("Message")
    final = page.locator("#resolve-form").get_by_label("Final message (optional)")
    update.fill("Failover done; watching the error rate.")
    final.fill("Checkout works again.")

    def assert_kept() -> None:
        expect(update).to_have_value("Failover done; watching the error rate.")
        expect(final).to_have_value("Checkout works again.")

    # Buttons pressed with nothing to change: refused next to the button, the other boxes untouched.
    severity = page.locator("#severity-form")
    severity.get_by_role("button", name="Change severity").click()
    expect(severity.get_by_role("alert")).to_have_text(f"The incident is already {incident.severity.name}.")
    assert_kept()
    scope = page.locator("#scope-form")
    scope.get_by_role("button", name="Save scope").click()
    expect(scope.get_by_role("alert")).to_have_text("Nothing changed.")
    assert_kept()

    # A refusal because someone else acted meanwhile brings every part up to date, text kept.
    actions.acknowledge_incident(incident, actor=other_staff)
    paging = page.locator("#paging")
    paging.get_by_label("Why stop paging?").fill("Bob is on it.")
    paging.get_by_role("button", name="Stop paging").click()
    expect(page.locator("#incident-header")).to_contain_text("Acknowledged by bob")
    assert_kept()
    assert page.evaluate("window.stillTheSamePage") is True
    assert incident.updates.count() == 1

    # Leaving with the text typed asks first; staying keeps it, leaving leaves.
    with page.expect_event("dialog"):
        breadcrumb.click()
    assert_kept()
    assert [kind for kind, _ in dialogs.seen] == ["beforeunload"]
    dialogs.accept = True
    with page.expect_event("dialog"):
        breadcrumb.click()
    expect(page.get_by_role("heading", name="Incidents", level=1)).to_be_visible()
    assert problems == []


def test_the_maintenance_page_keeps_typed_text_through_a_refusal_and_asks_before_it_is_left(
    requires_chromium: None, live_server: Any, page: Page, staff: User
) -> None:
    # On the minute, as the form shows it, so pressing Reschedule as it is changes nothing.
    start = timezone.now().replace(second=0, microsecond=0) + timedelta(hours=2)
    window = actions.schedule_maintenance(
        actor=staff,
        title="Database upgrade",
        scheduled_for=start,
        scheduled_until=start + timedelta(hours=2),
        components=[factories.make_component(name="Query API", actor=staff)],
        message="We upgrade the database.",
    )
    problems = watch_console(page)
    dialogs = Dialogs(page)
    page.set_viewport_size({"width": 390, "height": 900})
    log_in(page, live_server.url)
    page.goto(f"{live_server.url}/manage/maintenance/{window.pk}")
    update = page.locator("#update-form").get_by_label("Message")
    reason = page.locator("#cancel-form").get_by_label("Reason (optional)")
    update.fill("The upgrade may run longer.")
    reason.fill("The vendor delayed the release.")

    reschedule = page.locator("#reschedule-form")
    reschedule.get_by_role("button", name="Reschedule").click()
    expect(reschedule.get_by_role("alert")).to_have_text("Nothing changed.")
    expect(update).to_have_value("The upgrade may run longer.")
    expect(reason).to_have_value("The vendor delayed the release.")

    with page.expect_event("dialog"):
        page.locator(".breadcrumbs").get_by_role("link").first.click()
    expect(reason).to_have_value("The vendor delayed the release.")
    assert [kind for kind, _ in dialogs.seen] == ["beforeunload"]
    assert problems == []


def test_starting_a_post_mortem_asks_before_it_drops_typed_reopen_text(
    requires_chromium: None, live_server: Any, page: Page, staff: User
) -> None:
    incident = factories.declare(actor=staff, severity_key="sev3", title="Search is slow")
    actions.resolve_incident(incident, actor=staff, message="Fixed.")
    problems = watch_console(page)
    dialogs = Dialogs(page)
    page.set_viewport_size({"width": 390, "height": 900})
    log_in(page, live_server.url)
    page.goto(f"{live_server.url}/manage/incidents/{incident.pk}")
    why = page.get_by_label("Why reopen?")
    why.fill("Search is slow again.")
    start = page.get_by_role("button", name="Start a post-mortem")

    with page.expect_event("dialog"):
        start.click()
    assert dialogs.seen == [("confirm", "Start the post-mortem and leave what you typed here unsaved?")]
    expect(why).to_have_value("Search is slow again.")
    assert not Incident.objects.filter(pk=incident.pk, postmortem__isnull=False).exists()

    # Yes: asked once (not again by the browser on leaving).
    dialogs.accept = True
    with page.expect_event("dialog"):
        start.click()
    expect(page).to_have_url(f"{live_server.url}/manage/incidents/{incident.pk}/postmortem/")
    assert [kind for kind, _ in dialogs.seen] == ["confirm", "confirm"]
    assert problems == []


def test_resolving_asks_before_it_drops_a_typed_update_and_not_about_its_own_message(
    requires_chromium: None, live_server: Any, page: Page, staff: User
) -> None:
    incident = factories.declare(actor=staff, severity_key="sev3", title="Search is slow")
    problems = watch_console(page)
    dialogs = Dialogs(page)
    page.set_viewport_size({"width": 390, "height": 900})
    log_in(page, live_server.url)
    page.goto(f"{live_server.url}/manage/incidents/{incident.pk}")
    update = page.locator("#update-form").get_by_label("Message")
    update.fill("Unsent: the index is rebuilding.")
    resolve = page.get_by_role("button", name="Resolve incident")

    with page.expect_event("dialog"):
        resolve.click()
    assert dialogs.seen == [("confirm", "Resolve it, and drop the text typed in another form here (not posted)?")]
    expect(update).to_have_value("Unsent: the index is rebuilding.")
    incident.refresh_from_db()
    assert incident.resolved_at is None

    # With nothing typed elsewhere, its own final message is no reason to ask.
    update.fill("")
    page.get_by_label("Final message (optional)").fill("Fixed.")
    resolve.click()
    expect(page.get_by_text("This incident is resolved")).to_be_visible()
    assert len(dialogs.seen) == 1
    assert problems == []
