"""Escalation and nudges: page staff until someone acknowledges; remind the commander of public updates.

Time is moved with time-machine and the sweep is called as beat calls it; emails go to a real SMTP
server (aiosmtpd). Concurrency runs on PostgreSQL with two sweeps in two connections.
"""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import pytest
import time_machine
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client

from incidents import actions, escalation
from incidents.actions import ActionRefused
from incidents.clocks import sweep_due
from incidents.models import (
    MAX_REASON_LENGTH,
    EscalationStep,
    EventKind,
    Incident,
    NoticeKind,
    NoticeStatus,
    NudgeReason,
    PageStep,
    StaffNotice,
    TimelineEvent,
)
from tests import factories
from tests.conftest import SMTP_SITE_URL
from tests.smtp import SmtpServer
from tests.test_actions import run_concurrently

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
SITE_URL = SMTP_SITE_URL  # the smtp fixture (conftest) sets it
pytestmark = pytest.mark.django_db


@pytest.fixture
def carol(db: None) -> User:
    return factories.make_user(username="carol")


@pytest.fixture
def policy(staff: User, other_staff: User) -> list[EscalationStep]:
    """SEV1: alice at once, then bob and the on-call alias after 10 minutes; once more 20 minutes later."""
    sev1 = factories.severity("sev1")
    sev1.escalation_repeats = 1
    sev1.escalation_repeat_minutes = 20
    sev1.save()
    first = EscalationStep.objects.create(severity=sev1, position=1, after_minutes=0)
    first.users.set([staff])
    second = EscalationStep.objects.create(severity=sev1, position=2, after_minutes=10, addresses="oncall@example.com")
    second.users.set([other_staff])
    return [first, second]


def sweep(at: datetime) -> int:
    with time_machine.travel(at, tick=False):
        return sweep_due(at)


def send(at: datetime) -> int:
    with time_machine.travel(at, tick=False):
        return escalation.send_due(at)


def paged_addresses(incident: Incident) -> list[tuple[int, str]]:
    return sorted(
        StaffNotice.objects.filter(incident=incident, kind=NoticeKind.PAGE).values_list("step__number", "email")
    )


def declare(actor: User, **kwargs: Any) -> Incident:
    kwargs.setdefault("at", T0)
    with time_machine.travel(kwargs["at"], tick=False):
        return factories.declare(actor=actor, **kwargs)


def paging_panel(page: str) -> str:
    """The incident page's paging panel (the timeline keeps its record of each step firing: "Paging …")."""
    start = page.index('<div id="paging-status"')
    return page[start : page.index("</section>", start)]


# --- the schedule -------------------------------------------------------------------------------


def test_it_copies_the_policy_onto_the_incident_at_declaration(policy: list[EscalationStep], staff: User) -> None:
    incident = declare(staff)

    steps = list(PageStep.objects.filter(incident=incident).order_by("number"))
    minutes = [(step.due_at - T0) / timedelta(minutes=1) for step in steps]
    # Run 2 starts 20 minutes after run 1's last step (minute 10).
    assert minutes == [0, 10, 30, 40]
    assert [(step.run, step.position) for step in steps] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert steps[1].names == ["bob", "oncall@example.com"]
    assert steps[3].label == "step 2 of 2, run 2 of 2"

    # Editing the policy afterwards changes new incidents only.
    policy[1].after_minutes = 3
    policy[1].save()
    assert PageStep.objects.get(incident=incident, number=2).due_at == T0 + timedelta(minutes=10)


def test_a_severity_without_steps_pages_nobody(staff: User) -> None:
    incident = declare(staff, severity_key="sev3")
    assert sweep(T0 + timedelta(hours=5)) >= 0
    assert not PageStep.objects.filter(incident=incident).exists()
    assert not StaffNotice.objects.filter(kind=NoticeKind.PAGE).exists()


# --- firing -------------------------------------------------------------------------------------


def test_each_step_fires_once_when_due(policy: list[EscalationStep], staff: User) -> None:
    incident = declare(staff)

    sweep(T0 + timedelta(seconds=1))
    assert paged_addresses(incident) == [(1, "alice@example.com")]
    sweep(T0 + timedelta(seconds=2))  # again, nothing new
    sweep(T0 + timedelta(minutes=9, seconds=59))  # not yet due
    assert paged_addresses(incident) == [(1, "alice@example.com")]

    sweep(T0 + timedelta(minutes=10))
    sweep(T0 + timedelta(minutes=10))
    assert paged_addresses(incident) == [(1, "alice@example.com"), (2, "bob@example.com"), (2, "oncall@example.com")]

    # A sweep that missed a while catches up: both steps of run 2, once each.
    sweep(T0 + timedelta(hours=2))
    sweep(T0 + timedelta(hours=2))
    assert [number for number, _ in paged_addresses(incident)] == [1, 2, 2, 3, 4, 4]
    events = TimelineEvent.objects.filter(incident=incident, kind=EventKind.PAGED).order_by("id")
    assert [event.data["step"] for event in events] == [1, 2, 3, 4]
    assert events[0].message == "Paging alice (step 1 of 2, run 1 of 2): just declared"
    assert events[1].message == "Paging bob, oncall@example.com (step 2 of 2, run 1 of 2): unacknowledged for 10 min"


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_sweeps_fire_each_step_exactly_once(requires_postgres: None) -> None:
    factories.ensure_severities()
    alice = factories.make_user(username="alice")
    bob = factories.make_user(username="bob")
    sev1 = factories.severity("sev1")
    sev1.escalation_repeats = 2
    sev1.escalation_repeat_minutes = 5
    sev1.save()
    for position, (minutes, person) in enumerate([(0, alice), (5, bob), (10, alice)], start=1):
        EscalationStep.objects.create(severity=sev1, position=position, after_minutes=minutes).users.set([person])
    incidents = [declare(alice, title=f"Incident {n}") for n in range(5)]
    assert PageStep.objects.count() == 5 * 9

    # Sweep twice at once at every minute of the escalation (and a catch-up far later).
    for minute in [*range(0, 50, 1), 600]:
        moment = T0 + timedelta(minutes=minute, seconds=1)
        with time_machine.travel(moment, tick=False):
            results = run_concurrently(partial(sweep_due, moment), partial(sweep_due, moment))
        assert not [r for r in results if isinstance(r, Exception)], results

    assert PageStep.objects.filter(fired_at__isnull=True).count() == 0
    for incident in incidents:
        # Nine steps, one address each: nine pages, nine timeline events, no more.
        assert StaffNotice.objects.filter(incident=incident, kind=NoticeKind.PAGE).count() == 9
        # And the commander's two nudges for the update cadence (75 % and overdue), once each.
        assert StaffNotice.objects.filter(incident=incident, kind=NoticeKind.NUDGE).count() == 2
        assert TimelineEvent.objects.filter(incident=incident, kind=EventKind.PAGED).count() == 9


def test_acknowledging_stops_the_paging(policy: list[EscalationStep], staff: User, other_staff: User) -> None:
    incident = declare(staff)
    sweep(T0 + timedelta(seconds=1))
    with time_machine.travel(T0 + timedelta(minutes=4), tick=False):
        actions.acknowledge_incident(incident, actor=other_staff)

    sweep(T0 + timedelta(hours=3))
    assert paged_addresses(incident) == [(1, "alice@example.com")]
    stopped = PageStep.objects.filter(incident=incident, stopped_at__isnull=False)
    assert stopped.count() == 3
    assert set(stopped.values_list("stop_reason", flat=True)) == {"acknowledged by bob"}


def test_an_acknowledgment_cancels_a_page_not_yet_sent(
    policy: list[EscalationStep], staff: User, other_staff: User, smtp: SmtpServer
) -> None:
    incident = declare(staff)
    sweep(T0 + timedelta(seconds=1))  # alice's page is queued
    with time_machine.travel(T0 + timedelta(seconds=30), tick=False):
        actions.acknowledge_incident(incident, actor=other_staff)
    assert send(T0 + timedelta(minutes=1)) == 0
    assert smtp.received == []
    assert StaffNotice.objects.get(incident=incident).status == NoticeStatus.CANCELLED


def test_resolving_stops_the_paging(policy: list[EscalationStep], staff: User) -> None:
    incident = declare(staff)
    with time_machine.travel(T0 + timedelta(minutes=1), tick=False):
        actions.resolve_incident(incident, actor=None, message="It went away.")
    sweep(T0 + timedelta(hours=3))
    assert paged_addresses(incident) == []


def test_a_person_can_stop_the_paging_with_a_reason(policy: list[EscalationStep], staff: User) -> None:
    incident = declare(staff)
    sweep(T0 + timedelta(seconds=1))
    with pytest.raises(ActionRefused, match="Say why"):
        actions.stop_paging(incident, actor=staff, reason=" ")
    with time_machine.travel(T0 + timedelta(minutes=2), tick=False):
        assert actions.stop_paging(incident, actor=staff, reason="Alice is on the bridge") == 3
    with pytest.raises(ActionRefused, match="Nobody is waiting to be paged"):
        actions.stop_paging(incident, actor=staff, reason="again")

    sweep(T0 + timedelta(hours=3))
    assert paged_addresses(incident) == [(1, "alice@example.com")]
    event = TimelineEvent.objects.get(incident=incident, kind=EventKind.PAGING_STOPPED)
    assert event.message == "alice stopped paging (3 step(s) left): Alice is on the bridge"
    incident.refresh_from_db()
    assert incident.acknowledged_at is None  # stopping the pages is not an acknowledgment


def test_raising_the_severity_pages_by_the_new_policy_from_then(policy: list[EscalationStep], staff: User) -> None:
    incident = declare(staff, severity_key="sev3")
    change = T0 + timedelta(minutes=30)
    with time_machine.travel(change, tick=False):
        actions.change_severity(incident, actor=staff, severity=factories.severity("sev1"))

    steps = PageStep.objects.filter(incident=incident).order_by("number")
    assert [step.due_at - change for step in steps][:2] == [timedelta(0), timedelta(minutes=10)]
    sweep(change + timedelta(seconds=1))
    assert paged_addresses(incident) == [(1, "alice@example.com")]


# --- the page email and its link ----------------------------------------------------------------


def ack_link(message: Any) -> str:
    body = message.get_content()
    found = re.search(r"https://status\.example\.com(/manage/ack/[^/\s]+/)", body)
    assert found, body
    return found.group(1)


def test_the_page_email_carries_a_link_that_needs_a_login_and_works_once(
    policy: list[EscalationStep], staff: User, other_staff: User, smtp: SmtpServer
) -> None:
    incident = declare(staff, title="Query API down")
    sweep(T0 + timedelta(minutes=10))
    assert send(T0 + timedelta(minutes=10)) == 3

    [email] = smtp.inbox("bob@example.com")
    assert email["Subject"] == f"[Page] SEV1 #{incident.pk} unacknowledged for 10 min: Query API down"
    assert email["Auto-Submitted"] == "auto-generated"
    body = email.get_content()
    assert f"Open the incident:\r\n{SITE_URL}/manage/incidents/{incident.pk}\r\n" in body
    assert "Escalation: step 2 of 2, run 1 of 2" in body
    link = ack_link(email)
    assert ack_link(smtp.inbox("oncall@example.com")[0]) != link  # one link per email
    # Whole on one line as it travels (not quoted-printable, folded at 76): copyable from a console too.
    assert f"{SITE_URL}{link}".encode() in smtp.raw("bob@example.com")[0]

    # The link is followed a minute later (the links last a day).
    with time_machine.travel(T0 + timedelta(minutes=11), tick=False):
        signed_in = Client()
        signed_in.force_login(staff)
        assert signed_in.get(f"/manage/incidents/{incident.pk}").status_code == 200  # the other link works too
        check_link(link, incident, staff, other_staff)


def test_an_ack_link_opened_by_someone_else_says_who_was_paged_and_who_is_signed_in(
    policy: list[EscalationStep], staff: User, other_staff: User, carol: User, smtp: SmtpServer
) -> None:
    # bob's link opened by carol read "You were paged for this incident", then acknowledged as carol.
    declare(staff, title="Query API down")
    sweep(T0 + timedelta(minutes=10))
    send(T0 + timedelta(minutes=10))
    bobs = ack_link(smtp.inbox("bob@example.com")[0])
    alias = ack_link(smtp.inbox("oncall@example.com")[0])  # the step's address, nobody's account

    with time_machine.travel(T0 + timedelta(minutes=11), tick=False):
        pages = {}
        for user, link in ((carol, bobs), (other_staff, bobs), (carol, alias)):
            client = Client()
            client.force_login(user)
            pages[user.username, link] = client.get(link).content.decode()

    assert (
        "bob was paged for this incident (step 2 of 2, run 1 of 2); you are signed in as carol." in pages["carol", bobs]
    )
    assert "Acknowledge as carol" in pages["carol", bobs]
    assert "You were paged for this incident (step 2 of 2, run 1 of 2)." in pages["bob", bobs]
    assert (
        "oncall@example.com was paged for this incident (step 2 of 2, run 1 of 2); you are signed in as carol."
        in pages["carol", alias]
    )


def check_link(link: str, incident: Incident, staff: User, other_staff: User) -> None:
    # Signed out: the login page, and nothing happens.
    anonymous = Client()
    response = anonymous.get(link)
    assert response.status_code == 302 and response["Location"].startswith("/login/")
    assert anonymous.post(link).status_code == 302

    client = Client()
    client.force_login(other_staff)
    # A GET only asks (mail scanners open links); the POST acknowledges.
    response = client.get(link)
    assert response.status_code == 200
    assert b"Acknowledge as bob" in response.content
    incident.refresh_from_db()
    assert incident.acknowledged_at is None

    response = client.post(link)
    assert response.status_code == 303
    assert response["Location"] == f"/manage/incidents/{incident.pk}"
    incident.refresh_from_db()
    assert incident.acknowledged_by == other_staff
    notice = StaffNotice.objects.get(email="bob@example.com")
    assert notice.used_by == other_staff and notice.used_at is not None

    # Once only, whoever tries.
    again = client.post(link)
    assert again.status_code == 410
    assert b"already used, by bob" in again.content
    client.force_login(staff)
    assert client.get(link).status_code == 410


def test_an_ack_link_refuses_forgeries_outsiders_and_handled_incidents(
    policy: list[EscalationStep], staff: User, other_staff: User, outsider_client: Client, smtp: SmtpServer
) -> None:
    incident = declare(staff)
    sweep(T0 + timedelta(minutes=10))
    send(T0 + timedelta(minutes=10))
    link = ack_link(smtp.inbox("oncall@example.com")[0])

    client = Client()
    client.force_login(other_staff)
    clock = time_machine.travel(T0 + timedelta(minutes=11), tick=False)
    clock.start()
    assert client.get("/manage/ack/forged-token/").status_code == 404
    assert client.get(link[:-5] + "xxxx/").status_code == 404
    assert outsider_client.get(link).status_code == 403

    actions.acknowledge_incident(incident, actor=staff)
    response = client.post(link)
    assert response.status_code == 409
    assert b"Already acknowledged by alice" in response.content
    clock.stop()
    # A link a day old has expired.
    with time_machine.travel(T0 + timedelta(days=1, minutes=11), tick=False):
        assert client.get(link).status_code == 404


def test_a_page_is_retried_with_backoff_while_the_mail_server_is_down(
    policy: list[EscalationStep], staff: User, smtp: SmtpServer
) -> None:
    incident = declare(staff)
    sweep(T0 + timedelta(seconds=1))
    smtp.stop()
    assert send(T0 + timedelta(seconds=1)) == 0
    notice = StaffNotice.objects.get(incident=incident)
    assert notice.status == NoticeStatus.PENDING and notice.attempts == 1
    # Full jitter, capped at two minutes for pages: an hour-late page is no page.
    assert T0 + timedelta(seconds=1) <= notice.next_attempt_at <= T0 + timedelta(minutes=2, seconds=1)

    smtp.start()
    assert send(T0 + timedelta(minutes=3)) == 1
    assert send(T0 + timedelta(minutes=4)) == 0
    assert smtp.copies()["alice@example.com"] == 1
    # Sent three minutes late, it says how long nobody has acknowledged.
    assert smtp.inbox("alice@example.com")[0]["Subject"].startswith(
        f"[Page] SEV1 #{incident.pk} unacknowledged for 3 min"
    )


def test_the_first_page_of_a_new_incident_says_it_was_just_declared(
    policy: list[EscalationStep], staff: User, smtp: SmtpServer
) -> None:
    incident = declare(staff)
    sweep(T0 + timedelta(seconds=5))
    send(T0 + timedelta(seconds=6))
    [email] = smtp.inbox("alice@example.com")
    assert email["Subject"] == f"[Page] SEV1 #{incident.pk} declared: Queries are slow"
    assert "was just declared and nobody has acknowledged it yet." in email.get_content()


# --- nudges -------------------------------------------------------------------------------------


def test_the_commander_is_nudged_when_the_next_update_is_due_and_overdue(
    staff: User, other_staff: User, smtp: SmtpServer
) -> None:
    incident = declare(staff)  # SEV1: a public update every 30 minutes; alice commands
    with time_machine.travel(T0 + timedelta(minutes=1), tick=False):
        actions.assign_commander(incident, actor=staff, commander=other_staff)

    sweep(T0 + timedelta(minutes=22, seconds=29))
    assert not StaffNotice.objects.filter(kind=NoticeKind.NUDGE).exists()
    sweep(T0 + timedelta(minutes=22, seconds=31))  # 75% of 30 minutes
    send(T0 + timedelta(minutes=22, seconds=31))
    [due] = smtp.inbox("bob@example.com")
    assert due["Subject"] == f"[SEV1 #{incident.pk}] Next public update due by 09:30 UTC: Queries are slow"

    sweep(T0 + timedelta(minutes=31))
    sweep(T0 + timedelta(minutes=31))
    send(T0 + timedelta(minutes=31))
    reasons = list(StaffNotice.objects.filter(kind=NoticeKind.NUDGE).values_list("reason", "email", "status"))
    assert reasons == [
        (NudgeReason.UPDATE_DUE, "bob@example.com", NoticeStatus.SENT),
        (NudgeReason.UPDATE_OVERDUE, "bob@example.com", NoticeStatus.SENT),
    ]
    overdue = smtp.inbox("bob@example.com")[1]
    assert overdue["Subject"].startswith(f"[SEV1 #{incident.pk}] Public update overdue")
    assert "was due by 2 Mar 2026, 09:30 UTC" in overdue.get_content()

    # The next cycle nudges again, once.
    with time_machine.travel(T0 + timedelta(minutes=35), tick=False):
        actions.post_update(incident, actor=other_staff, body="Still on it.")
    sweep(T0 + timedelta(minutes=35 + 23))
    assert StaffNotice.objects.filter(kind=NoticeKind.NUDGE).count() == 3


def test_a_nudge_is_not_sent_once_the_update_it_asks_for_is_posted(staff: User, smtp: SmtpServer) -> None:
    incident = declare(staff)
    sweep(T0 + timedelta(minutes=23))  # the 75% nudge is queued...
    with time_machine.travel(T0 + timedelta(minutes=23, seconds=10), tick=False):
        actions.post_update(incident, actor=staff, body="Found it.")  # ...and the update goes out first
    send(T0 + timedelta(minutes=23, seconds=20))
    assert smtp.received == []
    notice = StaffNotice.objects.get(kind=NoticeKind.NUDGE)
    assert notice.status == NoticeStatus.CANCELLED
    assert notice.last_error == "a public update was posted before it was sent"


def test_the_commander_is_nudged_when_the_first_public_update_is_late(staff: User, smtp: SmtpServer) -> None:
    incident = declare(staff, message="")  # SEV1: the first public update is due in 15 minutes
    sweep(T0 + timedelta(minutes=14))
    assert not StaffNotice.objects.filter(kind=NoticeKind.NUDGE).exists()  # no 75% nudge for the first update
    sweep(T0 + timedelta(minutes=15, seconds=1))
    send(T0 + timedelta(minutes=15, seconds=1))
    [email] = smtp.inbox("alice@example.com")
    assert email["Subject"] == f"[SEV1 #{incident.pk}] First public update is late: Queries are slow"
    assert f"Post an update:\r\n{SITE_URL}/manage/incidents/{incident.pk}\r\n" in email.get_content()
    assert "Customers hear silence until one is posted." in email.get_content()


def test_an_update_posted_late_records_the_breach_but_nudges_nobody(staff: User) -> None:
    incident = declare(staff, message="")
    # No sweep ran; the action records the missed breach as it stops the clock.
    with time_machine.travel(T0 + timedelta(minutes=20), tick=False):
        actions.post_update(incident, actor=staff, body="Investigating.")
    assert TimelineEvent.objects.filter(incident=incident, kind=EventKind.CLOCK_BREACHED).exists()
    assert not StaffNotice.objects.filter(kind=NoticeKind.NUDGE).exists()


# --- what staff see -----------------------------------------------------------------------------


def test_the_incident_page_and_dashboard_show_who_is_paged_and_who_is_next(
    policy: list[EscalationStep], staff: User, staff_client: Client
) -> None:
    incident = declare(staff)
    sweep(T0 + timedelta(seconds=1))
    with time_machine.travel(T0 + timedelta(minutes=2), tick=False):
        page = staff_client.get(f"/manage/incidents/{incident.pk}").content.decode()
        dashboard = staff_client.get("/manage/").content.decode()
    # The page is queued (nothing sent it yet): "Paged" only once the mail server has accepted it.
    queued = (
        ' (step 1 of 2, run 1 of 2): <span class="notice-status notice-status--pending">not delivered yet, queued at '
        '<time datetime="2026-03-02T09:00:01Z">09:00 UTC</time></span>'
    )
    assert f"Paging <strong>alice</strong>{queued}." in page
    assert "Next: <strong>bob, oncall@example.com</strong> (step 2 of 2, run 1 of 2) at" in page
    assert "09:10 UTC" in page
    assert f"<span>Paging alice{queued}</span>" in dashboard
    assert "Next: bob, oncall@example.com at" in dashboard
    assert "Paged alice" not in paging_panel(page) and "Paged alice" not in dashboard


def test_stop_paging_from_the_incident_page(policy: list[EscalationStep], staff: User, staff_client: Client) -> None:
    incident = declare(staff)
    url = f"/manage/incidents/{incident.pk}/stop-paging"

    response = staff_client.post(url, {"reason": ""}, headers={"HX-Request": "true"})
    assert response.status_code == 422
    assert "This field is required." in response.content.decode()

    response = staff_client.post(url, {"reason": "Bob is on it"}, headers={"HX-Request": "true"})
    assert response.status_code == 200
    assert "Paging stopped" in response.content.decode()
    assert not PageStep.objects.filter(incident=incident, stopped_at__isnull=True, fired_at__isnull=True).exists()

    response = staff_client.post(url, {"reason": "again"})
    assert response.status_code == 422  # refused, shown next to the form without JavaScript
    assert "Nobody is waiting to be paged" in response.content.decode()


def test_the_admin_edits_a_severity_s_steps_and_checks_addresses(staff: User) -> None:
    admin = User.objects.create_superuser("root", "root@example.com", "pw")
    client = Client()
    client.force_login(admin)
    sev2 = factories.severity("sev2")
    url = f"/admin/incidents/severity/{sev2.pk}/change/"
    assert client.get(url).status_code == 200
    form = {
        "key": "sev2", "name": "SEV2", "description": sev2.description, "rank": 2,
        "acknowledge_target": 900, "first_update_target": 1800, "update_cadence_target": 3600,
        "resolve_target": 28800, "escalation_repeats": 0, "escalation_repeat_minutes": 30,
        "escalation_steps-TOTAL_FORMS": 1, "escalation_steps-INITIAL_FORMS": 0,
        "escalation_steps-0-position": 1, "escalation_steps-0-after_minutes": 5,
        "escalation_steps-0-addresses": "oncall@example.com, not an address",
    }  # fmt: skip
    response = client.post(url, form)
    assert response.status_code == 200
    html = response.content.decode()
    assert "&#x27;not an address&#x27; is not an email address." in html
    assert "Page someone" not in html  # an address was given: only what is wrong with it is said

    form["escalation_steps-0-addresses"] = "oncall@example.com"
    form["escalation_steps-0-users"] = [staff.pk]
    assert client.post(url, form).status_code == 302
    [step] = EscalationStep.objects.filter(severity=sev2)
    assert step.address_list() == ["oncall@example.com"] and list(step.users.all()) == [staff]


def test_pages_are_part_of_the_post_mortem_timeline(policy: list[EscalationStep], staff: User) -> None:
    incident = declare(staff)
    sweep(T0 + timedelta(minutes=10))
    with time_machine.travel(T0 + timedelta(minutes=12), tick=False):
        actions.resolve_incident(incident, actor=staff, message="Fixed.")
    entries = list(incident.postmortem.entries.values_list("text", flat=True))
    assert any(text.startswith("Paging alice (step 1 of 2, run 1 of 2)") for text in entries), entries
    assert any(text.startswith("Paging bob, oncall@example.com") for text in entries), entries


def test_the_header_poll_refreshes_the_paging_state_but_not_the_stop_form(
    policy: list[EscalationStep], staff: User, staff_client: Client
) -> None:
    incident = declare(staff)
    sweep(T0 + timedelta(seconds=1))
    with time_machine.travel(T0 + timedelta(minutes=1), tick=False):
        response = staff_client.get(f"/manage/incidents/{incident.pk}", headers={"HX-Request": "true"})
    html = response.content.decode()
    assert '<div id="paging-status" hx-swap-oob="true">' in html
    assert "Paging <strong>alice</strong>" in html
    assert "stop-paging" not in html  # someone typing a reason keeps it


# --- the staff API ------------------------------------------------------------------------------


def test_the_api_reads_the_paging_and_stops_it(policy: list[EscalationStep], staff: User) -> None:
    from tests.test_api import client_for, create_token

    client = client_for(create_token(staff.username))
    incident = declare(staff)
    sweep(T0 + timedelta(seconds=1))
    send_at = T0 + timedelta(seconds=2)

    with time_machine.travel(send_at, tick=False):
        body = client.get(f"/api/v1/incidents/{incident.pk}/paging").json()
        assert body["paging"] is True
        assert body["next_due_at"] == "2026-03-02T09:10:00Z"
        first = body["steps"][0]
        assert first["recipients"] == ["alice"] and first["fired_at"] == "2026-03-02T09:00:01Z"
        assert first["notices"] == [
            {
                "email": "alice@example.com",
                "status": "pending",
                "sent_at": None,
                "link_used_at": None,
                "failing_since": None,
                "last_error": "",
            }
        ]
        # Queued, not paged: "paged" is only who the mail server accepted a page for.
        assert first["paged"] == [] and first["problems"] == [] and first["not_paged"] == []
        assert first["targets"] == [
            {"username": "alice", "state": "queued", "since": "2026-03-02T09:00:01Z", "error": ""}
        ]
        later = body["steps"][1]
        assert later["paged"] == [] and [t["state"] for t in later["targets"]] == ["not_fired", "not_fired"]
        assert [step["recipients"] for step in body["steps"]][1] == ["bob", "oncall@example.com"]

        refused = client.post(f"/api/v1/incidents/{incident.pk}/stop-paging", {"reason": ""}, "application/json")
        assert refused.status_code == 422 and refused.json()["field"] == "reason"
        stopped = client.post(
            f"/api/v1/incidents/{incident.pk}/stop-paging", {"reason": "On the bridge"}, "application/json"
        )
        assert stopped.status_code == 200 and stopped.json()["paging"] is False
        skipped = [step for step in stopped.json()["steps"] if step["fired_at"] is None]
        assert skipped and all(step["paged"] == [] for step in skipped)
        assert {t["state"] for step in skipped for t in step["targets"]} == {"skipped"}
        assert skipped[0]["targets"][0]["error"] == "stopped by alice: On the bridge"
        again = client.post(f"/api/v1/incidents/{incident.pk}/stop-paging", {"reason": "x"}, "application/json")
        assert again.status_code == 409 and again.json()["code"] == "not_paging"


def test_a_stop_paging_reason_of_the_longest_length_the_api_takes_reads_back_whole(
    policy: list[EscalationStep], staff: User
) -> None:
    from tests.test_api import client_for, create_token

    client = client_for(create_token(staff.username))
    incident = declare(staff)
    reason = "r" * MAX_REASON_LENGTH
    with time_machine.travel(T0 + timedelta(seconds=1), tick=False):
        stopped = client.post(f"/api/v1/incidents/{incident.pk}/stop-paging", {"reason": reason}, "application/json")
    assert stopped.status_code == 200, stopped.content
    skipped = [step for step in stopped.json()["steps"] if step["fired_at"] is None]
    assert skipped and {t["error"] for step in skipped for t in step["targets"]} == {f"stopped by alice: {reason}"}
    assert set(PageStep.objects.filter(incident=incident).values_list("stop_reason", flat=True)) == {
        f"stopped by alice: {reason}"
    }


def test_the_api_says_paged_only_once_the_mail_server_accepted_the_page(
    policy: list[EscalationStep], staff: User, smtp: SmtpServer
) -> None:
    from tests.test_api import client_for, create_token

    nomail = User.objects.create_user("nomail", email="", password="pw", is_staff=True)
    policy[1].users.add(nomail)
    client = client_for(create_token(staff.username))
    incident = declare(staff)
    sweep(T0 + timedelta(seconds=1))

    def read(at: datetime) -> dict[str, Any]:
        with time_machine.travel(at, tick=False):
            return client.get(f"/api/v1/incidents/{incident.pk}/paging").json()

    smtp.stop()
    send(T0 + timedelta(seconds=5))
    body = read(T0 + timedelta(seconds=30))
    first, later = body["steps"][0], body["steps"][1]
    assert first["notices"][0]["status"] == "pending"
    assert first["paged"] == []
    [alice] = first["targets"]
    assert alice["username"] == "alice" and alice["state"] == "retrying"
    assert alice["since"] == "2026-03-02T09:00:05Z" and alice["error"].startswith("ConnectionRefusedError")
    # A step still to fire: nobody paged yet, and the person it cannot reach is a problem now, not later.
    assert later["fired_at"] is None and later["paged"] == []
    assert later["problems"] == ["could not page nomail: no email address"]
    states = {t["username"]: (t["state"], t["error"]) for t in later["targets"]}
    assert states == {
        "bob": ("not_fired", ""),
        "nomail": ("unreachable", "no email address"),
        "oncall@example.com": ("not_fired", ""),
    }

    smtp.start()
    assert send(T0 + timedelta(minutes=3)) == 1
    first = read(T0 + timedelta(minutes=4))["steps"][0]
    assert first["paged"] == ["alice"]
    assert first["targets"] == [{"username": "alice", "state": "sent", "since": "2026-03-02T09:03:00Z", "error": ""}]

    StaffNotice.objects.filter(incident=incident).update(status=NoticeStatus.FAILED, last_error="gave up after 8: x")
    first = read(T0 + timedelta(minutes=5))["steps"][0]
    assert first["paged"] == [] and first["targets"][0]["state"] == "failed"
    assert first["targets"][0]["error"] == "gave up after 8: x"


def test_a_page_held_by_a_sender_that_died_is_sent_after_the_claim_timeout(
    policy: list[EscalationStep], staff: User, smtp: SmtpServer, settings: Any
) -> None:
    declare(staff)
    sweep(T0 + timedelta(seconds=1))
    # A sender claimed it and died before sending.
    with time_machine.travel(T0 + timedelta(seconds=2), tick=False):
        _, notices = escalation._claim(T0 + timedelta(seconds=2))
    assert len(notices) == 1
    assert send(T0 + timedelta(seconds=3)) == 0  # still held

    later = T0 + timedelta(seconds=3 + settings.DELIVERY_CLAIM_TIMEOUT_SECONDS)
    assert escalation.requeue_stale(later) == 1
    assert send(later) == 1
    assert smtp.copies() == {"alice@example.com": 1}
    assert StaffNotice.objects.get().attempts == 2  # the lost try counts


def test_a_page_to_an_address_that_cannot_be_sent_to_fails_alone(
    policy: list[EscalationStep], staff: User, other_staff: User, smtp: SmtpServer
) -> None:
    """Django's SMTP backend raises ValueError for this address; before, the exception left the batch
    held, and every page in it waited for the claim timeout (and came back with it, again and again)."""
    other_staff.email = "=?utf-8?q?p?=@example.test"  # the user admin takes it: it is a valid dot-atom
    other_staff.save()
    declare(staff)
    sweep(T0 + timedelta(minutes=10))  # alice, bob and the on-call alias, in that order

    assert send(T0 + timedelta(minutes=10)) == 2

    assert smtp.copies() == {"alice@example.com": 1, "oncall@example.com": 1}
    bob = StaffNotice.objects.get(email=other_staff.email)
    assert bob.status == NoticeStatus.FAILED
    assert bob.last_error.startswith("cannot send to this address:")
    assert not StaffNotice.objects.filter(status=NoticeStatus.SENDING).exists()


def test_the_admin_refuses_a_paging_address_that_cannot_be_sent_to(staff: User) -> None:
    admin = User.objects.create_superuser("root", "root@example.com", "pw")
    client = Client()
    client.force_login(admin)
    sev2 = factories.severity("sev2")
    form = {
        "key": "sev2", "name": "SEV2", "description": sev2.description, "rank": 2,
        "acknowledge_target": 900, "first_update_target": 1800, "update_cadence_target": 3600,
        "resolve_target": 28800, "escalation_repeats": 0, "escalation_repeat_minutes": 30,
        "escalation_steps-TOTAL_FORMS": 1, "escalation_steps-INITIAL_FORMS": 0,
        "escalation_steps-0-position": 1, "escalation_steps-0-after_minutes": 5,
        "escalation_steps-0-addresses": "oncall@example.com, =?utf-8?q?p?=@example.test",
    }  # fmt: skip
    response = client.post(f"/admin/incidents/severity/{sev2.pk}/change/", form)

    assert response.status_code == 200
    assert "We cannot send email to this address:" in response.content.decode()
    assert not EscalationStep.objects.filter(severity=sev2).exists()


def test_the_admin_refuses_steps_that_would_fire_out_of_order(staff: User) -> None:
    admin = User.objects.create_superuser("root", "root@example.com", "pw")
    client = Client()
    client.force_login(admin)
    sev2 = factories.severity("sev2")
    form = {
        "key": "sev2", "name": "SEV2", "description": sev2.description, "rank": 2,
        "acknowledge_target": 900, "escalation_repeats": 0, "escalation_repeat_minutes": 30,
        "escalation_steps-TOTAL_FORMS": 2, "escalation_steps-INITIAL_FORMS": 0,
        "escalation_steps-0-position": 1, "escalation_steps-0-after_minutes": 15,
        "escalation_steps-0-users": [staff.pk],
        "escalation_steps-1-position": 2, "escalation_steps-1-after_minutes": 10,
        "escalation_steps-1-addresses": "oncall@example.com",
    }  # fmt: skip
    response = client.post(f"/admin/incidents/severity/{sev2.pk}/change/", form)
    assert response.status_code == 200
    assert "Step 2 (after 10 min) would fire before step 1 (after 15 min)" in response.content.decode()
    assert not EscalationStep.objects.exists()


# --- paging tells the truth (issue 11, section 4) -----------------------------------------------


def test_the_admin_refuses_a_person_without_an_email_address(staff: User) -> None:
    nomail = User.objects.create_user("nomail", email="", password="pw", is_staff=True)
    admin = User.objects.create_superuser("root", "root@example.com", "pw")
    client = Client()
    client.force_login(admin)
    sev2 = factories.severity("sev2")
    url = f"/admin/incidents/severity/{sev2.pk}/change/"
    form = {
        "key": "sev2", "name": "SEV2", "description": sev2.description, "rank": 2,
        "acknowledge_target": 900, "first_update_target": 1800, "update_cadence_target": 3600,
        "resolve_target": 28800, "escalation_repeats": 0, "escalation_repeat_minutes": 30,
        "escalation_steps-TOTAL_FORMS": 1, "escalation_steps-INITIAL_FORMS": 0,
        "escalation_steps-0-position": 1, "escalation_steps-0-after_minutes": 5,
        "escalation_steps-0-users": [staff.pk, nomail.pk],
    }  # fmt: skip
    response = client.post(url, form)
    assert response.status_code == 200
    html = response.content.decode()
    assert "nomail has no email address, so a page cannot reach them." in html
    assert "Page someone" not in html  # a person was chosen: only what is wrong with them is said
    assert not EscalationStep.objects.filter(severity=sev2).exists()  # nothing saved

    form["escalation_steps-0-users"] = [staff.pk]
    assert client.post(url, form).status_code == 302
    assert list(EscalationStep.objects.get(severity=sev2).users.all()) == [staff]


def test_removing_a_targets_address_in_the_user_admin_warns_naming_the_steps(staff: User) -> None:
    # The step admin refuses a person without an address, but clearing it on the user's page saved
    # silently, and the next incident paged nobody.
    oncall = User.objects.create_user("oncall", email="oncall@example.com", password="pw", is_staff=True)
    sev3 = EscalationStep.objects.create(severity=factories.severity("sev3"), position=1, after_minutes=0)
    sev3.users.set([oncall])
    sev1 = EscalationStep.objects.create(
        severity=factories.severity("sev1"), position=2, after_minutes=5, addresses="team@example.com"
    )
    sev1.users.set([oncall, staff])
    admin = User.objects.create_superuser("root", "root@example.com", "pw")
    client = Client()
    client.force_login(admin)
    url = f"/admin/auth/user/{oncall.pk}/change/"
    form = {
        "username": "oncall", "first_name": "", "last_name": "", "email": "", "is_active": "on", "is_staff": "on",
        "date_joined_0": f"{oncall.date_joined:%Y-%m-%d}", "date_joined_1": f"{oncall.date_joined:%H:%M:%S}",
    }  # fmt: skip

    response = client.post(url, form, follow=True)

    assert response.status_code == 200
    oncall.refresh_from_db()
    assert oncall.email == ""  # saved: the admin warns, it does not refuse
    warnings = [str(m) for m in response.context["messages"] if m.level_tag == "warning"]
    assert warnings == [
        "oncall has no email address but is paged by SEV1 step 2, SEV3 step 1: those pages cannot reach them. "
        "SEV3 step 1 would page nobody. Give them an email address, or take them out of those escalation "
        "steps (Severities)."
    ]

    # Someone who is nobody's target is saved without a warning.
    form["email"] = ""
    bystander = User.objects.create_user("bystander", email="b@example.com", password="pw", is_staff=True)
    form.update(username="bystander", date_joined_0=f"{bystander.date_joined:%Y-%m-%d}")
    response = client.post(f"/admin/auth/user/{bystander.pk}/change/", form, follow=True)
    assert [m for m in response.context["messages"] if m.level_tag == "warning"] == []


def test_the_dashboard_warns_in_red_when_a_step_cannot_reach_its_target(staff: User, staff_client: Client) -> None:
    nomail = User.objects.create_user("nomail", email="", password="pw", is_staff=True)
    gone = User.objects.create_user("gone", email="gone@example.com", password="pw", is_staff=True, is_active=False)
    sev3 = EscalationStep.objects.create(severity=factories.severity("sev3"), position=1, after_minutes=0)
    sev3.users.set([nomail])
    sev1 = EscalationStep.objects.create(severity=factories.severity("sev1"), position=1, after_minutes=0)
    sev1.users.set([staff, gone])

    html = staff_client.get("/manage/").content.decode()

    assert (
        '<p class="message message--error" role="status"><strong>Escalation cannot reach everyone:</strong> '
        "SEV1 step 1: gone has a deactivated account; "
        "SEV3 step 1: nomail has no email address — <strong>nobody would be paged</strong>."
    ) in html
    # An address alone would not help gone (the fifth review): the advice names both fixes.
    assert "give them an address or reactivate them (Users)" in html

    nomail.email = "nomail@example.com"
    nomail.save()
    sev1.users.set([staff])
    assert "Escalation cannot reach everyone" not in staff_client.get("/manage/").content.decode()


def test_a_target_without_an_address_is_shown_as_not_paged_in_red(staff: User, staff_client: Client) -> None:
    # Added before the admin refused it (or the address was removed since): the step can reach nobody.
    nomail = User.objects.create_user("nomail", email="", password="pw", is_staff=True)
    step = EscalationStep.objects.create(severity=factories.severity("sev1"), position=1, after_minutes=0)
    step.users.set([nomail])
    incident = declare(staff)
    sweep(T0 + timedelta(seconds=1))

    assert not StaffNotice.objects.filter(incident=incident).exists()
    event = TimelineEvent.objects.get(incident=incident, kind=EventKind.PAGED)
    assert event.message == "Paging nobody (step 1 of 1): just declared; could not page nomail: no email address"
    with time_machine.travel(T0 + timedelta(minutes=1), tick=False):
        page = staff_client.get(f"/manage/incidents/{incident.pk}").content.decode()
        dashboard = staff_client.get("/manage/").content.decode()
    red = '<span class="notice-status notice-status--failed">'
    assert "Paged nomail" not in page and "Paged nomail" not in dashboard
    assert "Every step has fired and nobody has acknowledged." in page
    assert "<span>nobody</span>" in page  # the step, in the paging panel
    assert (
        '<span class="small notice-status notice-status--failed">Could not page nomail: no email address</span>' in page
    )
    assert f"; {red}could not page nomail: no email address</span>" in page  # the timeline
    assert "Paged nobody (step 1 of 1)" in dashboard
    assert f"{red}Could not page nomail: no email address</span>" in dashboard

    from tests.test_api import client_for, create_token

    with time_machine.travel(T0 + timedelta(minutes=1), tick=False):
        body = client_for(create_token(staff.username)).get(f"/api/v1/incidents/{incident.pk}/paging").json()
    [fired] = body["steps"]
    assert fired["paged"] == [] and fired["problems"] == ["could not page nomail: no email address"]


def test_a_deactivated_target_is_reported_as_not_paged_like_one_without_an_address(staff: User) -> None:
    # A deactivated person was left out of the step when the policy was copied: the timeline said
    # "Paging oncall" and nothing about them, and the API listed no problem.
    oncall = User.objects.create_user("oncall", email="oncall@example.com", password="pw", is_staff=True)
    gone = User.objects.create_user("gone", email="gone@example.com", password="pw", is_staff=True, is_active=False)
    step = EscalationStep.objects.create(severity=factories.severity("sev1"), position=1, after_minutes=0)
    step.users.set([oncall, gone])
    incident = declare(staff)
    sweep(T0 + timedelta(seconds=1))

    event = TimelineEvent.objects.get(incident=incident, kind=EventKind.PAGED)
    assert event.message == "Paging oncall (step 1 of 1): just declared; could not page gone: deactivated account"
    assert list(StaffNotice.objects.filter(incident=incident).values_list("email", flat=True)) == ["oncall@example.com"]

    from tests.test_api import client_for, create_token

    with time_machine.travel(T0 + timedelta(minutes=1), tick=False):
        body = client_for(create_token(staff.username)).get(f"/api/v1/incidents/{incident.pk}/paging").json()
    [fired] = body["steps"]
    assert fired["problems"] == ["could not page gone: deactivated account"]


def test_a_target_deleted_after_the_declaration_is_reported_as_deleted_not_deactivated(
    staff: User, staff_client: Client
) -> None:
    # The sixth review: erin, deleted in the admin, was "could not page erin: deactivated account", and
    # no deactivated erin could be found among the users.
    oncall = User.objects.create_user("oncall", email="oncall@example.com", password="pw", is_staff=True)
    erin = User.objects.create_user("erin", email="erin@example.com", password="pw", is_staff=True)
    first = EscalationStep.objects.create(severity=factories.severity("sev1"), position=1, after_minutes=0)
    first.users.set([oncall])
    second = EscalationStep.objects.create(severity=factories.severity("sev1"), position=2, after_minutes=10)
    second.users.set([erin])
    incident = declare(staff)
    erin.delete()

    with time_machine.travel(T0 + timedelta(minutes=1), tick=False):
        panel = paging_panel(staff_client.get(f"/manage/incidents/{incident.pk}").content.decode())
    assert "Cannot page erin: account deleted since the incident was declared" in panel
    sweep(T0 + timedelta(minutes=10, seconds=1))

    event = TimelineEvent.objects.filter(incident=incident, kind=EventKind.PAGED).order_by("id").last()
    assert event is not None
    assert event.message.endswith("could not page erin: account deleted since the incident was declared")


def test_deactivating_a_target_in_the_user_admin_warns_with_the_right_advice(staff: User) -> None:
    # It said "Nomail is deactivated … Give them an email address": the admin capitalised the username,
    # and an address is not what a deactivated account lacks.
    gone = User.objects.create_user("gone", email="gone@example.com", password="pw", is_staff=True)
    step = EscalationStep.objects.create(severity=factories.severity("sev1"), position=1, after_minutes=0)
    step.users.set([gone])
    admin = User.objects.create_superuser("root", "root@example.com", "pw")
    client = Client()
    client.force_login(admin)
    form = {
        "username": "gone", "first_name": "", "last_name": "", "email": "gone@example.com", "is_staff": "on",
        "date_joined_0": f"{gone.date_joined:%Y-%m-%d}", "date_joined_1": f"{gone.date_joined:%H:%M:%S}",
    }  # fmt: skip

    response = client.post(f"/admin/auth/user/{gone.pk}/change/", form, follow=True)

    gone.refresh_from_db()
    assert not gone.is_active
    warning = (
        "gone is deactivated but is paged by SEV1 step 1: those pages cannot reach them. SEV1 step 1 would page "
        "nobody. Reactivate them, or take them out of those escalation steps (Severities)."
    )
    assert [str(m) for m in response.context["messages"] if m.level_tag == "warning"] == [warning]
    assert f'<li class="warning">{warning}</li>' in response.content.decode()


def test_each_page_shows_its_real_state_and_the_dashboard_warns_while_mail_is_refused(
    policy: list[EscalationStep], staff: User, staff_client: Client, smtp: SmtpServer
) -> None:
    incident = declare(staff)
    sweep(T0 + timedelta(seconds=1))

    def panel(at: datetime) -> str:
        with time_machine.travel(at, tick=False):
            return staff_client.get(f"/manage/incidents/{incident.pk}").content.decode()

    def dashboard(at: datetime) -> str:
        with time_machine.travel(at, tick=False):
            return staff_client.get("/manage/").content.decode()

    assert '<span class="notice-status notice-status--pending">queued</span>' in panel(T0 + timedelta(seconds=2))

    smtp.stop()
    send(T0 + timedelta(seconds=5))
    html = panel(T0 + timedelta(seconds=30))
    assert 'alice@example.com: <span class="notice-status notice-status--failed">retrying since' in html
    assert ">09:00 UTC</time> (" in html
    # The summaries agree with the line per address (the review found "Paged alice … at 09:00" above it).
    retrying = (
        ' (step 1 of 2, run 1 of 2): <span class="notice-status notice-status--failed">not delivered yet, retrying '
        'since <time datetime="2026-03-02T09:00:05Z">09:00 UTC</time> (ConnectionRefusedError: '
    )
    board = dashboard(T0 + timedelta(seconds=30))
    assert f"Paging <strong>alice</strong>{retrying}" in html
    assert f"<span>Paging alice{retrying}" in board
    assert "Paged alice" not in paging_panel(html) and "Paged alice" not in board
    # The banner: "failed", which is true of a refusal and of a server that accepted and then timed out.
    assert (
        'Pages are not going out: the mail server has failed since <time datetime="2026-03-02T09:00:05Z">09:00 UTC'
        "</time>: ConnectionRefusedError: " in board
    )
    assert "has refused since" not in board

    smtp.start()
    assert send(T0 + timedelta(minutes=3)) == 1
    html = panel(T0 + timedelta(minutes=4))
    assert 'alice@example.com: <span class="notice-status notice-status--sent">sent at <time' in html
    assert ">09:03 UTC</time>" in html
    sent = ' (step 1 of 2, run 1 of 2) at <time datetime="2026-03-02T09:03:00Z">09:03 UTC</time>'
    board = dashboard(T0 + timedelta(minutes=4))
    assert f"Paged <strong>alice</strong>{sent}." in html
    assert f"<span>Paged alice{sent}</span>" in board
    assert "Pages are not going out" not in board

    # A page that runs out of attempts says it failed, and why.
    notice = StaffNotice.objects.get(incident=incident)
    StaffNotice.objects.filter(pk=notice.pk).update(
        status=NoticeStatus.FAILED, sent_at=None, last_error="gave up after 8: refused"
    )
    html = panel(T0 + timedelta(minutes=5))
    assert '<span class="notice-status notice-status--failed">failed: gave up after 8: refused</span>' in html
    failed = (
        '<span class="notice-status notice-status--failed">Could not page {alice} (step 1 of 2, run 1 of 2): '
        "gave up after 8: refused</span>"
    )
    assert failed.format(alice="<strong>alice</strong>") in html
    assert f"<span>{failed.format(alice='alice')}</span>" in dashboard(T0 + timedelta(minutes=5))


def test_a_step_half_delivered_says_how_many_are_still_waiting(
    policy: list[EscalationStep], staff: User, staff_client: Client
) -> None:
    incident = declare(staff)
    sweep(T0 + timedelta(minutes=10))  # step 2: bob and the on-call alias
    step2 = PageStep.objects.get(incident=incident, number=2)
    notices = StaffNotice.objects.filter(step=step2)
    notices.filter(email="bob@example.com").update(status=NoticeStatus.SENT, sent_at=T0 + timedelta(minutes=10))
    notices.filter(email="oncall@example.com").update(
        failing_since=T0 + timedelta(minutes=10), last_error="TimeoutError: timed out"
    )
    with time_machine.travel(T0 + timedelta(minutes=11), tick=False):
        board = staff_client.get("/manage/").content.decode()
    assert (
        "<span>Paging bob, oncall@example.com (step 2 of 2, run 1 of 2): "
        '<span class="notice-status notice-status--failed">not delivered yet to 1 of 2, retrying since '
        '<time datetime="2026-03-02T09:10:00Z">09:10 UTC</time> (TimeoutError: timed out)</span></span>'
    ) in board

    notices.filter(email="oncall@example.com").update(status=NoticeStatus.FAILED, failing_since=None)
    with time_machine.travel(T0 + timedelta(minutes=12), tick=False):
        board = staff_client.get("/manage/").content.decode()
    assert (
        '<span>Paged bob, oncall@example.com (step 2 of 2, run 1 of 2) at <time datetime="2026-03-02T09:10:00Z">'
        '09:10 UTC</time>; <span class="notice-status notice-status--failed">could not page 1 of 2</span></span>'
    ) in board


def test_pages_queued_during_an_outage_go_out_in_the_order_they_were_due(
    policy: list[EscalationStep], staff: User, smtp: SmtpServer
) -> None:
    first = declare(staff, title="First")
    second = declare(staff, title="Second", at=T0 + timedelta(minutes=1))
    smtp.stop()
    sweep(T0 + timedelta(seconds=1))
    send(T0 + timedelta(seconds=1))
    sweep(T0 + timedelta(minutes=1, seconds=1))
    send(T0 + timedelta(minutes=1, seconds=1))
    assert StaffNotice.objects.filter(status=NoticeStatus.PENDING).count() == 2

    # Full jitter can put the first page's retry after the second's: so it is here.
    def jitter() -> None:
        StaffNotice.objects.filter(incident=first).update(next_attempt_at=T0 + timedelta(minutes=3))
        StaffNotice.objects.filter(incident=second).update(next_attempt_at=T0 + timedelta(minutes=2))

    jitter()
    attempts = dict(StaffNotice.objects.values_list("incident_id", "attempts"))
    # Still down: the first page goes along with the second, but was not due, so it uses no attempt.
    assert send(T0 + timedelta(minutes=2)) == 0
    assert StaffNotice.objects.get(incident=first).attempts == attempts[first.pk]
    assert StaffNotice.objects.get(incident=second).attempts == attempts[second.pk] + 1

    jitter()
    smtp.start()
    assert send(T0 + timedelta(minutes=2)) == 2
    subjects = [received.message["Subject"] for received in smtp.received]
    assert [subject.rsplit(": ", 1)[1] for subject in subjects] == ["First", "Second"]


@pytest.fixture
def sev2_policy(other_staff: User) -> list[EscalationStep]:
    """SEV2: bob at once, and again after 30 minutes."""
    sev2 = factories.severity("sev2")
    steps = [
        EscalationStep.objects.create(severity=sev2, position=1, after_minutes=0),
        EscalationStep.objects.create(severity=sev2, position=2, after_minutes=30),
    ]
    for step in steps:
        step.users.set([other_staff])
    return steps


def test_after_a_raise_whose_steps_all_fired_the_panel_says_so_not_stopped(
    policy: list[EscalationStep], sev2_policy: list[EscalationStep], staff: User, staff_client: Client
) -> None:
    incident = declare(staff, severity_key="sev2")
    sweep(T0 + timedelta(seconds=1))  # bob paged by SEV2's first step; its second stays pending
    with time_machine.travel(T0 + timedelta(minutes=5), tick=False):
        actions.change_severity(incident, actor=staff, severity=factories.severity("sev1"))
    sweep(T0 + timedelta(hours=2))  # every SEV1 step has fired since

    with time_machine.travel(T0 + timedelta(hours=2), tick=False):
        page = staff_client.get(f"/manage/incidents/{incident.pk}").content.decode()
        dashboard = staff_client.get("/manage/").content.decode()
    assert "Every step has fired and nobody has acknowledged." in page
    assert "Paging stopped" not in page
    assert "not needed: severity changed to SEV1" in page  # the SEV2 step it replaced
    assert "All steps fired" in dashboard and "Paging stopped" not in dashboard

    # Changed to a severity without steps while steps were still to come: it says stopped, and why.
    other = declare(staff, title="Other", at=T0 + timedelta(hours=2))
    with time_machine.travel(T0 + timedelta(hours=2, minutes=1), tick=False):
        actions.change_severity(other, actor=staff, severity=factories.severity("sev3"))
        page = staff_client.get(f"/manage/incidents/{other.pk}").content.decode()
    assert "Paging stopped at" in page and ": severity changed to SEV3." in page
    assert "Every step has fired" not in page


def test_the_paging_panel_names_each_severity_s_steps_and_when_they_took_over(
    sev2_policy: list[EscalationStep], staff: User, carol: User, staff_client: Client
) -> None:
    # After a raise the panel listed "Step 1 of 1", "Step 1 of 2", "Step 2 of 2": whose steps, and that
    # SEV2's replaced SEV3's, was left to guess.
    sev3 = EscalationStep.objects.create(severity=factories.severity("sev3"), position=1, after_minutes=0)
    sev3.users.set([carol])
    incident = declare(staff, severity_key="sev3")
    sweep(T0 + timedelta(seconds=1))
    with time_machine.travel(T0 + timedelta(minutes=14), tick=False):
        actions.change_severity(incident, actor=staff, severity=factories.severity("sev2"))
        panel = paging_panel(staff_client.get(f"/manage/incidents/{incident.pk}").content.decode())

    texts = [
        "SEV3's escalation, from the declaration:",
        "Step 1 of 1",
        '<p class="page-steps__policy small">Severity raised to SEV2 at <time datetime="2026-03-02T09:14:00Z">09:14 '
        "UTC</time>: paging follows SEV2's escalation from then.</p>",
        "Step 1 of 2",
        "Step 2 of 2",
    ]
    positions = [panel.find(text) for text in texts]
    assert -1 not in positions, list(zip(texts, positions, strict=True))
    assert positions == sorted(positions)

    lowered = declare(staff, title="Lowered", severity_key="sev2", at=T0 + timedelta(hours=1))
    with time_machine.travel(T0 + timedelta(hours=1, minutes=1), tick=False):
        actions.change_severity(lowered, actor=staff, severity=factories.severity("sev3"))
        panel = paging_panel(staff_client.get(f"/manage/incidents/{lowered.pk}").content.decode())
    assert (
        'Severity lowered to SEV3 at <time datetime="2026-03-02T10:01:00Z">10:01 UTC</time>: paging follows '
        "SEV3's escalation from the declaration, skipping steps already past."
    ) in panel
    assert panel.index("SEV2's escalation, from the declaration:") < panel.index("Severity lowered to SEV3")


def test_steps_that_came_with_a_severity_change_are_not_called_the_declaration_s(
    sev2_policy: list[EscalationStep], staff: User, staff_client: Client
) -> None:
    # SEV4 has no steps: the only steps are SEV2's, copied when it was raised, yet the panel headed them
    # "SEV2's escalation, from the declaration:".
    raised = declare(staff, severity_key="sev4")
    with time_machine.travel(T0 + timedelta(minutes=14), tick=False):
        actions.change_severity(raised, actor=staff, severity=factories.severity("sev2"))
        panel = paging_panel(staff_client.get(f"/manage/incidents/{raised.pk}").content.decode())
    assert (
        'Severity raised to SEV2 at <time datetime="2026-03-02T09:14:00Z">09:14 UTC</time>: paging follows '
        "SEV2's escalation from then."
    ) in panel
    assert "from the declaration" not in panel

    # SEV1 has no steps here: lowered to SEV2, its steps are timed from the declaration.
    lowered = declare(staff, title="Lowered", severity_key="sev1", at=T0 + timedelta(hours=1))
    with time_machine.travel(T0 + timedelta(hours=1, minutes=1), tick=False):
        actions.change_severity(lowered, actor=staff, severity=factories.severity("sev2"))
        panel = paging_panel(staff_client.get(f"/manage/incidents/{lowered.pk}").content.decode())
    assert (
        'Severity lowered to SEV2 at <time datetime="2026-03-02T10:01:00Z">10:01 UTC</time>: paging follows '
        "SEV2's escalation from the declaration, skipping steps already past."
    ) in panel
    assert "SEV2's escalation, from the declaration:" not in panel


def test_the_incident_page_warns_that_the_next_step_cannot_page_a_deactivated_person(
    sev2_policy: list[EscalationStep], staff: User, other_staff: User, staff_client: Client
) -> None:
    # The paging API listed bob as unreachable before his step fired; the incident page said only
    # "Next: bob".
    incident = declare(staff, severity_key="sev2")
    other_staff.is_active = False
    other_staff.save()

    with time_machine.travel(T0 + timedelta(minutes=1), tick=False):
        panel = paging_panel(staff_client.get(f"/manage/incidents/{incident.pk}").content.decode())

    assert "unless someone acknowledges." in panel
    assert "It cannot page bob: deactivated account." in panel
    assert panel.count("Cannot page bob: deactivated account") == 2  # each of its pending steps


def test_a_person_s_stop_stays_when_the_severity_is_lowered(
    policy: list[EscalationStep], sev2_policy: list[EscalationStep], staff: User
) -> None:
    # The seventh review: stopped by a person, then lowered to SEV2, and SEV2's step paged dana 15 min on.
    incident = declare(staff)
    actions.stop_paging(incident, actor=staff, reason="On it, cannot ack from the phone", at=T0 + timedelta(minutes=1))

    with time_machine.travel(T0 + timedelta(minutes=2), tick=False):
        actions.change_severity(incident, actor=staff, severity=factories.severity("sev2"))
    sweep(T0 + timedelta(hours=2))

    assert not PageStep.objects.filter(incident=incident, fired_at__isnull=True, stopped_at__isnull=True).exists()
    assert not PageStep.objects.filter(incident=incident, fired_at__gt=T0 + timedelta(minutes=1)).exists()
    assert incident.events.filter(
        message="Paging stays stopped, as a person stopped it: SEV2's escalation is not started"
    ).exists()


def test_a_raise_after_a_person_s_stop_pages_again_and_says_so(
    policy: list[EscalationStep], sev2_policy: list[EscalationStep], staff: User
) -> None:
    incident = declare(staff, severity_key="sev2")
    actions.stop_paging(incident, actor=staff, reason="On it", at=T0 + timedelta(minutes=1))

    with time_machine.travel(T0 + timedelta(minutes=2), tick=False):
        actions.change_severity(incident, actor=staff, severity=factories.severity("sev1"))

    event = incident.events.filter(kind=EventKind.PAGED).latest("id")
    assert event.message.startswith("Paging had been stopped by a person; raised to SEV1, it starts again: ")


def test_the_panel_says_every_step_fired_when_a_step_fired_after_one_was_skipped(
    sev2_policy: list[EscalationStep], staff: User, carol: User, staff_client: Client
) -> None:
    # The seventh review: SEV3's step 1 skipped as past at the lowering, its step 2 fired a minute later,
    # and the panel and the dashboard said "Paging stopped at 22:07: its time had passed".
    sev3 = factories.severity("sev3")
    for position, minutes in ((1, 0), (2, 2)):
        step = EscalationStep.objects.create(severity=sev3, position=position, after_minutes=minutes)
        step.users.set([carol])
    incident = declare(staff, severity_key="sev4")
    with time_machine.travel(T0 + timedelta(seconds=30), tick=False):
        actions.change_severity(incident, actor=staff, severity=factories.severity("sev2"))
    sweep(T0 + timedelta(seconds=31))
    with time_machine.travel(T0 + timedelta(minutes=1), tick=False):
        actions.change_severity(incident, actor=staff, severity=sev3)
    sweep(T0 + timedelta(minutes=2, seconds=1))

    with time_machine.travel(T0 + timedelta(minutes=3), tick=False):
        page = staff_client.get(f"/manage/incidents/{incident.pk}").content.decode()
        dashboard = staff_client.get("/manage/").content.decode()
    assert "Every step has fired and nobody has acknowledged." in page
    assert "Paging stopped at" not in page
    assert "All steps fired" in dashboard and "Paging stopped" not in dashboard


def test_lowering_the_severity_does_not_page_again_as_if_just_declared(
    policy: list[EscalationStep], sev2_policy: list[EscalationStep], staff: User, smtp: SmtpServer
) -> None:
    incident = declare(staff)
    sweep(T0 + timedelta(seconds=1))
    send(T0 + timedelta(seconds=2))
    assert smtp.copies() == {"alice@example.com": 1}

    lowered = T0 + timedelta(seconds=30)
    with time_machine.travel(lowered, tick=False):
        actions.change_severity(incident, actor=staff, severity=factories.severity("sev2"))
    sweep(lowered + timedelta(seconds=1))
    send(lowered + timedelta(seconds=2))
    assert smtp.copies() == {"alice@example.com": 1}, "SEV2's first step (at once) was past: nobody re-paged"
    event = TimelineEvent.objects.filter(incident=incident, kind=EventKind.PAGED).latest("id")
    assert event.message == (
        "Paging follows SEV2's escalation from the declaration, skipping steps already past (1 step(s) to come)"
    )
    skipped = PageStep.objects.get(incident=incident, severity_key="sev2", position=1)
    assert skipped.stop_reason == "its time had passed when the severity was lowered to SEV2"

    # SEV2's second step keeps the time since the declaration: 30 minutes after it, not after the change.
    sweep(T0 + timedelta(minutes=29, seconds=59))
    assert smtp.copies() == {"alice@example.com": 1}
    sweep(T0 + timedelta(minutes=30))
    send(T0 + timedelta(minutes=30, seconds=1))
    [email] = smtp.inbox("bob@example.com")
    assert "just declared" not in email.get_content()
    assert email["Subject"].startswith(f"[Page] SEV2 #{incident.pk} unacknowledged for 30 min")


def test_a_raised_severity_s_first_page_does_not_say_just_declared(
    policy: list[EscalationStep], staff: User, smtp: SmtpServer
) -> None:
    incident = declare(staff, severity_key="sev3")
    with time_machine.travel(T0 + timedelta(seconds=20), tick=False):
        actions.change_severity(incident, actor=staff, severity=factories.severity("sev1"))
    sweep(T0 + timedelta(seconds=21))
    send(T0 + timedelta(seconds=22))
    [email] = smtp.inbox("alice@example.com")
    assert "was just declared" not in email.get_content()
    event = TimelineEvent.objects.filter(incident=incident, kind=EventKind.PAGED).latest("id")
    assert "just declared" not in event.message


def test_the_declarer_is_not_paged_unless_alone_in_the_step(staff: User, other_staff: User, carol: User) -> None:
    sev1 = factories.severity("sev1")
    both = EscalationStep.objects.create(severity=sev1, position=1, after_minutes=0)
    both.users.set([staff, other_staff])
    alone = EscalationStep.objects.create(severity=sev1, position=2, after_minutes=5)
    alone.users.set([carol])
    incident = declare(carol)  # carol declares: she is looking at it already
    sweep(T0 + timedelta(minutes=6))

    assert paged_addresses(incident) == [(1, "alice@example.com"), (1, "bob@example.com"), (2, "carol@example.com")]
    incident = declare(staff, title="Second")  # alice declares: bob is paged, alice is not
    sweep(T0 + timedelta(seconds=30))
    assert paged_addresses(incident) == [(1, "bob@example.com")]
    event = TimelineEvent.objects.filter(incident=incident, kind=EventKind.PAGED).get()
    assert event.message == "Paging bob (step 1 of 2): just declared; did not page alice: declared the incident"


def test_the_dashboard_warns_when_the_timer_sweep_stops(staff: User, staff_client: Client, settings: Any) -> None:
    settings.TIMER_SWEEP_SECONDS = 15

    def dashboard(at: datetime) -> str:
        with time_machine.travel(at, tick=False):
            return staff_client.get("/manage/").content.decode()

    assert "Timers have not run yet: nobody is being paged" in dashboard(T0)
    with time_machine.travel(T0 + timedelta(seconds=2), tick=False):
        call_command("run_timers", stdout=io.StringIO())  # as one pass of `run_timers --loop` or beat
    assert "nobody is being paged" not in dashboard(T0 + timedelta(seconds=32))  # two intervals: not yet
    html = dashboard(T0 + timedelta(seconds=33))
    assert '<p class="message message--error" role="status"><strong>Timers stopped at ' in html
    assert '<time datetime="2026-03-02T09:00:02Z">09:00 UTC</time>: nobody is being paged</strong>' in html
    # The banner is part of the polled fragment, so an open dashboard shows it without a reload.
    with time_machine.travel(T0 + timedelta(seconds=33), tick=False):
        fragment = staff_client.get("/manage/", headers={"HX-Request": "true"}).content.decode()
    assert "Timers stopped at" in fragment

    with time_machine.travel(T0 + timedelta(minutes=5), tick=False):
        call_command("run_timers", stdout=io.StringIO())
    assert "nobody is being paged" not in dashboard(T0 + timedelta(minutes=5, seconds=10))
