"""The row lock an incident's actions take first, so that concurrent ones queue instead of losing a change."""

from __future__ import annotations

from incidents.models import Incident


def lock_incident(incident: Incident) -> Incident:
    """Re-read the incident under a row lock so concurrent actions queue instead of losing a change."""
    return Incident.objects.locked(incident.pk)
