"""The staff API's maintenance endpoints: auth, the contract, each refusal and its code, OpenAPI."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from io import StringIO
from typing import TYPE_CHECKING, Any

import pytest
import time_machine
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from incidents import actions, clocks
from incidents.models import ApiToken, Component, Maintenance
from tests import factories

if TYPE_CHECKING:
    from django.test.client import _MonkeyPatchedWSGIResponse as Response

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
START, END = "2026-03-03T22:00:00Z", "2026-03-04T01:00:00Z"
pytestmark = pytest.mark.django_db

MAINTENANCE_FIELDS = {
    "id", "public_id", "title", "status", "scheduled_for", "scheduled_until", "started_at", "completed_at",
    "cancelled_at", "auto_start", "auto_complete", "components", "updates",
}  # fmt: skip
UPDATE_FIELDS = {"id", "public_id", "status", "body", "body_html", "created_at", "author", "component_changes"}


@pytest.fixture(autouse=True)
def _at_t0() -> Any:
    with time_machine.travel(T0, tick=False) as traveller:
        yield traveller


def create_token(username: str) -> str:
    out = StringIO()
    call_command("create_api_token", username, stdout=out, stderr=StringIO())
    return out.getvalue().strip()


def client_for(token: str) -> Client:
    return Client(headers={"Authorization": f"Bearer {token}"})


@pytest.fixture
def api(staff: User) -> Client:
    return client_for(create_token(staff.username))


@pytest.fixture
def us(staff: User) -> Component:
    group = factories.make_component(name="Query API", is_group=True, actor=staff)
    return factories.make_component(name="US", group=group, actor=staff)


@pytest.fixture
def web(staff: User) -> Component:
    return factories.make_component(name="Web app", actor=staff)


def post(client: Client, url: str, data: Any = None) -> Response:
    return client.post(url, data, content_type="application/json")


def patch(client: Client, url: str, data: Any) -> Response:
    return client.patch(url, data, content_type="application/json")


def schedule(client: Client, **fields: Any) -> dict[str, Any]:
    data = {"title": "Database upgrade", "scheduled_for": START, "scheduled_until": END, **fields}
    response = post(client, "/api/v1/maintenances", data)
    assert response.status_code == 201, response.content
    body: dict[str, Any] = response.json()
    return body


def assert_error(response: Response, status: int, detail: str | None = None, **fields: Any) -> dict[str, Any]:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert isinstance(body["detail"], str) and body["detail"]
    if detail is not None:
        assert body["detail"] == detail
    for key, value in fields.items():
        assert body[key] == value, body
    return body


def status_of(component: Component) -> str:
    component.refresh_from_db()
    return component.status


# --- auth ---------------------------------------------------------------------------------------


def routes(maintenance_id: int) -> list[tuple[str, str]]:
    base = f"/api/v1/maintenances/{maintenance_id}"
    return [
        ("get", "/api/v1/maintenances"),
        ("post", "/api/v1/maintenances"),
        ("get", base),
        ("patch", base),
        ("post", f"{base}/updates"),
        ("post", f"{base}/start"),
        ("post", f"{base}/complete"),
        ("post", f"{base}/cancel"),
    ]


def call(client: Client, method: str, url: str) -> Response:
    data = {"reason": "x", "body": "x", "scheduled_until": END, "title": "x", "scheduled_for": START}
    if method == "get":
        return client.get(url)
    response: Response = getattr(client, method)(url, data, content_type="application/json")
    return response


def test_it_refuses_every_route_without_a_valid_token(api: Client, staff_client: Client) -> None:
    maintenance = schedule(api)
    for method, url in routes(maintenance["id"]):
        for client in (Client(), staff_client, client_for("sp_not-a-real-token")):
            response = call(client, method, url)
            assert_error(response, 401, code="not_authenticated")
            assert response["WWW-Authenticate"].startswith("Bearer")


def test_it_refuses_every_route_to_a_token_held_by_an_outsider(api: Client, outsider: User) -> None:
    maintenance = schedule(api)
    token = "sp_outsider-token"
    ApiToken.objects.create(user=outsider, prefix=token[:11], token_hash=ApiToken.hash(token))
    for method, url in routes(maintenance["id"]):
        assert_error(call(client_for(token), method, url), 403, "Staff only.", code="forbidden")
    assert Maintenance.objects.get().status == "scheduled"
    assert Maintenance.objects.count() == 1


# --- schedule -----------------------------------------------------------------------------------


def test_it_schedules_a_window(api: Client, us: Component, web: Component) -> None:
    response = post(
        api,
        "/api/v1/maintenances",
        {
            "title": "Database upgrade",
            "scheduled_for": "2026-03-03T23:00:00+01:00",
            "scheduled_until": "2026-03-04T01:00:00Z",
            "components": [us.pk, web.pk],
            "message": "We upgrade the **database**.",
            "auto_complete": False,
        },
    )

    assert response.status_code == 201
    body = response.json()
    assert set(body) == MAINTENANCE_FIELDS
    assert (body["title"], body["status"]) == ("Database upgrade", "scheduled")
    assert (body["scheduled_for"], body["scheduled_until"]) == (START, END)  # normalised to UTC
    assert body["started_at"] is body["completed_at"] is body["cancelled_at"] is None
    assert (body["auto_start"], body["auto_complete"]) == (True, False)
    assert body["components"] == [
        {"id": us.pk, "name": "US", "display_name": "Query API - US", "status": "operational"},
        {"id": web.pk, "name": "Web app", "display_name": "Web app", "status": "operational"},
    ]
    [update] = body["updates"]
    assert set(update) == UPDATE_FIELDS
    assert (update["status"], update["author"], update["created_at"]) == ("scheduled", "alice", "2026-03-02T09:00:00Z")
    assert update["body_html"] == "<p>We upgrade the <strong>database</strong>.</p>\n"
    assert update["component_changes"] == []
    maintenance = Maintenance.objects.get()
    assert (maintenance.pk, maintenance.next_action_at) == (body["id"], datetime(2026, 3, 3, 22, tzinfo=UTC))
    assert (body["public_id"], update["public_id"]) == (maintenance.public_id, maintenance.updates.get().public_id)


def test_it_announces_the_window_by_default(api: Client) -> None:
    [update] = schedule(api)["updates"]

    assert update["body"] == "Database upgrade is scheduled from 03 Mar 2026 22:00 UTC to 04 Mar 2026 01:00 UTC."


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"scheduled_for": "2026-03-03T22:00:00"}, "scheduled_for"),  # naive: no offset
        ({"scheduled_until": "2026-03-04T01:00"}, "scheduled_until"),
        ({"scheduled_for": "tomorrow"}, "scheduled_for"),
        ({"title": ""}, "title"),
        ({"components": [0]}, "components.0"),
        ({"components": "1"}, "components"),
    ],
)
def test_it_refuses_bad_input_with_422(api: Client, data: dict[str, Any], field: str) -> None:
    response = post(
        api, "/api/v1/maintenances", {"title": "Upgrade", "scheduled_for": START, "scheduled_until": END, **data}
    )

    body = assert_error(response, 422, code="invalid")
    assert field in [error["field"] for error in body["errors"]]
    assert not Maintenance.objects.exists()


def test_it_refuses_a_naive_time_saying_why(api: Client) -> None:
    response = post(
        api,
        "/api/v1/maintenances",
        {"title": "Upgrade", "scheduled_for": "2026-03-03T22:00:00", "scheduled_until": END},
    )

    [error] = assert_error(response, 422)["errors"]
    assert (error["field"], error["type"]) == ("scheduled_for", "timezone_aware")


@pytest.mark.parametrize(
    ("data", "field", "detail"),
    [
        ({"scheduled_until": START}, "scheduled_until", "The window must end after it starts."),
        ({"title": "   "}, "title", "A title is required."),
        ({"components": [999999]}, "components", "No component with id 999999."),
    ],
)
def test_it_refuses_what_the_domain_refuses_naming_the_field(
    api: Client, data: dict[str, Any], field: str, detail: str
) -> None:
    response = post(
        api, "/api/v1/maintenances", {"title": "Upgrade", "scheduled_for": START, "scheduled_until": END, **data}
    )

    assert_error(response, 422, detail, field=field)


def test_it_refuses_a_group_or_a_component_listed_twice(api: Client, us: Component) -> None:
    response = post(
        api,
        "/api/v1/maintenances",
        {"title": "Upgrade", "scheduled_for": START, "scheduled_until": END, "components": [us.group_id]},
    )
    assert_error(response, 422, "Choose components, not groups.", field="components")

    response = post(
        api,
        "/api/v1/maintenances",
        {"title": "Upgrade", "scheduled_for": START, "scheduled_until": END, "components": [us.pk, us.pk]},
    )
    assert_error(response, 422, "Each component may be listed once.", field="components", code="duplicate")
    assert not Maintenance.objects.exists()


# --- read ---------------------------------------------------------------------------------------


def test_it_lists_windows_by_state(api: Client, staff: User) -> None:
    later = schedule(api, title="Later", scheduled_for="2026-03-10T22:00:00Z", scheduled_until="2026-03-11T01:00:00Z")
    soon = schedule(api, title="Soon")
    active = schedule(api, title="Active", scheduled_for="2026-03-02T08:00:00Z")
    post(api, f"/api/v1/maintenances/{active['id']}/start")
    cancelled = schedule(
        api, title="Cancelled", scheduled_for="2026-03-05T22:00:00Z", scheduled_until="2026-03-05T23:00:00Z"
    )
    post(api, f"/api/v1/maintenances/{cancelled['id']}/cancel")
    done = schedule(api, title="Done", scheduled_for="2026-03-01T08:00:00Z")
    post(api, f"/api/v1/maintenances/{done['id']}/start")
    post(api, f"/api/v1/maintenances/{done['id']}/complete")

    def titles(query: str) -> list[str]:
        body = api.get(f"/api/v1/maintenances{query}").json()
        assert body["count"] == len(body["items"])
        return [item["title"] for item in body["items"]]

    assert titles("?state=upcoming") == ["Soon", "Later"]  # soonest first
    assert titles("?state=active") == ["Active"]
    assert titles("?state=past") == ["Cancelled", "Done"]  # latest first
    assert titles("") == ["Later", "Cancelled", "Soon", "Active", "Done"]
    assert later["id"] != soon["id"]

    page = api.get("/api/v1/maintenances?limit=2&offset=1").json()
    assert (page["count"], page["limit"], page["offset"]) == (5, 2, 1)
    assert [item["title"] for item in page["items"]] == ["Cancelled", "Soon"]


@pytest.mark.parametrize("query", ["state=finished", "limit=0", "limit=101", "offset=-1"])
def test_it_refuses_bad_list_parameters(api: Client, query: str) -> None:
    assert_error(api.get(f"/api/v1/maintenances?{query}"), 422, code="invalid")


def test_it_lists_windows_in_a_constant_number_of_queries(api: Client, us: Component, web: Component) -> None:
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert api.get("/api/v1/maintenances").status_code == 200
        return len(captured)

    schedule(api, components=[us.pk])
    before = queries()
    for number in range(5):
        started = schedule(api, title=f"W{number}", components=[us.pk, web.pk])
        post(api, f"/api/v1/maintenances/{started['id']}/updates", {"body": "Going", "status": "in_progress"})
    assert queries() == before


def test_it_reads_one_window(api: Client) -> None:
    created = schedule(api)

    assert api.get(f"/api/v1/maintenances/{created['id']}").json() == created


@pytest.mark.parametrize("maintenance_id", ["999999", "9223372036854775808"])
def test_it_answers_404_for_an_unknown_window(api: Client, maintenance_id: str) -> None:
    assert_error(api.get(f"/api/v1/maintenances/{maintenance_id}"), 404, code="not_found")
    assert_error(post(api, f"/api/v1/maintenances/{maintenance_id}/start"), 404, code="not_found")


# --- start and complete -------------------------------------------------------------------------


def test_it_starts_and_completes_restoring_the_components(api: Client, staff: User, us: Component) -> None:
    actions.set_component_status(us, actor=staff, status="degraded_performance")
    created = schedule(api, components=[us.pk])

    started = post(api, f"/api/v1/maintenances/{created['id']}/start", {"message": "Going in."}).json()
    assert (started["status"], started["started_at"]) == ("in_progress", "2026-03-02T09:00:00Z")
    assert started["components"][0]["status"] == "under_maintenance"
    assert started["updates"][0]["body"] == "Going in."
    assert started["updates"][0]["component_changes"] == [
        {
            "component_id": us.pk,
            "name": "Query API - US",
            "old_status": "degraded_performance",
            "new_status": "under_maintenance",
        }
    ]

    with time_machine.travel(T0 + timedelta(hours=1), tick=False):
        response = post(api, f"/api/v1/maintenances/{created['id']}/complete")
    done = response.json()
    assert response.status_code == 200
    assert (done["status"], done["completed_at"]) == ("completed", "2026-03-02T10:00:00Z")
    assert done["components"][0]["status"] == "degraded_performance"
    assert done["updates"][0]["body"] == "The scheduled maintenance has been completed."
    assert status_of(us) == "degraded_performance"


def test_it_refuses_to_start_twice_with_409(api: Client) -> None:
    created = schedule(api)
    post(api, f"/api/v1/maintenances/{created['id']}/start")

    response = post(api, f"/api/v1/maintenances/{created['id']}/start")

    assert_error(response, 409, "This maintenance has already started.", code="already_started")


def test_it_refuses_to_complete_a_scheduled_window_with_409(api: Client) -> None:
    created = schedule(api)

    response = post(api, f"/api/v1/maintenances/{created['id']}/complete")

    assert_error(response, 409, "This maintenance has not started; start it or cancel it.", code="not_started")


def test_it_refuses_to_complete_twice_with_409(api: Client) -> None:
    created = schedule(api)
    post(api, f"/api/v1/maintenances/{created['id']}/start")
    post(api, f"/api/v1/maintenances/{created['id']}/complete")

    response = post(api, f"/api/v1/maintenances/{created['id']}/complete")

    assert_error(response, 409, "This maintenance is already completed.", code="already_completed")


def test_it_shows_the_sweeps_automatic_steps(api: Client, us: Component) -> None:
    created = schedule(api, components=[us.pk])

    with time_machine.travel(datetime(2026, 3, 3, 22, tzinfo=UTC), tick=False):
        assert clocks.sweep_due() == 1
    body = api.get(f"/api/v1/maintenances/{created['id']}").json()
    assert (body["status"], body["started_at"], body["updates"][0]["author"]) == ("in_progress", START, None)

    with time_machine.travel(datetime(2026, 3, 4, 1, tzinfo=UTC), tick=False):
        assert clocks.sweep_due() == 1
    body = api.get(f"/api/v1/maintenances/{created['id']}").json()
    assert (body["status"], body["completed_at"]) == ("completed", END)
    assert body["components"][0]["status"] == "operational"


# --- updates ------------------------------------------------------------------------------------


def test_it_posts_updates(api: Client, us: Component) -> None:
    created = schedule(api, components=[us.pk])
    url = f"/api/v1/maintenances/{created['id']}/updates"

    response = post(api, url, {"body": "Starting now.", "status": "in_progress"})
    assert response.status_code == 201
    assert (response.json()["status"], response.json()["components"][0]["status"]) == (
        "in_progress",
        "under_maintenance",
    )

    body = post(api, url, {"body": "Checking *replication*."}).json()  # the status stays
    assert (body["status"], body["updates"][0]["status"]) == ("in_progress", "in_progress")
    assert body["updates"][0]["body_html"] == "<p>Checking <em>replication</em>.</p>\n"

    body = post(api, url, {"body": "Verifying.", "status": "verifying"}).json()
    assert body["status"] == "verifying"
    body = post(api, url, {"body": "All done.", "status": "completed"}).json()
    assert (body["status"], body["components"][0]["status"]) == ("completed", "operational")
    assert [update["body"] for update in body["updates"]][:2] == ["All done.", "Verifying."]


@pytest.mark.parametrize(
    ("data", "field", "code"),
    [
        ({"body": "  "}, "body", "refused"),
        ({"body": "x", "status": "verifying"}, "status", "refused"),
        ({"body": "x", "status": "done"}, "status", "invalid"),
        ({"status": "in_progress"}, "body", "invalid"),
    ],
)
def test_it_refuses_bad_updates_with_422(api: Client, data: dict[str, Any], field: str, code: str) -> None:
    created = schedule(api)

    response = post(api, f"/api/v1/maintenances/{created['id']}/updates", data)

    body = assert_error(response, 422, code=code)
    assert field in [error["field"] for error in body["errors"]]
    assert len(api.get(f"/api/v1/maintenances/{created['id']}").json()["updates"]) == 1


def test_it_refuses_an_update_on_a_completed_window_with_409(api: Client) -> None:
    created = schedule(api)
    post(api, f"/api/v1/maintenances/{created['id']}/start")
    post(api, f"/api/v1/maintenances/{created['id']}/complete")

    response = post(api, f"/api/v1/maintenances/{created['id']}/updates", {"body": "More", "status": "verifying"})

    assert_error(response, 409, "This maintenance is over; updates can no longer be posted.", code="refused")


# --- reschedule ---------------------------------------------------------------------------------


def test_it_reschedules(api: Client) -> None:
    created = schedule(api)

    response = patch(
        api,
        f"/api/v1/maintenances/{created['id']}",
        {"scheduled_for": "2026-03-03T22:00:00+01:00", "message": "An hour earlier."},
    )

    body = response.json()
    assert response.status_code == 200
    assert (body["scheduled_for"], body["scheduled_until"]) == ("2026-03-03T21:00:00Z", END)
    assert body["updates"][0]["body"] == "An hour earlier."
    assert Maintenance.objects.get().sequence == 1


def test_it_moves_only_the_end_of_a_started_window(api: Client) -> None:
    created = schedule(api)
    post(api, f"/api/v1/maintenances/{created['id']}/start")
    url = f"/api/v1/maintenances/{created['id']}"

    response = patch(api, url, {"scheduled_for": "2026-03-03T20:00:00Z"})
    assert_error(response, 422, "The maintenance has started; only its end can move.", field="scheduled_for")

    body = patch(api, url, {"scheduled_until": "2026-03-04T03:00:00Z"}).json()
    assert (body["status"], body["scheduled_until"]) == ("in_progress", "2026-03-04T03:00:00Z")


def test_it_refuses_to_reschedule_a_finished_window_with_409(api: Client) -> None:
    created = schedule(api)
    post(api, f"/api/v1/maintenances/{created['id']}/cancel")

    response = patch(api, f"/api/v1/maintenances/{created['id']}", {"scheduled_until": "2026-03-04T03:00:00Z"})

    assert_error(response, 409, "This maintenance is over; schedule a new one instead.", code="refused")


@pytest.mark.parametrize(
    ("data", "status", "field", "code"),
    [
        ({}, 422, "body", "empty"),
        ({"message": "only a note"}, 422, "body", "empty"),
        ({"scheduled_for": None}, 422, "scheduled_for", "invalid"),
        ({"scheduled_until": "2026-03-04T03:00:00"}, 422, "scheduled_until", "invalid"),
        ({"scheduled_until": "2026-03-03T21:00:00Z"}, 422, "scheduled_until", "refused"),
    ],
)
def test_it_refuses_bad_reschedules(api: Client, data: dict[str, Any], status: int, field: str, code: str) -> None:
    created = schedule(api)

    response = patch(api, f"/api/v1/maintenances/{created['id']}", data)

    body = assert_error(response, status, code=code)
    assert field in [error["field"] for error in body["errors"]]


@pytest.mark.parametrize("data", [{"scheduled_for": START, "scheduled_until": END}, {"scheduled_until": END}])
def test_a_reschedule_that_changes_nothing_answers_200_and_sends_nothing(api: Client, data: dict[str, Any]) -> None:
    created = schedule(api)
    url = f"/api/v1/maintenances/{created['id']}"
    before = api.get(url).json()

    response = patch(api, url, {**data, "message": "Still on."})

    assert response.status_code == 200, response.content
    assert response.json() == before
    window = Maintenance.objects.get()
    assert (window.sequence, window.updates.count(), window.events.count()) == (0, 1, 1)


def test_a_window_is_to_the_minute_seconds_are_dropped(api: Client) -> None:
    body = schedule(api, scheduled_for="2026-03-03T22:00:30Z", scheduled_until="2026-03-04T01:00:59.5Z")

    assert (body["scheduled_for"], body["scheduled_until"]) == (START, END)
    window = Maintenance.objects.get()
    assert (window.scheduled_for.second, window.scheduled_until.microsecond) == (0, 0)


@pytest.mark.parametrize(
    "data",
    [
        {"scheduled_for": "2026-03-03T22:00:30Z", "scheduled_until": "2026-03-04T01:00:45Z"},
        {"scheduled_until": "2026-03-04T01:00:01.25Z"},
        {"scheduled_for": "2026-03-03T23:00:30+01:00"},
    ],
)
def test_a_reschedule_within_the_same_minutes_changes_nothing(api: Client, data: dict[str, Any]) -> None:
    created = schedule(api)
    url = f"/api/v1/maintenances/{created['id']}"

    response = patch(api, url, data)

    assert response.status_code == 200, response.content
    assert response.json() == api.get(url).json() == created
    window = Maintenance.objects.get()
    assert (window.sequence, window.updates.count()) == (0, 1)


def test_a_window_stored_with_seconds_is_unchanged_by_its_own_minutes(api: Client) -> None:
    """Windows scheduled before seconds were dropped may hold some: they compare as they are shown."""
    created = schedule(api)
    Maintenance.objects.update(
        scheduled_for=datetime(2026, 3, 3, 22, 0, 30, tzinfo=UTC),
        scheduled_until=datetime(2026, 3, 4, 1, 0, 30, tzinfo=UTC),
    )
    url = f"/api/v1/maintenances/{created['id']}"

    same = patch(api, url, {"scheduled_for": START, "scheduled_until": END})
    assert same.status_code == 200 and Maintenance.objects.get().sequence == 0

    moved = patch(api, url, {"scheduled_until": "2026-03-04T02:00:00Z"})
    assert moved.json()["scheduled_until"] == "2026-03-04T02:00:00Z"
    assert Maintenance.objects.get().sequence == 1


def test_a_started_window_s_end_moves_to_the_minute_and_its_start_stays(api: Client) -> None:
    created = schedule(api, scheduled_for="2026-03-02T08:00:00Z")
    post(api, f"/api/v1/maintenances/{created['id']}/start")
    url = f"/api/v1/maintenances/{created['id']}"

    body = patch(api, url, {"scheduled_for": "2026-03-02T08:00:40Z", "scheduled_until": "2026-03-04T03:00:40Z"}).json()

    assert (body["scheduled_for"], body["scheduled_until"]) == ("2026-03-02T08:00:00Z", "2026-03-04T03:00:00Z")


# --- cancel -------------------------------------------------------------------------------------


def test_it_cancels_with_a_reason(api: Client) -> None:
    created = schedule(api)

    body = post(api, f"/api/v1/maintenances/{created['id']}/cancel", {"reason": "The vendor postponed."}).json()

    # Cancelled, as the README, the UI and the public side say (the review found "scheduled" here).
    assert (body["status"], body["cancelled_at"]) == ("cancelled", "2026-03-02T09:00:00Z")
    assert body["updates"][0]["body"] == "The vendor postponed."
    assert api.get(f"/api/v1/maintenances/{created['id']}").json()["status"] == "cancelled"
    assert [item["status"] for item in api.get("/api/v1/maintenances").json()["items"]] == ["cancelled"]
    assert [item["status"] for item in api.get("/api/v1/maintenances?state=past").json()["items"]] == ["cancelled"]
    assert api.get("/api/v1/maintenances?state=upcoming").json()["items"] == []
    assert Maintenance.objects.get().next_action_at is None


def test_it_refuses_to_cancel_a_started_window_with_409(api: Client) -> None:
    created = schedule(api)
    post(api, f"/api/v1/maintenances/{created['id']}/start")

    response = post(api, f"/api/v1/maintenances/{created['id']}/cancel", {"reason": "Too late"})

    assert_error(response, 409, "This maintenance has started; complete it instead of cancelling.", code="started")


def test_it_refuses_to_cancel_twice_with_409(api: Client) -> None:
    created = schedule(api)
    post(api, f"/api/v1/maintenances/{created['id']}/cancel")

    response = post(api, f"/api/v1/maintenances/{created['id']}/cancel")

    assert_error(response, 409, "This maintenance is already cancelled.", code="already_cancelled")


def test_it_refuses_to_start_or_complete_a_cancelled_window_with_409(api: Client) -> None:
    created = schedule(api)
    post(api, f"/api/v1/maintenances/{created['id']}/cancel")

    for step in ("start", "complete"):
        response = post(api, f"/api/v1/maintenances/{created['id']}/{step}")
        assert_error(response, 409, "This maintenance was cancelled.", code="refused")


# --- OpenAPI ------------------------------------------------------------------------------------


def test_it_lists_the_maintenance_paths_in_openapi(db: None) -> None:
    schema = Client().get("/api/v1/openapi.json").json()

    assert {
        "/api/v1/maintenances",
        "/api/v1/maintenances/{maintenance_id}",
        "/api/v1/maintenances/{maintenance_id}/updates",
        "/api/v1/maintenances/{maintenance_id}/start",
        "/api/v1/maintenances/{maintenance_id}/complete",
        "/api/v1/maintenances/{maintenance_id}/cancel",
    } <= set(schema["paths"])
    create = schema["paths"]["/api/v1/maintenances"]["post"]
    assert create["operationId"] == "schedule_maintenance"
    assert create["tags"] == ["maintenance"]
    assert {"201", "401", "403", "409", "422"} <= set(create["responses"])
    assert set(schema["paths"]["/api/v1/maintenances/{maintenance_id}"]) == {"get", "patch"}
    created = schema["components"]["schemas"]["MaintenanceIn"]["properties"]["scheduled_for"]
    assert created["format"] == "date-time"
    status = schema["components"]["schemas"]["MaintenanceOut"]["properties"]["status"]
    assert "cancelled" in status["enum"]
