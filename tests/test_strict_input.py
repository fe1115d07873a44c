"""Input nobody understood is refused, never guessed at or dropped (issue 11, section 2).

The staff API: unknown body fields and query parameters, wrong JSON types, numbers for times, times
before 2000, NUL characters and offsets PostgreSQL cannot store are 422s naming the field; every error,
500 and 413 included, is JSON; an Idempotency-Key lasts 24 hours. The API and the staff UI alike:
maintenance windows may not end in the past, and regions are limited (20, of 100 characters each).
"""

from __future__ import annotations

import json
import logging
import re
import socket
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
import time_machine
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.utils import timezone

from incidents.models import Component, ComponentStatusChange, Incident, IncidentUpdate, Maintenance, TimelineEvent
from tests import factories
from tests.test_api import create_token

if TYPE_CHECKING:
    from django.test.client import _MonkeyPatchedWSGIResponse as Response

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _at_t0() -> Any:
    """Everything a test creates happens at T0 or later inside this travel; tests move on with shift()."""
    with time_machine.travel(T0, tick=False) as traveller:
        yield traveller


@pytest.fixture
def api(staff: User) -> Client:
    factories.ensure_severities()  # an earlier transactional test's flush removes the seeded ones
    return Client(headers={"Authorization": f"Bearer {create_token(staff.username)}"})


@pytest.fixture
def web(staff: User) -> Component:
    return factories.make_component(name="Web app", actor=staff)


def send(client: Client, method: str, url: str, data: Any = None, **headers: str) -> Response:
    """A JSON request; data that is a str is sent as the raw body."""
    body = data if isinstance(data, str) else None
    call = getattr(client, method.lower())
    if body is not None:
        return call(url, body, content_type="application/json", headers=headers)
    return call(url, data, content_type="application/json", headers=headers)


def refused(response: Response, status: int = 422) -> dict[str, Any]:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json"), response.content
    body: dict[str, Any] = response.json()
    assert isinstance(body["detail"], str) and body["detail"] and isinstance(body["code"], str)
    return body


def fields_of(response: Response) -> list[str]:
    return [error["field"] for error in refused(response)["errors"]]


def declare(client: Client, **fields: Any) -> dict[str, Any]:
    response = send(client, "POST", "/api/v1/incidents", {"title": "Queries are slow", "severity": "sev1", **fields})
    assert response.status_code == 201, response.content
    body: dict[str, Any] = response.json()
    return body


def resolved(client: Client) -> dict[str, Any]:
    incident = declare(client)
    assert send(client, "POST", f"/api/v1/incidents/{incident['id']}/resolve", {}).status_code == 200
    return incident


def with_postmortem(client: Client) -> str:
    """The post-mortem URL of a resolved SEV1 (resolving one opens its post-mortem)."""
    return f"/api/v1/incidents/{resolved(client)['id']}/postmortem"


# --- unknown fields and the one name for visibility ---------------------------------------------


def test_it_refuses_an_unknown_field_instead_of_publishing_internal_text(api: Client) -> None:
    incident = declare(api)

    response = send(
        api, "POST", f"/api/v1/incidents/{incident['id']}/updates", {"body": "secret", "visibility": "internal"}
    )

    body = refused(response)
    assert [(e["field"], e["type"]) for e in body["errors"]] == [("visibility", "extra_forbidden")]
    assert "visibility" in body["detail"]
    assert not IncidentUpdate.objects.filter(body="secret").exists()


@pytest.mark.parametrize(
    ("url", "data", "field"),
    [
        ("/api/v1/incidents", {"title": "T", "severity": "sev1", "sevrity": "sev2"}, "sevrity"),
        ("/api/v1/components", {"name": "DNS", "colour": "red"}, "colour"),
        ("/api/v1/incidents", {"title": "T", "severity": "sev1", "components": [{"id": 1, "x": 1}]}, "components.0.x"),
    ],
)
def test_it_refuses_unknown_fields_in_any_body(api: Client, url: str, data: dict[str, Any], field: str) -> None:
    assert field in fields_of(send(api, "POST", url, data))
    assert not Incident.objects.exists()


def test_it_refuses_a_body_sent_to_an_operation_that_takes_none(api: Client) -> None:
    incident = declare(api)

    response = send(api, "POST", f"/api/v1/incidents/{incident['id']}/acknowledge", {"note": "on it"})

    assert fields_of(response) == ["body"]
    assert Incident.objects.get().acknowledged_at is None
    # An empty body, {} and a bare form POST are fine.
    assert api.post(f"/api/v1/incidents/{incident['id']}/acknowledge").status_code == 200


def test_a_null_body_is_refused_where_no_body_or_an_optional_one_is_taken(api: Client) -> None:
    # The review: POST …/acknowledge with the body null was acknowledged, where [] was a 422.
    incident = declare(api)
    schema = api.get("/api/v1/openapi.json").json()
    writes = [
        (method, path.replace("{incident_id}", str(incident["id"])).replace("{maintenance_id}", "1"))
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
        if method in ("post", "patch", "put") and not operation.get("requestBody", {}).get("required", False)
    ]
    assert ("post", f"/api/v1/incidents/{incident['id']}/acknowledge") in writes
    assert ("post", f"/api/v1/incidents/{incident['id']}/resolve") in writes  # its body is optional

    for method, url in writes:
        assert fields_of(send(api, method.upper(), url, "null")) == ["body"], url

    assert Incident.objects.get().acknowledged_at is None


def test_it_calls_visibility_is_public_when_declaring(api: Client) -> None:
    internal = declare(api, message="Looking at the primary.", is_public=False)
    assert [u["is_public"] for u in internal["updates"]] == [False]
    assert internal["published_at"] is None

    # The older name still works, but not together with the new one.
    older = declare(api, message="Looking at the replica.", message_is_public=False)
    assert [u["is_public"] for u in older["updates"]] == [False]
    both = send(
        api,
        "POST",
        "/api/v1/incidents",
        {"title": "T", "severity": "sev1", "message": "m", "is_public": False, "message_is_public": False},
    )
    assert "is_public only" in refused(both)["detail"]


def test_it_shows_one_name_for_visibility_in_openapi(db: None) -> None:
    schemas = Client().get("/api/v1/openapi.json").json()["components"]["schemas"]

    for name in ("DeclareIn", "UpdateIn", "ResolveIn", "ReopenIn"):
        assert "is_public" in schemas[name]["properties"], name
        assert "message_is_public" not in schemas[name]["properties"], name


def test_it_states_in_openapi_that_bodies_are_closed_and_the_limits_enforced(db: None) -> None:
    schema = Client().get("/api/v1/openapi.json").json()
    bodies = {
        name: shape
        for name, shape in schema["components"]["schemas"].items()
        if name.endswith("In") and "Query" not in name
    }

    assert len(bodies) >= 15
    assert all(shape.get("additionalProperties") is False for shape in bodies.values()), [
        name for name, shape in bodies.items() if shape.get("additionalProperties") is not False
    ]
    for name, field in [
        ("UpdateIn", "body"),
        ("ReopenIn", "reason"),
        ("StopPagingIn", "reason"),
        ("DeclareIn", "title"),
    ]:
        assert bodies[name]["properties"][field]["minLength"] == 1
        assert bodies[name]["properties"][field]["pattern"] == r"\S"
    regions = bodies["DeclareIn"]["properties"]["regions"]
    assert (regions["maxItems"], regions["items"]["maxLength"]) == (20, 100)
    [until] = [p for p in schema["paths"]["/api/v1/metrics"]["get"]["parameters"] if p["name"] == "until"]
    assert "after since" in until["description"]
    scheduled_until = bodies["MaintenanceIn"]["properties"]["scheduled_until"]
    assert "after scheduled_for" in scheduled_until["description"]
    assert "not end in the past" in scheduled_until["description"]


# --- strict JSON types --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "data", "field"),
    [
        (
            "/maintenances",
            {"title": "T", "scheduled_for": 0, "scheduled_until": "2026-03-03T00:00:00Z"},
            "scheduled_for",
        ),
        ("/maintenances", {"title": "T", "scheduled_for": "1700000000", "scheduled_until": 1}, "scheduled_for"),
        (
            "/maintenances",
            {"title": "T", "scheduled_for": "1999-12-31T22:00:00Z", "scheduled_until": "1999-12-31T23:00:00Z"},
            "scheduled_for",
        ),
        ("/incidents", {"title": "T", "severity": "sev1", "is_public": "false"}, "is_public"),
        ("/incidents", {"title": "T", "severity": "sev1", "customer_impact_percent": "20"}, "customer_impact_percent"),
        ("/incidents", {"title": "T", "severity": "sev1", "regions": "EU"}, "regions"),
        ("/incidents", {"title": 5, "severity": "sev1"}, "title"),
        ("/components", {"name": "DNS", "position": "3"}, "position"),
        ("/components", {"name": "DNS", "showcase": 1}, "showcase"),
        ("/incidents", "-268", "body"),
        ("/incidents", "[null, null]", "body"),
        ("/incidents", '"AAA"', "body"),
    ],
)
def test_it_refuses_the_wrong_json_type(api: Client, path: str, data: Any, field: str) -> None:
    response = send(api, "POST", f"/api/v1{path}", data)

    assert field in fields_of(response)
    assert not Incident.objects.exists() and not Maintenance.objects.exists()


@pytest.mark.parametrize("body", ["-268", "[null, null]", '"AAA"', "true"])
def test_it_refuses_a_body_that_is_not_an_object_where_the_body_is_optional(api: Client, body: str) -> None:
    incident = declare(api)

    response = send(api, "POST", f"/api/v1/incidents/{incident['id']}/resolve", body)

    assert fields_of(response) == ["body"]
    assert Incident.objects.get().resolved_at is None


@pytest.mark.parametrize("body", ['"AAA"', "[null, null]", "-268"])
def test_it_creates_no_action_item_from_a_body_that_is_not_an_object(api: Client, body: str) -> None:
    url = with_postmortem(api)

    response = send(api, "POST", f"{url}/action-items", body)

    assert fields_of(response) == ["body"]
    assert send(api, "GET", url).json()["action_items"] == []


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"at": 0, "text": "Paged"}, "at"),
        ({"at": "1999-12-31T23:59:59Z", "text": "Paged"}, "at"),
        ({"at": "2026-03-02T09:00:00", "text": "Paged"}, "at"),
    ],
)
def test_it_refuses_a_timeline_line_at_a_time_that_is_no_time(api: Client, data: dict[str, Any], field: str) -> None:
    url = with_postmortem(api)
    assert fields_of(send(api, "POST", f"{url}/timeline", data)) == [field]


@pytest.mark.parametrize("due_date", [0, "1999-12-31", "2026-02-30", "02/03/2026"])
def test_it_refuses_a_due_date_that_is_no_date(api: Client, due_date: Any) -> None:
    url = with_postmortem(api)
    response = send(api, "POST", f"{url}/action-items", {"title": "Add jitter", "due_date": due_date})
    assert fields_of(response) == ["due_date"]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("since=9999-12-31T23:59:59-14:00", "since"),
        ("until=9999-12-31T23:59:59-13:00", "until"),
        ("since=0001-01-01T00:00:00%2B14:00", "since"),
    ],
)
def test_it_refuses_a_query_time_beyond_what_a_datetime_holds_in_utc(api: Client, query: str, field: str) -> None:
    response = api.get(f"/api/v1/metrics?{query}")

    body = refused(response)
    assert [e["field"] for e in body["errors"]] == [field]
    assert "from 2000 to 2099" in body["detail"]


@pytest.mark.parametrize("moment", ["9999-12-31T23:00:00-14:00", "0001-01-01T00:00:00+14:00"])
def test_it_refuses_a_body_time_beyond_what_a_datetime_holds_in_utc(api: Client, moment: str) -> None:
    data = {"title": "Upgrade", "scheduled_for": moment, "scheduled_until": "2026-03-06T01:00:00Z"}

    response = send(api, "POST", "/api/v1/maintenances", data)

    assert fields_of(response) == ["scheduled_for"]
    assert "from 2000 to 2099" in refused(response)["detail"]
    assert not Maintenance.objects.exists()


def test_it_reads_a_time_with_an_offset_as_utc(api: Client) -> None:
    response = send(
        api,
        "POST",
        "/api/v1/maintenances",
        {"title": "Upgrade", "scheduled_for": "2026-03-05T23:00:00+01:00", "scheduled_until": "2026-03-06T01:00Z"},
    )
    assert response.status_code == 201, response.content
    assert Maintenance.objects.get().scheduled_for == datetime(2026, 3, 5, 22, 0, tzinfo=UTC)


# --- NUL characters and offsets PostgreSQL cannot store -----------------------------------------

NUL = "a\x00b"
FAR = "2026-03-05T22:00:00+17:00"


def _cases(api: Client) -> dict[str, tuple[str, str, Any, str]]:
    """Each case: method, url, body, the field named. Built here because most need an incident."""
    incident = declare(api)["id"]
    done = resolved(api)["id"]
    postmortem = with_postmortem(api)
    return {
        "stop-paging": ("POST", f"/api/v1/incidents/{incident}/stop-paging", {"reason": NUL}, "reason"),
        "component": ("POST", "/api/v1/components", {"name": NUL}, "name"),
        "component status": ("PATCH", "/api/v1/components/1", {"status": NUL}, "status"),
        "reopen": ("POST", f"/api/v1/incidents/{done}/reopen", {"reason": NUL}, "reason"),
        "declare": ("POST", "/api/v1/incidents", {"title": "T", "severity": "sev1", "message": NUL}, "message"),
        "declare region": (
            "POST",
            "/api/v1/incidents",
            {"title": "T", "severity": "sev1", "regions": [NUL]},
            "regions",
        ),
        "update": ("POST", f"/api/v1/incidents/{incident}/updates", {"body": NUL}, "body"),
        "patch": ("PATCH", f"/api/v1/incidents/{incident}", {"workaround": NUL}, "workaround"),
        "metrics severity": ("GET", "/api/v1/metrics?severity=%00", None, "severity"),
        "metrics since": ("GET", "/api/v1/metrics?since=" + FAR.replace("+", "%2B"), None, "since"),
        "maintenance": (
            "POST",
            "/api/v1/maintenances",
            {"title": NUL, "scheduled_for": "2026-03-05T22:00Z", "scheduled_until": "2026-03-05T23:00Z"},
            "title",
        ),
        "maintenance offset": (
            "POST",
            "/api/v1/maintenances",
            {"title": "T", "scheduled_for": FAR, "scheduled_until": "2026-03-06T23:00Z"},
            "scheduled_for",
        ),
        "timeline": ("POST", f"{postmortem}/timeline", {"at": "2026-03-02T09:00Z", "text": NUL}, "text"),
        "timeline offset": ("POST", f"{postmortem}/timeline", {"at": FAR, "text": "Paged"}, "at"),
        "post-mortem due": ("PATCH", postmortem, {"due_at": FAR}, "due_at"),
        "post-mortem section": (
            "PATCH",
            postmortem,
            {"sections": {"summary": {"body": NUL, "is_public": True}}},
            "sections",
        ),
        "action item": ("POST", f"{postmortem}/action-items", {"title": NUL}, "title"),
    }


CASES = [
    "stop-paging", "component", "component status", "reopen", "declare", "declare region", "update", "patch",
    "metrics severity", "metrics since", "maintenance", "maintenance offset", "timeline", "timeline offset",
    "post-mortem due", "post-mortem section", "action item",
]  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_it_refuses_nul_characters_and_impossible_offsets_on_postgresql(
    requires_postgres: None, api: Client, web: Component, case: str
) -> None:
    method, url, data, field = _cases(api)[case]
    before = (Incident.objects.count(), Maintenance.objects.count(), IncidentUpdate.objects.count())

    response = send(api, method, url, data)

    [error] = refused(response)["errors"]
    assert error["field"] == field
    assert (Incident.objects.count(), Maintenance.objects.count(), IncidentUpdate.objects.count()) == before


def test_it_says_what_is_wrong_with_a_far_offset(api: Client) -> None:
    response = send(api, "GET", "/api/v1/metrics?since=" + FAR.replace("+", "%2B"))
    [error] = refused(response)["errors"]
    assert (error["field"], error["type"]) == ("since", "datetime_offset")
    assert "±14:00" in error["msg"]


def test_it_refuses_a_nul_in_the_idempotency_key(requires_postgres: None, api: Client) -> None:
    data = {"title": "T", "severity": "sev1"}

    response = send(api, "POST", "/api/v1/incidents", data, **{"Idempotency-Key": "alert\x00db-1"})

    assert fields_of(response) == ["Idempotency-Key"]
    assert not Incident.objects.exists()


# --- errors are JSON, 500 and 413 included ------------------------------------------------------


def test_it_answers_a_server_error_in_json_and_logs_it(staff: User, caplog: pytest.LogCaptureFixture) -> None:
    # A real failure: the components table is gone (renamed inside the test's transaction).
    client = Client(headers={"Authorization": f"Bearer {create_token(staff.username)}"}, raise_request_exception=False)
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE incidents_component RENAME TO incidents_component_gone")

    with caplog.at_level(logging.ERROR, logger="django.request"):
        response = client.get("/api/v1/components")

    body = refused(response, 500)
    assert body["code"] == "server_error"
    assert "<html" not in response.content.decode().lower()
    [record] = [r for r in caplog.records if r.name == "django.request"]
    assert record.levelno == logging.ERROR and record.exc_info is not None


@pytest.mark.parametrize("debug", [False, True])
def test_a_server_errors_detail_names_the_exception_only_with_debug(staff: User, settings: Any, debug: bool) -> None:
    settings.DEBUG = debug
    client = Client(headers={"Authorization": f"Bearer {create_token(staff.username)}"}, raise_request_exception=False)
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE incidents_component RENAME TO incidents_component_gone")

    detail = refused(client.get("/api/v1/components"), 500)["detail"]

    assert detail.startswith("Something went wrong on our side.")
    assert ("incidents_component" in detail) is debug, detail


def failing_middleware(get_response: Any) -> Any:
    def middleware(request: Any) -> Any:
        raise RuntimeError("a middleware failed before the API ran")

    return middleware


@pytest.mark.parametrize("url", ["/api/v1/components", "/api/v2/summary.json"])
def test_it_answers_in_json_when_a_failure_comes_before_the_api(url: str, settings: Any) -> None:
    settings.MIDDLEWARE = [f"{__name__}.failing_middleware", *settings.MIDDLEWARE]
    client = Client(raise_request_exception=False)

    response = client.get(url)

    assert (response.status_code, response["Content-Type"]) == (500, "application/json")
    assert response.json()["code"] == "server_error"
    assert client.get("/").status_code == 500  # pages still get the HTML error page
    assert "<html" in client.get("/").content.decode().lower()


def test_it_answers_an_oversized_body_with_a_json_413(api: Client, settings: Any) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000

    response = send(api, "POST", "/api/v1/incidents", {"title": "T", "severity": "sev1", "message": "x" * 20_000})

    body = refused(response, 413)
    assert body["code"] == "too_large"
    assert "10,000 bytes" in body["detail"]
    assert not Incident.objects.exists()


# --- unknown query parameters -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "field"),
    [
        ("/api/v1/metrics?severty=sev1", "severty"),
        ("/api/v1/incidents?stat=open", "stat"),
        ("/api/v1/maintenances?state=upcoming&limt=5", "limt"),
        ("/api/v1/components?group=1", "group"),
        ("/api/v1/openapi.json?x=1", "x"),
    ],
)
def test_it_refuses_unknown_query_parameters(api: Client, url: str, field: str) -> None:
    body = refused(api.get(url))
    assert [e["field"] for e in body["errors"]] == [field]
    assert field in body["detail"]


def test_it_still_reads_known_query_parameters_and_answers_404_for_unknown_urls(api: Client) -> None:
    assert api.get("/api/v1/metrics?severity=sev1&since=2026-03-01T00:00:00Z").status_code == 200
    assert api.get("/api/v1/incidents?state=open&limit=5&offset=0").status_code == 200
    refused(api.get("/api/v1/nothing-here?x=1"), 404)


def test_the_openapi_schema_is_read_with_get_or_head_only(db: None) -> None:
    # With CSRF checks on, as a real client meets them: the seventh review got Django's HTML 403 page.
    client = Client(enforce_csrf_checks=True)

    assert client.get("/api/v1/openapi.json").json()["info"]["title"] == "Signalpost staff API"
    head = client.head("/api/v1/openapi.json")
    assert (head.status_code, head.content) == (200, b"")
    assert head["Content-Length"] == str(len(client.get("/api/v1/openapi.json").content))
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        response = client.generic(method, "/api/v1/openapi.json")
        assert refused(response, 405)["code"] == "method_not_allowed"
        assert response["Allow"] == "GET, HEAD"
        assert refused(client.generic(method, "/api/v1/"), 404)["code"] == "not_found"


# --- a chunked body without Content-Length is never read as empty ---------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/incidents"), ("PATCH", "/incidents/{id}"), ("POST", "/incidents/{id}/resolve"), ("PUT", "/incidents")],
)
def test_a_chunked_body_without_a_length_is_a_411_not_an_empty_body(api: Client, method: str, path: str) -> None:
    """Under WSGI Django reads a body by its Content-Length: a chunked one arrives empty, and resolving
    with it would resolve without the message the client sent. What the test client sends here is what
    Django sees from gunicorn or runserver for such a request: the header, and no body."""
    incident = declare(api)
    url = "/api/v1" + path.format(id=incident["id"])

    response = api.generic(method, url, b"", content_type="application/json", HTTP_TRANSFER_ENCODING="chunked")

    body = refused(response, 411)
    assert body["code"] == "length_required" and "Content-Length" in body["detail"]
    assert Incident.objects.get().status != "resolved" and Incident.objects.count() == 1


def test_a_body_with_its_length_is_read_whatever_transfer_encoding_says(api: Client) -> None:
    incident = declare(api)
    url = f"/api/v1/incidents/{incident['id']}/resolve"

    response = api.post(url, {"message": "Fixed."}, content_type="application/json", HTTP_TRANSFER_ENCODING="identity")

    assert response.status_code == 200, response.content
    assert response.json()["updates"][0]["body"] == "Fixed."


def test_a_real_chunked_request_is_answered_411(live_server: Any, staff: User) -> None:
    """Over a socket to a real server: without the 411, the body arrived empty (a 422 for missing fields)."""
    factories.ensure_severities()
    host, port = live_server.url.removeprefix("http://").split(":")
    body = b'{"title": "Queries are slow", "severity": "sev1"}'
    request = (
        b"POST /api/v1/incidents HTTP/1.1\r\n"
        + f"Host: {host}:{port}\r\n".encode()
        + f"Authorization: Bearer {create_token(staff.username)}\r\n".encode()
        + b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        + f"{len(body):x}\r\n".encode()
        + body
        + b"\r\n0\r\n\r\n"
    )
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(request)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk

    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 411"), answer
    assert json.loads(payload)["code"] == "length_required"
    assert not Incident.objects.exists()


# --- Idempotency-Key lasts 24 hours -------------------------------------------------------------


def test_it_forgets_an_idempotency_key_after_24_hours(api: Client, _at_t0: Any) -> None:
    def declare_with_key() -> Response:
        data = {"title": "Disk full on db-1", "severity": "sev2"}
        return send(api, "POST", "/api/v1/incidents", data, **{"Idempotency-Key": "alert-db-1-disk"})

    first = declare_with_key()
    assert first.status_code == 201

    _at_t0.move_to(T0 + timedelta(hours=23, minutes=59))
    retry = declare_with_key()
    assert (retry.status_code, retry.json()["id"]) == (200, first.json()["id"])

    _at_t0.move_to(T0 + timedelta(hours=24, seconds=1))
    next_day = declare_with_key()
    assert next_day.status_code == 201
    assert next_day.json()["id"] != first.json()["id"]
    again = declare_with_key()
    assert (again.status_code, again.json()["id"]) == (200, next_day.json()["id"])
    assert Incident.objects.count() == 2


# --- maintenance windows may not end in the past (API and UI) -----------------------------------


def test_the_api_refuses_a_window_that_ends_in_the_past(api: Client) -> None:
    data = {"title": "Upgrade", "scheduled_for": "2026-03-01T22:00:00Z", "scheduled_until": "2026-03-02T08:59:00Z"}

    body = refused(send(api, "POST", "/api/v1/maintenances", data))

    assert (body["field"], body["code"]) == ("scheduled_until", "in_the_past")
    assert not Maintenance.objects.exists()


def test_the_api_takes_a_past_start_for_a_window_in_progress_now(api: Client) -> None:
    data = {"title": "Upgrade", "scheduled_for": "2026-03-02T08:00:00Z", "scheduled_until": "2026-03-02T10:00:00Z"}

    response = send(api, "POST", "/api/v1/maintenances", data)

    assert response.status_code == 201, response.content
    assert Maintenance.objects.get().scheduled_for == datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def test_the_api_refuses_to_move_a_window_s_end_into_the_past(api: Client) -> None:
    data = {"title": "Upgrade", "scheduled_for": "2026-03-02T10:00:00Z", "scheduled_until": "2026-03-02T12:00:00Z"}
    window = send(api, "POST", "/api/v1/maintenances", data).json()

    response = send(
        api,
        "PATCH",
        f"/api/v1/maintenances/{window['id']}",
        {"scheduled_for": "2026-03-02T07:00:00Z", "scheduled_until": "2026-03-02T08:00:00Z"},
    )

    assert refused(response)["field"] == "scheduled_until"
    assert Maintenance.objects.get().scheduled_until == datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def errors_of(html: str, field_id: str) -> str:
    """The text of the error list tied to a field (id="<field id>_error")."""
    match = re.search(rf'id="{re.escape(field_id)}_error"[^>]*>(.*?)</ul>', html, re.S)
    assert match, f"no errors shown next to {field_id}"
    return re.sub(r"<[^>]+>", "", match.group(1)).strip()


@pytest.mark.parametrize("htmx", [False, True])
def test_the_form_shows_a_window_ending_in_the_past_next_to_the_end(staff_client: Client, htmx: bool) -> None:
    data = {"title": "Search reindex", "scheduled_for": "2026-03-01T22:00", "scheduled_until": "2026-03-02T08:30"}

    response = staff_client.post("/manage/maintenance/new", data, headers={"HX-Request": "true"} if htmx else {})

    assert response.status_code == 422
    html = response.content.decode()
    assert errors_of(html, "id_scheduled_until").startswith("The window would end in the past (02 Mar 2026 08:30 UTC)")
    assert 'value="Search reindex"' in html
    assert not Maintenance.objects.exists()


# --- regions: at most 20, of at most 100 characters (API and UI) --------------------------------


@pytest.mark.parametrize(
    ("regions", "field"),
    [([f"r{n}" for n in range(21)], "regions"), (["EU", "x" * 101], "regions.1"), (["EU", " "], "regions.1")],
)
def test_the_api_refuses_too_many_or_too_long_regions(api: Client, regions: list[str], field: str) -> None:
    response = send(api, "POST", "/api/v1/incidents", {"title": "T", "severity": "sev1", "regions": regions})
    assert fields_of(response) == [field]

    incident = declare(api, regions=["EU"])
    response = send(api, "PATCH", f"/api/v1/incidents/{incident['id']}", {"regions": regions})
    assert fields_of(response) == [field]
    assert Incident.objects.get().regions == ["EU"]


def test_the_api_takes_twenty_regions_of_a_hundred_characters(api: Client) -> None:
    regions = [f"{n:02}" + "x" * 98 for n in range(20)]
    assert declare(api, regions=regions)["regions"] == regions


@pytest.mark.parametrize(
    ("regions", "message"),
    [
        (", ".join(f"r{n}" for n in range(21)), "At most 20 regions; 21 were given."),
        ("EU, " + "x" * 101, "A region may be at most 100 characters"),
    ],
)
def test_the_forms_refuse_too_many_or_too_long_regions_next_to_the_field(
    staff_client: Client, staff: User, regions: str, message: str
) -> None:
    declared = staff_client.post(
        "/manage/incidents/new",
        {
            "title": "Search is down",
            "severity": factories.severity("sev2").pk,
            "public_status": "investigating",
            "regions": regions,
            "message_visibility": "public",
        },
    )
    assert declared.status_code == 422
    assert errors_of(declared.content.decode(), "id_regions").startswith(message)
    assert not Incident.objects.exists()

    incident = factories.declare(actor=staff, regions=["EU"])
    scoped = staff_client.post(f"/manage/incidents/{incident.pk}/scope", {"regions": regions})
    assert scoped.status_code == 422
    assert errors_of(scoped.content.decode(), "scope-regions").startswith(message)
    incident.refresh_from_db()
    assert incident.regions == ["EU"]


@pytest.mark.parametrize("regions", ["  ,  ,", "EU, , US", "EU,", "   ", "\u200b", "EU, \u200b"])
def test_the_forms_refuse_a_blank_region_next_to_the_field_as_the_api_does(
    staff_client: Client, staff: User, api: Client, regions: str
) -> None:
    # The review: the staff UI read "  ,  ," as no regions where the API refuses a "   " region.
    as_list = regions.split(",")
    assert fields_of(send(api, "POST", "/api/v1/incidents", {"title": "T", "severity": "sev2", "regions": as_list}))
    declared = staff_client.post(
        "/manage/incidents/new",
        {
            "title": "Search is down",
            "severity": factories.severity("sev2").pk,
            "public_status": "investigating",
            "regions": regions,
            "message_visibility": "public",
        },
    )
    assert declared.status_code == 422
    assert errors_of(declared.content.decode(), "id_regions").startswith("A region is empty")
    assert not Incident.objects.exists()

    incident = factories.declare(actor=staff, regions=["EU"])
    scoped = staff_client.post(f"/manage/incidents/{incident.pk}/scope", {"regions": regions})
    assert scoped.status_code == 422
    assert errors_of(scoped.content.decode(), "scope-regions").startswith("A region is empty")
    incident.refresh_from_db()
    assert incident.regions == ["EU"]


def test_a_region_with_invisible_characters_at_its_ends_is_the_same_region(api: Client) -> None:
    # The fifth review stored "EU" and "EU\u200b" as two regions.
    incident = declare(api, regions=["EU", "EU\u200b", "\ufeffeu", "U\u200bS", "US"])

    assert incident["regions"] == ["EU", "U\u200bS"]
    assert Incident.objects.get(pk=incident["id"]).regions == ["EU", "U\u200bS"]


@pytest.mark.parametrize("region", [" " + "X" * 100, "X" * 100 + "\u200b", "e\u0301" * 51 + "e" * 49])
def test_a_region_s_length_is_counted_as_it_is_kept_as_in_the_staff_ui(api: Client, region: str) -> None:
    # The seventh review: the API refused these as over 100 characters; the staff UI's form kept them.
    incident = declare(api, regions=[region])

    kept = incident["regions"][0]
    assert len(kept) == 100 and Incident.objects.get(pk=incident["id"]).regions == [kept]


def test_a_region_over_100_characters_as_kept_is_still_refused(api: Client) -> None:
    response = send(api, "POST", "/api/v1/incidents", {"title": "T", "severity": "sev1", "regions": ["X" * 101]})

    assert fields_of(response) == ["regions.0"]


def test_regions_that_look_the_same_are_one_region(api: Client) -> None:
    # The sixth review: "Caf\u00e9" and "Cafe\u0301" (e and a combining accent) were stored as two regions.
    incident = declare(api, regions=["Cafe\u0301", "Caf\u00e9", "CAFÉ"])

    assert incident["regions"] == ["Caf\u00e9"]


def test_the_forms_refuse_required_text_of_invisible_characters(staff_client: Client, staff: User) -> None:
    """The fourth review: the staff UI's required texts (a title, an update) took "\u200b", which strip()
    keeps, while the API refused it."""
    declared = staff_client.post(
        "/manage/incidents/new",
        {
            "title": "\u200b\u2060",
            "severity": factories.severity("sev2").pk,
            "public_status": "investigating",
            "message_visibility": "public",
        },
    )
    assert declared.status_code == 422
    assert errors_of(declared.content.decode(), "id_title") == "This field is required."
    assert not Incident.objects.exists()

    incident = factories.declare(actor=staff)
    updates = incident.updates.count()
    posted = staff_client.post(
        f"/manage/incidents/{incident.pk}/update",
        {"body": "\u200b", "visibility": "public", "public_status": "investigating"},
    )
    assert posted.status_code == 422
    assert incident.updates.count() == updates


def test_the_scope_form_refuses_a_workaround_of_invisible_characters(staff_client: Client, staff: User) -> None:
    incident = factories.declare(actor=staff)

    response = staff_client.post(f"/manage/incidents/{incident.pk}/scope", {"workaround": INVISIBLE})

    assert response.status_code == 422
    assert errors_of(response.content.decode(), "scope-workaround").startswith("This is only spaces")
    incident.refresh_from_db()
    assert incident.workaround == ""


# --- what a fresh-clone review found still guessed at ----------------------------------------------


def test_a_url_asked_with_a_method_it_does_not_take_answers_json_naming_the_ones_it_does(api: Client) -> None:
    incident = declare(api)
    url = f"/api/v1/incidents/{incident['id']}"

    for method in ("DELETE", "PUT", "OPTIONS"):
        response = api.generic(method, url)
        body = refused(response, 405)
        assert body["code"] == "method_not_allowed"
        assert body["detail"] == "This URL takes GET, HEAD, PATCH only."
        assert response["Allow"] == "GET, HEAD, PATCH"
    assert refused(api.patch("/api/v1/severities"), 405)["detail"] == "This URL takes GET, HEAD only."
    head = api.head(f"{url}/acknowledge")
    assert (head.status_code, head["Allow"]) == (405, "POST")


@pytest.mark.parametrize(
    "path", ["/incidents", "/incidents/{id}", "/incidents/{id}/paging", "/components", "/severities", "/maintenances"]
)
def test_head_is_answered_like_get_without_the_body(api: Client, path: str) -> None:
    url = "/api/v1" + path.format(id=declare(api)["id"])

    got = api.get(url)
    head = api.head(url)

    assert (got.status_code, head.status_code) == (200, 200)
    assert head.content == b""
    assert head["Content-Type"] == got["Content-Type"] == "application/json; charset=utf-8"
    assert head["Content-Length"] == str(len(got.content))


def test_head_answers_the_errors_get_would(api: Client) -> None:
    assert api.head("/api/v1/incidents/999999").status_code == 404
    assert api.head("/api/v1/incidents?bogus=1").status_code == 422
    assert api.head("/api/v1/nowhere").status_code == 404
    assert Client().head("/api/v1/incidents").status_code == 401


def test_a_key_given_twice_in_a_body_is_refused_not_the_last_one_kept(api: Client) -> None:
    response = send(api, "POST", "/api/v1/incidents", '{"title": "T", "title": "U", "severity": "sev1"}')

    body = refused(response)
    assert body["detail"] == "The request body gives 'title' twice; give each field once."
    assert not Incident.objects.exists()


def test_a_query_parameter_given_twice_is_refused(api: Client) -> None:
    body = refused(api.get("/api/v1/incidents?state=open&state=resolved"))

    assert [(e["field"], e["type"]) for e in body["errors"]] == [("state", "duplicate")]


def test_a_body_that_is_not_json_is_a_415(api: Client) -> None:
    payload = '{"title": "T", "severity": "sev1"}'
    for content_type in ("text/plain", "application/x-www-form-urlencoded"):
        response = api.post("/api/v1/incidents", payload, content_type=content_type)
        body = refused(response, 415)
        assert body["code"] == "unsupported_media_type"
        assert "Content-Type: application/json" in body["detail"]
    assert not Incident.objects.exists()
    # application/json with a UTF-8 charset is JSON.
    response = api.post("/api/v1/incidents", payload, content_type="application/json; charset=utf-8")
    assert response.status_code == 201, response.content


def test_json_nested_too_deeply_is_bad_input(api: Client) -> None:
    deep = '{"title": "T", "severity": "sev1", "regions": ' + "[" * 200_000 + "]" * 200_000 + "}"

    body = refused(send(api, "POST", "/api/v1/incidents", deep))

    assert body["detail"] == "The request body is nested too deeply."


def test_an_idempotency_key_where_it_is_not_honoured_is_refused(api: Client) -> None:
    incident = declare(api)
    url = f"/api/v1/incidents/{incident['id']}/updates"

    response = send(api, "POST", url, {"body": "x"}, **{"Idempotency-Key": "u1"})

    body = refused(response)
    assert body["errors"][0]["field"] == "Idempotency-Key"
    assert "Only POST /api/v1/incidents honours an Idempotency-Key" in body["errors"][0]["msg"]
    assert not IncidentUpdate.objects.filter(body="x").exists()
    assert send(api, "POST", url, {"body": "x"}).status_code == 201


@pytest.mark.parametrize(
    ("url", "field", "limit"),
    [
        ("/api/v1/incidents/{id}/updates", "body", 20_000),
        ("/api/v1/incidents/{id}", "workaround", 2_000),
        ("/api/v1/incidents/{id}/reopen", "reason", 500),
        ("/api/v1/incidents/{id}/stop-paging", "reason", 500),
        ("/api/v1/maintenances/{maintenance}/cancel", "reason", 500),
        ("/api/v1/components", "description", 2_000),
    ],
)
def test_free_text_beyond_its_limit_is_refused_not_cut(api: Client, url: str, field: str, limit: int) -> None:
    incident = declare(api)
    window = Maintenance.objects.create(
        title="W", scheduled_for=timezone.now() + timedelta(days=1), scheduled_until=timezone.now() + timedelta(days=2)
    )
    target = url.format(id=incident["id"], maintenance=window.pk)
    method = "PATCH" if field == "workaround" else "POST"
    named = {"name": "Long"} if field == "description" else {}
    if field == "description":
        assert send(api, method, target, {"name": "Fits", field: "x" * limit}).status_code == 201

    response = send(api, method, target, {**named, field: "x" * (limit + 1)})

    assert fields_of(response) == [field]
    assert "at most" in refused(response)["errors"][0]["msg"]


SPACES = " \n\t "
# Shows nothing either: a zero-width space, non-joiner, joiner, word joiner, byte order mark, no-break space.
INVISIBLE = "\u200b\u200c\u200d\u2060\ufeff\u00a0"


@pytest.mark.parametrize(
    ("method", "url", "data", "field"),
    [
        ("POST", "/api/v1/incidents", {"title": "T", "severity": "sev1", "message": SPACES}, "message"),
        ("POST", "/api/v1/incidents", {"title": "T", "severity": "sev1", "workaround": "\u200b"}, "workaround"),
        ("POST", "/api/v1/incidents/{id}/resolve", {"message": INVISIBLE}, "message"),
        ("POST", "/api/v1/components", {"name": "DNS", "description": "   "}, "description"),
        ("POST", "/api/v1/components", {"name": "DNS", "description": INVISIBLE}, "description"),
        ("POST", "/api/v1/incidents/{id}/resolve", {"message": SPACES}, "message"),
        ("POST", "/api/v1/incidents/{resolved}/reopen", {"reason": "Back", "message": SPACES}, "message"),
        ("PATCH", "/api/v1/incidents/{id}", {"workaround": SPACES}, "workaround"),
        ("POST", "/api/v1/maintenances/{maintenance}/cancel", {"reason": SPACES}, "reason"),
        ("POST", "/api/v1/maintenances/{maintenance}/start", {"message": SPACES}, "message"),
        ("POST", "/api/v1/maintenances/{maintenance}/complete", {"message": SPACES}, "message"),
        (
            "PATCH",
            "/api/v1/maintenances/{maintenance}",
            {"scheduled_until": "2026-03-05T10:00:00Z", "message": SPACES},
            "message",
        ),
        (
            "POST",
            "/api/v1/maintenances",
            {
                "title": "W",
                "scheduled_for": "2026-03-05T10:00:00Z",
                "scheduled_until": "2026-03-05T11:00:00Z",
                "message": SPACES,
            },
            "message",
        ),
    ],
)
def test_optional_text_of_only_spaces_is_refused_not_read_as_none(
    api: Client, method: str, url: str, data: dict[str, Any], field: str
) -> None:
    incident = declare(api)
    reopenable = resolved(api)
    window = Maintenance.objects.create(
        title="W", scheduled_for=timezone.now() + timedelta(days=1), scheduled_until=timezone.now() + timedelta(days=2)
    )
    before = (list(Incident.objects.order_by("pk").values_list("status", "workaround")), list(window.updates.all()))
    target = url.format(id=incident["id"], resolved=reopenable["id"], maintenance=window.pk)

    response = send(api, method, target, data)

    assert fields_of(response) == [field]
    assert "only spaces" in refused(response)["errors"][0]["msg"]
    assert (
        list(Incident.objects.order_by("pk").values_list("status", "workaround")),
        list(window.updates.all()),
    ) == before
    assert not Component.objects.filter(name="DNS").exists()
    # The same request with text in the field is not refused for it (complete answers 409: not started).
    assert send(api, method, target, {**data, field: "Some text."}).status_code in (200, 201, 409)


@pytest.mark.parametrize(
    ("url", "data", "field"),
    [
        ("/api/v1/incidents", {"title": "\u200b", "severity": "sev1"}, "title"),
        ("/api/v1/incidents", {"title": "T", "severity": "sev1", "regions": ["EU", INVISIBLE]}, "regions.1"),
        ("/api/v1/incidents/{id}/updates", {"body": INVISIBLE}, "body"),
        ("/api/v1/incidents/{id}/stop-paging", {"reason": "\u2060 \u200d"}, "reason"),
        ("/api/v1/incidents/{resolved}/reopen", {"reason": "\ufeff"}, "reason"),
        ("/api/v1/components", {"name": "\u200c"}, "name"),
        # Not spaces nor format characters, yet they draw nothing: a combining grapheme joiner, Hangul
        # fillers, a variation selector, the blank braille pattern (the fifth review).
        ("/api/v1/incidents", {"title": "\u034f\u115f\u3164\ufe0f\u2800", "severity": "sev1"}, "title"),
        ("/api/v1/incidents/{id}/updates", {"body": "\u2800\u2800"}, "body"),
        ("/api/v1/components", {"name": "\u3164"}, "name"),
        (
            "/api/v1/maintenances",
            {"title": "\u200b", "scheduled_for": "2026-03-05T10:00:00Z", "scheduled_until": "2026-03-05T11:00:00Z"},
            "title",
        ),
    ],
)
def test_required_text_of_only_invisible_characters_is_refused(
    api: Client, url: str, data: dict[str, Any], field: str
) -> None:
    # The review: a workaround (and a title) of "\u200b" was accepted: strip() keeps format characters.
    incident = declare(api)
    reopenable = resolved(api)
    before = list(Incident.objects.order_by("pk").values_list("status", "title"))

    response = send(api, "POST", url.format(id=incident["id"], resolved=reopenable["id"]), data)

    assert fields_of(response) == [field]
    assert list(Incident.objects.order_by("pk").values_list("status", "title")) == before
    assert not IncidentUpdate.objects.filter(incident_id=incident["id"]).exclude(body__startswith="We are").exists()
    assert not Maintenance.objects.exists() and not Component.objects.exists()


def test_the_schema_says_optional_text_is_empty_or_says_something(db: None) -> None:
    schemas = Client().get("/api/v1/openapi.json").json()["components"]["schemas"]

    assert schemas["ResolveIn"]["properties"]["message"]["pattern"] == r"^$|\S"
    assert schemas["MaintenanceCancelIn"]["properties"]["reason"]["pattern"] == r"^$|\S"


def test_each_free_text_has_one_limit_in_the_forms_and_the_api(db: None) -> None:
    from incidents.admin import ComponentAdminForm
    from incidents.forms import ReopenForm, StopPagingForm
    from incidents.maintenance_forms import CancelForm
    from incidents.models import MAX_COMPONENT_DESCRIPTION_LENGTH, MAX_REASON_LENGTH

    bodies = Client().get("/api/v1/openapi.json").json()["components"]["schemas"]
    for form, body, field, limit in [
        (ReopenForm, "ReopenIn", "reason", MAX_REASON_LENGTH),
        (StopPagingForm, "StopPagingIn", "reason", MAX_REASON_LENGTH),
        (CancelForm, "MaintenanceCancelIn", "reason", MAX_REASON_LENGTH),
        (ComponentAdminForm, "ComponentIn", "description", MAX_COMPONENT_DESCRIPTION_LENGTH),
    ]:
        form_limit = form().fields[field].max_length
        assert (form_limit, bodies[body]["properties"][field]["maxLength"]) == (limit, limit), form.__name__


def test_an_empty_commander_is_refused_in_words(api: Client) -> None:
    incident = declare(api)

    body = refused(send(api, "PATCH", f"/api/v1/incidents/{incident['id']}", {"commander": None}))

    assert body["field"] == "commander"
    assert body["detail"] == "Commander cannot be empty: give the username of an active staff user."


def test_error_summaries_end_with_one_full_stop(api: Client) -> None:
    both = {"title": "T", "severity": "sev1", "is_public": True, "message_is_public": True}

    detail = refused(send(api, "POST", "/api/v1/incidents", both))["detail"]

    assert detail.endswith("older name).") and ".." not in detail


def test_an_unknown_postmortem_section_is_named_by_its_key(api: Client) -> None:
    response = send(api, "PATCH", with_postmortem(api), {"sections": {"bogus": {"body": "x", "is_public": True}}})

    assert fields_of(response) == ["sections.bogus"]


def test_regions_that_differ_only_in_case_are_one_region(api: Client) -> None:
    incident = declare(api, regions=["US", "us", "EU"])

    assert incident["regions"] == ["US", "EU"]


# --- a second fresh-clone review: headers, media types, numbers and nulls ------------------------


def test_two_idempotency_keys_or_an_empty_one_are_refused(api: Client) -> None:
    data = {"title": "T", "severity": "sev1"}

    joined = send(api, "POST", "/api/v1/incidents", data, **{"Idempotency-Key": "rv-3,rv-4"})
    empty = send(api, "POST", "/api/v1/incidents", data, **{"Idempotency-Key": " "})

    assert refused(joined)["field"] == "Idempotency-Key" and "one Idempotency-Key" in refused(joined)["detail"]
    assert refused(empty)["field"] == "Idempotency-Key" and "empty" in refused(empty)["detail"]
    assert not Incident.objects.exists()


@pytest.mark.parametrize("key", ["alert\x01db-1", "alert\tdb-1", "alert db-1", "alert\x7fdb-1", "alerté"])
def test_an_idempotency_key_of_anything_but_visible_ascii_is_refused(api: Client, key: str) -> None:
    data = {"title": "T", "severity": "sev1"}

    response = send(api, "POST", "/api/v1/incidents", data, **{"Idempotency-Key": key})

    body = refused(response)
    assert body["field"] == "Idempotency-Key" and "visible ASCII" in body["detail"]
    assert not Incident.objects.exists()


def test_an_idempotency_key_of_200_visible_characters_is_honoured(api: Client) -> None:
    data = {"title": "T", "severity": "sev1"}
    key = "".join(chr(code) for code in range(0x21, 0x7F) if chr(code) != ",")[:94] * 3

    first = send(api, "POST", "/api/v1/incidents", data, **{"Idempotency-Key": key[:200]})
    again = send(api, "POST", "/api/v1/incidents", data, **{"Idempotency-Key": key[:200]})
    too_long = send(api, "POST", "/api/v1/incidents", data, **{"Idempotency-Key": key[:201]})

    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert fields_of(too_long) == ["Idempotency-Key"]


@pytest.mark.parametrize(
    "content_type",
    ["application/json-patch+json", "application/vnd.api+json", "application/json; charset=utf-16"],
)
def test_only_utf8_application_json_is_read(api: Client, content_type: str) -> None:
    response = api.post("/api/v1/incidents", '{"title": "T", "severity": "sev1"}', content_type=content_type)

    assert refused(response, 415)["code"] == "unsupported_media_type"
    assert not Incident.objects.exists()


def test_a_body_that_is_not_utf8_says_so(api: Client) -> None:
    body = '{"title": "Caf\xe9", "severity": "sev1"}'.encode("latin-1")

    response = api.post("/api/v1/incidents", body, content_type="application/json")

    assert refused(response)["detail"] == "The request body is not valid UTF-8."


def test_a_share_of_customers_takes_at_most_two_decimals_as_in_the_ui(api: Client) -> None:
    incident = declare(api)

    response = send(api, "PATCH", f"/api/v1/incidents/{incident['id']}", {"customer_impact_percent": 12.3456})

    assert fields_of(response) == ["customer_impact_percent"]
    assert (
        send(api, "PATCH", f"/api/v1/incidents/{incident['id']}", {"customer_impact_percent": 12.35}).status_code == 200
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        # A float rounded this to 100 and took it, past the 2-decimal rule.
        ("100.000000000000000001", "less than or equal to 100"),
        ("99.000000000000000001", "no more than 2 decimal places"),
        ("12.3400000000001", "no more than 2 decimal places"),
        ("1e-7", "no more than 2 decimal places"),
        # A float made this infinity: "Input should be a finite number" answered a number sent in range.
        ("1e400", "less than or equal to 100"),
        ("-1e400", "greater than or equal to 0"),
        ('"20"', "Input should be a number"),
        ("true", "Input should be a number"),
    ],
)
def test_a_share_of_customers_is_read_exactly_as_sent(api: Client, value: str, message: str) -> None:
    incident = declare(api, customer_impact_percent=12.5)

    response = send(api, "PATCH", f"/api/v1/incidents/{incident['id']}", f'{{"customer_impact_percent": {value}}}')

    assert fields_of(response) == ["customer_impact_percent"]
    assert message in refused(response)["errors"][0]["msg"]
    assert Incident.objects.get(pk=incident["id"]).customer_impact_percent == 12.5


@pytest.mark.parametrize(("value", "stored"), [("45", "45"), ("12.340", "12.34"), ("1E1", "10"), ("0.5e2", "50")])
def test_a_share_of_customers_takes_any_json_spelling_of_an_allowed_number(
    api: Client, value: str, stored: str
) -> None:
    response = send(
        api, "POST", "/api/v1/incidents", f'{{"title": "T", "severity": "sev1", "customer_impact_percent": {value}}}'
    )

    assert response.status_code == 201, response.content
    assert response.json()["customer_impact_percent"] == float(stored)


def test_an_id_with_a_fraction_is_still_no_id(api: Client, web: Component) -> None:
    response = send(
        api,
        "POST",
        "/api/v1/incidents",
        f'{{"title": "T", "severity": "sev1", "components": [{{"id": {web.pk}.0, "status": "major_outage"}}]}}',
    )

    assert fields_of(response) == ["components.0.id"]
    assert not Incident.objects.exists()


@pytest.mark.parametrize("value", ["1.0", "+1", " 1", "１"])
def test_a_query_number_is_digits_only(api: Client, value: str) -> None:
    assert fields_of(api.get("/api/v1/incidents", {"limit": value})) == ["limit"]


def test_an_empty_severity_filter_is_refused_not_read_as_all(api: Client) -> None:
    assert fields_of(api.get("/api/v1/metrics?severity=")) == ["severity"]


@pytest.mark.parametrize("payload", [{}, {"owner": None}, {"due_at": None}, {"sections": None}])
def test_a_postmortem_patch_that_would_change_nothing_is_refused(api: Client, payload: dict[str, Any]) -> None:
    response = send(api, "PATCH", with_postmortem(api), payload)

    body = refused(response)
    assert body["field"] == (next(iter(payload)) if payload else "body")


# --- one rule for a PATCH that changes nothing: 200, the object as it is, nothing recorded ----------


def test_a_postmortem_patch_that_changes_nothing_answers_200_and_records_nothing(api: Client, staff: User) -> None:
    url = with_postmortem(api)
    body = {"body": "A bad deploy.", "is_public": True}
    written = send(api, "PATCH", url, {"sections": {"root_cause": body}, "owner": staff.username})
    assert written.status_code == 200, written.content
    events = TimelineEvent.objects.count()

    again = send(api, "PATCH", url, {"sections": {"root_cause": body}, "owner": staff.username})

    assert again.status_code == 200 and again.json() == written.json()
    assert TimelineEvent.objects.count() == events


def test_a_component_patch_to_its_own_status_answers_200_and_records_nothing(api: Client, web: Component) -> None:
    incident = declare(api)
    url = f"/api/v1/components/{web.pk}"
    before = api.get(url.rsplit("/", 1)[0]).json()
    events = TimelineEvent.objects.count()

    plain = send(api, "PATCH", url, {"status": "operational"})
    on_incident = send(api, "PATCH", url, {"status": "operational", "incident_id": incident["id"]})

    assert (plain.status_code, on_incident.status_code) == (200, 200)
    assert plain.json() == on_incident.json() == next(c for c in before if c["id"] == web.pk)
    assert (TimelineEvent.objects.count(), ComponentStatusChange.objects.filter(component=web).count()) == (events, 0)


def test_an_action_item_patch_to_its_own_status_answers_200_and_records_nothing(api: Client) -> None:
    url = with_postmortem(api)
    added = send(api, "POST", f"{url}/action-items", {"title": "Alert on error rate"})
    item = added.json()["action_items"][0]["id"]
    events = TimelineEvent.objects.count()

    response = send(api, "PATCH", f"{url}/action-items/{item}", {"status": "open"})

    assert response.status_code == 200 and response.json() == added.json()
    assert TimelineEvent.objects.count() == events


def test_a_group_takes_no_status_and_reads_as_the_public_page_shows_it(api: Client, staff: User) -> None:
    refusal = send(api, "POST", "/api/v1/components", {"name": "Data", "is_group": True, "status": "major_outage"})
    assert refused(refusal)["field"] == "status"

    group = send(api, "POST", "/api/v1/components", {"name": "Data", "is_group": True}).json()
    child = send(api, "POST", "/api/v1/components", {"name": "Exports", "group_id": group["id"]}).json()
    assert send(api, "PATCH", f"/api/v1/components/{child['id']}", {"status": "partial_outage"}).status_code == 200

    listed = {c["name"]: c["status"] for c in api.get("/api/v1/components").json()}
    public = {c["name"]: c["status"] for c in Client().get("/api/v2/components.json").json()["components"]}
    assert listed["Data"] == public["Data"] == "partial_outage"


@pytest.mark.parametrize("depth", [40, 990, 3000])
def test_deep_nesting_inside_a_field_is_bad_input_not_a_server_error(api: Client, depth: int) -> None:
    incident = declare(api)
    body = '{"body": ' + "[" * depth + "]" * depth + "}"

    response = send(api, "POST", f"/api/v1/incidents/{incident['id']}/updates", body)

    assert "nested too deeply" in refused(response)["detail"]
