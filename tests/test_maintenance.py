"""Scheduled maintenance: the window's lifecycle, component statuses, and automatic start and end."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.contrib.auth.models import User

from incidents import actions, clocks
from incidents.actions import ActionRefused
from incidents.models import Component, Maintenance, TimelineEvent
from tests import factories

pytestmark = pytest.mark.django_db
T0 = datetime(2026, 3, 2, 22, 0, tzinfo=UTC)
START, END = T0 + timedelta(hours=2), T0 + timedelta(hours=4)


@pytest.fixture
def exports(staff: User) -> Component:
    return factories.make_component(name="Exports", actor=staff)


@pytest.fixture
def window(staff: User, exports: Component) -> Maintenance:
    return actions.schedule_maintenance(
        actor=staff, title="Database upgrade", scheduled_for=START, scheduled_until=END, components=[exports], at=T0
    )


def status_of(component: Component) -> str:
    component.refresh_from_db()
    return component.status


def sweep_at(moment: datetime) -> int:
    with time_machine.travel(moment, tick=False):
        return clocks.sweep_due()


def test_it_schedules_a_window_with_a_first_update(window: Maintenance) -> None:
    assert (window.status, window.next_action_at, window.sequence) == ("scheduled", START, 0)
    update = window.updates.get()
    assert update.body == "Database upgrade is scheduled from 03 Mar 2026 00:00 UTC to 03 Mar 2026 02:00 UTC."
    assert window.events.get().kind == "maintenance_scheduled"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"title": " "}, "title"),
        ({"scheduled_for": None}, "scheduled_for"),
        ({"scheduled_until": START}, "scheduled_until"),
    ],
)
def test_it_refuses_a_bad_window_naming_the_field(staff: User, kwargs: dict[str, object], field: str) -> None:
    arguments: dict[str, object] = {"title": "Upgrade", "scheduled_for": START, "scheduled_until": END, **kwargs}
    with pytest.raises(ActionRefused) as refused:
        actions.schedule_maintenance(actor=staff, **arguments)  # type: ignore[arg-type]
    assert refused.value.field == field
    assert not Maintenance.objects.exists()


def test_it_starts_and_completes_on_time_through_the_sweep(window: Maintenance, exports: Component) -> None:
    sweep_at(START - timedelta(seconds=1))  # the reminder goes out, the window does not start
    window.refresh_from_db()
    assert (window.status, status_of(exports)) == ("scheduled", "operational")
    assert sweep_at(START + timedelta(seconds=10)) == 1
    window.refresh_from_db()
    assert (window.status, window.started_at, window.next_action_at) == ("in_progress", START, END)
    assert status_of(exports) == "under_maintenance"
    assert sweep_at(START + timedelta(seconds=20)) == 0  # nothing twice

    assert sweep_at(END + timedelta(seconds=5)) == 1
    window.refresh_from_db()
    assert (window.status, window.completed_at, window.next_action_at) == ("completed", END, None)
    assert status_of(exports) == "operational"
    assert list(exports.status_changes.values_list("new_status", "changed_at")) == [
        ("under_maintenance", START),
        ("operational", END),
    ]


def test_it_restores_only_what_the_maintenance_changed(staff: User, window: Maintenance, exports: Component) -> None:
    other = factories.make_component(name="Website", actor=staff)
    actions.set_component_status(other, actor=staff, status="degraded_performance")
    window.components.add(other)
    actions.start_maintenance(window, actor=staff, at=START)
    # An incident takes over one component during the window: its status is the incident's to undo.
    actions.set_component_status(exports, actor=staff, status="major_outage", at=START + timedelta(minutes=30))

    actions.complete_maintenance(window, actor=staff, at=START + timedelta(hours=1))

    assert status_of(exports) == "major_outage"
    assert status_of(other) == "degraded_performance"


def test_it_catches_up_a_window_missed_entirely(window: Maintenance, exports: Component) -> None:
    """Workers were down for the whole window: one sweep starts and completes it, at its times."""
    assert sweep_at(END + timedelta(hours=1)) == 2
    window.refresh_from_db()
    assert (window.started_at, window.completed_at) == (START, END)
    assert status_of(exports) == "operational"


def test_it_reschedules_with_a_new_calendar_sequence(staff: User, window: Maintenance) -> None:
    later = START + timedelta(days=1)
    actions.reschedule_maintenance(
        window, actor=staff, scheduled_for=later, scheduled_until=later + timedelta(hours=1), at=T0
    )

    window.refresh_from_db()
    assert (window.scheduled_for, window.next_action_at, window.sequence) == (later, later, 1)
    assert sweep_at(START + timedelta(minutes=1)) == 0
    with pytest.raises(ActionRefused, match="Nothing changed"):
        actions.reschedule_maintenance(
            window, actor=staff, scheduled_for=later, scheduled_until=later + timedelta(hours=1), at=T0
        )


def test_it_cancels_only_before_the_start(staff: User, window: Maintenance) -> None:
    actions.cancel_maintenance(window, actor=staff, reason="Vendor postponed the upgrade")
    window.refresh_from_db()
    assert (window.cancelled_at is not None, window.next_action_at, window.sequence) == (True, None, 1)
    assert sweep_at(END + timedelta(hours=1)) == 0
    with pytest.raises(ActionRefused, match="already cancelled"):
        actions.cancel_maintenance(window, actor=staff)
    with pytest.raises(ActionRefused, match="was cancelled"):
        actions.start_maintenance(window, actor=staff)


@pytest.mark.parametrize(
    ("prepare", "action", "message"),
    [
        ([], lambda m, u: actions.complete_maintenance(m, actor=u), "has not started"),
        (["start"], lambda m, u: actions.start_maintenance(m, actor=u), "already started"),
        (["start"], lambda m, u: actions.cancel_maintenance(m, actor=u), "complete it instead"),
        (["start", "complete"], lambda m, u: actions.complete_maintenance(m, actor=u), "already completed"),
        (["start", "complete"], lambda m, u: actions.post_maintenance_update(m, actor=u, body="x"), "is over"),
        (["start"], lambda m, u: actions.post_maintenance_update(m, actor=u, body="x", status="scheduled"),
         "cannot go back"),
        ([], lambda m, u: actions.post_maintenance_update(m, actor=u, body="x", status="verifying"),
         "before verifying"),
    ],
)  # fmt: skip
def test_it_explains_each_refused_step(
    staff: User, window: Maintenance, prepare: list[str], action: object, message: str
) -> None:
    if "start" in prepare:
        actions.start_maintenance(window, actor=staff)
    if "complete" in prepare:
        actions.complete_maintenance(window, actor=staff)
    events = TimelineEvent.objects.count()

    with pytest.raises(ActionRefused, match=message):
        action(window, staff)  # type: ignore[operator]
    assert TimelineEvent.objects.count() == events


def test_it_moves_through_updates(staff: User, window: Maintenance, exports: Component) -> None:
    actions.post_maintenance_update(window, actor=staff, body="Starting now", status="in_progress")
    assert status_of(exports) == "under_maintenance"
    actions.post_maintenance_update(window, actor=staff, body="Checking replicas", status="verifying")
    actions.post_maintenance_update(window, actor=staff, body="All done", status="completed")

    window.refresh_from_db()
    assert window.status == "completed"
    assert list(window.updates.values_list("status", "body")) == [
        ("completed", "All done"),
        ("verifying", "Checking replicas"),
        ("in_progress", "Starting now"),
        ("scheduled", window.updates.last().body),  # type: ignore[union-attr]
    ]
    assert status_of(exports) == "operational"


def test_it_publishes_windows_including_cancelled_ones(staff: User, window: Maintenance) -> None:
    from incidents.publishing import publish

    actions.cancel_maintenance(window, actor=staff, at=T0 + timedelta(minutes=5))
    with time_machine.travel(T0 + timedelta(minutes=10), tick=False):
        row = publish().document["scheduled_maintenances"][0]

    assert (row["name"], row["status"], row["impact"], row["sequence"]) == (
        "Database upgrade",
        "cancelled",
        "maintenance",
        1,
    )
    assert row["cancelled_at"] is not None
    assert row["scheduled_for"] == "2026-03-03T00:00:00.000Z"
    assert row["incident_updates"][0]["body"] == "This maintenance has been cancelled."


def test_it_never_stamps_a_start_before_the_window_existed(staff: User, exports: Component) -> None:
    """Scheduled at 10:45 for 10:00: the sweep starts it at 10:45, not in the past."""
    created = T0 + timedelta(minutes=45)
    window = actions.schedule_maintenance(
        actor=staff, title="Late notice", scheduled_for=T0, scheduled_until=END, components=[exports], at=created
    )
    sweep_at(created + timedelta(seconds=5))

    window.refresh_from_db()
    assert window.started_at == created


def test_it_completes_no_earlier_than_it_started(staff: User, exports: Component) -> None:
    window = actions.schedule_maintenance(
        actor=staff,
        title="Manual",
        scheduled_for=START,
        scheduled_until=END,
        components=[exports],
        auto_start=False,
        at=T0,
    )
    actions.start_maintenance(window, actor=staff, at=END + timedelta(hours=1))  # by hand, after its end
    sweep_at(END + timedelta(hours=1, seconds=5))

    window.refresh_from_db()
    assert window.completed_at is not None and window.started_at is not None
    assert window.completed_at >= window.started_at


def test_it_leaves_a_component_to_an_overlapping_window(staff: User, window: Maintenance, exports: Component) -> None:
    other = actions.schedule_maintenance(
        actor=staff,
        title="Longer",
        scheduled_for=START,
        scheduled_until=END + timedelta(hours=2),
        components=[exports],
        at=T0,
    )
    sweep_at(START + timedelta(seconds=5))
    sweep_at(END + timedelta(seconds=5))  # the first window ends; the second still runs

    assert status_of(exports) == "under_maintenance"
    sweep_at(END + timedelta(hours=2, seconds=5))
    other.refresh_from_db()
    assert other.status == "completed"
    assert status_of(exports) == "operational"


def test_it_decides_an_update_on_the_current_state(staff: User, window: Maintenance) -> None:
    stale = Maintenance.objects.get(pk=window.pk)  # read before someone else starts it
    actions.start_maintenance(window, actor=staff)

    actions.post_maintenance_update(stale, actor=staff, body="Halfway there")

    window.refresh_from_db()
    assert (window.status, window.updates.first().body) == ("in_progress", "Halfway there")  # type: ignore[union-attr]


def test_it_says_a_completed_window_is_completed_when_cancelling(staff: User, window: Maintenance) -> None:
    actions.start_maintenance(window, actor=staff)
    actions.complete_maintenance(window, actor=staff)

    with pytest.raises(ActionRefused, match="already completed"):
        actions.cancel_maintenance(window, actor=staff)


def test_it_reminds_subscribers_an_hour_before_once_per_schedule(
    staff: User, window: Maintenance, exports: Component
) -> None:
    from django.core import mail

    from incidents import notifications
    from incidents.models import Message

    reader = actions.subscribe(email="reader@example.com", at=T0)
    actions.confirm_subscription(reader)

    assert actions.remind_of_maintenance(now=START - timedelta(hours=1, seconds=1)) == 0
    assert actions.remind_of_maintenance(now=START - timedelta(minutes=59)) == 1
    assert actions.remind_of_maintenance(now=START - timedelta(minutes=30)) == 0  # once
    later = START + timedelta(days=1)
    actions.reschedule_maintenance(
        window,
        actor=staff,
        scheduled_for=later,
        scheduled_until=later + timedelta(hours=1),
        at=START - timedelta(minutes=20),
    )
    assert actions.remind_of_maintenance(now=later - timedelta(minutes=10)) == 1  # the new time, again

    reminder = Message.objects.filter(kind="maintenance_reminder").first()
    assert reminder is not None
    notifications.fan_out(reminder.pk)
    mail.outbox.clear()
    notifications.deliver_due()
    assert [m.subject for m in mail.outbox] == ["[Maintenance starts within the hour] Database upgrade"]


def test_no_reminder_for_a_window_announced_within_the_hour_and_none_to_webhooks(
    staff: User, window: Maintenance, exports: Component
) -> None:
    """A window scheduled (or moved) to start within the hour was just announced: its 'scheduled' email
    said when, so no reminder follows it. Webhooks never get reminders: a reminder changes nothing, and
    its body would repeat the 'scheduled' one."""
    from incidents import notifications
    from incidents.models import Delivery, Message

    reader = actions.subscribe(email="reader@example.com", at=T0)
    actions.confirm_subscription(reader)
    actions.add_webhook(actor=staff, url="https://hooks.example.com/status")
    soon = actions.schedule_maintenance(
        actor=staff,
        title="Quick fix",
        scheduled_for=T0 + timedelta(minutes=30),
        scheduled_until=T0 + timedelta(hours=1),
        components=[exports],
        at=T0,
    )
    assert actions.remind_of_maintenance(now=T0 + timedelta(minutes=1)) == 0
    assert not Message.objects.filter(kind="maintenance_reminder", maintenance=soon).exists()

    assert actions.remind_of_maintenance(now=START - timedelta(minutes=59)) == 1  # announced at T0, 2 h ahead
    reminder = Message.objects.get(kind="maintenance_reminder", maintenance=window)
    notifications.fan_out(reminder.pk)
    assert list(Delivery.objects.filter(message=reminder).values_list("subscriber__email", flat=True)) == [
        "reader@example.com"
    ]
