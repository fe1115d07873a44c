"""`manage.py seed_demo`: the demo page, its story incident, and that a second run changes nothing."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from io import StringIO
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth import authenticate
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import RequestFactory

from incidents import actions
from incidents.models import (
    ClockEvent,
    ClockEventKind,
    ClockState,
    Component,
    ComponentStatus,
    ComponentStatusChange,
    EventKind,
    Incident,
    IncidentTemplate,
    IncidentUpdate,
    Metric,
    PublicStatus,
    TimelineEvent,
)
from tests import factories

pytestmark = pytest.mark.django_db

STORY = "Query API degraded for US customers"


@pytest.fixture(autouse=True)
def _severities(db: None) -> None:
    factories.ensure_severities()  # a transactional test's flush removes what the migrations seeded


@pytest.fixture(autouse=True)
def _fast_hasher(settings: Any) -> None:
    """The command hashes and checks the demo password on every run; PBKDF2 would be most of the time."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def seed() -> str:
    out = StringIO()
    call_command("seed_demo", "--force", stdout=out)  # pytest-django runs with DEBUG off
    return out.getvalue()


def counts() -> dict[str, int]:
    models = [
        User, Component, ComponentStatusChange, Incident, IncidentUpdate, TimelineEvent, ClockEvent, IncidentTemplate
    ]  # fmt: skip
    return {model.__name__: model._default_manager.count() for model in models}


def test_it_tells_the_story_of_the_late_acknowledged_sev1() -> None:
    seed()

    story = Incident.objects.get(title=STORY)
    assert story.severity.key == "sev1"
    assert story.is_resolved
    assert story.public_status == PublicStatus.RESOLVED
    assert story.acknowledged_at is not None
    assert story.acknowledged_at - story.declared_at == timedelta(hours=2, minutes=30)
    assert story.acknowledged_by is not None and story.acknowledged_by.username == "oncall"
    assert story.customer_impact_percent == Decimal("45")
    assert story.regions == ["US"]
    assert story.workaround == "Use scheduled exports and cached dashboards"

    clocks = {clock.metric: clock for clock in story.clocks.all()}
    assert clocks[Metric.ACKNOWLEDGE].state == ClockState.BREACHED
    assert clocks[Metric.FIRST_UPDATE].state == ClockState.BREACHED
    assert clocks[Metric.ACKNOWLEDGE].events.filter(kind=ClockEventKind.BREACH).count() == 1
    assert all(clock.running_since is None for clock in clocks.values())


def test_it_gives_the_story_a_realistic_timeline() -> None:
    seed()

    story = Incident.objects.get(title=STORY)
    public = story.updates.filter(is_public=True).order_by("created_at")
    statuses = list(dict.fromkeys(public.values_list("status", flat=True)))
    assert statuses == ["investigating", "identified", "monitoring", "resolved"]
    assert story.published_at is not None and story.published_at > story.acknowledged_at  # type: ignore[operator]
    assert story.updates.filter(is_public=False, body__contains="Rolled back retry policy").exists()

    severity = story.events.get(kind=EventKind.SEVERITY_CHANGED)
    assert (severity.data["old"], severity.data["new"]) == ("sev2", "sev1")
    actors = set(story.events.exclude(actor=None).values_list("actor__username", flat=True))
    assert actors == {"oncall", "dana"}

    us = Component.objects.get(group__name="Query API", name="US")
    assert us.status == ComponentStatus.OPERATIONAL
    history = list(us.status_changes.filter(incident=story).values_list("new_status", flat=True))
    assert history == ["partial_outage", "major_outage", "partial_outage", "degraded_performance", "operational"]


def test_it_leaves_one_open_sev3_with_running_clocks() -> None:
    seed()

    (incident,) = Incident.objects.open()
    assert incident.title == "Delayed CSV exports in EU"
    assert incident.severity.key == "sev3"
    assert incident.is_acknowledged
    assert incident.updates.filter(is_public=True).count() == 1
    running = set(incident.clocks.filter(state=ClockState.RUNNING).values_list("metric", flat=True))
    assert running == {Metric.UPDATE_CADENCE, Metric.RESOLVE}
    assert Component.objects.get(group__name="Exports", name="EU").status == ComponentStatus.DEGRADED_PERFORMANCE


def test_it_builds_a_page_of_grouped_components_and_a_history() -> None:
    seed()

    groups = Component.objects.filter(is_group=True)
    assert set(groups.values_list("name", flat=True)) == {"Query API", "Ingestion", "Dashboards", "Exports"}
    components = Component.objects.filter(is_group=False)
    assert components.count() == 12
    assert components.filter(group__isnull=False).count() == 9
    assert not components.filter(description="").exists()
    assert not Component.objects.exclude(pk__in=components).filter(group__isnull=True, is_group=False).exists()

    resolved = Incident.objects.resolved().exclude(title=STORY)
    assert set(resolved.values_list("severity__key", flat=True)) == {"sev2", "sev3", "sev4"}
    breached = resolved.filter(clocks__state=ClockState.BREACHED).distinct().count()
    assert 0 < breached < resolved.count()  # some met their targets, some missed them
    assert IncidentTemplate.objects.count() == 4
    assert all(template.components.exists() for template in IncidentTemplate.objects.all())


def test_a_second_run_changes_nothing_and_says_so() -> None:
    first = seed()
    before = counts()

    second = seed()

    assert "Created the demo" in first
    assert "already there" in second
    assert "Created" not in second
    assert counts() == before


def test_it_does_not_add_demo_data_to_a_page_of_its_own() -> None:
    actions.create_component(actor=None, name="Checkout")

    output = seed()

    assert "Not adding demo data" in output
    assert Component.objects.count() == 1
    assert not Incident.objects.exists()
    assert not User.objects.exists()


def test_it_prints_a_login_that_works() -> None:
    output = seed()

    assert f"Log in at {settings.SITE_URL}/manage/ as oncall / signalpost" in output
    # Sign-in throttling (django-axes) counts per client address, so authenticate() needs the request.
    user = authenticate(RequestFactory().post("/login/"), username="oncall", password="signalpost")
    assert user is not None and user.is_staff and user.is_superuser
    dana = User.objects.get(username="dana")
    assert dana.is_staff and not dana.is_superuser
    assert f"Log in at {settings.SITE_URL}/manage/ as oncall / signalpost" in seed()


def test_it_keeps_a_changed_password_and_stops_printing_the_old_one() -> None:
    seed()
    user = User.objects.get(username="oncall")
    user.set_password("a-better-secret")
    user.save()

    output = seed()

    assert "oncall / signalpost" not in output
    assert authenticate(RequestFactory().post("/login/"), username="oncall", password="a-better-secret") is not None


@pytest.mark.django_db
def test_it_adds_no_demo_login_when_debug_is_off(settings: Any) -> None:
    from io import StringIO

    settings.DEBUG = False
    out = StringIO()
    call_command("seed_demo", stdout=out)

    assert "DEBUG is off, so no demo data was added" in out.getvalue()
    assert not User.objects.filter(username="oncall").exists()
