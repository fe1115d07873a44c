"""Acting on a page: acknowledging an incident through the link in the email that paged someone."""

from __future__ import annotations

from datetime import datetime

from django.db import transaction
from django.utils import timezone

from incidents.actions.errors import ActionRefused
from incidents.actions.incidents import acknowledge_incident
from incidents.actions.timeline import Actor
from incidents.models import Incident, StaffNotice


def acknowledge_by_link(notice: StaffNotice, *, actor: Actor, at: datetime | None = None) -> Incident:
    """Use a page's acknowledgment link: once only, by a signed-in person allowed to acknowledge."""
    with transaction.atomic():
        # The incident first, then the notice: the order every action that stops paging takes.
        Incident.objects.select_for_update(of=("self",)).filter(pk=notice.incident_id).first()
        at = at or timezone.now()  # after the lock, so time order is commit order
        locked = StaffNotice.objects.select_for_update(of=("self",)).select_related("used_by").get(pk=notice.pk)
        if locked.used_at is not None:
            who = locked.used_by.get_username() if locked.used_by else "someone"
            raise ActionRefused(
                f"This link was already used, by {who} at {locked.used_at:%Y-%m-%d %H:%M} UTC. Links work once.",
                code="link_used",
            )
        StaffNotice.objects.filter(pk=locked.pk).update(used_at=at, used_by=actor)
        return acknowledge_incident(notice.incident, actor=actor, at=at)
