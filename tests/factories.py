"""Plain typed factories. Domain objects are made through incidents.actions, as the app makes them."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from django.apps import apps
from django.contrib.auth.models import User

from incidents import actions
from incidents.models import Component, Incident, Severity

PASSWORD = "correct-horse-battery"


def make_user(*, username: str = "alice", is_staff: bool = True, password: str = PASSWORD) -> User:
    return User.objects.create_user(
        username=username, email=f"{username}@example.com", password=password, is_staff=is_staff
    )


def ensure_severities() -> None:
    """SEV1–SEV4 come from a data migration, which a transactional test's flush removes."""
    if not Severity.objects.exists():
        seed = importlib.import_module("incidents.migrations.0002_seed_severities")
        seed.seed(apps, None)
        importlib.import_module("incidents.migrations.0008_postmortems").seed_policy(apps, None)
        importlib.import_module("incidents.migrations.0009_benchmarks").seed(apps, None)


def severity(key: str = "sev1") -> Severity:
    ensure_severities()
    return Severity.objects.get(key=key)


def make_component(
    *, name: str = "Query API", group: Component | None = None, is_group: bool = False, actor: Any = None
) -> Component:
    return actions.create_component(actor=actor, name=name, group=group, is_group=is_group)


def declare(
    *,
    actor: Any,
    title: str = "Queries are slow",
    severity_key: str = "sev1",
    message: str = "We are investigating elevated latency.",
    is_public: bool = True,
    components: Mapping[Component, str] | None = None,
    at: datetime | None = None,
    **kwargs: Any,
) -> Incident:
    return actions.declare_incident(
        actor=actor,
        title=title,
        severity=severity(severity_key),
        message=message,
        message_is_public=is_public,
        components=components,
        at=at,
        **kwargs,
    )
