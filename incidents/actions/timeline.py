"""Who acts, and the timeline event every action writes: its actor (a signed-in user or the system)
and its message, with moments written in the display time zone."""

from __future__ import annotations

import zoneinfo
from datetime import datetime
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

from incidents.models import Incident, TimelineEvent

Actor = AbstractBaseUser | AnonymousUser | None


def acting_user(actor: Actor) -> Any:
    return actor if actor is not None and actor.is_authenticated else None


def actor_name(actor: Actor) -> str:
    user = acting_user(actor)
    return user.get_username() if user is not None else "system"


def record_event(
    incident: Incident, kind: str, message: str, *, actor: Actor, at: datetime, **data: Any
) -> TimelineEvent:
    return TimelineEvent.objects.create(
        incident=incident, kind=kind, actor=acting_user(actor), message=message[:500], data=data, created_at=at
    )


def format_moment(moment: datetime) -> str:
    zone = zoneinfo.ZoneInfo(settings.DISPLAY_TIME_ZONE)
    local = moment.astimezone(zone)
    return f"{local:%d %b %Y %H:%M} {local.tzname() or settings.DISPLAY_TIME_ZONE}"
