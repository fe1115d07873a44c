"""Escalation and nudges: page staff until someone acknowledges, and remind the commander of updates.

Policy. Each severity has escalation steps ("after N minutes unacknowledged, page these people") and
may repeat them: the next run starts `escalation_repeat_minutes` after the last step of the one
before, up to `escalation_repeats` more runs. At declaration the whole schedule is copied onto the
incident as PageStep rows with their due times, so editing the policy never changes a running
incident, and "who is paged next, and when" is a query.

Firing. A deadline is a column, not a broker ETA: the clock sweep (every TIMER_SWEEP_SECONDS) fires
the steps that are due. A step fires once: the incident row is locked first (the same order as the
actions that stop paging, so the two never deadlock), then a conditional UPDATE of `fired_at` decides
who fires it, and its notices are unique per step and address. Acknowledging, resolving, changing the
severity or stopping the paging by hand stops every step not yet fired, and cancels pages not yet sent.
A step records on its recipients (JSON) what became of each when it fired: the address paged, the
problem that stopped a page (no email address, a deactivated account: shown in red, never counted as
paged), or `skipped` for the declarer (already looking at it) unless nobody else in the step can be
paged. A raised severity's steps run from the change; a lowered one's keep the time since declaration
and are copied already stopped where their time has passed, so nobody is paged again as if it were new.
The clock sweep stamps a heartbeat (clocks.record_sweep) that the dashboard checks.

Nudges. When the update-cadence clock reaches 75 % (the next public update is due soon) or breaches
(it is overdue), and when the first-update clock breaches, the commander gets an email: one per
clock event (unique key), cancelled at sending time if an update went out meanwhile.

Sending. Pages and nudges are StaffNotice rows, an outbox of their own so a page never queues behind a
subscriber backlog; they are claimed, sent over one SMTP connection, and retried with backoff and
full jitter (capped at PAGE_BACKOFF_CAP, since a page an hour late is no page) up to
DELIVERY_MAX_ATTEMPTS, in the order they were queued (a notice backing off goes along with a later
one that is due, without spending an attempt); `failing_since` says since when one is being retried.
A page carries an acknowledgment link that requires a login, asks before it
acts (mail scanners open links), and works once.
"""

from __future__ import annotations

import logging
import smtplib
import uuid
from collections.abc import Iterable
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core import mail, signing
from django.core.mail import EmailMultiAlternatives
from django.db import transaction
from django.db.models import Count, F, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from incidents.addresses import sending_problem
from incidents.emails import is_plain_address
from incidents.models import (
    MAX_STOP_REASON_LENGTH,
    Clock,
    ClockEvent,
    ClockEventKind,
    ClockState,
    EscalationStep,
    EventKind,
    Incident,
    Metric,
    NoticeKind,
    NoticeStatus,
    NudgeReason,
    PageStep,
    Severity,
    StaffNotice,
    TimelineEvent,
)
from incidents.notifications import (
    CONNECTION_ERRORS,
    RECONNECTS_PER_BATCH,
    Heartbeat,
    PermanentError,
    TransientError,
    backoff,
    classify_smtp_error,
    take_back_stale,
)

log = logging.getLogger(__name__)

PAGE_BACKOFF_CAP = timedelta(minutes=2)
ACK_LINK_MAX_AGE = timedelta(days=1)
ACK_SALT = "signalpost.page.acknowledge"
SEND_BATCH = 50


# --- the schedule -------------------------------------------------------------------------------


def copy_policy(
    incident: Incident, severity: Severity, start: datetime, *, past_at: datetime | None = None, past_reason: str = ""
) -> list[PageStep]:
    """Copy the severity's steps onto the incident, timed from `start`; returns the new rows.

    With `past_at`, steps due before it are copied already stopped (with `past_reason`): a lowered
    severity keeps the time elapsed since the declaration, and pages nobody for a step whose time passed.
    """
    steps = list(EscalationStep.objects.filter(severity=severity).prefetch_related("users").order_by("position", "id"))
    if not steps:
        return []
    runs = severity.escalation_repeats + 1
    run_length = timedelta(minutes=max(step.after_minutes for step in steps) + severity.escalation_repeat_minutes)
    first = (
        PageStep.objects.filter(incident=incident).order_by("-number").values_list("number", flat=True).first()
    ) or 0
    rows: list[PageStep] = []
    for run in range(runs):
        for index, step in enumerate(steps, start=1):
            # Deactivated people too: the step reports them when it fires ("could not page …"), instead of
            # leaving them out without a word.
            recipients: list[dict[str, Any]] = [
                {"user_id": user.pk, "name": user.get_username()} for user in step.users.all()
            ]
            recipients += [{"email": address} for address in step.address_list()]
            due_at = start + run * run_length + timedelta(minutes=step.after_minutes)
            past = past_at is not None and due_at < past_at
            rows.append(
                PageStep(
                    incident=incident,
                    number=first + len(rows) + 1,
                    run=run + 1,
                    runs=runs,
                    position=index,
                    positions=len(steps),
                    severity_key=severity.key,
                    due_at=due_at,
                    recipients=recipients,
                    stopped_at=past_at if past else None,
                    stop_reason=past_reason[:MAX_STOP_REASON_LENGTH] if past else "",
                    created_at=past_at or start,
                )
            )
    return PageStep.objects.bulk_create(rows)


def stop_pending(incident: Incident, at: datetime, reason: str) -> int:
    """Stop the steps not yet fired and cancel the pages not yet sent. The caller holds the incident lock."""
    stopped = PageStep.objects.filter(incident=incident, fired_at__isnull=True, stopped_at__isnull=True).update(
        stopped_at=at, stop_reason=reason[:MAX_STOP_REASON_LENGTH]
    )
    StaffNotice.objects.filter(incident=incident, kind=NoticeKind.PAGE, status__in=[NoticeStatus.PENDING]).update(
        status=NoticeStatus.CANCELLED, last_error=reason[:500]
    )
    return stopped


# --- firing -------------------------------------------------------------------------------------


def due_steps(now: datetime) -> list[tuple[int, int]]:
    """(step id, incident id) of steps due by `now`, oldest first (page_step_due_idx)."""
    rows = PageStep.objects.filter(due_at__lte=now, fired_at__isnull=True, stopped_at__isnull=True)
    return list(rows.order_by("due_at", "id").values_list("pk", "incident_id")[:100])


def fire_due(now: datetime) -> int:
    """Fire every page step due by `now`; returns how many fired. Safe to run concurrently."""
    fired = 0
    while True:
        batch = due_steps(now)
        for step_id, incident_id in batch:
            with transaction.atomic():
                fired += _fire(step_id, incident_id, now)
        if len(batch) < 100:
            return fired


def _fire(step_id: int, incident_id: int, now: datetime) -> int:
    # Lock order: the incident, then its steps, as acknowledge and resolve do.
    incident = Incident.objects.locked(incident_id)
    step = PageStep.objects.get(pk=step_id)
    if not step.is_pending:
        return 0  # another sweep fired it, or paging stopped while we waited for the lock
    if incident.is_resolved or incident.acknowledged_at is not None:
        # The actions stop pending steps; this only guards against paging for nothing.
        reason = "the incident was resolved" if incident.is_resolved else "the incident was acknowledged"
        PageStep.objects.filter(pk=step.pk, fired_at__isnull=True).update(stopped_at=now, stop_reason=reason)
        return 0
    if not PageStep.objects.filter(pk=step.pk, fired_at__isnull=True, stopped_at__isnull=True).update(fired_at=now):
        return 0  # the conditional update is what decides, whatever the database's locking
    step.fired_at = now
    recipients = resolve_recipients(step.recipients, declared_by_id=incident.declared_by_id)
    PageStep.objects.filter(pk=step.pk).update(recipients=recipients)
    step.recipients = recipients
    addresses = [(r["address"], r.get("user_id")) for r in recipients if r.get("address")]
    StaffNotice.objects.bulk_create(
        [
            StaffNotice(
                kind=NoticeKind.PAGE,
                incident=incident,
                step=step,
                user_id=user_id,
                email=email,
                next_attempt_at=now,
                created_at=now,
            )
            for email, user_id in addresses
        ],
        ignore_conflicts=True,
    )
    waited = now - incident.declared_at
    # "Just declared" only for the policy copied at the declaration: a severity change's steps are not.
    just_declared = waited < timedelta(minutes=1) and step.created_at <= incident.declared_at
    unacknowledged = "just declared" if just_declared else f"unacknowledged for {_minutes(waited)}"
    paged = f"Paging {', '.join(step.paged_names) or 'nobody'} ({step.label}): {unacknowledged}"
    problems = step.problems
    notes = [*problems, *step.not_paged]
    TimelineEvent.objects.create(
        incident=incident,
        kind=EventKind.PAGED,
        message="; ".join([paged, *notes])[:500],
        data={
            "step": step.number,
            "run": step.run,
            "position": step.position,
            "addresses": len(addresses),
            "paged_text": paged,
            "problems": problems,
            "not_paged": step.not_paged,
        },
        created_at=now,
    )
    if problems:
        log.warning("incident %s: page step %s: %s", incident.pk, step.number, "; ".join(problems))
    send_on_commit()
    return 1


NO_ADDRESS = "no email address"
INACTIVE = "deactivated account"
DELETED = "account deleted since the incident was declared"
DECLARED_IT = "declared the incident"
SAME_ADDRESS = "same email address as another person in the step"


def resolve_recipients(
    recipients: Iterable[dict[str, Any]], *, declared_by_id: int | None, users: dict[int, Any] | None = None
) -> list[dict[str, Any]]:
    """The step's recipients as they stand when it fires: each with the `address` it is paged at, or the
    `problem` that stops it being paged, or `skipped` (the declarer, already looking at the incident,
    unless nobody else in the step can be paged). Users' current addresses; no address twice.
    `users` (id -> user) saves the query when the caller has them."""
    recipients = [dict(r) for r in recipients]
    if users is None:
        users = get_user_model().objects.in_bulk([r["user_id"] for r in recipients if r.get("user_id")])
    seen: set[str] = set()
    for recipient in recipients:
        for key in ("address", "problem", "skipped"):
            recipient.pop(key, None)
        if recipient.get("user_id"):
            user = users.get(recipient["user_id"])
            if user is None or not user.is_active:
                recipient["problem"] = DELETED if user is None else INACTIVE
                continue
            address = (user.email or "").strip().lower()
            if not address:
                recipient["problem"] = NO_ADDRESS
                continue
        else:
            address = str(recipient.get("email", "")).strip().lower()
            if not address:
                recipient["problem"] = NO_ADDRESS
                continue
        if address in seen:
            continue
        seen.add(address)
        recipient["address"] = address
    others = [r for r in recipients if r.get("address") and (not declared_by_id or r.get("user_id") != declared_by_id)]
    if others:
        for recipient in recipients:
            if declared_by_id and recipient.get("user_id") == declared_by_id and recipient.get("address"):
                del recipient["address"]
                recipient["skipped"] = DECLARED_IT
    return recipients


@dataclass(frozen=True)
class UnreachableTarget:
    """A person an escalation step would page who cannot be reached (no address, a deactivated account)."""

    step: EscalationStep
    name: str
    problem: str  # NO_ADDRESS or INACTIVE
    nobody: bool  # the step has nobody else it could page

    @property
    def where(self) -> str:
        return f"{self.step.severity.name} step {self.step.position}"

    @property
    def no_address(self) -> bool:
        return self.problem == NO_ADDRESS


def unreachable_targets(user_id: int | None = None) -> list[UnreachableTarget]:
    """Who the severities' escalation steps would fail to page, as resolve_recipients would find them
    when a step fires (the admin refuses such a target, but an address removed or an account deactivated
    later is not refused anywhere). One query: every step's people, with their steps and severities.
    With `user_id`, only that person's steps."""
    links = EscalationStep.users.through.objects.select_related("escalationstep__severity", "user").order_by(
        "escalationstep__severity__rank", "escalationstep__position", "user__username"
    )
    if user_id is not None:
        links = links.filter(escalationstep__users=user_id)
    people: dict[int, list[Any]] = {}
    steps: dict[int, EscalationStep] = {}
    for link in links:
        steps[link.escalationstep_id] = link.escalationstep
        people.setdefault(link.escalationstep_id, []).append(link.user)
    found: list[UnreachableTarget] = []
    for step_id, users in people.items():
        step = steps[step_id]
        problems = {
            user.pk: (INACTIVE if not user.is_active else NO_ADDRESS)
            for user in users
            if not user.is_active or not (user.email or "").strip()
        }
        nobody = len(problems) == len(users) and not step.address_list()
        found += [
            UnreachableTarget(step, user.get_username(), problems[user.pk], nobody)
            for user in users
            if user.pk in problems and (user_id is None or user.pk == user_id)
        ]
    return found


def _minutes(delta: timedelta) -> str:
    minutes = max(0, round(delta.total_seconds() / 60))
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60} min" if minutes % 60 else f"{minutes // 60} h"


# --- nudges -------------------------------------------------------------------------------------

NUDGES: dict[tuple[str, str], str] = {
    (Metric.UPDATE_CADENCE, ClockEventKind.WARNING_75): NudgeReason.UPDATE_DUE,
    (Metric.UPDATE_CADENCE, ClockEventKind.BREACH): NudgeReason.UPDATE_OVERDUE,
    (Metric.FIRST_UPDATE, ClockEventKind.BREACH): NudgeReason.FIRST_UPDATE_LATE,
}


def nudge(clock: Clock, event: ClockEvent) -> bool:
    """Queue the commander's nudge for this clock event, if it calls for one. Inside the caller's transaction."""
    reason = NUDGES.get((clock.metric, event.kind))
    if reason is None:
        return False
    incident = clock.incident
    commander = incident.commander
    if incident.is_resolved or commander is None or not commander.is_active or not commander.email:
        return False
    StaffNotice.objects.bulk_create(
        [
            StaffNotice(
                kind=NoticeKind.NUDGE,
                incident=incident,
                clock_event=event,
                reason=reason,
                user=commander,
                email=commander.email.lower(),
                next_attempt_at=event.due_at,
                created_at=event.due_at,
            )
        ],
        ignore_conflicts=True,
    )
    send_on_commit()
    return True


def _still_needed(notice: StaffNotice) -> str:
    """Why the notice is no longer worth sending ('' when it is)."""
    incident = notice.incident
    if incident.is_resolved:
        return "the incident was resolved before it was sent"
    if notice.kind == NoticeKind.PAGE:
        if incident.acknowledged_at is not None:
            return "the incident was acknowledged before it was sent"
        return ""
    event = notice.clock_event
    assert event is not None
    clock = event.clock
    if (
        clock.cycle != event.cycle
        or clock.running_since is None
        or clock.state
        not in (
            ClockState.RUNNING,
            ClockState.BREACHED,
        )
    ):
        return "a public update was posted before it was sent"
    return ""


# --- sending ------------------------------------------------------------------------------------


def send_on_commit() -> None:
    """Send queued notices once the transaction commits: through the broker, or the timer loop sends them."""

    def enqueue() -> None:
        from incidents.tasks import send_staff_notices

        if send_staff_notices.app.conf.task_always_eager and not settings.DELIVER_EAGERLY:
            return  # no broker: the timer loop sends within TIMER_SWEEP_SECONDS (see incidents.actions.notify)
        try:
            send_staff_notices.delay()
        except Exception:  # the sweep sends them later
            log.warning("could not enqueue staff notices; the delivery sweep will send them", exc_info=True)

    transaction.on_commit(enqueue, robust=True)


def _claim(now: datetime) -> tuple[str, list[StaffNotice]]:
    token = uuid.uuid4().hex
    pending = StaffNotice.objects.filter(status=NoticeStatus.PENDING)
    # In the order they were queued, not the order their jittered retries come due: after an outage the
    # first page of an incident must not arrive after the second. A notice waiting out a backoff goes
    # along with any later one that is due (one connection tries both, oldest first).
    newest_due = pending.filter(next_attempt_at__lte=now).order_by("-created_at", "-id").values("created_at").first()
    if newest_due is None:
        return token, []
    ids = list(
        pending.filter(Q(next_attempt_at__lte=now) | Q(created_at__lte=newest_due["created_at"]))
        .order_by("created_at", "id")
        .values_list("pk", flat=True)[:SEND_BATCH]
    )
    if ids:
        # Conditional: a row another sender took between the two statements is not ours.
        StaffNotice.objects.filter(pk__in=ids, status=NoticeStatus.PENDING).update(
            status=NoticeStatus.SENDING, claim=token, claimed_at=now
        )
    notices = list(
        StaffNotice.objects.filter(claim=token, status=NoticeStatus.SENDING)
        .select_related(
            "incident", "incident__severity", "incident__commander", "step", "clock_event", "clock_event__clock"
        )
        .order_by("created_at", "id")
    )
    return token, notices


def _fenced(notice: StaffNotice, claim: str) -> Any:
    return StaffNotice.objects.filter(pk=notice.pk, claim=claim, status=NoticeStatus.SENDING)


def _retry(notice: StaffNotice, claim: str, error: str, now: datetime, *, counts: bool = True) -> None:
    attempts = notice.attempts + (1 if counts else 0)
    if attempts >= settings.DELIVERY_MAX_ATTEMPTS:
        _fenced(notice, claim).update(
            status=NoticeStatus.FAILED,
            attempts=attempts,
            claim="",
            last_error=f"gave up after {attempts}: {error}"[:500],
            failing_since=notice.failing_since or now,
        )
        log.error("gave up on %s after %d attempts: %s", notice, attempts, error)
        return
    wait = min(backoff(max(1, attempts)), PAGE_BACKOFF_CAP)
    _fenced(notice, claim).update(
        status=NoticeStatus.PENDING,
        attempts=attempts,
        next_attempt_at=now + wait,
        claim="",
        last_error=error[:500],
        failing_since=notice.failing_since or now,
    )


def send_due(now: datetime | None = None) -> int:
    """Send the staff notices that are due; returns how many were sent."""
    total = 0
    for _ in range(20):
        sent, more = _send_batch(now or timezone.now())
        total += sent
        if not more:
            break
    return total


def _send_batch(now: datetime) -> tuple[int, bool]:
    """Claim and send one batch. As in the subscriber outbox (notifications.send_email_batch), whatever
    goes wrong with one notice fails or retries that notice alone, and the rest go on (over a new
    connection if the old one may be broken); only a server that cannot be reached stops the batch."""
    claim, notices = _claim(now)
    if not notices:
        return 0, False
    sent = reconnects = 0
    remaining = list(notices)
    in_flight = False
    try:
        with Heartbeat(StaffNotice.objects.all(), claim), mail.mailers.default as smtp:

            def reconnect(reason: str) -> None:
                nonlocal reconnects
                reconnects += 1
                if reconnects > RECONNECTS_PER_BATCH:
                    raise TransientError(f"the server broke off {reconnects} emails in one batch; last: {reason}")
                with suppress(Exception):
                    smtp.close()
                smtp.open()

            while remaining:
                notice = remaining[0]
                why_not = _still_needed(notice)
                if why_not:
                    _fenced(notice, claim).update(status=NoticeStatus.CANCELLED, claim="", last_error=why_not)
                    remaining.pop(0)
                    continue
                problem = None if is_plain_address(notice.email) else sending_problem(notice.email)
                if problem is not None:  # no retry can help: say so at once
                    _fenced(notice, claim).update(
                        status=NoticeStatus.FAILED,
                        attempts=F("attempts") + 1,
                        claim="",
                        last_error=f"cannot send to this address: {problem}"[:500],
                    )
                    remaining.pop(0)
                    continue
                try:
                    email = build_email(notice)
                except Exception as error:  # a template or data problem: this one only, on its own backoff
                    log.exception("could not build staff notice %s", notice.pk)
                    _retry(notice, claim, f"could not build the email: {type(error).__name__}: {error}", now)
                    remaining.pop(0)
                    continue
                in_flight = True
                broken = ""  # why the connection may be unusable after this notice
                try:
                    smtp.send_messages([email])
                except (smtplib.SMTPServerDisconnected, smtplib.SMTPConnectError) as error:
                    broken = f"{type(error).__name__}: {error}"
                except smtplib.SMTPException as error:
                    problem = str(refusal := classify_smtp_error(error))
                    if isinstance(refusal, PermanentError):
                        _fenced(notice, claim).update(
                            status=NoticeStatus.FAILED,
                            attempts=F("attempts") + 1,
                            claim="",
                            last_error=problem[:500],
                        )
                    else:
                        _retry(notice, claim, problem, now)
                except OSError as error:
                    broken = f"{type(error).__name__}: {error}"
                except Exception as error:  # an address the backend refuses, a bug in a backend: this one only
                    log.exception("could not send staff notice %s", notice.pk)
                    broken = f"could not send: {type(error).__name__}: {error}"
                else:
                    _fenced(notice, claim).update(
                        status=NoticeStatus.SENT,
                        attempts=F("attempts") + 1,
                        sent_at=timezone.now(),
                        claim="",
                        last_error="",
                        failing_since=None,
                    )
                    sent += 1
                in_flight = False
                remaining.pop(0)
                if broken:
                    _retry(notice, claim, broken, now)  # it may be the cause: it counts an attempt
                    reconnect(broken)
    except (TransientError, *CONNECTION_ERRORS) as error:
        reason = str(error) if isinstance(error, TransientError) else f"{type(error).__name__}: {error}"
        log.warning("staff notices: the mail server failed (%s); retrying with backoff", reason)
        for index, notice in enumerate(remaining):
            # A notice taken along before its own retry was due (to keep the order) counts no attempt:
            # otherwise each new page during an outage would use up the attempts of every older one.
            # The first one counts too, unless the server broke off a notice before it (that one counted).
            first = index == 0 and (in_flight or reconnects == 0)
            counts = (first or notice.kind == NoticeKind.PAGE) and notice.next_attempt_at <= now
            _retry(notice, claim, reason, now, counts=counts)
        return sent, False
    return sent, len(notices) == SEND_BATCH


def requeue_stale(now: datetime) -> int:
    """Notices whose sender died holding them go back (the subscriber outbox's rule, same columns)."""
    return take_back_stale(StaffNotice.objects.all(), now)


# --- the emails ---------------------------------------------------------------------------------


def ack_token(notice: StaffNotice) -> str:
    return signing.TimestampSigner(salt=ACK_SALT).sign_object([notice.pk, notice.email])


def read_ack_token(token: str) -> StaffNotice | None:
    """The page a token belongs to, or None for a forged, mangled or expired token."""
    try:
        notice_id, email = signing.TimestampSigner(salt=ACK_SALT).unsign_object(
            token, max_age=ACK_LINK_MAX_AGE.total_seconds()
        )
    except (signing.BadSignature, ValueError, TypeError):
        return None
    return (
        StaffNotice.objects.filter(pk=notice_id, email=email, kind=NoticeKind.PAGE)
        .select_related("incident", "incident__severity", "used_by", "step")
        .first()
    )


def build_email(notice: StaffNotice) -> EmailMultiAlternatives:
    from incidents.emails import StatusEmail, epoch, site_domain

    incident = notice.incident
    base = settings.SITE_URL
    context = {
        "notice": notice,
        "incident": incident,
        "step": notice.step,
        "incident_url": base + reverse("incidents:detail", args=[incident.pk]),
        "ack_url": base + reverse("incidents:ack_link", args=[ack_token(notice)])
        if notice.kind == NoticeKind.PAGE
        else "",
        "unacknowledged": _minutes(timezone.now() - incident.declared_at),
        # A step copied by a later severity change is no news of a declaration.
        "just_declared": timezone.now() - incident.declared_at < timedelta(minutes=1)
        and (notice.step is None or notice.step.created_at <= incident.declared_at),
        "clock_event": notice.clock_event,
        "reason": notice.reason,
        "due_at": _update_due_at(notice),
    }
    name = "page" if notice.kind == NoticeKind.PAGE else "nudge"
    subject = " ".join(render_to_string(f"emails/staff-{name}-subject.txt", context).split())
    body = render_to_string(f"emails/staff-{name}-body.txt", context)
    domain = site_domain()
    # 998-character lines (not 78): the links stay whole, in headers and in a body printed to the console.
    return StatusEmail(
        subject=subject,
        body=body,
        to=[notice.email],
        headers={
            # The same Message-ID if a crash makes us send it again; staff mail threads per incident.
            # The times keep ids unique after a database reset (see emails.epoch).
            "Message-ID": f"<staff-notice.{notice.pk}.{epoch(notice.created_at)}@{domain}>",
            "References": f"<staff-incident.{incident.pk}.{epoch(incident.declared_at)}@{domain}>",
            "Auto-Submitted": "auto-generated",
            "X-Priority": "1" if notice.kind == NoticeKind.PAGE else "3",
        },
    )


def _update_due_at(notice: StaffNotice) -> datetime | None:
    if notice.clock_event is None:
        return None
    clock = notice.clock_event.clock
    from incidents import clocks

    return clocks.due_at(clock)


# --- what staff see -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PageTarget:
    """One person (or address) in a page step, and what became of their page, as the mail server answered.

    `state`: `not_fired` (the step has not fired yet), `unreachable` (no address or a deactivated
    account: it cannot page them), `skipped` (left out on purpose, or paging stopped before their page
    went out), `queued` (waiting for its first attempt, or being sent), `retrying` (the mail server
    refused or failed; `since` is when the failures began), `sent` (the server accepted it at `since`),
    `failed` (it gave up).
    """

    username: str
    state: str
    since: datetime | None = None
    error: str = ""


def page_targets(step: PageStep, notices: Iterable[StaffNotice], *, resolved: list[dict[str, Any]]) -> list[PageTarget]:
    """The step's people with their state: `resolved` is step.recipients once fired, or what
    resolve_recipients finds now for a step that has not (so someone unreachable shows before it fires)."""
    by_email = {notice.email: notice for notice in notices}
    found: list[PageTarget] = []
    for recipient in resolved:
        name = recipient.get("name") or recipient.get("email") or "a recipient"
        if recipient.get("problem"):
            found.append(PageTarget(name, "unreachable", step.fired_at, recipient["problem"]))
        elif step.fired_at is None and step.stopped_at is not None:
            found.append(PageTarget(name, "skipped", step.stopped_at, step.stop_reason))
        elif step.fired_at is None:
            found.append(PageTarget(name, "not_fired"))
        elif recipient.get("skipped"):
            found.append(PageTarget(name, "skipped", step.fired_at, recipient["skipped"]))
        else:
            notice = by_email.get(recipient.get("address", ""))
            if notice is None:
                found.append(PageTarget(name, "skipped", step.fired_at, SAME_ADDRESS))
            elif notice.status == NoticeStatus.SENT:
                found.append(PageTarget(name, "sent", notice.sent_at))
            elif notice.status == NoticeStatus.FAILED:
                found.append(PageTarget(name, "failed", notice.failing_since, notice.last_error))
            elif notice.status == NoticeStatus.CANCELLED:
                reason = "paging stopped before the mail server accepted it"
                found.append(PageTarget(name, "skipped", step.stopped_at, reason))
            elif notice.failing_since is not None:
                found.append(PageTarget(name, "retrying", notice.failing_since, notice.last_error))
            else:
                found.append(PageTarget(name, "queued", notice.created_at, notice.last_error))
    return found


@dataclass(frozen=True)
class PolicyCopy:
    """One severity's escalation as copied onto an incident: at the declaration (`change` ""), or when the
    severity was raised (its steps timed from then) or lowered (timed from the declaration, the steps
    already past skipped)."""

    severity_key: str
    severity_name: str
    copied_at: datetime
    change: str  # "", "raised" or "lowered"
    steps: list[PageStep]


@dataclass
class Escalation:
    """One incident's paging, as the dashboard and the incident page show it."""

    steps: list[PageStep] = field(default_factory=list)
    # The incident's declaration, where `policies` is read: a first copy made later came with a severity
    # change (the declared severity had no steps), not with the declaration.
    declared_at: datetime | None = None

    def _severity_before(self, copied_at: datetime, key: str) -> str | None:
        """The severity an incident had before the change that copied `key`'s steps at `copied_at`."""
        event = (
            TimelineEvent.objects.filter(
                incident_id=self.steps[0].incident_id,
                kind=EventKind.SEVERITY_CHANGED,
                created_at=copied_at,
                data__new=key,
            )
            .order_by("-id")
            .first()
        )
        old = event.data.get("old") if event is not None else None
        return old if isinstance(old, str) else None

    @cached_property
    def policies(self) -> list[PolicyCopy]:
        """The steps grouped by the policy copy they came from, oldest first: after a severity change the
        new severity's steps replace the old one's, and the panel says so. One query (the severities);
        one more when the first copy came with a severity change (its timeline event says from what)."""
        groups: dict[tuple[datetime, str], list[PageStep]] = {}
        for step in self.steps:
            groups.setdefault((step.created_at, step.severity_key), []).append(step)
        ordered = sorted(groups.items(), key=lambda item: (item[0][0], item[1][0].number))
        keys = {key for _, key in groups}
        before: str | None = None
        if ordered and self.declared_at is not None and ordered[0][0][0] != self.declared_at:
            before = self._severity_before(*ordered[0][0])
            keys |= {before} if before else set()
        severities = {s.key: s for s in Severity.objects.filter(key__in=keys)}
        found: list[PolicyCopy] = []
        previous: Severity | None = severities.get(before) if before else None
        for (copied_at, key), steps in ordered:
            severity = severities.get(key)
            change = ""
            if found or (self.declared_at is not None and copied_at != self.declared_at):
                lowered = severity is not None and previous is not None and severity.rank > previous.rank
                change = "lowered" if lowered else "raised"
            name = severity.name if severity else key.upper()
            found.append(PolicyCopy(key, name, copied_at, change, sorted(steps, key=lambda s: (s.due_at, s.number))))
            previous = severity
        return found

    @property
    def last_fired(self) -> PageStep | None:
        fired = [(step.fired_at, step.number, step) for step in self.steps if step.fired_at is not None]
        return max(fired, key=lambda row: (row[0], row[1]))[2] if fired else None

    @property
    def next_step(self) -> PageStep | None:
        pending = [step for step in self.steps if step.is_pending]
        return min(pending, key=lambda step: (step.due_at, step.number)) if pending else None

    @property
    def current(self) -> list[PageStep]:
        """The steps of the policy in force: the last copy (at the declaration, or the last severity change)."""
        if not self.steps:
            return []
        latest = max(step.created_at for step in self.steps)
        return [step for step in self.steps if step.created_at == latest]

    @property
    def stopped(self) -> PageStep | None:
        """The step whose stop ended the paging, or None while paging, or when every step in force fired.

        Only the policy in force counts: steps an earlier severity's policy left stopped do not make
        "every step has fired" read as "stopped".
        """
        if self.next_step is not None:
            return None
        stopped = [(step.stopped_at, step.number, step) for step in self.current if step.stopped_at is not None]
        if not stopped:
            return None
        last = max(stopped, key=lambda row: (row[0], row[1]))[2]
        assert last.stopped_at is not None
        if any(step.fired_at is not None and step.fired_at >= last.stopped_at for step in self.current):
            return None  # a step fired after that stop (one skipped as past when lowered): paging went on
        return last

    @property
    def is_paging(self) -> bool:
        return self.next_step is not None


@dataclass(frozen=True)
class Delivery:
    """What became of a fired step's pages, as the mail server answered: the summary the dashboard and
    the incident page give, so "Paged" is said only once the server has accepted a page.

    `state` is `waiting` while any page is queued or being retried, else `sent` when at least one was
    accepted (`failed` counts the others that gave up), `failed` when all gave up, `cancelled` when paging
    stopped before they went out, and `none` when the step had nobody it could page.
    """

    sent: int = 0
    waiting: int = 0
    failed: int = 0
    cancelled: int = 0
    sent_at: datetime | None = None  # when the last accepted page was accepted
    failing_since: datetime | None = None  # the oldest failure among pages still being retried
    last_error: str = ""

    @property
    def total(self) -> int:
        return self.sent + self.waiting + self.failed + self.cancelled

    @property
    def state(self) -> str:
        if self.waiting:
            return "waiting"
        if self.sent:
            return "sent"
        if self.failed:
            return "failed"
        return "cancelled" if self.cancelled else "none"


_WAITING = [NoticeStatus.PENDING, NoticeStatus.SENDING]


def _pages(**filters: Any) -> Any:
    return StaffNotice.objects.filter(step=OuterRef("pk"), kind=NoticeKind.PAGE, **filters).order_by()


def _count(pages: Any) -> Coalesce:
    return Coalesce(Subquery(pages.values("step").annotate(n=Count("pk")).values("n")[:1]), 0)


def escalations(incident_ids: Iterable[int]) -> dict[int, Escalation]:
    """The page steps of these incidents, each with its pages' `delivery`: one query."""
    steps = PageStep.objects.filter(incident_id__in=list(incident_ids)).annotate(
        pages_sent=_count(_pages(status=NoticeStatus.SENT)),
        pages_waiting=_count(_pages(status__in=_WAITING)),
        pages_failed=_count(_pages(status=NoticeStatus.FAILED)),
        pages_cancelled=_count(_pages(status=NoticeStatus.CANCELLED)),
        pages_sent_at=Subquery(_pages(status=NoticeStatus.SENT).order_by("-sent_at").values("sent_at")[:1]),
        pages_failing_since=Subquery(
            _pages(status__in=_WAITING, failing_since__isnull=False)
            .order_by("failing_since")
            .values("failing_since")[:1]
        ),
        pages_error=Subquery(
            _pages(status__in=[*_WAITING, NoticeStatus.FAILED])
            .exclude(last_error="")
            .order_by("-id")
            .values("last_error")[:1]
        ),
    )
    found: dict[int, Escalation] = {}
    for step in steps.order_by("due_at", "number"):
        step.delivery = Delivery(  # type: ignore[attr-defined]
            sent=step.pages_sent,
            waiting=step.pages_waiting,
            failed=step.pages_failed,
            cancelled=step.pages_cancelled,
            sent_at=step.pages_sent_at,
            failing_since=step.pages_failing_since,
            last_error=step.pages_error or "",
        )
        found.setdefault(step.incident_id, Escalation()).steps.append(step)
    return found
