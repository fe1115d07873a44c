"""The staff JSON API at /api/v1/: token auth, each endpoint's contract, refusals and their codes."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime, timedelta
from io import StringIO
from typing import TYPE_CHECKING, Any

import pytest
import time_machine
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from incidents import actions, clocks
from incidents.models import ApiToken, Component, Incident, PublishRequest, TimelineEvent
from statuspage.snapshot import reader
from tests import factories
from tests.conftest import Subscribe
from tests.smtp import SmtpServer
from tests.test_actions import run_concurrently

if TYPE_CHECKING:
    from django.test.client import _MonkeyPatchedWSGIResponse as Response

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
pytestmark = pytest.mark.django_db

INCIDENT_FIELDS = {
    "id", "title", "severity", "status", "public_status", "impact", "impact_override",
    "customer_impact_percent", "regions", "workaround", "commander", "declared_by", "acknowledged_by",
    "components", "declared_at", "acknowledged_at", "identified_at", "mitigated_at", "resolved_at",
    "published_at", "reopened_count", "updated_at", "updates", "clocks",
}  # fmt: skip
UPDATE_FIELDS = {"id", "status", "body", "body_html", "is_public", "created_at", "author", "component_changes"}
CLOCK_FIELDS = {"metric", "target_seconds", "started_at", "due_at", "stopped_at", "elapsed_seconds", "state"}


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def create_token(username: str, *args: str) -> str:
    out, err = StringIO(), StringIO()
    call_command("create_api_token", username, *args, stdout=out, stderr=err)
    return out.getvalue().strip()


def client_for(token: str) -> Client:
    return Client(headers={"Authorization": f"Bearer {token}"})


@pytest.fixture
def token(staff: User) -> str:
    return create_token(staff.username)


@pytest.fixture
def api(token: str) -> Client:
    return client_for(token)


@pytest.fixture
def other_api(other_staff: User) -> Client:
    return client_for(create_token(other_staff.username))


@pytest.fixture
def us(staff: User) -> Component:
    group = factories.make_component(name="Query API", is_group=True, actor=staff)
    return factories.make_component(name="US", group=group, actor=staff)


def post(client: Client, url: str, data: Any = None, **headers: str) -> Response:
    return client.post(url, data, content_type="application/json", headers=headers)


def patch(client: Client, url: str, data: Any) -> Response:
    return client.patch(url, data, content_type="application/json")


def declare(client: Client, **fields: Any) -> dict[str, Any]:
    response = post(client, "/api/v1/incidents", {"title": "Queries are slow", "severity": "sev1", **fields})
    assert response.status_code == 201, response.content
    body: dict[str, Any] = response.json()
    return body


def clock(incident: dict[str, Any], metric: str) -> dict[str, Any]:
    [found] = [c for c in incident["clocks"] if c["metric"] == metric]
    return found


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


def error_fields(response: Response) -> list[str]:
    return [error["field"] for error in response.json()["errors"]]


# --- auth ---------------------------------------------------------------------------------------


def test_it_refuses_a_request_without_a_token(staff: User) -> None:
    response = Client().get("/api/v1/incidents")
    assert_error(response, 401, code="not_authenticated")
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_it_refuses_a_session_login_without_a_token(staff_client: Client) -> None:
    assert_error(staff_client.get("/api/v1/incidents"), 401)


@pytest.mark.parametrize("header", ["Bearer sp_not-a-real-token", "Bearer ", "Basic YWxpY2U6cGFzc3dvcmQ=", "sp_x"])
def test_it_refuses_a_wrong_token(token: str, header: str) -> None:
    response = Client(headers={"Authorization": header}).get("/api/v1/incidents")
    assert_error(response, 401, code="not_authenticated")


def test_it_refuses_a_token_whose_user_is_no_longer_staff(staff: User, api: Client) -> None:
    staff.is_staff = False
    staff.save()
    assert_error(api.get("/api/v1/incidents"), 403, "Staff only.", code="forbidden")


def test_it_refuses_a_token_held_by_an_outsider(outsider: User) -> None:
    token = "sp_outsider-token"
    ApiToken.objects.create(user=outsider, prefix=token[:11], token_hash=ApiToken.hash(token))
    assert_error(client_for(token).post("/api/v1/incidents", {}), 403, "Staff only.")


def test_it_refuses_a_token_whose_user_is_deactivated(staff: User, api: Client) -> None:
    staff.is_active = False
    staff.save()
    assert_error(api.get("/api/v1/incidents"), 401, "This API token's user is deactivated.")


def test_it_records_when_a_token_was_last_used_at_most_once_a_minute(api: Client) -> None:
    api_token = ApiToken.objects.get()
    assert api_token.last_used_at is None
    with time_machine.travel(T0, tick=False):
        assert api.get("/api/v1/incidents").status_code == 200
    with time_machine.travel(T0 + timedelta(seconds=59), tick=False):
        assert api.get("/api/v1/incidents").status_code == 200
    api_token.refresh_from_db()
    assert api_token.last_used_at == T0
    with time_machine.travel(T0 + timedelta(seconds=61), tick=False):
        assert api.get("/api/v1/incidents").status_code == 200
    api_token.refresh_from_db()
    assert api_token.last_used_at == T0 + timedelta(seconds=61)


# --- create_api_token ---------------------------------------------------------------------------


def test_it_creates_a_token_printed_once_and_stored_as_a_hash(staff: User) -> None:
    out, err = StringIO(), StringIO()
    call_command("create_api_token", "alice", "--name", "pager bridge", stdout=out, stderr=err)

    token = out.getvalue().strip()
    assert token.startswith("sp_") and len(token) >= 40
    assert token not in err.getvalue()  # the note names the prefix only
    api_token = ApiToken.objects.get()
    assert (api_token.user, api_token.name, api_token.prefix) == (staff, "pager bridge", token[:11])
    assert api_token.token_hash == hashlib.sha256(token.encode()).hexdigest()
    stored = [str(value) for value in ApiToken.objects.values_list().get()]
    assert not any(token in value for value in stored)
    assert client_for(token).get("/api/v1/incidents").status_code == 200


def test_it_creates_a_different_token_each_time(staff: User) -> None:
    assert create_token("alice") != create_token("alice")
    assert ApiToken.objects.count() == 2


@pytest.mark.parametrize(
    ("username", "message"),
    [("nobody", "No user named 'nobody'."), ("mallory", "'mallory' must be an active staff user")],
)
def test_it_refuses_a_token_for_an_unknown_or_non_staff_user(outsider: User, username: str, message: str) -> None:
    with pytest.raises(CommandError, match=message):
        create_token(username)
    assert not ApiToken.objects.exists()


def test_it_refuses_a_token_for_an_inactive_user(staff: User) -> None:
    staff.is_active = False
    staff.save()
    with pytest.raises(CommandError, match="active staff"):
        create_token("alice")


# --- declare ------------------------------------------------------------------------------------


def test_it_declares_an_incident(api: Client, staff: User, us: Component) -> None:
    with time_machine.travel(T0, tick=False):
        response = post(
            api,
            "/api/v1/incidents",
            {
                "title": "Queries are slow",
                "severity": "sev2",
                "message": "We are **investigating**.",
                "components": [{"id": us.pk, "status": "partial_outage"}],
                "customer_impact_percent": 45,
                "regions": ["us-east", "us-west"],
                "workaround": "Use cached dashboards.",
            },
        )

    assert response.status_code == 201
    incident = response.json()
    assert set(incident) == INCIDENT_FIELDS
    assert incident["title"] == "Queries are slow"
    assert (incident["severity"], incident["status"], incident["public_status"]) == (
        "sev2",
        "declared",
        "investigating",
    )
    assert (incident["impact"], incident["impact_override"]) == ("major", None)
    assert incident["customer_impact_percent"] == 45.0
    assert incident["regions"] == ["us-east", "us-west"]
    assert incident["workaround"] == "Use cached dashboards."
    assert (incident["commander"], incident["declared_by"], incident["acknowledged_by"]) == ("alice", "alice", None)
    assert incident["components"] == [
        {"id": us.pk, "name": "US", "display_name": "Query API - US", "status": "partial_outage"}
    ]
    assert incident["declared_at"] == incident["published_at"] == "2026-03-02T09:00:00Z"
    assert incident["acknowledged_at"] is incident["resolved_at"] is incident["identified_at"] is None
    [update] = incident["updates"]
    assert set(update) == UPDATE_FIELDS
    assert update["body"] == "We are **investigating**."
    assert update["body_html"] == "<p>We are <strong>investigating</strong>.</p>\n"
    assert (update["status"], update["is_public"], update["author"]) == ("investigating", True, "alice")
    assert update["created_at"] == "2026-03-02T09:00:00Z"
    assert Incident.objects.get().pk == incident["id"]


def test_it_reads_back_clocks_with_targets_due_times_and_states(api: Client) -> None:
    with time_machine.travel(T0, tick=False):
        incident = declare(api, message="Looking into it.")
    with time_machine.travel(T0 + timedelta(minutes=2), tick=False):
        incident = api.get(f"/api/v1/incidents/{incident['id']}").json()

    assert [c["metric"] for c in incident["clocks"]] == ["acknowledge", "first_update", "resolve", "update_cadence"]
    assert all(set(c) == CLOCK_FIELDS for c in incident["clocks"])
    assert clock(incident, "acknowledge") == {
        "metric": "acknowledge",
        "target_seconds": 300,
        "started_at": "2026-03-02T09:00:00Z",
        "due_at": "2026-03-02T09:05:00Z",
        "stopped_at": None,
        "elapsed_seconds": 120.0,
        "state": "running",
    }
    # The declaration's public message was the first update, on time.
    assert clock(incident, "first_update")["state"] == "met"
    assert clock(incident, "first_update")["stopped_at"] == "2026-03-02T09:00:00Z"
    assert clock(incident, "update_cadence")["due_at"] == "2026-03-02T09:30:00Z"


def test_it_shows_a_breached_clock_after_the_sweep(api: Client) -> None:
    with time_machine.travel(T0, tick=False):
        incident = declare(api)
    with time_machine.travel(T0 + timedelta(minutes=6), tick=False):
        assert clock(api.get(f"/api/v1/incidents/{incident['id']}").json(), "acknowledge")["state"] == "running"
        clocks.sweep_due()
        incident = api.get(f"/api/v1/incidents/{incident['id']}").json()

    ack = clock(incident, "acknowledge")
    assert (ack["state"], ack["elapsed_seconds"], ack["due_at"]) == ("breached", 360.0, "2026-03-02T09:05:00Z")
    assert clock(incident, "resolve")["state"] == "running"


def test_it_shows_a_met_clock_after_a_timely_acknowledge(api: Client) -> None:
    with time_machine.travel(T0, tick=False):
        incident = declare(api)
    with time_machine.travel(T0 + timedelta(minutes=3), tick=False):
        incident = post(api, f"/api/v1/incidents/{incident['id']}/acknowledge").json()

    ack = clock(incident, "acknowledge")
    assert (ack["state"], ack["elapsed_seconds"], ack["stopped_at"]) == ("met", 180.0, "2026-03-02T09:03:00Z")


def test_it_returns_the_same_incident_for_the_same_idempotency_key(api: Client, other_api: Client) -> None:
    data = {"title": "Queries are slow", "severity": "sev1"}
    with time_machine.travel(T0, tick=False):
        first = post(api, "/api/v1/incidents", data, **{"Idempotency-Key": "pager-123"})
        again = post(api, "/api/v1/incidents", data, **{"Idempotency-Key": "pager-123"})
        theirs = post(other_api, "/api/v1/incidents", data, **{"Idempotency-Key": "pager-123"})
        fresh = post(api, "/api/v1/incidents", data, **{"Idempotency-Key": "pager-124"})

    assert (first.status_code, again.status_code, theirs.status_code, fresh.status_code) == (201, 200, 201, 201)
    assert again.json() == first.json()
    assert theirs.json()["id"] != first.json()["id"]
    assert theirs.json()["declared_by"] == "bob"
    assert Incident.objects.count() == 3


@pytest.mark.django_db(transaction=True)
def test_concurrent_declarations_with_one_new_key_declare_once(requires_postgres: None, staff: User) -> None:
    factories.ensure_severities()
    token = create_token(staff.username)
    data = {"title": "Queries are slow", "severity": "sev1"}

    def declare_with_key() -> Response:
        client = Client(headers={"Authorization": f"Bearer {token}"}, raise_request_exception=False)
        return post(client, "/api/v1/incidents", data, **{"Idempotency-Key": "k"})

    responses = run_concurrently(*[declare_with_key] * 10)

    statuses = sorted(getattr(response, "status_code", response) for response in responses)
    assert statuses == [200] * 9 + [201], [getattr(r, "content", r) for r in responses]
    assert Incident.objects.count() == 1
    assert {response.json()["id"] for response in responses} == {Incident.objects.get().pk}


def test_it_needs_no_csrf_token_with_a_bearer_token(token: str) -> None:
    client = Client(enforce_csrf_checks=True, headers={"Authorization": f"Bearer {token}"})
    response = post(client, "/api/v1/incidents", {"title": "Queries are slow", "severity": "sev1"})
    assert response.status_code == 201


def test_it_declares_twice_without_an_idempotency_key(api: Client) -> None:
    declare(api)
    declare(api)
    assert Incident.objects.count() == 2


def test_it_refuses_an_overlong_idempotency_key(api: Client) -> None:
    response = post(api, "/api/v1/incidents", {"title": "x", "severity": "sev1"}, **{"Idempotency-Key": "k" * 201})
    assert_error(response, 422, code="invalid")
    assert error_fields(response) == ["Idempotency-Key"]


def test_it_explains_validation_errors_as_json(api: Client) -> None:
    response = post(
        api,
        "/api/v1/incidents",
        {"title": "", "components": [{"id": "x", "status": "on_fire"}], "customer_impact_percent": 101},
    )

    body = assert_error(response, 422, code="invalid")
    assert body["detail"].startswith("Invalid input: title: String should have at least 1 character;")
    assert error_fields(response) == [
        "title",
        "severity",
        "components.0.id",
        "components.0.status",
        "customer_impact_percent",
    ]
    assert all(set(error) == {"field", "msg", "type"} for error in body["errors"])
    assert not Incident.objects.exists()


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"severity": "sev9"}, "severity"),
        ({"severity": 1}, "severity"),
        ({"components": [{"id": 999, "status": "major_outage"}]}, "components"),
        ({"components": [{"id": 2**70, "status": "major_outage"}]}, "components.0.id"),
        ({"components": [{"id": 1, "status": "melting"}]}, "components.0.status"),
        ({"customer_impact_percent": -1}, "customer_impact_percent"),
        ({"customer_impact_percent": "lots"}, "customer_impact_percent"),
        ({"public_status": "resolved"}, "public_status"),
        ({"public_status": "panicking"}, "public_status"),
        ({"impact_override": "apocalyptic"}, "impact_override"),
        ({"regions": "eu"}, "regions"),
        ({"title": "x" * 201}, "title"),
        ({"title": "   "}, "title"),
        ({"components": [{"id": 0, "status": "major_outage"}]}, "components.0.id"),
    ],
)
def test_it_refuses_bad_declarations_with_422(api: Client, us: Component, data: dict[str, Any], field: str) -> None:
    response = post(api, "/api/v1/incidents", {"title": "Queries are slow", "severity": "sev1", **data})
    assert_error(response, 422)
    assert field in error_fields(response)
    assert not Incident.objects.exists()


def test_it_refuses_a_group_as_an_affected_component_naming_the_field(api: Client, us: Component) -> None:
    assert us.group is not None
    response = post(
        api,
        "/api/v1/incidents",
        {"title": "x", "severity": "sev1", "components": [{"id": us.group.pk, "status": "major_outage"}]},
    )
    assert_error(response, 422, "Query API is a group; set the status of its components instead.", field="components")


def test_it_refuses_a_component_listed_twice(api: Client, us: Component) -> None:
    components = [{"id": us.pk, "status": "major_outage"}, {"id": us.pk, "status": "partial_outage"}]
    response = post(api, "/api/v1/incidents", {"title": "x", "severity": "sev1", "components": components})
    assert_error(response, 422, field="components", code="duplicate")


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ("not json", "The request body must be a JSON object."),
        ("{'title': 'x'}", "The request body must be a JSON object."),
        (b"\xff\xfe", "The request body is not valid UTF-8."),
    ],
)
def test_it_refuses_a_body_that_is_not_json(api: Client, body: str | bytes, detail: str) -> None:
    response = api.post("/api/v1/incidents", body, content_type="application/json")
    assert_error(response, 422, detail, code="invalid")
    assert error_fields(response) == ["body"]


def test_it_says_a_number_is_too_long_rather_than_the_body_is_no_object(api: Client) -> None:
    body = '{"title": "x", "severity": "sev1", "customer_impact_percent": ' + "1" * 5001 + "}"
    response = api.post("/api/v1/incidents", body, content_type="application/json")
    body_error = assert_error(response, 422, code="invalid")
    assert body_error["detail"].startswith("The request body holds a number too long to read (more than")
    assert error_fields(response) == ["body"]
    assert not Incident.objects.exists()


def test_it_reads_a_body_that_starts_with_a_byte_order_mark(api: Client) -> None:
    body = "\ufeff" + json.dumps({"title": "Queries are slow", "severity": "sev1"})
    response = api.post("/api/v1/incidents", body.encode(), content_type="application/json")
    assert response.status_code == 201, response.content
    assert Incident.objects.get().title == "Queries are slow"


@pytest.mark.parametrize("body", ["[1, 2]", '"title"', "null"])
def test_it_refuses_json_that_is_not_an_object(api: Client, body: str) -> None:
    assert_error(api.post("/api/v1/incidents", body, content_type="application/json"), 422, code="invalid")


# --- list and read ------------------------------------------------------------------------------


def test_it_lists_incidents_newest_first_with_a_state_filter(api: Client, staff: User) -> None:
    oldest = factories.declare(actor=staff, title="Oldest", at=T0)
    middle = factories.declare(actor=staff, title="Middle", at=T0 + timedelta(hours=1))
    newest = factories.declare(actor=staff, title="Newest", at=T0 + timedelta(hours=2))
    actions.resolve_incident(middle, actor=staff, at=T0 + timedelta(hours=3))

    every = api.get("/api/v1/incidents").json()
    assert (every["count"], every["limit"], every["offset"]) == (3, 50, 0)
    assert [i["title"] for i in every["items"]] == ["Newest", "Middle", "Oldest"]
    assert set(every["items"][0]) == INCIDENT_FIELDS
    open_ = api.get("/api/v1/incidents?state=open").json()
    assert [i["id"] for i in open_["items"]] == [newest.pk, oldest.pk]
    resolved = api.get("/api/v1/incidents?state=resolved").json()
    assert [i["id"] for i in resolved["items"]] == [middle.pk]
    page = api.get("/api/v1/incidents?limit=1&offset=1").json()
    assert (page["count"], [i["title"] for i in page["items"]]) == (3, ["Middle"])


@pytest.mark.parametrize("query", ["state=bogus", "limit=0", "limit=101", "offset=-1", "offset=99999999999999999999"])
def test_it_refuses_bad_list_parameters(api: Client, query: str) -> None:
    assert_error(api.get(f"/api/v1/incidents?{query}"), 422, code="invalid")


def test_it_lists_incidents_in_a_constant_number_of_queries(api: Client, staff: User, us: Component) -> None:
    def declare_some(count: int) -> None:
        for n in range(count):
            incident = factories.declare(actor=staff, title=f"Incident {n}", components={us: "partial_outage"})
            actions.post_update(incident, actor=staff, body="Still on it.", public_status="identified")
            if n % 2:
                actions.resolve_incident(incident, actor=staff, message="Fixed.")

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            response = api.get("/api/v1/incidents")
        assert response.status_code == 200
        return len(captured)

    api.get("/api/v1/incidents")  # the first request records the token's last use
    declare_some(5)
    five = queries()
    declare_some(45)
    fifty = queries()

    assert api.get("/api/v1/incidents").json()["count"] == 50
    assert five == fifty
    # token, count, incidents, clocks, updates, components
    assert fifty == 6


def test_it_reads_one_incident(api: Client, staff: User) -> None:
    incident = factories.declare(actor=staff, at=T0)
    actions.post_update(
        incident, actor=staff, body="Found it.", public_status="identified", at=T0 + timedelta(minutes=5)
    )

    body = api.get(f"/api/v1/incidents/{incident.pk}").json()
    assert set(body) == INCIDENT_FIELDS
    assert [u["body"] for u in body["updates"]] == ["Found it.", "We are investigating elevated latency."]
    assert body["identified_at"] == body["acknowledged_at"] == "2026-03-02T09:05:00Z"


@pytest.mark.parametrize("incident_id", ["999", "99999999999999999999"])
def test_it_answers_404_for_an_unknown_incident(api: Client, incident_id: str) -> None:
    assert_error(api.get(f"/api/v1/incidents/{incident_id}"), 404, "No such incident.", code="not_found")
    assert_error(post(api, f"/api/v1/incidents/{incident_id}/acknowledge"), 404, "No such incident.")


@pytest.mark.parametrize("url", ["/api/v1/incidents/abc", "/api/v1/incidents/-1/paging", "/api/v1/maintenances/1.0"])
def test_an_id_that_is_not_a_number_matches_no_url(api: Client, url: str) -> None:
    assert_error(api.get(url), 404, "No such API endpoint.", code="not_found")


def test_it_answers_json_for_unknown_api_urls(api: Client) -> None:
    assert_error(api.get("/api/v1/nothing-here"), 404, "No such API endpoint.")
    assert_error(Client().post("/api/v1/incidents/1/explode"), 404, "No such API endpoint.")


@pytest.mark.parametrize("url", ["/api/v1/", "/api/v1"])
def test_the_api_root_answers_json_naming_where_the_endpoints_are(url: str) -> None:
    body = assert_error(Client().get(url), 404, code="not_found")
    assert "/api/v1/openapi.json" in body["detail"]


@pytest.mark.parametrize("url", ["/api/v2/nope.json", "/api/v2/", "/api/v2", "/api/v3/x", "/api", "/api/"])
def test_unknown_urls_anywhere_under_api_answer_json(url: str) -> None:
    client = Client(enforce_csrf_checks=True)
    for response in (client.get(url), client.post(url, "{}", content_type="application/json")):
        body = assert_error(response, 404, code="not_found")
        assert "/api/v1/openapi.json" in body["detail"] and "/api/v2/summary.json" in body["detail"]


# --- acknowledge --------------------------------------------------------------------------------


def test_it_acknowledges(api: Client, staff: User) -> None:
    incident = factories.declare(actor=staff, at=T0)
    with time_machine.travel(T0 + timedelta(minutes=1), tick=False):
        response = post(api, f"/api/v1/incidents/{incident.pk}/acknowledge")

    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["acknowledged_by"]) == ("acknowledged", "alice")
    assert body["acknowledged_at"] == "2026-03-02T09:01:00Z"
    assert TimelineEvent.objects.filter(incident=incident, kind="acknowledged").count() == 1


def test_it_refuses_a_second_acknowledge_with_409(api: Client, other_staff: User) -> None:
    incident = factories.declare(actor=other_staff)
    actions.acknowledge_incident(incident, actor=other_staff)

    response = post(api, f"/api/v1/incidents/{incident.pk}/acknowledge")
    assert_error(response, 409, "Already acknowledged by bob.", code="already_acknowledged")


def test_it_refuses_to_acknowledge_a_resolved_incident(api: Client, staff: User) -> None:
    incident = factories.declare(actor=staff)
    actions.resolve_incident(incident, actor=staff)
    assert_error(post(api, f"/api/v1/incidents/{incident.pk}/acknowledge"), 409, code="refused")


# --- updates ------------------------------------------------------------------------------------


def test_it_posts_an_update_with_component_changes(api: Client, staff: User, us: Component) -> None:
    incident = factories.declare(actor=staff, at=T0, components={us: "degraded_performance"})
    with time_machine.travel(T0 + timedelta(minutes=10), tick=False):
        response = post(
            api,
            f"/api/v1/incidents/{incident.pk}/updates",
            {
                "body": "A bad deploy; rolling back.",
                "status": "identified",
                "components": [{"id": us.pk, "status": "major_outage"}],
            },
        )

    assert response.status_code == 201
    body = response.json()
    assert (body["public_status"], body["status"], body["impact"]) == ("identified", "identified", "critical")
    update = body["updates"][0]
    assert (update["body"], update["status"], update["author"]) == (
        "A bad deploy; rolling back.",
        "identified",
        "alice",
    )
    assert update["created_at"] == "2026-03-02T09:10:00Z"
    assert update["component_changes"] == [
        {
            "component_id": us.pk,
            "name": "Query API - US",
            "old_status": "degraded_performance",
            "new_status": "major_outage",
        }
    ]
    assert clock(body, "update_cadence")["started_at"] == "2026-03-02T09:10:00Z"
    us.refresh_from_db()
    assert us.status == "major_outage"


def test_it_posts_an_internal_update_without_moving_the_public_status(api: Client, staff: User) -> None:
    incident = factories.declare(actor=staff)
    response = post(
        api,
        f"/api/v1/incidents/{incident.pk}/updates",
        {"body": "Paging the DBA.", "status": "monitoring", "is_public": False},
    )
    body = response.json()
    assert (body["public_status"], body["updates"][0]["is_public"]) == ("investigating", False)


@pytest.mark.parametrize(
    ("data", "field", "detail"),
    [
        ({"body": "   "}, "body", "An update needs a message."),
        ({"body": "Done", "status": "resolved"}, "status", "Use Resolve to resolve an incident."),
        ({"body": "Done", "status": "fixed"}, "status", None),
        ({"status": "identified"}, "body", None),
        (
            {"body": "x", "components": [{"id": 999, "status": "major_outage"}]},
            "components",
            "No component with id 999.",
        ),
    ],
)
def test_it_refuses_bad_updates_with_422(
    api: Client, staff: User, data: dict[str, Any], field: str, detail: str | None
) -> None:
    incident = factories.declare(actor=staff)
    response = post(api, f"/api/v1/incidents/{incident.pk}/updates", data)
    assert_error(response, 422, detail)
    assert error_fields(response) == [field]
    assert incident.updates.count() == 1


def test_it_refuses_an_update_on_a_resolved_incident_with_409(api: Client, staff: User) -> None:
    incident = factories.declare(actor=staff)
    actions.resolve_incident(incident, actor=staff)
    response = post(api, f"/api/v1/incidents/{incident.pk}/updates", {"body": "One more thing"})
    assert_error(response, 409, "This incident is resolved; reopen it before posting an update.")


# --- resolve and reopen -------------------------------------------------------------------------


def test_it_resolves_without_a_body(api: Client, staff: User, us: Component) -> None:
    incident = factories.declare(actor=staff, at=T0, components={us: "major_outage"})
    with time_machine.travel(T0 + timedelta(hours=1), tick=False):
        response = api.generic("POST", f"/api/v1/incidents/{incident.pk}/resolve")  # no body at all

    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["public_status"]) == ("resolved", "resolved")
    assert body["resolved_at"] == body["acknowledged_at"] == body["mitigated_at"] == "2026-03-02T10:00:00Z"
    assert clock(body, "resolve")["state"] == "met"
    assert body["components"][0]["status"] == "operational"
    # A public incident always tells customers it is over (the default message, without one).
    assert [(u["status"], u["body"], u["is_public"]) for u in body["updates"]] == [
        ("resolved", "This incident has been resolved.", True),
        ("investigating", "We are investigating elevated latency.", True),
    ]


def test_resolving_with_an_empty_body_tells_the_public_page_and_subscribers(
    api: Client,
    staff: User,
    us: Component,
    subscribe: Subscribe,
    smtp: SmtpServer,
    django_capture_on_commit_callbacks: Any,
) -> None:
    # The review: /, /history and /incidents/N said "Investigating – <the last update>", v2 said
    # resolved with only an investigating update, and subscribers got no "Resolved" email.
    subscribe("ann@example.com")
    with time_machine.travel(T0, tick=False), django_capture_on_commit_callbacks(execute=True):
        incident = factories.declare(actor=staff, title="Queries are slow", components={us: "major_outage"})
    with time_machine.travel(T0 + timedelta(hours=1), tick=False):
        with django_capture_on_commit_callbacks(execute=True):
            assert post(api, f"/api/v1/incidents/{incident.pk}/resolve", {}).status_code == 200
        reader.reset()

        public = Client()
        [row] = public.get("/api/v2/incidents.json").json()["incidents"]
        assert row["status"] == "resolved"
        assert [(u["status"], u["body"]) for u in row["incident_updates"]] == [
            ("resolved", "This incident has been resolved."),
            ("investigating", "We are investigating elevated latency."),
        ]
        pages = {
            url: " ".join(re.sub(r"<[^>]+>", " ", public.get(url).content.decode()).split())
            for url in ("/", "/history", f"/incidents/{incident.pk}")
        }
    for url in ("/", "/history"):
        assert "Resolved – This incident has been resolved." in pages[url], url
    assert pages[f"/incidents/{incident.pk}"].index("This incident has been resolved.") < pages[
        f"/incidents/{incident.pk}"
    ].index("We are investigating elevated latency.")
    assert [e["Subject"] for e in smtp.inbox("ann@example.com")] == [
        "[Investigating] Queries are slow",
        "[Resolved] Queries are slow",
    ]


def test_it_resolves_with_a_closing_message(api: Client, staff: User) -> None:
    incident = factories.declare(actor=staff)
    response = post(api, f"/api/v1/incidents/{incident.pk}/resolve", {"message": "All clear."})
    update = response.json()["updates"][0]
    assert (update["body"], update["status"], update["is_public"]) == ("All clear.", "resolved", True)


def test_it_refuses_to_resolve_twice_with_409(api: Client, staff: User) -> None:
    incident = factories.declare(actor=staff)
    assert post(api, f"/api/v1/incidents/{incident.pk}/resolve").status_code == 200
    response = post(api, f"/api/v1/incidents/{incident.pk}/resolve")
    assert_error(response, 409, "This incident is already resolved.", code="already_resolved")


def test_it_reopens_with_a_reason(api: Client, staff: User) -> None:
    incident = factories.declare(actor=staff)
    actions.resolve_incident(incident, actor=staff)

    response = post(api, f"/api/v1/incidents/{incident.pk}/reopen", {"reason": "Errors are back."})
    assert response.status_code == 200
    body = response.json()
    assert (body["public_status"], body["resolved_at"], body["reopened_count"]) == ("investigating", None, 1)
    assert clock(body, "resolve")["state"] == "running"


@pytest.mark.parametrize(("data", "detail"), [({}, None), ({"reason": "  "}, "Say why the incident is reopened.")])
def test_it_refuses_a_reopen_without_a_reason(
    api: Client, staff: User, data: dict[str, str], detail: str | None
) -> None:
    incident = factories.declare(actor=staff)
    actions.resolve_incident(incident, actor=staff)
    response = post(api, f"/api/v1/incidents/{incident.pk}/reopen", data)
    assert_error(response, 422, detail)
    assert error_fields(response) == ["reason"]


def test_it_refuses_to_reopen_an_open_incident_with_409(api: Client, staff: User) -> None:
    incident = factories.declare(actor=staff)
    response = post(api, f"/api/v1/incidents/{incident.pk}/reopen", {"reason": "Just because."})
    assert_error(response, 409, "Only a resolved incident can be reopened.", code="not_resolved")


# --- patch: severity and impact scope ------------------------------------------------------------


def test_it_changes_severity_and_retargets_clocks(api: Client, staff: User) -> None:
    incident = factories.declare(actor=staff, severity_key="sev3")
    response = patch(api, f"/api/v1/incidents/{incident.pk}", {"severity": "sev1"})

    assert response.status_code == 200
    body = response.json()
    assert body["severity"] == "sev1"
    assert clock(body, "acknowledge")["target_seconds"] == 300
    assert body["regions"] == []  # untouched


def test_it_changes_only_the_scope_fields_given(api: Client, staff: User) -> None:
    incident = factories.declare(actor=staff, customer_impact_percent=10, regions=["eu"], workaround="Retry.")

    body = patch(api, f"/api/v1/incidents/{incident.pk}", {"regions": ["eu", "us"], "impact_override": "major"}).json()
    assert (body["regions"], body["impact_override"], body["impact"]) == (["eu", "us"], "major", "major")
    assert (body["customer_impact_percent"], body["workaround"], body["severity"]) == (10.0, "Retry.", "sev1")

    body = patch(
        api, f"/api/v1/incidents/{incident.pk}", {"customer_impact_percent": None, "impact_override": None}
    ).json()
    assert (body["customer_impact_percent"], body["impact_override"], body["regions"]) == (None, None, ["eu", "us"])


def test_it_changes_severity_and_scope_in_one_request(api: Client, staff: User) -> None:
    incident = factories.declare(actor=staff)
    body = patch(api, f"/api/v1/incidents/{incident.pk}", {"severity": "sev2", "customer_impact_percent": 12.5}).json()
    assert (body["severity"], body["customer_impact_percent"]) == ("sev2", 12.5)
    kinds = set(incident.events.values_list("kind", flat=True))
    assert {"severity_changed", "scope_changed"} <= kinds


def test_it_applies_nothing_when_part_of_a_patch_is_refused(api: Client, staff: User) -> None:
    incident = factories.declare(actor=staff, regions=["eu"])
    response = patch(api, f"/api/v1/incidents/{incident.pk}", {"severity": "sev2", "commander": "nobody"})

    assert_error(response, 422, field="commander")
    incident.refresh_from_db()
    assert incident.severity.key == "sev1"
    assert not incident.events.filter(kind="severity_changed").exists()


@pytest.mark.parametrize(
    "data",
    [
        {"severity": "sev1"},
        {"severity": "SEV1", "commander": "alice"},
        {"regions": ["eu"], "workaround": "Retry.", "customer_impact_percent": 10},
        {"severity": "sev1", "commander": "alice", "regions": ["eu"], "impact_override": None},
    ],
)
def test_a_patch_that_changes_nothing_answers_200_and_records_nothing(
    api: Client, staff: User, data: dict[str, Any]
) -> None:
    """The rule for every PATCH: the object as it is, no timeline event, nothing published or sent."""
    with time_machine.travel(T0, tick=False):
        incident = factories.declare(
            actor=staff, severity_key="sev1", regions=["eu"], workaround="Retry.", customer_impact_percent=10
        )
        assert incident.commander == staff  # the declarer commands at first
        url = f"/api/v1/incidents/{incident.pk}"
        before = api.get(url).json()
        events = list(incident.events.values_list("pk", flat=True))
        publishes = PublishRequest.objects.count()

        response = patch(api, url, data)

        assert response.status_code == 200, response.content
        assert response.json() == before
        assert list(incident.events.values_list("pk", flat=True)) == events
        assert PublishRequest.objects.count() == publishes


def test_a_patch_applies_what_changes_beside_what_does_not(api: Client, staff: User) -> None:
    incident = factories.declare(actor=staff, severity_key="sev1", regions=["eu"])

    body = patch(api, f"/api/v1/incidents/{incident.pk}", {"severity": "sev1", "regions": ["eu", "us"]}).json()

    assert (body["severity"], body["regions"]) == ("sev1", ["eu", "us"])
    kinds = list(incident.events.values_list("kind", flat=True))
    assert kinds.count("scope_changed") == 1 and "severity_changed" not in kinds


@pytest.mark.parametrize(
    ("data", "status", "field"),
    [
        ({}, 422, "body"),
        ({"severity": "sev0"}, 422, "severity"),
        ({"severity": None}, 422, "severity"),
        ({"customer_impact_percent": 100.5}, 422, "customer_impact_percent"),
        ({"impact_override": "meh"}, 422, "impact_override"),
    ],
)
def test_it_refuses_bad_patches(api: Client, staff: User, data: dict[str, Any], status: int, field: str) -> None:
    incident = factories.declare(actor=staff)
    response = patch(api, f"/api/v1/incidents/{incident.pk}", data)
    assert_error(response, status)
    assert field in error_fields(response)


# --- components and severities ------------------------------------------------------------------


def test_it_lists_components_in_display_order(api: Client, us: Component) -> None:
    body = api.get("/api/v1/components").json()
    assert [(c["name"], c["is_group"], c["group_id"]) for c in body] == [
        ("Query API", True, None),
        ("US", False, us.group_id),
    ]
    assert set(body[1]) == {
        "id", "name", "display_name", "group_id", "is_group", "description", "position", "status", "showcase",
        "only_show_if_degraded", "start_date", "updated_at",
    }  # fmt: skip


def test_it_creates_a_component(api: Client, us: Component) -> None:
    with time_machine.travel(T0, tick=False):
        response = post(
            api,
            "/api/v1/components",
            {
                "name": "EU",
                "group_id": us.group_id,
                "description": "Frankfurt",
                "status": "degraded_performance",
                "showcase": False,
            },
        )

    assert response.status_code == 201
    body = response.json()
    assert (body["display_name"], body["status"], body["showcase"]) == ("Query API - EU", "degraded_performance", False)
    assert (body["description"], body["start_date"], body["position"]) == ("Frankfurt", "2026-03-02", 2)
    assert Component.objects.get(pk=body["id"]).status_changes.count() == 1


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"name": "US", "group_id": "GROUP"}, "name"),  # already exists there
        ({"name": "EU", "group_id": 999}, "group_id"),
        ({"name": "EU", "group_id": "US"}, "group_id"),  # not a group
        ({"name": "Nested", "group_id": "GROUP", "is_group": True}, "group_id"),
        ({"name": "EU", "status": "sideways"}, "status"),
        ({"name": ""}, "name"),
        ({"name": "EU", "position": -1}, "position"),
    ],
)
def test_it_refuses_bad_components_with_422(api: Client, us: Component, data: dict[str, Any], field: str) -> None:
    if data.get("group_id") in ("GROUP", "US"):
        data = {**data, "group_id": us.group_id if data["group_id"] == "GROUP" else us.pk}
    response = post(api, "/api/v1/components", data)
    assert_error(response, 422)
    assert field in error_fields(response)
    assert Component.objects.count() == 2


def test_it_sets_a_component_status(api: Client, us: Component) -> None:
    response = patch(api, f"/api/v1/components/{us.pk}", {"status": "under_maintenance"})
    assert response.status_code == 200
    assert response.json()["status"] == "under_maintenance"
    assert us.status_changes.get().new_status == "under_maintenance"


def test_it_sets_a_component_status_within_an_incident(api: Client, staff: User, us: Component) -> None:
    incident = factories.declare(actor=staff)
    response = patch(api, f"/api/v1/components/{us.pk}", {"status": "major_outage", "incident_id": incident.pk})

    assert response.json()["status"] == "major_outage"
    body = api.get(f"/api/v1/incidents/{incident.pk}").json()
    assert ([c["id"] for c in body["components"]], body["impact"]) == ([us.pk], "critical")


def test_it_refuses_component_changes_it_cannot_make(api: Client, staff: User, us: Component) -> None:
    resolved = factories.declare(actor=staff)
    actions.resolve_incident(resolved, actor=staff)
    assert us.group_id is not None

    assert_error(patch(api, "/api/v1/components/999", {"status": "major_outage"}), 404, "No such component.")
    response = patch(api, f"/api/v1/components/{us.pk}", {"status": "major_outage", "incident_id": 999})
    assert_error(response, 422, "No such incident with id 999.", field="incident_id")
    response = patch(api, f"/api/v1/components/{us.pk}", {"status": "major_outage", "incident_id": resolved.pk})
    assert_error(response, 409, "This incident is resolved; reopen it first.")
    response = patch(api, f"/api/v1/components/{us.group_id}", {"status": "major_outage"})
    assert_error(response, 422, "Query API is a group; set the status of its components instead.", field="status")
    assert_error(patch(api, f"/api/v1/components/{us.pk}", {"status": "gone"}), 422, code="invalid")
    us.refresh_from_db()
    assert us.status == "operational"


def test_it_lists_severities_with_their_targets(api: Client) -> None:
    body = api.get("/api/v1/severities").json()
    assert [s["key"] for s in body] == ["sev1", "sev2", "sev3", "sev4"]
    assert body[0]["acknowledge_target"] == 300


# --- OpenAPI ------------------------------------------------------------------------------------


def test_it_serves_openapi_listing_every_path(db: None) -> None:
    response = Client().get("/api/v1/openapi.json")

    assert response.status_code == 200
    schema = response.json()
    assert set(schema["paths"]) == {
        "/api/v1/incidents",
        "/api/v1/incidents/{incident_id}",
        "/api/v1/incidents/{incident_id}/acknowledge",
        "/api/v1/incidents/{incident_id}/updates",
        "/api/v1/incidents/{incident_id}/resolve",
        "/api/v1/incidents/{incident_id}/reopen",
        "/api/v1/incidents/{incident_id}/paging",
        "/api/v1/incidents/{incident_id}/stop-paging",
        "/api/v1/components",
        "/api/v1/components/{component_id}",
        "/api/v1/severities",
        "/api/v1/maintenances",
        "/api/v1/maintenances/{maintenance_id}",
        "/api/v1/maintenances/{maintenance_id}/updates",
        "/api/v1/maintenances/{maintenance_id}/start",
        "/api/v1/maintenances/{maintenance_id}/complete",
        "/api/v1/maintenances/{maintenance_id}/cancel",
        "/api/v1/metrics",
        "/api/v1/incidents/{incident_id}/postmortem",
        "/api/v1/incidents/{incident_id}/postmortem/submit",
        "/api/v1/incidents/{incident_id}/postmortem/return",
        "/api/v1/incidents/{incident_id}/postmortem/publish",
        "/api/v1/incidents/{incident_id}/postmortem/timeline",
        "/api/v1/incidents/{incident_id}/postmortem/action-items",
        "/api/v1/incidents/{incident_id}/postmortem/action-items/{item_id}",
    }
    declare_op = schema["paths"]["/api/v1/incidents"]["post"]
    assert declare_op["operationId"] == "declare_incident"
    assert {"200", "201", "401", "403", "409", "422"} <= set(declare_op["responses"])
    assert schema["components"]["securitySchemes"]["ApiTokenAuth"] == {"type": "http", "scheme": "bearer"}


def test_it_serves_no_docs_page_from_a_cdn(api: Client) -> None:
    assert_error(api.get("/api/v1/docs"), 404)


@pytest.mark.parametrize("header", ["Basic b25jYWxsOnNpZ25hbHBvc3Q=", "Token sp_secret-token-value"])
def test_it_never_logs_credentials_sent_with_another_scheme(
    client: Client, header: str, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings.DEBUG = True  # ninja's own bearer class logs the header only then
    with caplog.at_level("DEBUG"):
        response = client.get("/api/v1/incidents", HTTP_AUTHORIZATION=header)

    scheme, secret = header.split(" ", 1)
    assert_error(response, 401, f"Use 'Authorization: Bearer <token>', not the '{scheme}' scheme.")
    assert secret not in caplog.text


def test_it_hands_an_incident_to_a_commander(api: Client, staff: User, other_staff: User, outsider: User) -> None:
    incident = factories.declare(actor=staff)

    response = patch(api, f"/api/v1/incidents/{incident.pk}", {"commander": "bob", "severity": "SEV2"})
    assert response.status_code == 200, response.content
    assert (response.json()["commander"], response.json()["severity"]) == ("bob", "sev2")

    response = patch(api, f"/api/v1/incidents/{incident.pk}", {"commander": "mallory"})
    assert_error(response, 422)
    assert "commander" in error_fields(response)


def test_it_refuses_a_commander_without_an_email_address(api: Client, staff: User) -> None:
    # Nudges go to the commander by email, so the staff UI refuses such a commander too.
    User.objects.create_user("nomail", email="", password="pw", is_staff=True)
    incident = factories.declare(actor=staff)

    response = patch(api, f"/api/v1/incidents/{incident.pk}", {"commander": "nomail", "severity": "sev2"})

    body = assert_error(response, 422, field="commander", code="no_email")
    assert "nomail has no email address, so nudges to the commander could not reach them" in body["detail"]
    incident.refresh_from_db()
    assert (incident.commander, incident.severity.key) == (staff, "sev1")  # nothing of the PATCH applied


def test_it_reopens_with_a_message(api: Client, staff: User) -> None:
    incident = factories.declare(actor=staff)
    actions.resolve_incident(incident, actor=staff)

    response = api.post(
        f"/api/v1/incidents/{incident.pk}/reopen",
        {"reason": "Errors are back", "message": "We are seeing errors again."},
        content_type="application/json",
    )

    assert response.status_code == 200, response.content
    assert response.json()["updates"][0]["body"] == "We are seeing errors again."
    assert response.json()["public_status"] == "investigating"
