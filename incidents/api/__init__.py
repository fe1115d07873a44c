"""The staff JSON API at /api/v1/ (django-ninja). OpenAPI at /api/v1/openapi.json.

The interactive docs page is off: ninja serves Swagger UI from a CDN unless "ninja" is an installed
app, and the page would break our no-CDN rule and CSP. Point any OpenAPI viewer at openapi.json.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.urls import URLPattern
from django.views.decorators.csrf import csrf_exempt
from ninja import NinjaAPI, Router
from ninja.errors import ValidationError
from ninja.operation import Operation

from incidents.api.auth import ApiTokenAuth
from incidents.api.endpoints import router
from incidents.api.errors import answer_head, answer_wrong_methods_in_json, install_error_handlers, not_allowed
from incidents.api.fields import StrictParser, refuse_unknown_input


class StaffAPI(NinjaAPI):
    def get_openapi_operation_id(self, operation: Operation) -> str:
        return operation.view_func.__name__  # "declare_incident", not the module path


api = StaffAPI(
    title="Signalpost staff API",
    version="1",
    description="Incident response for staff. Authenticate with `Authorization: Bearer <token>` "
    "(`manage.py create_api_token USERNAME`). Request bodies are strict: a JSON object of the fields "
    "documented, with their JSON types (no unknown fields, no numbers for times, no NUL characters); query "
    "strings name only documented parameters. Errors are JSON: `detail` (a message), `code`, and for "
    "422 `errors` (each with `field`, `msg`, `type`).",
    urls_namespace="api-v1",
    auth=ApiTokenAuth(),
    docs_url=None,
    parser=StrictParser(),
)
install_error_handlers(api)
api.add_decorator(refuse_unknown_input, mode="view")
api.add_router("", router)
api.add_router("", "incidents.api.maintenance.router")
api.add_router("", "incidents.api.postmortems.router")

# Added last, so it matches only what no operation above does.
fallback = Router()


@fallback.api_operation(["GET", "POST", "PUT", "PATCH", "DELETE"], "/{path:rest}", auth=None, include_in_schema=False)
def unknown_endpoint(request: HttpRequest, rest: str) -> None:
    """Unknown URLs under /api/v1/ answer JSON too, not the HTML 404 page."""
    raise Http404("No such API endpoint.")


api.add_router("", fallback)


def schema_view_as_strict(view: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
    """openapi.json is no operation, so refuse_unknown_input never sees it, and ninja serves it to any
    method: hold it to the rules every endpoint keeps (GET or HEAD; no query parameters)."""

    # No cookies are read here, so no CSRF check: without this, a POST met Django's HTML 403 page before
    # the JSON 405 below.
    @csrf_exempt
    @wraps(view)
    def strict(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if request.method not in ("GET", "HEAD"):
            return not_allowed(["GET", "HEAD"])
        if request.GET:
            msg = "Unknown query parameter; this endpoint takes none"
            errors = [{"loc": ("query", name), "msg": msg, "type": "extra_forbidden"} for name in sorted(request.GET)]
            return api.on_exception(request, ValidationError(errors))
        if request.method == "HEAD":
            return answer_head(view, request, *args, **kwargs)
        return view(request, *args, **kwargs)

    return strict


ROOT_DETAIL = "No endpoint here: the staff API's endpoints are listed in its OpenAPI schema, /api/v1/openapi.json."


@csrf_exempt  # a JSON 404 for every method, not Django's HTML CSRF 403 for a POST
def api_root(request: HttpRequest) -> HttpResponse:
    """/api/v1/ itself: a JSON 404 saying where the endpoints are (ninja's own raised Http404 for Django's
    HTML page, as it serves no docs page)."""
    return JsonResponse({"detail": ROOT_DETAIL, "code": "not_found"}, status=404)


def urls() -> tuple[list[Any], str, str]:
    """What statuspage/urls.py includes at /api/v1/."""
    patterns, app_name, namespace = api.urls
    strict = [
        URLPattern(p.pattern, schema_view_as_strict(p.callback), p.default_args, p.name)
        if isinstance(p, URLPattern) and p.name == "openapi-json"
        else URLPattern(p.pattern, api_root, p.default_args, p.name)
        if isinstance(p, URLPattern) and p.name == "api-root"
        else p
        for p in patterns
    ]
    return answer_wrong_methods_in_json((strict, app_name, namespace))
