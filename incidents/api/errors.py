"""Every API error is JSON: {"detail": "…", "code": "…"}, plus "field" and "errors" for bad input (422).

409 means the change is impossible in the incident's current state (an ActionRefused without a
field); 422 means the input is wrong (a validation error, or an ActionRefused naming a field).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from ninja.errors import AuthenticationError, HttpError, ValidationError

from incidents.actions import ActionRefused

if TYPE_CHECKING:
    from ninja import NinjaAPI

_CODES = {400: "bad_request", 401: "not_authenticated", 403: "forbidden", 404: "not_found", 429: "throttled"}
_SOURCES = {"body", "query", "path", "header", "cookie", "form", "file"}


def field_name(loc: Sequence[Any]) -> str:
    """("body", "payload", "components", 0, "status") → "components.0.status"; ("query", "state") → "state"."""
    parts = list(loc)
    source = parts.pop(0) if parts and parts[0] in _SOURCES else None
    # A body schema is wrapped in the view's parameter name, which means nothing to the client.
    if source == "body" and parts[:1] == ["payload"]:
        parts.pop(0)
    return ".".join(str(part) for part in parts) or "body"


def _error_list(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"field": field_name(error.get("loc", ())), "msg": str(error.get("msg", "")), "type": error.get("type", "")}
        for error in errors
    ]


def install_error_handlers(api: NinjaAPI) -> None:
    def error(request: HttpRequest, status: int, detail: str, code: str, **extra: Any) -> HttpResponse:
        return api.create_response(request, {"detail": detail, "code": code, **extra}, status=status)

    @api.exception_handler(ValidationError)
    def on_validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
        errors = _error_list(exc.errors)
        summary = "; ".join(f"{e['field']}: {e['msg']}" for e in errors[:5])
        if len(errors) > 5:
            summary += f"; and {len(errors) - 5} more"
        return error(request, 422, f"Invalid input: {summary}.", "invalid", errors=errors)

    @api.exception_handler(ActionRefused)
    def on_refused(request: HttpRequest, exc: ActionRefused) -> HttpResponse:
        if exc.field is None:
            return error(request, 409, exc.message, exc.code)
        errors = [{"field": exc.field, "msg": exc.message, "type": exc.code}]
        return error(request, 422, exc.message, exc.code, field=exc.field, errors=errors)

    @api.exception_handler(Http404)
    def on_not_found(request: HttpRequest, exc: Exception) -> HttpResponse:
        return error(request, 404, str(exc) or "Not found.", "not_found")

    @api.exception_handler(PermissionDenied)
    def on_permission_denied(request: HttpRequest, exc: Exception) -> HttpResponse:
        return error(request, 403, str(exc) or "Forbidden.", "forbidden")

    @api.exception_handler(AuthenticationError)
    def on_not_authenticated(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
        detail = exc.message if exc.message != "Unauthorized" else "Send a valid API token: Authorization: Bearer …"
        response = error(request, 401, detail, "not_authenticated")
        response["WWW-Authenticate"] = 'Bearer realm="api"'
        return response

    @api.exception_handler(HttpError)
    def on_http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
        if exc.status_code == 400 and isinstance(exc.__cause__, ValueError):
            # ninja could not decode the body (JSONDecodeError and UnicodeDecodeError are ValueErrors):
            # bad input like any other, so 422 in the same shape.
            detail = "The request body must be a JSON object."
            errors = [{"field": "body", "msg": detail, "type": "json_invalid"}]
            return error(request, 422, detail, "invalid", errors=errors)
        return error(request, exc.status_code, exc.message, _CODES.get(exc.status_code, "error"))
