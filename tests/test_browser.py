"""The on-call flow in a real browser: log in, declare, acknowledge, update, resolve (htmx swaps).

Debian's Chromium through Playwright (see conftest's browser_type_launch_args); `live_server` runs the
app in a thread against a transactional test database.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import ConsoleMessage, Page, expect

from incidents.models import Component, Incident
from tests import factories

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CSP_WORDS = ("Content Security Policy", "Content-Security-Policy", "Refused to")


def watch_console(page: Page) -> list[str]:
    """Everything the page reports that the strict CSP blocked, and any uncaught script error."""
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if any(word in message.text for word in CSP_WORDS):
            problems.append(f"console {message.type}: {message.text}")

    page.on("console", on_console)
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    return problems


def test_it_runs_an_incident_from_declaration_to_resolution(
    requires_chromium: None, live_server: Any, page: Page, staff: User
) -> None:
    factories.ensure_severities()  # an earlier transactional test's flush removes the seeded ones
    api = factories.make_component(name="Query API", actor=staff)
    problems = watch_console(page)

    # Logging in sends alice on to where she was going.
    page.goto(f"{live_server.url}/manage/")
    expect(page).to_have_url(re.compile(r"/login/\?next=/manage/$"))
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill(factories.PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Incidents", level=1)).to_be_visible()
    expect(page.get_by_text("No open incidents. All quiet.")).to_be_visible()

    # Declare through the form (a plain POST, then the incident page).
    page.get_by_role("link", name="Declare incident").click()
    page.get_by_label("Title").fill("Checkout requests time out")
    page.get_by_role("radio", name=re.compile(r"^SEV2 · Major")).check()
    page.get_by_label("Customers affected (%)").fill("30")
    page.get_by_label("Regions or segments").fill("eu-west, us-east")
    page.get_by_label(re.compile(r"^Query API")).select_option("major_outage")
    page.get_by_label("First message").fill("We are investigating timeouts at checkout.")
    page.get_by_role("button", name="Declare incident").last.click()

    header = page.locator("#incident-header")
    expect(page.get_by_role("heading", name="Checkout requests time out", level=1)).to_be_visible()
    expect(page.locator("#messages")).to_contain_text("Declared SEV2: Checkout requests time out")
    expect(header).to_contain_text("Critical")
    expect(header).to_contain_text("30%")
    expect(header).to_contain_text("Major outage")
    incident = Incident.objects.get(title="Checkout requests time out")

    # From here on htmx swaps fragments: a marker on window survives only if the page never reloads.
    page.evaluate("window.stillTheSamePage = true")

    # The countdowns tick in the browser between the server's refreshes.
    ack_countdown = header.locator(".countdown[data-due-at] .countdown__time").first
    first_reading = ack_countdown.inner_text()
    expect(ack_countdown).not_to_have_text(first_reading, timeout=5000)

    page.get_by_role("button", name="Acknowledge").click()
    expect(header).to_contain_text("Acknowledged by alice")
    expect(page.get_by_role("button", name="Acknowledge")).to_have_count(0)
    expect(page.locator("#timeline")).to_contain_text("alice acknowledged after")
    expect(page.locator("#messages")).to_contain_text("Acknowledged. You are on it.")

    # A form error comes back as 422 and is swapped in next to the field.
    update_form = page.locator("#update-form")
    update_form.get_by_role("button", name="Post update").click()
    expect(update_form.locator("#update-body_error")).to_have_text("This field is required.")

    update_form.get_by_label("Public status").select_option("identified")
    update_form.get_by_label("Message").fill("A bad **deploy** of the payment proxy; rolling back.")
    update_form.get_by_label(re.compile(r"^Query API")).select_option("partial_outage")
    update_form.get_by_role("button", name="Post update").click()
    updates = page.locator("#updates")
    expect(updates.locator("article").first).to_contain_text("A bad deploy of the payment proxy; rolling back.")
    expect(updates.locator("article").first.locator("strong")).to_have_text("deploy")
    expect(updates).to_contain_text("Query API: Major outage")
    expect(header.locator(".pill--identified")).to_be_visible()
    expect(page.locator("#update-body")).to_have_value("")

    resolve_form = page.locator("#resolve-form")
    resolve_form.get_by_label("Final message (optional)").fill("Rolled back; checkout works again.")
    resolve_form.get_by_role("button", name="Resolve incident").click()
    expect(page.get_by_role("button", name="Reopen incident")).to_be_visible()
    expect(header.locator(".pill--resolved")).to_be_visible()
    expect(header).to_contain_text("Lasted")
    expect(updates.locator("article").first).to_contain_text("Rolled back; checkout works again.")
    expect(page.locator("#update-form")).to_contain_text("Reopen it to post more updates.")
    expect(page.locator("#messages")).to_contain_text("Resolved.")

    assert page.evaluate("window.stillTheSamePage") is True
    incident.refresh_from_db()
    api = Component.objects.get(pk=api.pk)
    assert (incident.status, incident.acknowledged_by, api.status) == ("resolved", staff, "operational")

    # The dashboard lists it under recently resolved.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Incidents").click()
    expect(page.locator("#open-incidents")).to_contain_text("No open incidents.")
    expect(page.locator("#open-incidents")).to_contain_text("Checkout requests time out")
    assert problems == []


def test_it_resolves_a_sev1_and_publishes_its_post_mortem(
    requires_chromium: None, live_server: Any, page: Page, staff: User
) -> None:
    factories.ensure_severities()
    api = factories.make_component(name="Query API", actor=staff)
    incident = factories.declare(
        actor=staff, title="Query API degraded for US customers", components={api: "major_outage"}
    )
    problems = watch_console(page)
    page.goto(f"{live_server.url}/manage/incidents/{incident.pk}")
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill(factories.PASSWORD)
    page.get_by_role("button", name="Log in").click()

    # Resolving a SEV1 opens the draft; the incident page links to it.
    page.locator("#resolve-form").get_by_role("button", name="Resolve incident").click()
    page.get_by_role("link", name="Post-mortem (draft)").click()
    expect(page.get_by_role("heading", name="Post-mortem: Query API degraded for US customers")).to_be_visible()
    expect(page.get_by_label("Customer impact")).to_have_value(re.compile(r"Affected components: Query API"))
    page.evaluate("window.stillTheSamePage = true")

    # Sending it for review too early is refused, and says why.
    page.get_by_role("button", name="Send for review").click()
    expect(page.get_by_role("alert")).to_contain_text("Write the summary and the root cause")

    summary = page.locator("#section-summary")
    summary.get_by_label("Summary").fill("A faulty switch slowed queries; our retries overloaded a database.")
    summary.get_by_role("button", name="Save summary").click()
    expect(summary.get_by_role("status")).to_have_text("Saved.")
    cause = page.locator("#section-root_cause")
    cause.get_by_label("Root cause").fill("Retries **without backoff** turned packet loss into an overload.")
    cause.get_by_role("button", name="Save root cause").click()
    expect(cause.get_by_role("status")).to_have_text("Saved.")
    wrong = page.locator("#section-went_wrong")
    wrong.get_by_label("What went wrong").fill("INTERNAL: the pager was on silent.")
    wrong.get_by_role("button", name="Save what went wrong").click()
    expect(wrong.get_by_role("status")).to_have_text("Saved.")

    page.get_by_role("button", name="Send for review").click()
    expect(page.locator(".pill--in_review")).to_be_visible()
    page.get_by_role("button", name="Publish").click()
    expect(page.locator("#messages")).to_contain_text("Published")
    assert page.evaluate("window.stillTheSamePage") is True

    # Customers see the public sections, and never the internal one.
    page.goto(f"{live_server.url}/incidents/{incident.pk}")
    postmortem = page.get_by_role("region", name="Post-mortem")
    expect(postmortem).to_contain_text("A faulty switch slowed queries", timeout=10_000)
    expect(postmortem.locator("strong")).to_have_text("without backoff")
    expect(page.locator("body")).not_to_contain_text("INTERNAL: the pager was on silent.")
    expect(page.locator(".state")).to_have_text("Post-mortem")
    assert problems == []


def test_a_paged_engineer_acknowledges_from_the_email_link(
    requires_chromium: None, live_server: Any, page: Page, staff: User, other_staff: User, settings: Any
) -> None:
    from incidents import escalation
    from incidents.clocks import sweep_due
    from incidents.models import EscalationStep
    from tests.smtp import SmtpServer

    factories.ensure_severities()
    EscalationStep.objects.create(severity=factories.severity("sev1"), position=1).users.set([other_staff])
    incident = factories.declare(actor=staff, title="Query API down")
    settings.SITE_URL = live_server.url
    with SmtpServer() as smtp:
        settings.MAILERS = smtp.mailers()
        sweep_due()
        escalation.send_due()
        [email] = smtp.inbox("bob@example.com")
    link = re.search(r"https?://\S+/manage/ack/\S+/", email.get_content())
    assert link, email.get_content()
    problems = watch_console(page)

    # The link asks bob to sign in, then what he is about to do; nothing happens until he says so.
    page.goto(link.group(0))
    page.get_by_label("Username").fill("bob")
    page.get_by_label("Password").fill(factories.PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name=re.compile(r"Query API down"))).to_be_visible()
    expect(page.get_by_text("Unacknowledged for")).to_be_visible()
    page.get_by_role("button", name="Acknowledge as bob").click()

    # The incident page: acknowledged by bob, paging stopped.
    expect(page.get_by_text("Acknowledged. You are on it: paging has stopped.")).to_be_visible()
    expect(page.locator(".acked")).to_contain_text("Acknowledged by bob")
    expect(page.locator("#paging")).to_contain_text("Paging ended: acknowledged by bob")

    # The same link again: used.
    page.goto(link.group(0))
    expect(page.get_by_role("alert")).to_contain_text("This link was already used, by bob")
    incident.refresh_from_db()
    assert incident.acknowledged_by == other_staff
    assert problems == []
