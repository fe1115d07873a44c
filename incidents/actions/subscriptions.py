"""Subscriptions: sign-up with double opt-in, confirmation, choices, unsubscribing, webhooks, and the
messages that updates become."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db import transaction
from django.utils import timezone

from incidents.actions.errors import ActionRefused
from incidents.actions.notify import notify_after_commit
from incidents.actions.timeline import Actor, acting_user
from incidents.addresses import signup_problem
from incidents.models import (
    Component,
    Delivery,
    DeliveryStatus,
    Impact,
    Incident,
    IncidentUpdate,
    Maintenance,
    MaintenanceStatus,
    MaintenanceUpdate,
    Message,
    MessageKind,
    Subscriber,
    SubscriberKind,
)
from incidents.netguard import url_problem
from incidents.tokens import new_secret

CONFIRMATION_RESEND_INTERVAL = timedelta(hours=1)


def message_for_update(incident: Incident, update: IncidentUpdate, component_ids: list[int]) -> None:
    message = Message.objects.create(
        kind=MessageKind.INCIDENT_UPDATE,
        key=f"incident-update:{update.pk}",
        incident=incident,
        incident_update=update,
        impact=incident.impact,
        component_ids=component_ids,
        created_at=update.created_at,
    )
    notify_after_commit(message)


def message_for_maintenance(maintenance: Maintenance, update: MaintenanceUpdate) -> None:
    message = Message.objects.create(
        kind=MessageKind.MAINTENANCE,
        key=f"maintenance-update:{update.pk}",
        maintenance=maintenance,
        maintenance_update=update,
        component_ids=list(maintenance.components.values_list("pk", flat=True)),
        created_at=update.created_at,
    )
    notify_after_commit(message)


def subscribe(
    *,
    email: str,
    all_components: bool = True,
    components: Iterable[Component] = (),
    notify_incidents: bool = True,
    notify_maintenance: bool = True,
    notify_postmortems: bool = True,
    minimum_impact: str = Impact.NONE,
    at: datetime | None = None,
) -> Subscriber:
    """Sign an address up with double opt-in. Callers must answer the same whatever happened here, so
    nobody learns whether an address is subscribed; the address gets at most one email an hour."""
    at = at or timezone.now()
    email = email.strip()
    problem = signup_problem(email)
    if problem is not None:
        raise ActionRefused(problem, field="email")
    if minimum_impact not in Impact.values:
        raise ActionRefused(f"Unknown impact {minimum_impact!r}.", field="minimum_impact")
    components = list(components)
    if not all_components and not components:
        raise ActionRefused("Choose at least one component, or all of them.", field="components")
    if not (notify_incidents or notify_maintenance or notify_postmortems):
        raise ActionRefused("Choose at least one kind of update.", field="kinds")
    with transaction.atomic():
        subscriber = (
            Subscriber.objects.select_for_update().filter(kind=SubscriberKind.EMAIL, email__iexact=email).first()
        )
        if subscriber is None:
            subscriber = Subscriber.objects.create(kind=SubscriberKind.EMAIL, email=email, secret=new_secret())
        elif subscriber.unsubscribed_at is not None:
            # Coming back: confirm again, and old links stay dead. The confirmation goes now, even if
            # one went within the hour (someone who unsubscribed by mistake signs up again at once).
            subscriber.unsubscribed_at = subscriber.bounced_at = subscriber.confirmed_at = None
            subscriber.bounce_reason = ""
            subscriber.confirmation_sent_at = None
            subscriber.secret = new_secret()
            subscriber.save(
                update_fields=[
                    "unsubscribed_at", "bounced_at", "bounce_reason", "confirmed_at", "confirmation_sent_at", "secret"
                ]
            )  # fmt: skip
        if subscriber.confirmed_at is None:
            # Choices come from the sign-up only until confirmed; afterwards only the manage link changes them.
            _set_choices(
                subscriber, all_components, components, notify_incidents, notify_maintenance, notify_postmortems,
                minimum_impact,
            )  # fmt: skip
        recently = (
            subscriber.confirmation_sent_at and at - subscriber.confirmation_sent_at < CONFIRMATION_RESEND_INTERVAL
        )
        if not recently:
            subscriber.confirmation_sent_at = at
            subscriber.save(update_fields=["confirmation_sent_at"])
            message = Message.objects.create(
                kind=MessageKind.CONFIRMATION,
                key=f"confirmation:{subscriber.pk}:{at.timestamp():.6f}",
                subscriber=subscriber,
                created_at=at,
            )
            notify_after_commit(message)
        return subscriber


def _set_choices(
    subscriber: Subscriber,
    all_components: bool,
    components: list[Component],
    notify_incidents: bool,
    notify_maintenance: bool,
    notify_postmortems: bool,
    minimum_impact: str,
) -> None:
    subscriber.all_components = all_components
    subscriber.notify_incidents = notify_incidents
    subscriber.notify_maintenance = notify_maintenance
    subscriber.notify_postmortems = notify_postmortems
    subscriber.minimum_impact = minimum_impact
    subscriber.save(
        update_fields=[
            "all_components", "notify_incidents", "notify_maintenance", "notify_postmortems", "minimum_impact"
        ]
    )  # fmt: skip
    subscriber.components.set([] if all_components else [c for c in components if not c.is_group])


def confirm_subscription(subscriber: Subscriber, *, at: datetime | None = None) -> Subscriber:
    at = at or timezone.now()
    with transaction.atomic():
        subscriber = Subscriber.objects.select_for_update().get(pk=subscriber.pk)
        if subscriber.unsubscribed_at is not None:
            raise ActionRefused("This address has unsubscribed; subscribe again to get updates.")
        if subscriber.confirmed_at is None:
            subscriber.confirmed_at = at
            subscriber.save(update_fields=["confirmed_at"])
        return subscriber


def update_subscription(
    subscriber: Subscriber,
    *,
    all_components: bool,
    components: Iterable[Component],
    notify_incidents: bool,
    notify_maintenance: bool,
    notify_postmortems: bool,
    minimum_impact: str,
) -> Subscriber:
    components = list(components)
    if minimum_impact not in Impact.values:
        raise ActionRefused(f"Unknown impact {minimum_impact!r}.", field="minimum_impact")
    if not all_components and not components:
        raise ActionRefused("Choose at least one component, or all of them.", field="components")
    if not (notify_incidents or notify_maintenance or notify_postmortems):
        raise ActionRefused("Choose at least one kind of update, or unsubscribe.", field="kinds")
    with transaction.atomic():
        subscriber = Subscriber.objects.select_for_update().get(pk=subscriber.pk)
        if subscriber.unsubscribed_at is not None:
            raise ActionRefused("This address has unsubscribed; subscribe again to get updates.")
        _set_choices(
            subscriber, all_components, components, notify_incidents, notify_maintenance, notify_postmortems,
            minimum_impact,
        )  # fmt: skip
        return subscriber


def unsubscribe(subscriber: Subscriber, *, at: datetime | None = None, bounce: str = "") -> Subscriber:
    """Stop all mail to this subscriber at once; deliveries not yet sent are dropped. With `bounce` (the
    server's refusal), the delivery engine unsubscribes an address that does not exist."""
    at = at or timezone.now()
    with transaction.atomic():
        subscriber = Subscriber.objects.select_for_update().get(pk=subscriber.pk)
        if subscriber.unsubscribed_at is None:
            subscriber.unsubscribed_at = at
            if bounce:
                subscriber.bounced_at, subscriber.bounce_reason = at, bounce[:500]
            subscriber.save(update_fields=["unsubscribed_at", "bounced_at", "bounce_reason"])
            # Claimed rows too: a worker checks its claim right before sending, so it skips them.
            reason = (
                f"the address bounced before it was sent: {bounce}" if bounce else "unsubscribed before it was sent"
            )
            Delivery.objects.filter(
                subscriber=subscriber, status__in=[DeliveryStatus.PENDING, DeliveryStatus.SENDING]
            ).update(status=DeliveryStatus.FAILED, claim="", last_error=reason[:500])
        return subscriber


def add_webhook(
    *,
    actor: Actor,
    url: str,
    components: Iterable[Component] = (),
    notify_incidents: bool = True,
    notify_maintenance: bool = True,
    notify_postmortems: bool = True,
    minimum_impact: str = Impact.NONE,
) -> tuple[Subscriber, str]:
    """Add a webhook subscriber (staff only); returns it and its signing secret, shown once. Its host must
    resolve to public addresses only, unless settings.WEBHOOK_ALLOW_PRIVATE (incidents/netguard.py)."""
    if acting_user(actor) is None or not getattr(actor, "is_staff", False):
        raise ActionRefused("Only staff can add webhooks.")
    url = url.strip()
    try:
        URLValidator(schemes=["http", "https"])(url)
    except ValidationError:
        raise ActionRefused("Enter an http or https URL.", field="url") from None
    problem = url_problem(url)  # resolves the host: every address must be public (SSRF)
    if problem is not None:
        raise ActionRefused(problem, field="url")
    components = list(components)
    with transaction.atomic():
        subscriber = Subscriber.objects.create(
            kind=SubscriberKind.WEBHOOK,
            webhook_url=url,
            webhook_secret=new_secret() + new_secret(),
            secret=new_secret(),
            confirmed_at=timezone.now(),
        )
        _set_choices(
            subscriber, not components, components, notify_incidents, notify_maintenance, notify_postmortems,
            minimum_impact,
        )  # fmt: skip
        return subscriber, subscriber.webhook_secret


MAINTENANCE_REMINDER_BEFORE = timedelta(hours=1)


def remind_of_maintenance(*, now: datetime) -> int:
    """Tell email subscribers about windows starting within the hour, once per window and schedule;
    not when the window was announced or rescheduled within that hour (they have just been told)."""
    soon = Maintenance.objects.filter(
        status=MaintenanceStatus.SCHEDULED,
        cancelled_at__isnull=True,
        scheduled_for__gt=now,
        scheduled_for__lte=now + MAINTENANCE_REMINDER_BEFORE,
    )
    reminded = 0
    for maintenance in soon:
        latest = maintenance.updates.order_by("-created_at").values_list("created_at", flat=True).first()
        if latest and latest >= maintenance.scheduled_for - MAINTENANCE_REMINDER_BEFORE:
            continue  # announced (or moved) within the hour before it starts: that email said when
        with transaction.atomic():
            message, created = Message.objects.get_or_create(
                # A reschedule bumps the sequence: the new time gets its own reminder.
                key=f"maintenance-reminder:{maintenance.pk}:{maintenance.sequence}",
                defaults={
                    "kind": MessageKind.MAINTENANCE_REMINDER,
                    "maintenance": maintenance,
                    "component_ids": list(maintenance.components.values_list("pk", flat=True)),
                    "created_at": now,
                },
            )
            if created:
                notify_after_commit(message)
                reminded += 1
    return reminded
