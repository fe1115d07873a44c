"""Post-mortems: opened on resolve, written in sections, reviewed, published to the status page, the v2
API and subscribers; internal sections and hidden lines never leave the staff side."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import time_machine
from django.contrib.auth.models import User
from django.test import Client

from incidents import actions, clocks, publishing
from incidents.actions import ActionRefused
from incidents.models import (
    ActionStatus,
    Clock,
    ClockEvent,
    ClockState,
    Component,
    EventKind,
    Incident,
    Message,
    MessageKind,
    Metric,
    Postmortem,
    PostmortemState,
    SectionKey,
    TimelineEvent,
)
from statuspage.snapshot import reader
from tests import factories
from tests.conftest import Subscribe
from tests.smtp import SmtpServer, text_and_html
from tests.test_views import errors_of

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
INTERNAL = "INTERNAL-ONLY: the db01 switch firmware was never patched"


@pytest.fixture
def api(staff: User) -> Component:
    return factories.make_component(name="Query API", actor=staff)


def resolved_sev1(staff: User, api: Component, **kwargs: Any) -> Incident:
    incident = factories.declare(
        actor=staff,
        title="Query API degraded for US customers",
        components={api: "major_outage"},
        customer_impact_percent=Decimal("45"),
        regions=["us-east", "us-west"],
        at=T0,
        **kwargs,
    )
    if incident.commander is None:
        actions.assign_commander(incident, actor=staff, commander=staff, at=T0 + timedelta(minutes=5))
    actions.post_update(
        incident, actor=staff, body="A faulty switch; we are failing over.", public_status="identified",
        at=T0 + timedelta(minutes=40),
    )  # fmt: skip
    return actions.resolve_incident(incident, actor=staff, message="Recovered.", at=T0 + timedelta(hours=3))


def write(postmortem: Postmortem, staff: User, **sections: tuple[str, bool]) -> Postmortem:
    return actions.edit_postmortem(postmortem, actor=staff, sections=sections)


def ready_for_review(postmortem: Postmortem, staff: User) -> Postmortem:
    write(
        postmortem,
        staff,
        summary=("A faulty switch slowed queries; retries overloaded the database.", True),
        root_cause=("Retries without backoff amplified a **network** fault.", True),
        went_wrong=(INTERNAL, False),
    )
    return actions.submit_postmortem(postmortem, actor=staff)


def published(staff: User, api: Component) -> Postmortem:
    postmortem = resolved_sev1(staff, api).postmortem
    ready_for_review(postmortem, staff)
    return actions.publish_postmortem(postmortem, actor=staff, at=T0 + timedelta(days=2))


# --- opening -------------------------------------------------------------------------------------


def test_resolving_a_sev1_opens_a_draft_filled_in_from_the_incident(staff: User, api: Component) -> None:
    incident = resolved_sev1(staff, api)

    postmortem = incident.postmortem
    assert postmortem.state == PostmortemState.DRAFT
    assert postmortem.owner == staff  # the commander
    assert postmortem.due_at == T0 + timedelta(hours=3) + timedelta(days=5)  # SEV1's target from resolve
    assert [s.key for s in postmortem.sections.all()] == SectionKey.values
    impact = postmortem.sections.get(key=SectionKey.CUSTOMER_IMPACT).body
    assert "About 45% of customers in us-east, us-west were affected for 3 h" in impact
    assert "Query API" in impact
    assert "2026-03-02 09:00 to 2026-03-02 12:00 UTC" in impact
    entries = list(postmortem.entries.all())
    texts = [e.text for e in entries]
    assert any("declared" in t for t in texts) and any("resolved" in t for t in texts)
    # The public updates are in it, internal like every line to begin with (the page shows them already).
    assert [e.text for e in entries if e.source.startswith("update:")] == [
        "Public update (Investigating): We are investigating elevated latency.",
        "Public update (Identified): A faulty switch; we are failing over.",
        "Public update (Resolved): Recovered.",
    ]
    assert not any(e.is_public for e in entries)
    assert {e.text.split(" ")[1] for e in entries if e.is_starred} >= {"declared", "resolved"}
    clock = Clock.objects.get(incident=incident, metric=Metric.POSTMORTEM)
    assert (clock.state, clock.target_seconds, clock.started_at) == (
        ClockState.RUNNING, 5 * 86400, T0 + timedelta(hours=3)
    )  # fmt: skip
    assert TimelineEvent.objects.filter(incident=incident, kind=EventKind.POSTMORTEM_STARTED).count() == 1


def test_a_severity_without_the_requirement_opens_none_but_one_can_be_started(staff: User) -> None:
    incident = factories.declare(actor=staff, severity_key="sev3")
    with pytest.raises(ActionRefused, match="Resolve the incident"):
        actions.start_postmortem(incident, actor=staff)
    actions.resolve_incident(incident, actor=staff)
    assert not Postmortem.objects.filter(incident=incident).exists()

    postmortem = actions.start_postmortem(incident, actor=staff)
    assert postmortem.due_at is not None  # SEV3 has a target, just no requirement
    with pytest.raises(ActionRefused, match="already has a post-mortem"):
        actions.start_postmortem(incident, actor=staff)


def test_reopening_and_resolving_again_keeps_the_one_draft(staff: User, api: Component) -> None:
    incident = resolved_sev1(staff, api)
    actions.reopen_incident(incident, actor=staff, reason="It came back")
    actions.resolve_incident(incident, actor=staff)
    assert Postmortem.objects.filter(incident=incident).count() == 1
    # reopened, its public update (the event and the update's line), resolved again with its public
    # update ("This incident has been resolved.")
    assert actions.refresh_postmortem_timeline(incident.postmortem, actor=staff) == 5


def test_a_reopened_incident_pauses_its_post_mortem_clock(staff: User, api: Component) -> None:
    incident = resolved_sev1(staff, api)  # at T0 + 3 h
    postmortem = incident.postmortem
    assert postmortem.due_at is not None
    due = postmortem.due_at
    reopened_at = T0 + timedelta(hours=5)  # 2 h of the post-mortem's time used

    actions.reopen_incident(incident, actor=staff, reason="It came back", at=reopened_at)

    clock = incident.clocks.get(metric=Metric.POSTMORTEM)
    assert (clock.state, clock.running_since, clock.elapsed_seconds) == ("paused", None, 7200)
    assert incident.events.get(kind="reopened").message.endswith("the post-mortem clock waits for the next resolve")
    clocks.sweep_due(due + timedelta(days=3))  # long past the old due time: nothing recorded against it
    assert not ClockEvent.objects.filter(clock=clock).exists()

    resolved_again = reopened_at + timedelta(days=10)
    actions.resolve_incident(incident, actor=staff, at=resolved_again)

    clock.refresh_from_db()
    postmortem.refresh_from_db()
    assert (clock.state, clock.running_since, clock.elapsed_seconds) == ("running", resolved_again, 7200)
    assert postmortem.due_at == clock.due_at == due + timedelta(days=10)
    assert "the post-mortem clock runs again, due" in incident.events.filter(kind="resolved").latest("id").message


@pytest.mark.parametrize("through", ["api", "page"])
def test_a_due_date_chosen_while_reopened_is_kept_at_the_next_resolve(
    staff: User, api: Component, client: Client, staff_client: Client, through: str
) -> None:
    # The review: set to 10:00:00 while reopened, it became 10:00:12.7 at the resolve (moved by the pause).
    from tests.test_analytics import _token

    incident = resolved_sev1(staff, api)  # at T0 + 3 h
    actions.reopen_incident(incident, actor=staff, reason="It came back", at=T0 + timedelta(hours=4))
    chosen = datetime(2026, 3, 20, 10, 0, tzinfo=UTC)
    with time_machine.travel(T0 + timedelta(hours=5, seconds=0.3), tick=False):
        if through == "api":
            auth = {"Authorization": f"Bearer {_token(staff)}"}
            url = f"/api/v1/incidents/{incident.pk}/postmortem"
            response = client.patch(
                url, {"due_at": "2026-03-20T10:00:00Z"}, content_type="application/json", headers=auth
            )
        else:
            url = f"/manage/incidents/{incident.pk}/postmortem/details"
            response = staff_client.post(url, {"owner": staff.pk, "due_at": "2026-03-20T10:00"})
        assert response.status_code in (200, 303), response.content

    with time_machine.travel(T0 + timedelta(hours=5, seconds=13), tick=False):
        actions.resolve_incident(incident, actor=staff)

    incident.postmortem.refresh_from_db()
    assert incident.postmortem.due_at == postmortem_clock(incident).due_at == chosen
    assert "the post-mortem clock runs again, due 20 Mar 2026 10:00" in incident.events.latest("id").message

    # A later reopen moves it by that pause, as any due date not chosen during it.
    actions.reopen_incident(incident, actor=staff, reason="Again", at=T0 + timedelta(hours=6))
    actions.resolve_incident(incident, actor=staff, at=T0 + timedelta(hours=8))
    incident.postmortem.refresh_from_db()
    assert incident.postmortem.due_at == postmortem_clock(incident).due_at == chosen + timedelta(hours=2)


def test_the_customer_impact_is_written_again_for_the_final_duration(staff: User, api: Component) -> None:
    incident = resolved_sev1(staff, api)
    section = incident.postmortem.sections.get(key="customer_impact")
    assert "were affected for 3 h, from 2026-03-02 09:00 to 2026-03-02 12:00 UTC" in section.body

    actions.reopen_incident(incident, actor=staff, reason="It came back", at=T0 + timedelta(hours=4))
    actions.resolve_incident(incident, actor=staff, at=T0 + timedelta(hours=6))

    section.refresh_from_db()
    assert "were affected for 6 h, from 2026-03-02 09:00 to 2026-03-02 15:00 UTC" in section.body


def test_customer_impact_someone_wrote_is_kept_through_a_reopen(staff: User, api: Component) -> None:
    incident = resolved_sev1(staff, api)
    write(incident.postmortem, staff, customer_impact=("Our own words.", True))

    actions.reopen_incident(incident, actor=staff, reason="It came back", at=T0 + timedelta(hours=4))
    actions.resolve_incident(incident, actor=staff, at=T0 + timedelta(hours=6))

    assert incident.postmortem.sections.get(key="customer_impact").body == "Our own words."


def test_customer_impact_is_written_again_after_the_scope_changed_while_resolved(staff: User, api: Component) -> None:
    # The sixth review: a scope edit while resolved made the filled-in text differ from the one the incident
    # would write now, so the reopen took it for someone's words and the next resolve kept "20%".
    incident = resolved_sev1(staff, api)  # 45%, at T0 + 3 h
    actions.update_impact_scope(
        incident, actor=staff, customer_impact_percent=Decimal("60"), at=T0 + timedelta(hours=3, minutes=30)
    )
    actions.reopen_incident(incident, actor=staff, reason="It came back", at=T0 + timedelta(hours=4))
    actions.resolve_incident(incident, actor=staff, at=T0 + timedelta(hours=6))

    body = incident.postmortem.sections.get(key="customer_impact").body
    assert body.startswith("About 60% of customers in us-east, us-west were affected for 6 h")


def test_customer_impact_made_internal_but_not_rewritten_is_still_written_again(staff: User, api: Component) -> None:
    incident = resolved_sev1(staff, api)
    section = incident.postmortem.sections.get(key="customer_impact")
    write(incident.postmortem, staff, customer_impact=(section.body, not section.is_public))  # visibility only

    actions.reopen_incident(incident, actor=staff, reason="It came back", at=T0 + timedelta(hours=4))
    actions.resolve_incident(incident, actor=staff, at=T0 + timedelta(hours=6))

    assert "were affected for 6 h" in incident.postmortem.sections.get(key="customer_impact").body


def test_customer_impact_edited_before_the_edit_was_flagged_is_kept(staff: User, api: Component) -> None:
    # An event recorded before the flag existed names the section in its text: the words may be someone's.
    incident = resolved_sev1(staff, api)
    section = incident.postmortem.sections.get(key="customer_impact")
    TimelineEvent.objects.create(
        incident=incident,
        kind=EventKind.POSTMORTEM_EDITED,
        message="alice edited the post-mortem: Summary, Customer impact",
        data={"postmortem_id": incident.postmortem.pk},
        created_at=T0 + timedelta(hours=3, minutes=10),
    )
    before = section.body

    actions.reopen_incident(incident, actor=staff, reason="It came back", at=T0 + timedelta(hours=4))
    actions.resolve_incident(incident, actor=staff, at=T0 + timedelta(hours=6))

    assert incident.postmortem.sections.get(key="customer_impact").body == before


def test_a_severity_change_after_the_resolve_moves_the_post_mortem_s_due_date(staff: User, api: Component) -> None:
    # The sixth review: raised from SEV2 (10 days) to SEV1 (5 days) after the resolve, the post-mortem stayed
    # due in 10 days, while the same change before the resolve gave 5.
    incident = factories.declare(actor=staff, severity_key="sev2", at=T0)
    actions.resolve_incident(incident, actor=staff, at=T0 + timedelta(hours=1))
    assert incident.postmortem.due_at == T0 + timedelta(hours=1, days=10)

    actions.change_severity(incident, actor=staff, severity=factories.severity("sev1"), at=T0 + timedelta(hours=2))

    incident.postmortem.refresh_from_db()
    assert incident.postmortem.due_at == postmortem_clock(incident).due_at == T0 + timedelta(hours=1, days=5)
    assert incident.events.latest("id").message.endswith(
        "changed severity from SEV2 to SEV1; the post-mortem is now due 07 Mar 2026 10:00 UTC (SEV1: 5 d)"
    )


def test_a_severity_raised_after_the_resolve_opens_the_post_mortem_it_requires(staff: User, api: Component) -> None:
    incident = factories.declare(actor=staff, severity_key="sev3", at=T0)  # no post-mortem required
    actions.resolve_incident(incident, actor=staff, at=T0 + timedelta(hours=1))
    assert not Postmortem.objects.filter(incident=incident).exists()

    changed = T0 + timedelta(hours=2)
    actions.change_severity(incident, actor=staff, severity=factories.severity("sev1"), at=changed)

    postmortem = Postmortem.objects.get(incident=incident)
    assert postmortem.due_at == postmortem_clock(incident).due_at == changed + timedelta(days=5)
    assert (
        "SEV1 requires a post-mortem: a draft is open, due 07 Mar 2026 11:00 UTC"
        in incident.events.get(kind=EventKind.SEVERITY_CHANGED).message
    )


def test_a_due_date_someone_chose_is_kept_through_a_severity_change(staff: User, api: Component) -> None:
    incident = factories.declare(actor=staff, severity_key="sev2", at=T0)
    actions.resolve_incident(incident, actor=staff, at=T0 + timedelta(hours=1))
    chosen = T0 + timedelta(days=20)
    actions.edit_postmortem(incident.postmortem, actor=staff, due_at=chosen, at=T0 + timedelta(hours=2))

    actions.change_severity(incident, actor=staff, severity=factories.severity("sev1"), at=T0 + timedelta(hours=3))

    incident.postmortem.refresh_from_db()
    assert incident.postmortem.due_at == chosen
    assert incident.events.latest("id").message.endswith("; the post-mortem keeps the due date chosen for it")


def test_a_section_of_only_invisible_characters_is_empty_and_cannot_be_sent_for_review(
    staff: User, api: Component
) -> None:
    # The seventh review: a summary of "\u3164" (a Hangul filler) was sent for review and published.
    incident = resolved_sev1(staff, api)
    write(incident.postmortem, staff, summary=("\u3164\u2800\u200b", True), root_cause=("\ufe0f\u115f", False))

    sections = {s.key: s.body for s in incident.postmortem.sections.all()}
    assert (sections["summary"], sections["root_cause"]) == ("", "")
    with pytest.raises(ActionRefused, match="Write the summary and the root cause before sending it for review"):
        actions.submit_postmortem(incident.postmortem, actor=staff)


def test_only_staff_write_post_mortems(staff: User, outsider: User, api: Component) -> None:
    postmortem = resolved_sev1(staff, api).postmortem
    with pytest.raises(ActionRefused, match="Only staff"):
        write(postmortem, outsider, summary=("mine", True))


# --- the flow ------------------------------------------------------------------------------------


def test_draft_review_published_each_step_refusing_what_does_not_fit(staff: User, api: Component) -> None:
    postmortem = resolved_sev1(staff, api).postmortem

    with pytest.raises(ActionRefused, match="Write the summary and the root cause"):
        actions.submit_postmortem(postmortem, actor=staff)
    with pytest.raises(ActionRefused, match="Send the post-mortem for review"):
        actions.publish_postmortem(postmortem, actor=staff)
    ready_for_review(postmortem, staff)
    with pytest.raises(ActionRefused, match="Only a draft"):
        actions.submit_postmortem(postmortem, actor=staff)
    with pytest.raises(ActionRefused, match="Say what should change") as refused:
        actions.return_postmortem_to_draft(postmortem, actor=staff, reason=" ")
    assert refused.value.field == "reason"
    actions.return_postmortem_to_draft(postmortem, actor=staff, reason="Name the switch vendor")
    actions.submit_postmortem(postmortem, actor=staff)

    done = actions.publish_postmortem(postmortem, actor=staff, at=T0 + timedelta(days=1))

    assert done.state == PostmortemState.PUBLISHED
    assert done.published_at == T0 + timedelta(days=1)
    clock = Clock.objects.get(incident=postmortem.incident, metric=Metric.POSTMORTEM)
    assert clock.state == ClockState.MET
    assert Message.objects.filter(kind=MessageKind.POSTMORTEM, postmortem=postmortem).count() == 1
    with pytest.raises(ActionRefused, match="already published"):
        actions.publish_postmortem(postmortem, actor=staff)


def test_a_never_public_incident_s_post_mortem_completes_for_staff_only(staff: User, api: Component) -> None:
    private = factories.declare(actor=staff, is_public=False)
    actions.resolve_incident(private, actor=staff)
    postmortem = private.postmortem
    ready_for_review(postmortem, staff)

    done = actions.publish_postmortem(postmortem, actor=staff)

    assert done.state == PostmortemState.PUBLISHED
    assert Clock.objects.get(incident=private, metric=Metric.POSTMORTEM).state == ClockState.MET
    assert not Message.objects.filter(kind=MessageKind.POSTMORTEM).exists()  # nobody is told
    event = TimelineEvent.objects.filter(incident=private, kind=EventKind.POSTMORTEM_PUBLISHED).get()
    assert "staff only" in event.message
    client = Client()
    client.force_login(staff)
    page = client.get(f"/manage/incidents/{private.pk}/postmortem/").content.decode()
    assert "Completed (staff only)" in page
    assert "public page" not in page and "Public: shown on the status page" not in page


def test_it_cannot_publish_nothing(staff: User, api: Component) -> None:

    other = resolved_sev1(staff, api).postmortem
    for key in SectionKey.values:
        write(other, staff, **{key: ("text", False)})
    actions.submit_postmortem(other, actor=staff)
    with pytest.raises(ActionRefused, match="at least one written section public"):
        actions.publish_postmortem(other, actor=staff)


def test_a_late_post_mortem_breaches_its_clock_once(staff: User, api: Component) -> None:
    incident = resolved_sev1(staff, api)
    due = incident.postmortem.due_at
    assert due is not None
    with time_machine.travel(due + timedelta(minutes=1), tick=False):
        clocks.sweep_due(due + timedelta(minutes=1))
        clocks.sweep_due(due + timedelta(minutes=2))
    clock = Clock.objects.get(incident=incident, metric=Metric.POSTMORTEM)
    assert clock.state == ClockState.BREACHED
    breaches = TimelineEvent.objects.filter(incident=incident, kind=EventKind.CLOCK_BREACHED, data__metric="postmortem")
    assert breaches.count() == 1


# --- the due date is the post-mortem clock's deadline -------------------------------------------


def postmortem_clock(incident: Incident) -> Clock:
    return Clock.objects.get(incident=incident, metric=Metric.POSTMORTEM)


def test_moving_the_due_date_moves_the_clock_everywhere_it_is_shown(
    staff: User, api: Component, staff_client: Client, client: Client
) -> None:
    # The review: PATCH due_at changed the post-mortem, but the incident page's Response clocks and the
    # API's clocks[postmortem].due_at kept the old due time, and the sweep breached at the old one.
    from tests.test_analytics import _token

    incident = resolved_sev1(staff, api)  # resolved at T0 + 3 h: due five days later
    sooner = T0 + timedelta(days=2, hours=1)
    auth = {"Authorization": f"Bearer {_token(staff)}"}
    with time_machine.travel(T0 + timedelta(hours=4), tick=False):
        patched = client.patch(
            f"/api/v1/incidents/{incident.pk}/postmortem",
            {"due_at": "2026-03-04T10:00:00Z"},
            content_type="application/json",
            headers=auth,
        )
        assert patched.status_code == 200, patched.content
        assert patched.json()["due_at"] == "2026-03-04T10:00:00Z"
        [pm_clock] = [
            c
            for c in client.get(f"/api/v1/incidents/{incident.pk}", headers=auth).json()["clocks"]
            if c["metric"] == "postmortem"
        ]
        assert (pm_clock["due_at"], pm_clock["state"]) == ("2026-03-04T10:00:00Z", "running")
        page = staff_client.get(f"/manage/incidents/{incident.pk}").content.decode()
        assert '<td data-label="Due"><time datetime="2026-03-04T10:00:00Z">' in page
        assert "2026-03-07T12:00:00Z" not in page  # the old due time, nowhere

    clock = postmortem_clock(incident)
    assert clock.due_at == sooner
    clocks.sweep_due(sooner)  # on time is not late
    assert not ClockEvent.objects.filter(clock=clock, kind="breach").exists()
    clocks.sweep_due(sooner + timedelta(seconds=1))
    breach = ClockEvent.objects.get(clock=clock, kind="breach")
    assert breach.due_at == sooner

    # Reopened for a day and resolved again: both move on by the day, together.
    actions.reopen_incident(incident, actor=staff, reason="It came back", at=sooner + timedelta(hours=1))
    actions.resolve_incident(incident, actor=staff, at=sooner + timedelta(days=1, hours=1))
    incident.postmortem.refresh_from_db()
    assert incident.postmortem.due_at == postmortem_clock(incident).due_at == sooner + timedelta(days=1)


def test_sending_back_the_due_date_the_api_shows_changes_nothing(staff: User, api: Component, client: Client) -> None:
    # The review: the API shows due_at to the millisecond, stored to the microsecond, so a PATCH of what
    # GET returned recorded an edit.
    from tests.test_analytics import _token

    incident = resolved_sev1(staff, api)
    actions.edit_postmortem(
        incident.postmortem,
        actor=staff,
        due_at=T0 + timedelta(days=9, microseconds=710_345),
        at=T0 + timedelta(hours=4),
    )
    auth = {"Authorization": f"Bearer {_token(staff)}"}
    url = f"/api/v1/incidents/{incident.pk}/postmortem"
    edits = TimelineEvent.objects.filter(incident=incident, kind=EventKind.POSTMORTEM_EDITED)
    before = edits.count()

    with time_machine.travel(T0 + timedelta(days=1), tick=False):
        read = client.get(url, headers=auth).json()
        assert read["due_at"] == "2026-03-11T09:00:00.710Z"
        same = {"owner": read["owner"], "due_at": read["due_at"]}
        response = client.patch(url, same, content_type="application/json", headers=auth)

    assert response.status_code == 200, response.content
    assert response.json()["due_at"] == read["due_at"]
    assert edits.count() == before


def test_a_later_due_date_is_the_one_the_sweep_breaches_at(staff: User, api: Component) -> None:
    incident = resolved_sev1(staff, api)
    old_due = incident.postmortem.due_at
    assert old_due is not None
    later = old_due + timedelta(days=3, seconds=17.25)  # any time, to the microsecond

    actions.edit_postmortem(incident.postmortem, actor=staff, due_at=later, at=T0 + timedelta(days=1))

    clock = postmortem_clock(incident)
    assert clock.due_at == later == Postmortem.objects.get(pk=incident.postmortem.pk).due_at
    clocks.sweep_due(old_due + timedelta(minutes=1))
    assert not ClockEvent.objects.filter(clock=clock, kind="breach").exists()
    clocks.sweep_due(later + timedelta(minutes=1))
    assert ClockEvent.objects.get(clock=clock, kind="breach").due_at == later
    event = incident.events.filter(kind=EventKind.POSTMORTEM_EDITED).latest("id")
    assert event.message == "alice edited the post-mortem: due 10 Mar 2026 12:00 UTC"


def test_a_due_date_set_where_the_severity_gave_none_starts_the_clock(staff: User) -> None:
    incident = factories.declare(actor=staff, severity_key="sev3", at=T0)
    actions.resolve_incident(incident, actor=staff, at=T0 + timedelta(hours=1))
    incident.severity.postmortem_target = None
    incident.severity.save(update_fields=["postmortem_target"])
    postmortem = actions.start_postmortem(incident, actor=staff, at=T0 + timedelta(hours=2))
    assert postmortem.due_at is None
    assert not Clock.objects.filter(incident=incident, metric=Metric.POSTMORTEM).exists()

    due = T0 + timedelta(days=3)
    actions.edit_postmortem(postmortem, actor=staff, due_at=due, at=T0 + timedelta(hours=3))

    clock = postmortem_clock(incident)
    assert (clock.state, clock.due_at, clock.started_at) == ("running", due, T0 + timedelta(hours=3))


@pytest.mark.parametrize(
    ("due", "code", "detail"),
    [
        (T0 + timedelta(hours=3, minutes=59), "in_the_past", "The due date is in the past"),
        (T0 - timedelta(days=1), "before_declared", "The due date is before the incident was declared"),
    ],
)
def test_a_due_date_in_the_past_or_before_the_declaration_is_refused(
    staff: User, api: Component, staff_client: Client, client: Client, due: datetime, code: str, detail: str
) -> None:
    from tests.test_analytics import _token

    incident = resolved_sev1(staff, api)
    before = (incident.postmortem.due_at, postmortem_clock(incident).target_seconds)
    url = f"/manage/incidents/{incident.pk}/postmortem/"
    typed = f"{due:%Y-%m-%dT%H:%M}"
    with time_machine.travel(T0 + timedelta(hours=4), tick=False):
        with pytest.raises(ActionRefused, match=detail) as refused:
            actions.edit_postmortem(incident.postmortem, actor=staff, due_at=due)
        assert (refused.value.field, refused.value.code) == ("due_at", code)

        # The page's form, with htmx and without: 422, the error next to the field, what was typed kept.
        for headers in ({"HX-Request": "true"}, {}):
            response = staff_client.post(f"{url}details", {"owner": staff.pk, "due_at": typed}, headers=headers)
            html = response.content.decode()
            assert response.status_code == 422
            assert f'<ul class="field-errors" id="details-due_at_error"><li>{detail}' in html
            assert f'value="{typed}"' in html

        response = client.patch(
            f"/api/v1/incidents/{incident.pk}/postmortem",
            {"due_at": due.isoformat()},
            content_type="application/json",
            headers={"Authorization": f"Bearer {_token(staff)}"},
        )
        body = response.json()
        assert response.status_code == 422
        assert (body["code"], body["field"]) == (code, "due_at") and body["detail"].startswith(detail)

    incident.postmortem.refresh_from_db()
    assert (incident.postmortem.due_at, postmortem_clock(incident).target_seconds) == before


def test_an_overdue_post_mortem_can_still_change_owner_on_the_page(
    staff: User, other_staff: User, api: Component, staff_client: Client
) -> None:
    incident = resolved_sev1(staff, api)
    due = incident.postmortem.due_at
    assert due is not None
    with time_machine.travel(due + timedelta(days=1), tick=False):
        page = staff_client.get(f"/manage/incidents/{incident.pk}/postmortem/").content.decode()
        shown = f"{due:%Y-%m-%dT%H:%M}"
        assert f'value="{shown}"' in page
        response = staff_client.post(
            f"/manage/incidents/{incident.pk}/postmortem/details", {"owner": other_staff.pk, "due_at": shown}
        )
    assert response.status_code == 303
    incident.postmortem.refresh_from_db()
    assert (incident.postmortem.owner, incident.postmortem.due_at) == (other_staff, due)


def test_saving_a_post_mortem_form_unchanged_says_nothing_changed_and_records_nothing(
    staff: User, api: Component, staff_client: Client
) -> None:
    # It said "Saved." (and the details form recorded nothing, the section form nothing either), where the
    # incident and maintenance pages say "Nothing changed.".
    incident = resolved_sev1(staff, api)
    postmortem = incident.postmortem
    actions.edit_postmortem(postmortem, actor=staff, sections={"summary": ("The API was slow.", True)})
    postmortem.refresh_from_db()
    events = incident.events.count()
    url = f"/manage/incidents/{incident.pk}/postmortem/"
    assert postmortem.due_at is not None
    shown = f"{postmortem.due_at:%Y-%m-%dT%H:%M}"
    nothing = '<div class="form-errors" role="alert"><p>Nothing changed.</p></div>'
    with time_machine.travel(T0 + timedelta(hours=4), tick=False):
        for headers in ({"HX-Request": "true"}, {}):
            section = staff_client.post(
                f"{url}sections/summary", {"body": "The API was slow.\n", "is_public": "on"}, headers=headers
            )
            details = staff_client.post(f"{url}details", {"owner": staff.pk, "due_at": shown}, headers=headers)
            for response in (section, details):
                html = response.content.decode()
                assert response.status_code == 422, html
                assert nothing in html and "Saved." not in html

    assert incident.events.count() == events
    before = postmortem.updated_at
    postmortem.refresh_from_db()
    assert postmortem.updated_at == before


def test_a_due_date_in_another_year_shows_its_year_everywhere(
    staff: User, api: Component, staff_client: Client
) -> None:
    with time_machine.travel(T0 + timedelta(hours=4), tick=False):  # covers every row it creates
        incident = resolved_sev1(staff, api)
        next_year = datetime(T0.year + 1, 1, 1, 9, 0, tzinfo=UTC)
        actions.edit_postmortem(incident.postmortem, actor=staff, due_at=next_year, at=T0 + timedelta(hours=4))
        pages = {
            "post-mortem": staff_client.get(f"/manage/incidents/{incident.pk}/postmortem/").content.decode(),
            "incident": staff_client.get(f"/manage/incidents/{incident.pk}").content.decode(),
            "dashboard": staff_client.get("/manage/").content.decode(),
        }
    for name, html in pages.items():
        assert ">1 Jan 2027, 09:00 UTC</time>" in html, name
        assert ">1 Jan, 09:00 UTC</time>" not in html, name
    assert "Due <time" in pages["post-mortem"]


# --- what the public sees ----------------------------------------------------------------------


def test_publishing_puts_public_sections_on_the_page_and_in_the_v2_api_and_nothing_internal(
    staff: User, api: Component, client: Client
) -> None:
    postmortem = published(staff, api)
    shown = actions.add_postmortem_entry(postmortem, actor=staff, at=T0, text="Switch taken out", is_public=True)
    entry = postmortem.entries.exclude(pk=shown.pk).first()
    assert entry is not None
    actions.mark_postmortem_entry(entry, actor=staff, is_public=True)
    actions.mark_postmortem_entry(entry, actor=staff, is_hidden=True)  # public, but hidden: not shown
    actions.add_postmortem_entry(
        postmortem, actor=staff, at=T0 + timedelta(minutes=1), text="INTERNAL-ONLY: paged the network team"
    )
    publishing.publish()
    reader.reset()

    current = reader.current()
    assert current is not None
    assert "INTERNAL-ONLY" not in json.dumps(current.document)
    page = client.get(f"/incidents/{postmortem.incident_id}").content.decode()
    assert "Post-mortem" in page
    assert "<strong>network</strong>" in page  # Markdown rendered
    assert "Retries without backoff" in page
    assert "INTERNAL-ONLY" not in page
    assert entry.text not in page  # hidden
    assert "Switch taken out" in page  # a public line of the timeline

    incidents = client.get("/api/v2/incidents.json").json()["incidents"]
    row = next(i for i in incidents if i["id"] == str(postmortem.incident_id))
    assert row["status"] == "postmortem"
    assert row["postmortem_body"].startswith("## Summary\n\nA faulty switch")
    assert "## Root cause" in row["postmortem_body"]
    assert "INTERNAL-ONLY" not in row["postmortem_body"]
    assert row["postmortem_published_at"].startswith("2026-03-04T09:00:00.000")
    unresolved = client.get("/api/v2/incidents/unresolved.json").json()["incidents"]
    assert str(postmortem.incident_id) not in [i["id"] for i in unresolved]


def test_markdown_is_sanitised_on_the_page_and_in_email(staff: User, api: Component, client: Client) -> None:
    postmortem = resolved_sev1(staff, api).postmortem
    ready_for_review(postmortem, staff)
    write(postmortem, staff, lessons=('<script>alert("x")</script> [link](javascript:alert(1)) **ok**', True))
    actions.publish_postmortem(postmortem, actor=staff)
    publishing.publish()
    reader.reset()
    page = client.get(f"/incidents/{postmortem.incident_id}").content.decode()
    assert "<script>alert" not in page
    assert 'href="javascript' not in page
    assert "<strong>ok</strong>" in page


def test_an_edit_after_publishing_reaches_the_page(staff: User, api: Component, client: Client) -> None:
    postmortem = published(staff, api)
    write(postmortem, staff, summary=("Corrected: two switches.", True))
    publishing.publish()
    reader.reset()
    assert "Corrected: two switches." in client.get(f"/incidents/{postmortem.incident_id}").content.decode()


# --- subscribers -------------------------------------------------------------------------------


def test_subscribers_who_chose_post_mortems_get_one_email_with_the_public_sections(
    smtp: SmtpServer,
    subscribe: Subscribe,
    staff: User,
    api: Component,
    django_capture_on_commit_callbacks: Any,
) -> None:
    subscribe("ann@example.com")
    subscribe("bob@example.com", notify_postmortems=False)
    with django_capture_on_commit_callbacks(execute=True):
        incident = resolved_sev1(staff, api)
    smtp.reset()
    postmortem = incident.postmortem
    ready_for_review(postmortem, staff)

    with django_capture_on_commit_callbacks(execute=True):
        actions.publish_postmortem(postmortem, actor=staff)

    assert smtp.copies() == {"ann@example.com": 1}
    [email] = smtp.inbox("ann@example.com")
    assert email["Subject"] == "[Post-mortem] Query API degraded for US customers"
    text, html = text_and_html(email)
    assert "A faulty switch slowed queries" in text and "Retries without backoff" in text
    assert "<strong>network</strong>" in html
    assert "INTERNAL-ONLY" not in text + html
    ann = subscriber_id("ann@example.com")
    # In the incident's thread.
    assert (
        email["In-Reply-To"]
        == f"<incident.{incident.pk}.{int(incident.declared_at.timestamp())}.{ann}@status.example.com>"
    )
    assert email["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def subscriber_id(address: str) -> int:
    from incidents.models import Subscriber

    return Subscriber.objects.get(email=address).pk


# --- action items -------------------------------------------------------------------------------


def test_action_items_are_added_checked_and_closed(staff: User, other_staff: User, api: Component) -> None:
    postmortem = resolved_sev1(staff, api).postmortem
    with pytest.raises(ActionRefused) as refused:
        actions.add_action_item(postmortem, actor=staff, title="Backoff", link="ftp://tickets/1")
    assert refused.value.field == "link"
    with pytest.raises(ActionRefused) as refused:
        actions.add_action_item(postmortem, actor=staff, title=" ")
    assert refused.value.field == "title"

    item = actions.add_action_item(
        postmortem,
        actor=staff,
        title="Exponential backoff with jitter in the query client",
        kind="prevent",
        priority="p1",
        owner=other_staff,
        due_date=date(2026, 3, 9),
        link="https://tickets.example.com/OPS-12",
        at=T0 + timedelta(hours=4),
    )
    assert item.is_open
    done = actions.set_action_item_status(item, actor=staff, status=ActionStatus.DONE, at=T0 + timedelta(days=4))
    assert done.closed_at == T0 + timedelta(days=4)
    assert not done.is_open
    reopened = actions.set_action_item_status(item, actor=staff, status=ActionStatus.IN_PROGRESS)
    assert reopened.closed_at is None


# --- the staff pages ------------------------------------------------------------------------------


def test_the_page_writes_sections_with_htmx_and_shows_refusals(
    staff: User, api: Component, staff_client: Client, outsider_client: Client
) -> None:
    incident = resolved_sev1(staff, api)
    url = f"/manage/incidents/{incident.pk}/postmortem/"
    assert outsider_client.get(url).status_code == 403
    page = staff_client.get(url)
    assert page.status_code == 200
    assert "Customer impact" in page.content.decode()

    saved = staff_client.post(
        f"{url}sections/summary", {"body": "Switch fault.", "is_public": "on"}, headers={"HX-Request": "true"}
    )
    assert saved.status_code == 200
    assert 'id="section-summary"' in saved.content.decode()
    assert incident.postmortem.sections.get(key="summary").body == "Switch fault."

    refused = staff_client.post(f"{url}submit", headers={"HX-Request": "true"})
    assert refused.status_code == 422
    assert "Write the root cause before sending it for review." in refused.content.decode()

    invalid = staff_client.post(f"{url}items", {"title": "", "kind": "prevent", "priority": "p1"})
    assert invalid.status_code == 422
    assert "This field is required." in invalid.content.decode()

    added = staff_client.post(f"{url}items", {"title": "Alert on retry rate", "kind": "detect", "priority": "p1"})
    assert added.status_code == 303
    assert incident.postmortem.action_items.get().title == "Alert on retry rate"

    incident_page = staff_client.get(f"/manage/incidents/{incident.pk}").content.decode()
    assert f'href="{url}"' in incident_page


def test_the_dashboard_lists_unpublished_post_mortems_and_overdue_items(
    staff: User, api: Component, staff_client: Client
) -> None:
    postmortem = resolved_sev1(staff, api).postmortem
    # Due on a day now long past (set when it was still ahead).
    long_ago = datetime(2019, 12, 1, tzinfo=UTC)
    actions.add_action_item(postmortem, actor=staff, title="Replace the switch", due_date=date(2020, 1, 1), at=long_ago)
    actions.add_action_item(postmortem, actor=staff, title="Not due yet", due_date=date(2999, 1, 1))

    page = staff_client.get("/manage/").content.decode()

    assert "Post-mortem: Query API degraded for US customers" in page
    assert "Replace the switch" in page
    assert "Not due yet" not in page


# --- no timeline line ahead of now, no action item due in the past ----------------------------


def test_a_timeline_line_later_than_now_is_refused_in_the_api_and_the_form(
    staff: User, api: Component, staff_client: Client
) -> None:
    from tests.test_analytics import _token

    with time_machine.travel(T0 + timedelta(hours=4), tick=False):
        incident = resolved_sev1(staff, api)
        auth = {"Authorization": f"Bearer {_token(staff)}"}
        url = f"/api/v1/incidents/{incident.pk}/postmortem/timeline"
        lines = incident.postmortem.entries.count()

        ahead = staff_client.post(
            url, {"at": "2026-03-02T13:01:01Z", "text": "Fixed for good"}, "application/json", headers=auth
        )
        form = staff_client.post(
            f"/manage/incidents/{incident.pk}/postmortem/entries", {"at": "2026-03-02T13:02", "text": "Fixed for good"}
        )
        # Within a minute ahead: the minute being typed, or a client's clock a little fast.
        now = staff_client.post(
            url, {"at": "2026-03-02T13:01:00Z", "text": "Checked"}, "application/json", headers=auth
        )

    assert ahead.status_code == 422 and ahead.json()["field"] == "at" and "future" in ahead.json()["detail"]
    assert form.status_code == 422
    assert "is in the future" in errors_of(form.content.decode(), "entry-at")
    assert now.status_code == 201
    assert incident.postmortem.entries.count() == lines + 1


def test_an_action_item_due_in_the_past_is_refused_in_the_api_and_the_form(
    staff: User, api: Component, staff_client: Client
) -> None:
    from tests.test_analytics import _token

    with time_machine.travel(T0 + timedelta(hours=4), tick=False):
        incident = resolved_sev1(staff, api)
        auth = {"Authorization": f"Bearer {_token(staff)}"}
        url = f"/api/v1/incidents/{incident.pk}/postmortem/action-items"

        past = staff_client.post(url, {"title": "Backoff", "due_date": "2026-03-01"}, "application/json", headers=auth)
        form = staff_client.post(
            f"/manage/incidents/{incident.pk}/postmortem/items",
            {"title": "Backoff", "kind": "prevent", "priority": "p1", "due_date": "2026-03-01"},
        )
        today = staff_client.post(url, {"title": "Backoff", "due_date": "2026-03-02"}, "application/json", headers=auth)

    assert past.status_code == 422 and past.json()["field"] == "due_date" and past.json()["code"] == "in_the_past"
    assert form.status_code == 422
    assert "is in the past" in errors_of(form.content.decode(), "item-due_date")
    assert today.status_code == 201
    assert [item.due_date for item in incident.postmortem.action_items.all()] == [date(2026, 3, 2)]


def test_an_overdue_action_item_keeps_its_date_through_other_changes(staff: User, api: Component) -> None:
    from tests.test_analytics import _token

    with time_machine.travel(T0 + timedelta(hours=4), tick=False):
        incident = resolved_sev1(staff, api)
        item = actions.add_action_item(incident.postmortem, actor=staff, title="Backoff", due_date=date(2026, 3, 3))
    with time_machine.travel(T0 + timedelta(days=5), tick=False):
        url = f"/api/v1/incidents/{incident.pk}/postmortem/action-items/{item.pk}"
        auth = {"Authorization": f"Bearer {_token(staff)}"}
        response = Client().patch(url, {"status": "in_progress"}, "application/json", headers=auth)

    assert response.status_code == 200, response.content
    assert response.json()["action_items"][0]["due_date"] == "2026-03-03"


# --- the staff API ------------------------------------------------------------------------------


def test_the_api_runs_a_post_mortem_from_draft_to_published(staff: User, api: Component, client: Client) -> None:
    from tests.test_analytics import _token

    incident = resolved_sev1(staff, api)
    auth = {"Authorization": f"Bearer {_token(staff)}"}
    url = f"/api/v1/incidents/{incident.pk}/postmortem"

    read = client.get(url, headers=auth).json()
    assert read["state"] == "draft" and read["owner"] == "alice"
    assert [s["key"] for s in read["sections"]][:2] == ["summary", "customer_impact"]

    early = client.post(f"{url}/submit", headers=auth)
    assert early.status_code == 409
    assert "Write the summary and the root cause" in early.json()["detail"]

    patched = client.patch(
        url,
        {
            "sections": {
                "summary": {"body": "A switch.", "is_public": True},
                "root_cause": {"body": "Retries.", "is_public": True},
            }
        },
        content_type="application/json",
        headers=auth,
    )
    assert patched.status_code == 200
    bad_owner = client.patch(url, {"owner": "nobody"}, content_type="application/json", headers=auth)
    assert bad_owner.status_code == 422 and bad_owner.json()["field"] == "owner"
    item = client.post(
        f"{url}/action-items",
        {"title": "Backoff with jitter", "kind": "prevent", "priority": "p1", "owner": "alice"},
        content_type="application/json",
        headers=auth,
    )
    assert item.status_code == 201
    item_id = item.json()["action_items"][0]["id"]
    done = client.patch(
        f"{url}/action-items/{item_id}", {"status": "done"}, content_type="application/json", headers=auth
    )
    assert done.json()["action_items"][0]["status"] == "done"

    assert client.post(f"{url}/submit", headers=auth).json()["state"] == "in_review"
    published = client.post(f"{url}/publish", headers=auth).json()
    assert published["state"] == "published" and published["published_at"] is not None
    assert client.post(f"{url}/publish", headers=auth).status_code == 409
    assert client.get("/api/v1/incidents/999999/postmortem", headers=auth).status_code == 404


def test_send_for_review_says_to_save_sections_typed_but_not_saved(
    staff: User, api: Component, staff_client: Client
) -> None:
    # The review: with the summary and the root cause typed but not saved, the refusal said "Write the
    # summary and the root cause", while the text was there. The page's script says which sections
    # hold unsaved text (`unsaved`, see static/js/unsaved.js).
    incident = resolved_sev1(staff, api)
    url = f"/manage/incidents/{incident.pk}/postmortem/submit"
    htmx = {"HX-Request": "true"}

    both = staff_client.post(url, {"unsaved": ["summary", "root_cause"]}, headers=htmx)
    assert both.status_code == 422
    assert (
        "Before sending it for review, save the summary and the root cause (typed but not saved yet)."
        in both.content.decode()
    )
    one = staff_client.post(url, {"unsaved": ["summary"]}, headers=htmx).content.decode()
    assert "Before sending it for review, save the summary (typed but not saved yet) and write the root cause." in one
    # Nothing typed (or no script to say so): the sections are to be written.
    assert "Write the summary and the root cause before sending it for review." in (
        staff_client.post(url, headers=htmx).content.decode()
    )
    assert incident.postmortem.state == PostmortemState.DRAFT


def test_the_page_says_what_a_draft_lacks_and_why_it_was_sent_back(
    staff: User, other_staff: User, api: Component, staff_client: Client
) -> None:
    incident = resolved_sev1(staff, api)
    url = f"/manage/incidents/{incident.pk}/postmortem/"
    assert "Write the summary and the root cause first." in staff_client.get(url).content.decode()
    write(incident.postmortem, staff, summary=("Switch fault.", True))
    page = staff_client.get(url).content.decode()
    assert "Write the root cause first." in page and "summary and" not in page

    ready_for_review(incident.postmortem, staff)
    # An empty reason: the error shows in the disclosure, opened.
    empty = staff_client.post(f"{url}return", {"reason": ""}, headers={"HX-Request": "true"})
    assert empty.status_code == 422
    assert '<details class="disclosure" open>' in empty.content.decode()
    actions.return_postmortem_to_draft(incident.postmortem, actor=other_staff, reason="Name the switch vendor.")

    page = staff_client.get(url).content.decode()
    assert "Sent back by bob" in page and "Name the switch vendor." in page
    assert "first." not in page  # both required sections are written
