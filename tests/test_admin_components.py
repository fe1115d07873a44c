"""Components in /admin/: the README's way to set them up, so every field is there, and what is saved
there reaches the public side like any other change."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib.auth.models import User
from django.test import Client

from incidents.models import Component, Snapshot
from statuspage.snapshot import reader


def admin_client(staff: User) -> Client:
    staff.is_superuser = True
    staff.save()
    client = Client()
    client.force_login(staff)
    return client


def form(**overrides: Any) -> dict[str, Any]:
    return {
        "name": "Query API",
        "description": "Run queries.",
        "group": "",
        "position": "3",
        "showcase": "on",
        "start_date": "",
        **overrides,
    }


def test_the_admin_adds_a_named_component_and_publishes_it(
    staff: User, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    """Before, the add form had only a description: saving made a nameless component, and the public
    side listed it as "" (at the next periodic publish, minutes later)."""
    client = admin_client(staff)
    page = client.get("/admin/incidents/component/add/").content.decode()
    for field in ("name", "group", "is_group", "position", "showcase", "only_show_if_degraded", "start_date"):
        assert f'name="{field}"' in page, field

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/admin/incidents/component/add/", form())
    assert response.status_code == 302, response.content.decode()[:2000]
    component = Component.objects.get()
    assert (component.name, component.description, component.position, component.showcase) == (
        "Query API",
        "Run queries.",
        3,
        True,
    )
    assert Snapshot.objects.exists()
    reader.reset()
    published = reader.current()
    assert published is not None
    assert [row["name"] for row in published.document["components"]] == ["Query API"]


def test_the_admin_refuses_a_component_without_a_name(staff: User) -> None:
    client = admin_client(staff)
    response = client.post("/admin/incidents/component/add/", form(name=""))
    assert response.status_code == 200
    assert "This field is required." in response.content.decode()
    assert not Component.objects.exists()


def test_the_admin_refuses_a_name_or_description_that_shows_nothing(staff: User) -> None:
    """The fifth review saved a component described as two zero-width spaces; a name of a Hangul filler
    (U+3164, a letter that draws nothing) passes Django's required check too."""
    client = admin_client(staff)
    response = client.post("/admin/incidents/component/add/", form(name="\u3164", description="\u200b\u200b"))
    page = response.content.decode()
    assert response.status_code == 200
    assert "Give the component a name: this one shows nothing" in page
    assert "A description of only invisible characters" in page
    assert not Component.objects.exists()


def test_a_rename_in_the_admin_is_published(
    staff: User, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    client = admin_client(staff)
    component = Component.objects.create(name="Exports")
    with django_capture_on_commit_callbacks(execute=True):
        client.post(f"/admin/incidents/component/{component.pk}/change/", form(name="Data exports"))
    reader.reset()
    assert [row["name"] for row in reader.current().document["components"]] == ["Data exports"]  # type: ignore[union-attr]


def test_a_delete_in_the_admin_is_published(
    staff: User, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    # Each in its own test: the capture leaves the first publish's callback in the test's transaction,
    # where the next request_publish would see it and ask no more (each request commits on its own).
    client = admin_client(staff)
    kept, gone = Component.objects.create(name="Exports"), Component.objects.create(name="Old")
    with django_capture_on_commit_callbacks(execute=True):
        client.post(f"/admin/incidents/component/{gone.pk}/delete/", {"post": "yes"})
    assert list(Component.objects.all()) == [kept]
    reader.reset()
    assert [row["name"] for row in reader.current().document["components"]] == ["Exports"]  # type: ignore[union-attr]
