"""Post-mortems: open on resolve, edit, review, publish, timeline entries and action items."""

from __future__ import annotations

import zoneinfo
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from decimal import Decimal
from html import unescape
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db import transaction
from django.utils import timezone
from django.utils.html import strip_tags

from incidents import clocks
from incidents.actions.errors import ActionRefused
from incidents.actions.locking import lock_incident
from incidents.actions.notify import notify_after_commit
from incidents.actions.timeline import Actor, acting_user, actor_name, format_moment, record_event
from incidents.actions.timing import aim_clock, format_duration, locked_clock, pause_clock, resume_clock, stop_clock
from incidents.models import (
    PUBLIC_BY_DEFAULT,
    ActionItem,
    ActionKind,
    ActionPriority,
    ActionStatus,
    Clock,
    ClockState,
    EventKind,
    Impact,
    Incident,
    Message,
    MessageKind,
    Metric,
    Postmortem,
    PostmortemEntry,
    PostmortemSection,
    PostmortemState,
    SectionKey,
    Severity,
)
from incidents.publishing import request_publish
from incidents.text import is_blank

# Timeline events worth a line in a post-mortem's timeline, and those starred to begin with.
_POSTMORTEM_EVENT_KINDS = {
    EventKind.DECLARED, EventKind.ACKNOWLEDGED, EventKind.SEVERITY_CHANGED, EventKind.COMMANDER_CHANGED,
    EventKind.COMPONENT_CHANGED, EventKind.SCOPE_CHANGED, EventKind.CLOCK_BREACHED, EventKind.RESOLVED,
    EventKind.REOPENED, EventKind.PAGED, EventKind.PAGING_STOPPED,
}  # fmt: skip
_STARRED_EVENT_KINDS = {EventKind.DECLARED, EventKind.ACKNOWLEDGED, EventKind.RESOLVED, EventKind.REOPENED}


def _require_staff(actor: Actor, what: str) -> Any:
    user = acting_user(actor)
    if user is None or not user.is_staff:
        raise ActionRefused(f"Only staff can {what}.", code="forbidden")
    return user


def _lock_postmortem(postmortem: Postmortem) -> Postmortem:
    """The incident's row first, then the post-mortem's: the order resolve and reopen take them (and then
    the post-mortem clock). Locking the post-mortem alone, an edit that moved the due date and a reopen
    pausing the clock waited on each other in a circle: PostgreSQL's deadlock error, answered as a 500."""
    lock_incident(Incident(pk=postmortem.incident_id))
    return Postmortem.objects.select_for_update(of=("self",)).select_related("incident").get(pk=postmortem.pk)


def customer_impact_text(incident: Incident) -> str:
    """The customer-impact section as the incident recorded it: share, regions, components, duration."""
    started = incident.impact_started_at or incident.declared_at
    ended = incident.resolved_at or timezone.now()
    who = (
        f"About {_plain_percent(incident.customer_impact_percent)}% of customers"
        if incident.customer_impact_percent is not None
        else "Customers"
    )
    where = f" in {', '.join(incident.regions)}" if incident.regions else ""
    components = ", ".join(sorted(c.display_name for c in incident.components.select_related("group")))
    lines = [
        f"{who}{where} were affected for {format_duration((ended - started).total_seconds())}, "
        f"from {started:%Y-%m-%d %H:%M} to {ended:%Y-%m-%d %H:%M} UTC.",
    ]
    if components:
        lines.append(f"Affected components: {components}.")
    if incident.impact != Impact.NONE:
        # "none" only says that no component status was set, which reads as a contradiction here.
        lines.append(f"Impact: {Impact(incident.impact).label.lower()}.")
    if incident.workaround:
        lines.append(f"Workaround offered: {incident.workaround}")
    return "\n\n".join(lines)


def _plain(html: str) -> str:
    return " ".join(unescape(strip_tags(html)).split())


def _plain_percent(value: Decimal) -> str:
    return f"{value.normalize():f}"


def _collect_timeline(postmortem: Postmortem) -> int:
    """Add the incident's events and public updates not yet in the post-mortem's timeline."""
    incident = postmortem.incident
    entries = [
        PostmortemEntry(
            postmortem=postmortem,
            at=event.created_at,
            text=event.message[:500],
            source=f"event:{event.pk}",
            is_starred=event.kind in _STARRED_EVENT_KINDS,
        )
        for event in incident.events.filter(kind__in=_POSTMORTEM_EVENT_KINDS)
    ]
    entries += [
        PostmortemEntry(
            postmortem=postmortem,
            at=update.created_at,
            # As customers read it (the Markdown rendered, then as plain text), not its source.
            text=f"Public update ({update.get_status_display()}): {_plain(update.body_html)}"[:500],
            source=f"update:{update.pk}",
        )
        for update in incident.updates.filter(is_public=True)
    ]
    before = postmortem.entries.count()
    PostmortemEntry.objects.bulk_create(entries, ignore_conflicts=True)
    return postmortem.entries.count() - before


def open_postmortem(incident: Incident, *, actor: Actor, at: datetime) -> Postmortem:
    """A draft with every section, the customer impact filled in and the timeline collected."""
    target = incident.severity.postmortem_target
    postmortem = Postmortem.objects.create(
        incident=incident,
        owner=incident.commander or acting_user(actor),
        due_at=at + timedelta(seconds=target) if target else None,
        created_at=at,
        updated_at=at,
    )
    PostmortemSection.objects.bulk_create(
        PostmortemSection(
            postmortem=postmortem,
            key=key,
            position=position,
            is_public=key in PUBLIC_BY_DEFAULT,
            body=customer_impact_text(incident) if key == SectionKey.CUSTOMER_IMPACT else "",
        )
        for position, key in enumerate(SectionKey.values)
    )
    _collect_timeline(postmortem)
    if target:
        clock = Clock.objects.filter(incident=incident, metric=Metric.POSTMORTEM).first() or Clock(
            incident=incident, metric=Metric.POSTMORTEM
        )
        clock.target_seconds = target
        clock.started_at = clock.running_since = at
        clock.elapsed_seconds = 0
        clock.stopped_at = clock.breached_at = None
        clock.thresholds_done = 0
        clock.state = ClockState.RUNNING
        clock.next_check_at = clocks.next_check_at(clock)
        clock.save()
    owner = postmortem.owner.get_username() if postmortem.owner else "nobody"
    due = f", due {format_moment(postmortem.due_at)}" if postmortem.due_at else ""
    record_event(
        incident,
        EventKind.POSTMORTEM_STARTED,
        f"Post-mortem draft opened, owned by {owner}{due}",
        actor=actor,
        at=at,
        postmortem_id=postmortem.pk,
    )
    return postmortem


def pause_postmortem(incident: Incident, at: datetime) -> dict[str, Any]:
    """On reopen, before the resolve is undone: an unpublished post-mortem's clock waits for the final
    resolve. Returns what the reopen event records: whether the clock paused, and the customer-impact
    text if it is still the one filled in from the incident (the next resolve writes it again)."""
    postmortem = Postmortem.objects.filter(incident=incident).first()
    if postmortem is None or postmortem.is_published:
        return {}
    recorded: dict[str, Any] = {}
    if pause_clock(locked_clock(incident, Metric.POSTMORTEM), at):
        recorded["postmortem_clock_paused"] = True
    section = postmortem.sections.filter(key=SectionKey.CUSTOMER_IMPACT).first()
    # Nobody has written in it: it is the text filled in from the incident, whatever the impact scope
    # says now (changed while resolved, it no longer matches the text, which is still nobody's).
    if section is not None and not _customer_impact_edited(incident):
        recorded["customer_impact_prefilled"] = section.body
    return recorded


CUSTOMER_IMPACT_EDITED = "customer_impact_edited"


def _customer_impact_edited(incident: Incident) -> bool:
    """Whether a person has edited the post-mortem's customer-impact section. Events recorded before the
    flag existed say so in their text: "alice edited the post-mortem: Summary, Customer impact"."""
    label = str(SectionKey.CUSTOMER_IMPACT.label)
    for data, message in incident.events.filter(kind=EventKind.POSTMORTEM_EDITED).values_list("data", "message"):
        if isinstance(data, dict) and CUSTOMER_IMPACT_EDITED in data:
            if data[CUSTOMER_IMPACT_EDITED]:
                return True
            continue
        _, said, edits = message.partition(" edited the post-mortem: ")
        if said and label in edits.split(", "):
            return True  # recorded before the flag: its text may have changed
    return False


def resume_postmortem(incident: Incident, at: datetime) -> str:
    """On the resolve after a reopen: the paused post-mortem clock runs again, its due date moved on by the
    pause, and a customer-impact section nobody edited is written again for the final duration. Returns
    what the resolve event adds."""
    postmortem = Postmortem.objects.filter(incident=incident).first()
    if postmortem is None or postmortem.is_published:
        return ""
    reopened = incident.events.filter(kind=EventKind.REOPENED).order_by("-created_at", "-id").first()
    prefilled = reopened.data.get("customer_impact_prefilled") if reopened is not None else None
    if prefilled is not None:
        postmortem.sections.filter(key=SectionKey.CUSTOMER_IMPACT, body=prefilled).update(
            body=customer_impact_text(incident)
        )
    clock = locked_clock(incident, Metric.POSTMORTEM)
    if clock is None or clock.state != ClockState.PAUSED or clock.stopped_at is None:
        return ""
    paused_for = at - clock.stopped_at
    resume_clock(clock, at)
    if postmortem.due_at is None:
        return "; the post-mortem clock runs again"
    # A due date someone chose while the incident was reopened is kept as chosen: they knew of the pause.
    chosen_in_pause = reopened is not None and _due_date_chosen(incident, after_id=reopened.pk)
    if not chosen_in_pause:
        postmortem.due_at += paused_for
        postmortem.save(update_fields=["due_at"])
    aim_clock(clock, postmortem.due_at, at)  # it already falls due there; this keeps the two from drifting
    return f"; the post-mortem clock runs again, due {format_moment(postmortem.due_at)}"


def _due_date_chosen(incident: Incident, after_id: int = 0) -> bool:
    """Whether a person set the post-mortem's due date (after the event `after_id`)."""
    return incident.events.filter(kind=EventKind.POSTMORTEM_EDITED, pk__gt=after_id, data__has_key="due_at").exists()


def retarget_postmortem(incident: Incident, previous: Severity, at: datetime) -> str:
    """On a severity change after the resolve (or while reopened): an unpublished post-mortem is due by
    the new severity's target, counted as before (from when it opened, plus any pause), unless a person
    chose its due date. A resolved incident without a post-mortem, whose new severity requires one, gets
    one now, as its resolve would have opened. Returns what the severity-change event adds."""
    severity = incident.severity
    postmortem = Postmortem.objects.filter(incident=incident).first()
    if postmortem is None:
        if incident.is_resolved and severity.postmortem_required:
            opened = open_postmortem(incident, actor=None, at=at)
            return f"; {severity.name} requires a post-mortem: a draft is open" + (
                f", due {format_moment(opened.due_at)}" if opened.due_at else ""
            )
        return ""
    new, old = severity.postmortem_target, previous.postmortem_target
    if postmortem.is_published or new == old:
        return ""
    if _due_date_chosen(incident):
        return "; the post-mortem keeps the due date chosen for it"
    if not new:
        return f"; {severity.name} sets no post-mortem target: the post-mortem keeps its due date"
    clock = locked_clock(incident, Metric.POSTMORTEM)
    if clock is None or postmortem.due_at is None or not old:
        # Opened under a severity without a target: due the new target after it opened.
        due = postmortem.created_at + timedelta(seconds=new)
    else:
        due = postmortem.due_at + timedelta(seconds=new - old)
    if clock is None:
        running = incident.is_resolved
        clock = Clock.objects.create(
            incident=incident,
            metric=Metric.POSTMORTEM,
            target_seconds=1,  # aimed below
            started_at=postmortem.created_at,
            elapsed_seconds=0,
            running_since=postmortem.created_at if running else None,
            stopped_at=None if running else at,
            state=ClockState.RUNNING if running else ClockState.PAUSED,
        )
    postmortem.due_at = due
    postmortem.save(update_fields=["due_at"])
    aim_clock(clock, due, at)  # a warning or breach the new target has already passed is recorded now
    return f"; the post-mortem is now due {format_moment(due)} ({severity.name}: {format_duration(new)})"


def _set_due_date(postmortem: Postmortem, due_at: datetime, at: datetime) -> None:
    """The due date is the post-mortem's one deadline: its clock (which the sweep fires, and breaches are
    recorded against) is aimed at it, and started (paused while the incident is reopened) if there was
    none because the severity sets no target."""
    incident = postmortem.incident
    if postmortem.is_published:
        raise ActionRefused("This post-mortem is published: its due date is history now.", field="due_at")
    if due_at < incident.declared_at:
        raise ActionRefused(
            f"The due date is before the incident was declared ({format_moment(incident.declared_at)}).",
            field="due_at",
            code="before_declared",
        )
    if due_at < at:
        raise ActionRefused(
            f"The due date is in the past ({format_moment(due_at)}); choose a time after now.",
            field="due_at",
            code="in_the_past",
        )
    postmortem.due_at = due_at
    clock = locked_clock(incident, Metric.POSTMORTEM)
    if clock is None:
        running = incident.is_resolved
        clock = Clock.objects.create(
            incident=incident,
            metric=Metric.POSTMORTEM,
            target_seconds=1,  # aimed below
            started_at=at,
            running_since=at if running else None,
            stopped_at=None if running else at,
            state=ClockState.RUNNING if running else ClockState.PAUSED,
        )
    aim_clock(clock, due_at, at)


def start_postmortem(incident: Incident, *, actor: Actor, at: datetime | None = None) -> Postmortem:
    """Open a post-mortem by hand (resolving a severity that requires one opens it by itself)."""
    _require_staff(actor, "start a post-mortem")
    with transaction.atomic():
        incident = lock_incident(incident)
        at = at or timezone.now()  # after the lock, so time order is commit order
        if Postmortem.objects.filter(incident=incident).exists():
            raise ActionRefused("This incident already has a post-mortem.", code="exists")
        if not incident.is_resolved:
            raise ActionRefused("Resolve the incident before starting its post-mortem.", code="not_resolved")
        return open_postmortem(incident, actor=actor, at=at)


def edit_postmortem(
    postmortem: Postmortem,
    *,
    actor: Actor,
    sections: Mapping[str, tuple[str, bool]] | None = None,
    owner: Any = None,
    due_at: datetime | None = None,
    at: datetime | None = None,
) -> Postmortem:
    """Change sections ({key: (markdown, is_public)}), the owner or the due date (after now and the
    declaration; the post-mortem clock follows it). A published post-mortem can be corrected: the public
    page follows."""
    _require_staff(actor, "edit a post-mortem")
    with transaction.atomic():
        postmortem = _lock_postmortem(postmortem)
        at = at or timezone.now()  # after the lock, so time order is commit order
        changed: list[str] = []
        recorded: dict[str, Any] = {}
        for key, (body, is_public) in (sections or {}).items():
            if key not in SectionKey.values:
                raise ActionRefused(f"There is no section {key!r}.", field=key)
            section = postmortem.sections.select_for_update().get(key=key)
            # Only spaces, or characters that draw nothing (a zero-width space, a Hangul filler): empty,
            # so "write the summary" still applies, and nothing blank is published.
            body = "" if is_blank(body) else body.strip()
            if (section.body, section.is_public) != (body, is_public):
                if key == SectionKey.CUSTOMER_IMPACT:  # its text changed, or only whether it is public
                    recorded[CUSTOMER_IMPACT_EDITED] = section.body != body
                section.body, section.is_public = body, is_public
                section.save(update_fields=["body", "is_public"])
                changed.append(section.get_key_display())
        fields = ["updated_at"]
        if owner is not None and owner != postmortem.owner:
            if not owner.is_active or not owner.is_staff:
                raise ActionRefused("The owner must be an active staff member.", field="owner")
            postmortem.owner = owner
            fields.append("owner")
            changed.append(f"owner → {owner.get_username()}")
        if due_at is not None and due_at != postmortem.due_at:
            _set_due_date(postmortem, due_at, at)
            fields.append("due_at")
            changed.append(f"due {format_moment(due_at)}")
            recorded["due_at"] = due_at.isoformat()  # resume_postmortem keeps one set while reopened
        if not changed:
            return postmortem
        postmortem.updated_at = at
        postmortem.save(update_fields=fields)
        if postmortem.is_published:
            request_publish()
        record_event(
            postmortem.incident,
            EventKind.POSTMORTEM_EDITED,
            f"{actor_name(actor)} edited the post-mortem: {', '.join(changed)}",
            actor=actor,
            at=at,
            postmortem_id=postmortem.pk,
            **recorded,
        )
        return postmortem


def refresh_postmortem_timeline(postmortem: Postmortem, *, actor: Actor, at: datetime | None = None) -> int:
    """Bring in the incident's events and public updates added since the draft was opened."""
    _require_staff(actor, "edit a post-mortem")
    with transaction.atomic():
        postmortem = _lock_postmortem(postmortem)
        return _collect_timeline(postmortem)


def add_postmortem_entry(
    postmortem: Postmortem, *, actor: Actor, at: datetime, text: str, is_public: bool = False
) -> PostmortemEntry:
    """A line written by hand (a moment the incident's events do not show: "12:02 switch replaced")."""
    _require_staff(actor, "edit a post-mortem")
    text = text.strip()
    if not text:
        raise ActionRefused("Say what happened at that time.", field="text")
    if at > timezone.now() + timedelta(minutes=1):
        # A timeline says what happened; a line dated ahead would sort after everything yet to come. A
        # minute's grace: the form is to the minute, and a client's clock may run a little ahead.
        raise ActionRefused(
            f"That time ({format_moment(at)}) is in the future; a timeline line says what has happened.",
            field="at",
            code="in_the_future",
        )
    with transaction.atomic():
        postmortem = _lock_postmortem(postmortem)
        entry = PostmortemEntry.objects.create(
            postmortem=postmortem, at=at, text=text[:500], is_public=is_public, is_starred=True
        )
        if postmortem.is_published and is_public:
            request_publish()
        return entry


def mark_postmortem_entry(
    entry: PostmortemEntry,
    *,
    actor: Actor,
    is_starred: bool | None = None,
    is_hidden: bool | None = None,
    is_public: bool | None = None,
) -> PostmortemEntry:
    """Star, hide or make public one line of the timeline."""
    _require_staff(actor, "edit a post-mortem")
    with transaction.atomic():
        postmortem = _lock_postmortem(entry.postmortem)
        entry = postmortem.entries.get(pk=entry.pk)
        for name, value in (("is_starred", is_starred), ("is_hidden", is_hidden), ("is_public", is_public)):
            if value is not None:
                setattr(entry, name, value)
        entry.save(update_fields=["is_starred", "is_hidden", "is_public"])
        if postmortem.is_published:
            request_publish()
        return entry


def _check_action_item(title: str, owner: Any, link: str) -> tuple[str, str]:
    title = title.strip()
    if not title:
        raise ActionRefused("An action item needs a title.", field="title")
    if owner is not None and (not owner.is_active or not owner.is_staff):
        raise ActionRefused("The owner must be an active staff member.", field="owner")
    link = link.strip()
    if link:
        try:
            URLValidator(schemes=["http", "https"])(link)
        except ValidationError:
            raise ActionRefused("The link must be an http or https URL.", field="link") from None
    return title, link


def _check_due_date(due_date: date | None, at: datetime) -> None:
    """A new due date is today or later, in the zone every staff page shows dates in. (Only a date being
    set is checked: an item that has become overdue keeps its date through other changes.)"""
    today = timezone.localdate(at, zoneinfo.ZoneInfo(settings.DISPLAY_TIME_ZONE))
    if due_date is not None and due_date < today:
        raise ActionRefused(
            f"The due date ({due_date:%d %b %Y}) is in the past; choose today ({today:%d %b %Y}) or later.",
            field="due_date",
            code="in_the_past",
        )


def add_action_item(
    postmortem: Postmortem,
    *,
    actor: Actor,
    title: str,
    kind: str = ActionKind.PREVENT,
    priority: str = ActionPriority.P2,
    owner: Any = None,
    due_date: date | None = None,
    link: str = "",
    at: datetime | None = None,
) -> ActionItem:
    _require_staff(actor, "add action items")
    title, link = _check_action_item(title, owner, link)
    if kind not in ActionKind.values:
        raise ActionRefused("Choose detect, mitigate, prevent or process.", field="kind")
    if priority not in ActionPriority.values:
        raise ActionRefused("Choose P1, P2 or P3.", field="priority")
    with transaction.atomic():
        postmortem = _lock_postmortem(postmortem)
        at = at or timezone.now()  # after the lock, so time order is commit order
        _check_due_date(due_date, at)
        item = ActionItem.objects.create(
            postmortem=postmortem,
            title=title,
            kind=kind,
            priority=priority,
            owner=owner,
            due_date=due_date,
            link=link,
            created_at=at,
        )
        record_event(
            postmortem.incident,
            EventKind.POSTMORTEM_EDITED,
            f"{actor_name(actor)} added action item “{title}” ({ActionKind(kind).label.lower()}, "
            f"{priority.upper()}{', owner ' + owner.get_username() if owner else ''})",
            actor=actor,
            at=at,
            action_item_id=item.pk,
        )
        return item


def set_action_item_status(item: ActionItem, *, actor: Actor, status: str, at: datetime | None = None) -> ActionItem:
    _require_staff(actor, "update action items")
    if status not in ActionStatus.values:
        raise ActionRefused("Choose open, in progress, done or won't do.", field="status")
    with transaction.atomic():
        lock_incident(Incident(pk=item.postmortem.incident_id))  # the incident first, as everywhere
        item = ActionItem.objects.select_for_update().select_related("postmortem__incident").get(pk=item.pk)
        at = at or timezone.now()  # after the lock, so time order is commit order
        if item.status == status:
            return item
        previous = item.get_status_display()
        item.status = status
        item.closed_at = None if item.is_open else at
        item.save(update_fields=["status", "closed_at"])
        record_event(
            item.postmortem.incident,
            EventKind.POSTMORTEM_EDITED,
            f"{actor_name(actor)} moved action item “{item.title}” from {previous} to {item.get_status_display()}",
            actor=actor,
            at=at,
            action_item_id=item.pk,
        )
        return item


def submit_postmortem(postmortem: Postmortem, *, actor: Actor, at: datetime | None = None) -> Postmortem:
    """Draft → in review: the summary and the root cause must be written."""
    _require_staff(actor, "send a post-mortem for review")
    with transaction.atomic():
        postmortem = _lock_postmortem(postmortem)
        at = at or timezone.now()  # after the lock, so time order is commit order
        if postmortem.state != PostmortemState.DRAFT:
            raise ActionRefused(
                f"Only a draft can be sent for review; this one is {postmortem.get_state_display().lower()}.",
                code="not_draft",
            )
        missing = [
            s.get_key_display().lower()
            for s in postmortem.sections.filter(key__in=[SectionKey.SUMMARY, SectionKey.ROOT_CAUSE])
            if not s.body.strip()
        ]
        if missing:
            raise ActionRefused(f"Write the {' and the '.join(missing)} before sending it for review.", code="missing")
        postmortem.state = PostmortemState.IN_REVIEW
        postmortem.submitted_at = at
        postmortem.updated_at = at
        postmortem.save(update_fields=["state", "submitted_at", "updated_at"])
        record_event(
            postmortem.incident,
            EventKind.POSTMORTEM_REVIEW,
            f"{actor_name(actor)} sent the post-mortem for review",
            actor=actor,
            at=at,
            postmortem_id=postmortem.pk,
        )
        return postmortem


def return_postmortem_to_draft(
    postmortem: Postmortem, *, actor: Actor, reason: str, at: datetime | None = None
) -> Postmortem:
    """In review → draft, with what the reviewer wants changed."""
    _require_staff(actor, "review a post-mortem")
    reason = reason.strip()
    if not reason:
        raise ActionRefused("Say what should change.", field="reason")
    with transaction.atomic():
        postmortem = _lock_postmortem(postmortem)
        at = at or timezone.now()  # after the lock, so time order is commit order
        if postmortem.state != PostmortemState.IN_REVIEW:
            raise ActionRefused("Only a post-mortem in review can go back to draft.", code="not_in_review")
        postmortem.state = PostmortemState.DRAFT
        postmortem.updated_at = at
        postmortem.save(update_fields=["state", "updated_at"])
        record_event(
            postmortem.incident,
            EventKind.POSTMORTEM_EDITED,
            f"{actor_name(actor)} sent the post-mortem back to draft: {reason}",
            actor=actor,
            at=at,
            postmortem_id=postmortem.pk,
            reason=reason,
        )
        return postmortem


def publish_postmortem(postmortem: Postmortem, *, actor: Actor, at: datetime | None = None) -> Postmortem:
    """In review → published: its public sections go on the incident's public page and into the v2
    API (status "postmortem"), and subscribers who chose post-mortems are emailed, once. For an
    incident that was never public it is completed for staff only: nothing is shown or sent."""
    _require_staff(actor, "publish a post-mortem")
    with transaction.atomic():
        postmortem = _lock_postmortem(postmortem)
        incident = lock_incident(postmortem.incident)
        at = at or timezone.now()  # after the lock, so time order is commit order
        if postmortem.state == PostmortemState.PUBLISHED:
            raise ActionRefused("This post-mortem is already published.", code="already_published")
        if postmortem.state != PostmortemState.IN_REVIEW:
            raise ActionRefused("Send the post-mortem for review before publishing it.", code="not_in_review")
        internal = incident.published_at is None
        if not internal and not postmortem.sections.filter(is_public=True).exclude(body="").exists():
            raise ActionRefused("Mark at least one written section public before publishing.", code="nothing_public")
        postmortem.state = PostmortemState.PUBLISHED
        postmortem.published_at = at
        postmortem.updated_at = at
        postmortem.save(update_fields=["state", "published_at", "updated_at"])
        stop_clock(locked_clock(incident, Metric.POSTMORTEM), at)
        if internal:
            # Never public: nothing to show customers or send them. It is finished, for staff only.
            record_event(
                incident,
                EventKind.POSTMORTEM_PUBLISHED,
                f"{actor_name(actor)} completed the post-mortem (staff only: the incident was never public)",
                actor=actor,
                at=at,
                postmortem_id=postmortem.pk,
            )
            return postmortem
        request_publish()
        message = Message.objects.create(
            kind=MessageKind.POSTMORTEM,
            key=f"postmortem:{postmortem.pk}",
            incident=incident,
            postmortem=postmortem,
            impact=incident.impact,
            component_ids=sorted(c.pk for c in incident.components.all()),
            created_at=at,
        )
        notify_after_commit(message)
        record_event(
            incident,
            EventKind.POSTMORTEM_PUBLISHED,
            f"{actor_name(actor)} published the post-mortem",
            actor=actor,
            at=at,
            postmortem_id=postmortem.pk,
        )
        return postmortem
