"""Permission-checked getters: the only way views and the API load domain objects."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.db.models import Prefetch, QuerySet
from django.http import Http404

from incidents.models import Clock, Component, Incident, IncidentUpdate, Severity


def require_staff(user: Any) -> None:
    if not (user.is_authenticated and user.is_active and user.is_staff):
        raise PermissionDenied("Staff only.")


def incidents_for(user: Any) -> QuerySet[Incident]:
    require_staff(user)
    return Incident.objects.select_related("severity", "commander", "acknowledged_by").prefetch_related(
        Prefetch("clocks", queryset=Clock.objects.order_by("id"))
    )


def get_incident_for_user(user: Any, incident_id: int | str) -> Incident:
    try:
        pk = int(incident_id)
    except (TypeError, ValueError):
        raise Http404("No such incident.") from None
    incident = (
        incidents_for(user)
        .prefetch_related(
            Prefetch("updates", queryset=IncidentUpdate.objects.select_related("author")),
            "components__group",
        )
        .filter(pk=pk)
        .first()
    )
    if incident is None:
        raise Http404("No such incident.")
    return incident


def components_for(user: Any) -> QuerySet[Component]:
    require_staff(user)
    return Component.objects.select_related("group")


def get_component_for_user(user: Any, component_id: int | str) -> Component:
    try:
        return components_for(user).get(pk=int(component_id))
    except (Component.DoesNotExist, TypeError, ValueError):
        raise Http404("No such component.") from None


def severities_for(user: Any) -> QuerySet[Severity]:
    require_staff(user)
    return Severity.objects.all()
