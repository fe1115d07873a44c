"""Incidents: declare, acknowledge, update, change severity, assign, resolve, reopen."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from incidents import escalation
from incidents.actions.errors import ActionRefused
from incidents.actions.impact import ComponentChange, apply_component_changes, derived_impact, refresh_impact
from incidents.actions.locking import lock_incident
from incidents.actions.postmortems import open_postmortem, pause_postmortem, resume_postmortem, retarget_postmortem
from incidents.actions.subscriptions import message_for_update
from incidents.actions.timeline import Actor, acting_user, actor_name, record_event
from incidents.actions.timing import (
    advance_status,
    copy_targets,
    format_duration,
    locked_clock,
    record_clock_thresholds,
    restart_cadence,
    resume_clock,
    retarget_clocks,
    stamp_acknowledged,
    start_clocks,
    stop_clock,
)
from incidents.actions.validation import check_component_status, clean_percent, clean_regions
from incidents.markup import render_markdown
from incidents.models import (
    Clock,
    ClockState,
    Component,
    ComponentStatus,
    EventKind,
    IdempotencyKey,
    Impact,
    Incident,
    IncidentStatus,
    IncidentUpdate,
    Metric,
    PageStep,
    Postmortem,
    PublicStatus,
    Severity,
)
from incidents.publishing import request_publish

# As long as Stripe keeps its keys: a retry comes within minutes, the same alert tomorrow is news.
IDEMPOTENCY_KEY_LIFETIME = timedelta(hours=24)


def declare_incident(
    *,
    actor: Actor,
    title: str,
    severity: Severity,
    message: str = "",
    message_is_public: bool = True,
    public_status: str = PublicStatus.INVESTIGATING,
    components: Mapping[Component, str] | None = None,
    customer_impact_percent: Decimal | float | str | None = None,
    regions: Iterable[str] | str | None = None,
    workaround: str = "",
    impact_override: str = "",
    commander: Any = None,
    idempotency_key: str | None = None,
    at: datetime | None = None,
) -> Incident:
    """Declare an incident, start its clocks, set component statuses and post the first message.

    With an idempotency key this user has used in the past IDEMPOTENCY_KEY_LIFETIME, declare nothing
    and return that incident, marked `replayed`; an older use of the key is forgotten.
    """
    at = at or timezone.now()
    title = title.strip()
    if not title:
        raise ActionRefused("A title is required.", field="title")
    if public_status == PublicStatus.RESOLVED:
        raise ActionRefused("A new incident cannot start resolved.", field="public_status")
    if public_status not in PublicStatus.values:
        raise ActionRefused(f"Unknown status {public_status!r}.", field="public_status")
    if impact_override and impact_override not in Impact.values:
        raise ActionRefused(f"Unknown impact {impact_override!r}.", field="impact_override")
    percent = clean_percent(customer_impact_percent)
    user = acting_user(actor)
    try:
        return _declare(
            actor=actor,
            user=user,
            title=title,
            severity=severity,
            message=message,
            message_is_public=message_is_public,
            public_status=public_status,
            components=components,
            percent=percent,
            regions=regions,
            workaround=workaround,
            impact_override=impact_override,
            commander=commander,
            idempotency_key=idempotency_key,
            at=at,
        )
    except _KeyTakenMeanwhile:
        winner = IdempotencyKey.objects.select_related("incident").get(user=user, key=idempotency_key).incident
        winner.replayed = True
        return winner


class _KeyTakenMeanwhile(Exception):
    """A concurrent declaration with the same Idempotency-Key committed first."""


def _declare(
    *,
    actor: Actor,
    user: Any,
    title: str,
    severity: Severity,
    message: str,
    message_is_public: bool,
    public_status: str,
    components: Mapping[Component, str] | None,
    percent: Decimal | None,
    regions: Iterable[str] | str | None,
    workaround: str,
    impact_override: str,
    commander: Any,
    idempotency_key: str | None,
    at: datetime,
) -> Incident:
    with transaction.atomic():
        if idempotency_key and user is not None:
            previous = IdempotencyKey.objects.filter(user=user, key=idempotency_key).select_related("incident")
            if found := previous.first():
                if found.created_at > at - IDEMPOTENCY_KEY_LIFETIME:
                    found.incident.replayed = True
                    return found.incident
                # Expired: the key is free again, so a recurring alert that reuses it declares anew.
                found.delete()

        incident = Incident.objects.create(
            title=title[:200],
            severity=severity,
            public_status=PublicStatus.INVESTIGATING,
            customer_impact_percent=percent,
            regions=clean_regions(regions),
            workaround=workaround.strip(),
            impact_override=impact_override,
            commander=commander or user,
            declared_by=user,
            declared_at=at,
            updated_at=at,
        )
        if idempotency_key and user is not None:
            try:
                with transaction.atomic():
                    IdempotencyKey.objects.create(user=user, key=idempotency_key, incident=incident, created_at=at)
            except IntegrityError:
                # Another request with the same key won the race: ours never happened. The winner is read
                # after this block is rolled back (no query may run in a block that is to be rolled back).
                raise _KeyTakenMeanwhile from None

        start_clocks(incident, severity, at)
        copy_targets(incident)
        escalation.copy_policy(incident, severity, at)
        changes = [ComponentChange(c, s) for c, s in (components or {}).items()]
        for change in changes:
            check_component_status(change.status, field="components")
        if changes:
            incident.components.set([change.component for change in changes])
        refresh_impact(incident, [change.status for change in changes])
        incident.save(update_fields=["impact", "impact_override"])
        record_event(
            incident,
            EventKind.DECLARED,
            f"{actor_name(actor)} declared {severity.name}: {incident.title}",
            actor=actor,
            at=at,
            severity=severity.key,
            components=[{"component_id": c.component.pk, "status": c.status} for c in changes],
        )
        if message.strip():
            # The first message carries the component changes, as every later update does.
            _post_update_locked(
                incident,
                actor=actor,
                body=message,
                public_status=public_status,
                is_public=message_is_public,
                component_changes=changes,
                at=at,
            )
        elif apply_component_changes(incident, changes, actor=actor, at=at):
            request_publish()
        return incident


def acknowledge_incident(incident: Incident, *, actor: Actor, at: datetime | None = None) -> Incident:
    if acting_user(actor) is None:
        raise ActionRefused("Only a person can acknowledge an incident.")
    with transaction.atomic():
        incident = lock_incident(incident)
        at = at or timezone.now()  # after the lock, so time order is commit order
        if incident.is_resolved:
            raise ActionRefused("This incident is already resolved; reopen it first.")
        if incident.acknowledged_at is not None:
            who = incident.acknowledged_by.get_username() if incident.acknowledged_by else "someone"
            raise ActionRefused(f"Already acknowledged by {who}.", code="already_acknowledged")
        stamp_acknowledged(incident, actor, at)
        if incident.status == IncidentStatus.DECLARED:
            incident.status = IncidentStatus.ACKNOWLEDGED
        incident.updated_at = at
        incident.save(update_fields=["acknowledged_at", "acknowledged_by", "status", "updated_at"])
        elapsed = (at - incident.declared_at).total_seconds()
        record_event(
            incident,
            EventKind.ACKNOWLEDGED,
            f"{actor_name(actor)} acknowledged after {format_duration(round(elapsed))}",
            actor=actor,
            at=at,
            elapsed_seconds=elapsed,
        )
        return incident


def post_update(
    incident: Incident,
    *,
    actor: Actor,
    body: str,
    public_status: str | None = None,
    is_public: bool = True,
    components: Mapping[Component, str] | None = None,
    at: datetime | None = None,
) -> IncidentUpdate:
    """Post an update; a public one restarts the cadence clock and may move the public status."""
    with transaction.atomic():
        incident = lock_incident(incident)
        at = at or timezone.now()  # after the lock, so time order is commit order
        if incident.is_resolved:
            raise ActionRefused("This incident is resolved; reopen it before posting an update.")
        status = public_status or incident.public_status
        if status not in PublicStatus.values:
            raise ActionRefused(f"Unknown status {status!r}.", field="status")
        if status == PublicStatus.RESOLVED:
            raise ActionRefused("Use Resolve to resolve an incident.", field="status")
        changes = [ComponentChange(c, s) for c, s in (components or {}).items()]
        return _post_update_locked(
            incident,
            actor=actor,
            body=body,
            public_status=status,
            is_public=is_public,
            component_changes=changes,
            at=at,
        )


def _post_update_locked(
    incident: Incident,
    *,
    actor: Actor,
    body: str,
    public_status: str,
    is_public: bool,
    component_changes: list[ComponentChange],
    at: datetime,
) -> IncidentUpdate:
    body = body.strip()
    if not body:
        raise ActionRefused("An update needs a message.", field="body")
    applied = apply_component_changes(incident, component_changes, actor=actor, at=at)
    if component_changes:
        incident.components.add(*[change.component for change in component_changes])
    previous_status = incident.public_status
    fields = {"public_status", "status", "impact", "updated_at"}
    if is_public:
        incident.public_status = public_status
    stamped = advance_status(incident, public_status, actor, at)
    fields.update(stamped)
    if "acknowledged_at" in stamped:
        fields.add("acknowledged_by")
    if is_public:
        if incident.published_at is None:
            incident.published_at = at
            fields.add("published_at")
            stop_clock(locked_clock(incident, Metric.FIRST_UPDATE), at)
        if public_status != PublicStatus.RESOLVED:
            restart_cadence(incident, incident.severity, at)
    refresh_impact(incident, [c["new_status"] for c in applied])
    incident.updated_at = at
    incident.save(update_fields=sorted(fields))
    if is_public or applied:
        request_publish()
    update = IncidentUpdate.objects.create(
        incident=incident,
        # The status it was written with, internal or not: an internal closing note is "Resolved" (it was
        # labelled with the public status it left unchanged, "Investigating"), and the milestones moved.
        status=public_status,
        body=body,
        body_html=render_markdown(body),
        is_public=is_public,
        component_changes=applied,
        author=acting_user(actor),
        created_at=at,
    )
    if is_public:
        message_for_update(incident, update, sorted({c.pk for c in incident.components.all()}))
    kind = "a public" if is_public else "an internal"
    status_note = f" ({previous_status} → {public_status})" if is_public and previous_status != public_status else ""
    record_event(
        incident,
        EventKind.UPDATE_POSTED,
        f"{actor_name(actor)} posted {kind} update{status_note}",
        actor=actor,
        at=at,
        update_id=update.pk,
        is_public=is_public,
        public_status=public_status,
        components=applied,
        milestones=stamped,
    )
    return update


def change_severity(incident: Incident, *, actor: Actor, severity: Severity, at: datetime | None = None) -> Incident:
    with transaction.atomic():
        incident = lock_incident(incident)
        at = at or timezone.now()  # after the lock, so time order is commit order
        if incident.severity_id == severity.pk:
            raise ActionRefused(f"The incident is already {severity.name}.", code="unchanged")
        previous = incident.severity
        incident.severity = severity
        incident.updated_at = at
        incident.save(update_fields=["severity", "updated_at"])
        retarget_clocks(incident, severity, at)
        copy_targets(incident)
        if incident.published_at is not None:
            request_publish()  # the public "next update by" follows the new cadence target
        postmortem_note = retarget_postmortem(incident, previous, at)
        record_event(
            incident,
            EventKind.SEVERITY_CHANGED,
            f"{actor_name(actor)} changed severity from {previous.name} to {severity.name}{postmortem_note}",
            actor=actor,
            at=at,
            old=previous.key,
            new=severity.key,
        )
        if incident.acknowledged_at is None and not incident.is_resolved:
            # Still unacknowledged: the new severity's escalation takes over. Raised, it starts now (it is
            # more urgent than what was paged so far); lowered, it keeps the time since the declaration
            # and skips the steps whose time has passed, so nobody is paged again as if it were new.
            lowered = severity.rank > previous.rank
            stopped_by_person = (
                not PageStep.objects.filter(incident=incident, fired_at__isnull=True, stopped_at__isnull=True).exists()
                and PageStep.objects.filter(incident=incident, stop_reason__startswith=STOPPED_BY).exists()
            )
            if lowered and stopped_by_person:
                # Someone stopped the paging (they are on it): a less urgent severity does not undo that.
                record_event(
                    incident,
                    EventKind.PAGING_STOPPED,
                    f"Paging stays stopped, as a person stopped it: {severity.name}'s escalation is not started",
                    actor=None,
                    at=at,
                    steps=0,
                )
                return incident
            stopped = escalation.stop_pending(incident, at, f"severity changed to {severity.name}")
            if lowered:
                steps = escalation.copy_policy(
                    incident,
                    severity,
                    incident.declared_at,
                    past_at=at,
                    past_reason=f"its time had passed when the severity was lowered to {severity.name}",
                )
            else:
                steps = escalation.copy_policy(incident, severity, at)
            to_come = [step for step in steps if step.is_pending]
            if stopped or steps:
                if to_come:
                    timing = "from now" if not lowered else "from the declaration, skipping steps already past"
                    text = f"Paging follows {severity.name}'s escalation {timing} ({len(to_come)} step(s) to come)"
                    if stopped_by_person:  # raised: more urgent than when the paging was stopped
                        text = (
                            f"Paging had been stopped by a person; raised to {severity.name}, it starts again: {text}"
                        )
                elif steps:
                    text = f"{severity.name}'s steps had all passed when the severity was lowered: paging stopped"
                else:
                    text = f"{severity.name} has no escalation steps: paging stopped"
                record_event(
                    incident,
                    EventKind.PAGED if to_come else EventKind.PAGING_STOPPED,
                    text,
                    actor=None,
                    at=at,
                    steps=len(to_come),
                )
        return incident


STOPPED_BY = "stopped by "  # the start of the stop reason of steps a person stopped


def stop_paging(incident: Incident, *, actor: Actor, reason: str, at: datetime | None = None) -> int:
    """Stop paging for an unacknowledged incident (someone is on it but cannot acknowledge yet, say).

    Returns how many steps were stopped. Audited with the reason; the acknowledge clock keeps running.
    """
    reason = reason.strip()
    if acting_user(actor) is None:
        raise ActionRefused("Only a person can stop paging.")
    if not reason:
        raise ActionRefused("Say why paging stops.", field="reason")
    with transaction.atomic():
        incident = lock_incident(incident)
        at = at or timezone.now()  # after the lock, so time order is commit order
        stopped = escalation.stop_pending(incident, at, f"{STOPPED_BY}{actor_name(actor)}: {reason}")
        if not stopped:
            raise ActionRefused("Nobody is waiting to be paged for this incident.", code="not_paging")
        record_event(
            incident,
            EventKind.PAGING_STOPPED,
            f"{actor_name(actor)} stopped paging ({stopped} step(s) left): {reason}",
            actor=actor,
            at=at,
            reason=reason,
            steps=stopped,
        )
        return stopped


def assign_commander(incident: Incident, *, actor: Actor, commander: Any, at: datetime | None = None) -> Incident:
    """Hand the incident to a commander (a staff user)."""
    if commander is None or not commander.is_active or not commander.is_staff:
        raise ActionRefused("The commander must be an active staff user.", field="commander")
    with transaction.atomic():
        incident = lock_incident(incident)
        at = at or timezone.now()  # after the lock, so time order is commit order
        if incident.commander_id == commander.pk:
            raise ActionRefused(
                f"{commander.get_username()} is already the commander.", field="commander", code="unchanged"
            )
        if not (commander.email or "").strip():
            # The commander's nudges (an update due, a clock breaching) go by email, as pages do.
            raise ActionRefused(
                f"{commander.get_username()} has no email address, so nudges to the commander could not reach "
                "them. Add one in /admin/ first, or choose someone else.",
                field="commander",
                code="no_email",
            )
        previous = incident.commander.get_username() if incident.commander else None
        incident.commander = commander
        incident.updated_at = at
        incident.save(update_fields=["commander", "updated_at"])
        record_event(
            incident,
            EventKind.COMMANDER_CHANGED,
            f"{actor_name(actor)} made {commander.get_username()} the incident commander",
            actor=actor,
            at=at,
            old=previous,
            new=commander.get_username(),
        )
        return incident


_UNSET: Any = object()


def update_impact_scope(
    incident: Incident,
    *,
    actor: Actor,
    customer_impact_percent: Any = _UNSET,
    regions: Any = _UNSET,
    workaround: Any = _UNSET,
    impact_override: Any = _UNSET,
    at: datetime | None = None,
) -> Incident:
    """Change who is affected. Only the arguments given change; the event records old and new."""
    with transaction.atomic():
        incident = lock_incident(incident)
        at = at or timezone.now()  # after the lock, so time order is commit order
        changed: dict[str, dict[str, Any]] = {}
        if customer_impact_percent is not _UNSET:
            percent = clean_percent(customer_impact_percent)
            if percent != incident.customer_impact_percent:
                old = incident.customer_impact_percent
                changed["customer_impact_percent"] = {
                    "old": None if old is None else str(old),
                    "new": None if percent is None else str(percent),
                }
                incident.customer_impact_percent = percent
        if regions is not _UNSET:
            cleaned = clean_regions(regions)
            if cleaned != incident.regions:
                changed["regions"] = {"old": incident.regions, "new": cleaned}
                incident.regions = cleaned
        if workaround is not _UNSET and (workaround or "").strip() != incident.workaround:
            changed["workaround"] = {"old": incident.workaround, "new": (workaround or "").strip()}
            incident.workaround = (workaround or "").strip()
        if impact_override is not _UNSET and (impact_override or "") != incident.impact_override:
            if impact_override and impact_override not in Impact.values:
                raise ActionRefused(f"Unknown impact {impact_override!r}.", field="impact_override")
            changed["impact_override"] = {"old": incident.impact_override, "new": impact_override or ""}
            incident.impact_override = impact_override or ""
            if incident.impact_override:
                incident.impact = incident.impact_override
            else:
                statuses = list(incident.components.values_list("status", flat=True))
                incident.impact = derived_impact(statuses)
        if not changed:
            raise ActionRefused("Nothing changed.", code="unchanged")
        incident.updated_at = at
        incident.save(
            update_fields=[
                "customer_impact_percent", "regions", "workaround", "impact_override", "impact", "updated_at"
            ]
        )  # fmt: skip
        if incident.published_at is not None:
            request_publish()
        record_event(
            incident,
            EventKind.SCOPE_CHANGED,
            f"{actor_name(actor)} changed the impact scope ({', '.join(changed)})",
            actor=actor,
            at=at,
            changes=changed,
        )
        return incident


RESOLVED_PUBLIC_MESSAGE = "This incident has been resolved."


def resolve_incident(
    incident: Incident,
    *,
    actor: Actor,
    message: str = "",
    is_public: bool = True,
    restore_components: bool = True,
    at: datetime | None = None,
) -> Incident:
    """Resolve: fill skipped milestones forward, stop every clock, restore components if asked.

    A published incident always gets a public "resolved" update (the message, or a default one when
    there is none or it is internal), so its page, its latest update and its subscribers agree."""
    with transaction.atomic():
        incident = lock_incident(incident)
        at = at or timezone.now()  # after the lock, so time order is commit order
        if incident.is_resolved:
            raise ActionRefused("This incident is already resolved.", code="already_resolved")
        restore = (
            [ComponentChange(c, ComponentStatus.OPERATIONAL) for c in incident.components.filter(is_group=False)]
            if restore_components
            else []
        )
        message = message.strip()
        posts = [(message, is_public)] if message else []
        if incident.published_at is not None and not (message and is_public):
            # Customers were told about it: without a public "Resolved" update the page would show the
            # incident's last update ("Investigating") and subscribers would never hear it is over.
            posts.append((RESOLVED_PUBLIC_MESSAGE, True))
        for body, public in posts:
            # The component changes go with the public update when there is one, so customers see them.
            carries_changes = public or not any(p for _, p in posts)
            _post_update_locked(
                incident,
                actor=actor,
                body=body,
                public_status=PublicStatus.RESOLVED,
                is_public=public,
                component_changes=restore if carries_changes else [],
                at=at,
            )
            if carries_changes:
                restore = []
        if not posts:
            advance_status(incident, PublicStatus.RESOLVED, actor, at)
        applied = apply_component_changes(incident, restore, actor=actor, at=at)
        # Skipped milestones fill forward, so every resolved incident has all of them.
        if incident.acknowledged_at is None:
            incident.acknowledged_at = at
            stop_clock(locked_clock(incident, Metric.ACKNOWLEDGE), at)
        escalation.stop_pending(incident, at, "the incident was resolved")
        incident.identified_at = incident.identified_at or at
        incident.mitigated_at = incident.mitigated_at or at
        incident.resolved_at = at
        incident.status = IncidentStatus.RESOLVED
        incident.public_status = PublicStatus.RESOLVED
        incident.updated_at = at
        incident.save(
            update_fields=[
                "acknowledged_at", "acknowledged_by", "identified_at", "mitigated_at", "resolved_at",
                "status", "public_status", "published_at", "impact", "updated_at",
            ]
        )  # fmt: skip
        stop_clock(locked_clock(incident, Metric.FIRST_UPDATE), at, satisfied=False)
        stop_clock(locked_clock(incident, Metric.UPDATE_CADENCE), at, satisfied=False)
        stop_clock(locked_clock(incident, Metric.RESOLVE), at)
        request_publish()
        duration = (at - incident.declared_at).total_seconds()
        opens_postmortem = (
            incident.severity.postmortem_required and not Postmortem.objects.filter(incident=incident).exists()
        )
        resumed = "" if opens_postmortem else resume_postmortem(incident, at)
        record_event(
            incident,
            EventKind.RESOLVED,
            f"{actor_name(actor)} resolved the incident after {format_duration(round(duration))}{resumed}",
            actor=actor,
            at=at,
            components=applied,
        )
        if opens_postmortem:
            open_postmortem(incident, actor=actor, at=at)
        return incident


REOPENED_PUBLIC_MESSAGE = "We are investigating this issue again."


def _resume_resolve_clock(incident: Incident, at: datetime, ran_before: timedelta | None) -> str:
    """Resume the resolve clock of a reopened incident against its severity's target now: the severity
    may have changed while it was resolved (a stopped clock keeps the target it ran against), and the
    reopened incident is measured against the severity it has. Returns what to add to the timeline line."""
    severity = incident.severity
    target = severity.resolve_target
    clock = locked_clock(incident, Metric.RESOLVE)
    if clock is None:
        if not target:
            return ""
        # Declared under a severity with no resolve target: the clock starts now, with the time the
        # incident was open before its resolve already used (the resolved time does not count).
        clock = Clock(
            incident=incident,
            metric=Metric.RESOLVE,
            target_seconds=target,
            started_at=incident.declared_at,
            elapsed_seconds=ran_before.total_seconds() if ran_before else 0,
            stopped_at=at,
            state=ClockState.STOPPED,
        )
        clock.save()
    elif clock.target_seconds == target:
        resume_clock(clock, at)
        return ""
    elif not target:
        return f"; {severity.name} sets no resolve target, so the resolve clock stays stopped"
    resume_clock(clock, at)
    clock.target_seconds = target
    clock.save(update_fields=["target_seconds"])
    record_clock_thresholds(clock, now=at, not_before=at)
    copy_targets(incident)
    return f"; the resolve clock now runs against {severity.name}'s {format_duration(target)} target"


def reopen_incident(
    incident: Incident,
    *,
    actor: Actor,
    reason: str,
    message: str = "",
    is_public: bool = True,
    at: datetime | None = None,
) -> Incident:
    """Reopen a resolved incident: back to investigating, the resolve clock resumes with the time it
    had already run, and an unpublished post-mortem's clock waits for the next resolve. A message is
    posted at once; a public incident always gets a public update (the message, or a default one when
    there is none or it is internal), so its page and its latest update agree."""
    reason = reason.strip()
    if not reason:
        raise ActionRefused("Say why the incident is reopened.", field="reason")
    with transaction.atomic():
        incident = lock_incident(incident)
        at = at or timezone.now()  # after the lock, so time order is commit order
        if not incident.is_resolved:
            raise ActionRefused("Only a resolved incident can be reopened.", code="not_resolved")
        paused = pause_postmortem(incident, at)  # reads the resolve about to be undone
        ran_before = incident.resolved_at - incident.declared_at if incident.resolved_at else None
        incident.status = IncidentStatus.ACKNOWLEDGED
        incident.public_status = PublicStatus.INVESTIGATING
        incident.resolved_at = None
        incident.reopened_count += 1
        incident.updated_at = at
        incident.save(update_fields=["status", "public_status", "resolved_at", "reopened_count", "updated_at"])
        note = _resume_resolve_clock(incident, at, ran_before)
        if paused.get("postmortem_clock_paused"):
            note += "; the post-mortem clock waits for the next resolve"
        record_event(
            incident,
            EventKind.REOPENED,
            f"{actor_name(actor)} reopened the incident: {reason}{note}",
            actor=actor,
            at=at,
            reason=reason,
            **paused,
        )
        message = message.strip()
        posts = [(message, is_public)] if message else []
        if incident.published_at is not None and not (message and is_public):
            # Customers were told it is resolved: the page must not show an active incident whose latest
            # update says so.
            posts.append((REOPENED_PUBLIC_MESSAGE, True))
        for body, public in posts:
            _post_update_locked(
                incident,
                actor=actor,
                body=body,
                public_status=PublicStatus.INVESTIGATING,
                is_public=public,
                component_changes=[],
                at=at,
            )
        return incident
