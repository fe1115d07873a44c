"""Every API error is JSON: {"detail": "…", "code": "…"}, plus "field" and "errors" for bad input (422).

409 means the change is impossible in the incident's current state (an ActionRefused without a
field); 422 means the input is wrong (a validation error, or an ActionRefused naming a field); 411 a
chunked body without Content-Length (WSGI would hand it over empty); 413 a body over
DATA_UPLOAD_MAX_MEMORY_SIZE; 503 a database that is down or not answering; 500 our fault
(logged as Django logs it, with the traceback).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from functools import wraps
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.core.signals import got_request_exception
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase, HttpResponseNotAllowed
from django.urls import URLPattern
from django.utils.log import log_response
from ninja.errors import AuthenticationError, HttpError, ValidationError

from incidents import database
from incidents.actions import ActionRefused
from incidents.api.fields import BodyRefused

if TYPE_CHECKING:
    from ninja import NinjaAPI

log = logging.getLogger(__name__)

_CODES = {
    400: "bad_request",
    401: "not_authenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    411: "length_required",
    413: "too_large",
    415: "unsupported_media_type",
    429: "throttled",
}
_SOURCES = {"body", "query", "path", "header", "cookie", "form", "file"}


def field_name(loc: Sequence[Any]) -> str:
    """("body", "payload", "components", 0, "status") → "components.0.status"; ("query", "state") → "state"."""
    parts = list(loc)
    source = parts.pop(0) if parts and parts[0] in _SOURCES else None
    # A body schema is wrapped in the view's parameter name, which means nothing to the client.
    if source == "body" and parts[:1] == ["payload"]:
        parts.pop(0)
    # pydantic marks a bad dictionary key ("sections": {"bogus": …}) with a last part "[key]": the key
    # itself is the field at fault.
    if parts[-1:] == ["[key]"]:
        parts.pop()
    return ".".join(str(part) for part in parts) or "body"


def _error_list(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"field": field_name(error.get("loc", ())), "msg": str(error.get("msg", "")), "type": error.get("type", "")}
        for error in errors
    ]


def install_error_handlers(api: NinjaAPI) -> None:
    @api.exception_handler(Exception)
    def on_server_error(request: HttpRequest, exc: Exception) -> HttpResponse:
        if database.is_unavailable(exc):
            # The database is down or not answering (refused, connect or statement timeout): say so, 503.
            log.warning("the database is unavailable; %s %s answered 503: %s", request.method, request.path, exc)
            detail = "The database is not answering. Try again in a minute; the public status API keeps working."
            unavailable = error(request, 503, detail, "database_unavailable")
            unavailable["Retry-After"] = "60"
            return unavailable
        # What Django's own handler does for an unhandled exception (the signal, then a django.request
        # error with the traceback, which reaches ADMINS and any error tracker), but answered in JSON.
        got_request_exception.send(sender=None, request=request)
        detail = "Something went wrong on our side. It has been logged; try again later."
        if settings.DEBUG:
            detail += f" ({type(exc).__name__}: {exc})"
        response = error(request, 500, detail, "server_error")
        log_response(
            "%s: %s",
            "Internal Server Error",
            request.path,
            response=response,
            request=request,
            exception=exc,
        )
        return response

    @api.exception_handler(RequestDataTooBig)
    def on_too_big(request: HttpRequest, exc: Exception) -> HttpResponse:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        detail = "The request body is too large" + (f": at most {limit:,} bytes." if limit else ".")
        return error(request, 413, detail, "too_large")

    def error(request: HttpRequest, status: int, detail: str, code: str, **extra: Any) -> HttpResponse:
        return api.create_response(request, {"detail": detail, "code": code, **extra}, status=status)

    @api.exception_handler(ValidationError)
    def on_validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
        errors = _error_list(exc.errors)
        summary = "; ".join(f"{e['field']}: {e['msg'].rstrip('.')}" for e in errors[:5])
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
        if isinstance(exc.__cause__, BodyRefused):  # StrictParser: not JSON, a key twice, nested too deep
            refused = exc.__cause__
            errors = [{"field": "body", "msg": refused.message, "type": refused.code}]
            return error(request, refused.status, refused.message, refused.code, errors=errors)
        if exc.status_code == 400 and isinstance(exc.__cause__, ValueError):
            # ninja could not decode the body (JSONDecodeError and UnicodeDecodeError are ValueErrors):
            # bad input like any other, so 422 in the same shape.
            detail = "The request body must be a JSON object."
            errors = [{"field": "body", "msg": detail, "type": "json_invalid"}]
            return error(request, 422, detail, "invalid", errors=errors)
        return error(request, exc.status_code, exc.message, _CODES.get(exc.status_code, "error"))


def not_allowed(methods: Sequence[str]) -> HttpResponse:
    """A 405 in JSON naming the methods the URL takes (also in Allow)."""
    detail = f"This URL takes {', '.join(methods)} only."
    answer = HttpResponse(
        json.dumps({"detail": detail, "code": "method_not_allowed"}), status=405, content_type="application/json"
    )
    answer["Allow"] = ", ".join(methods)
    return answer


def _body_without_length(request: HttpRequest) -> bool:
    """A write whose body comes chunked (Transfer-Encoding) without a Content-Length. Under WSGI Django reads
    a body by its Content-Length, so such a body arrives empty: answering it would act on nothing."""
    return (
        request.method in ("POST", "PUT", "PATCH")
        and "Transfer-Encoding" in request.headers
        and not request.META.get("CONTENT_LENGTH")
    )


def length_required() -> HttpResponse:
    detail = (
        "Length Required: send Content-Length with the body (a body sent with Transfer-Encoding: chunked "
        "cannot be read here)."
    )
    return HttpResponse(
        json.dumps({"detail": detail, "code": "length_required"}), status=411, content_type="application/json"
    )


def answer_head(
    view: Callable[..., HttpResponseBase], request: HttpRequest, *args: Any, **kwargs: Any
) -> HttpResponseBase:
    """HEAD answered as Django answers it for its own views: what GET would answer, headers and status, without
    the body (ninja knows only the methods an operation names, so it answered 405)."""
    request.method = "GET"
    try:
        response = view(request, *args, **kwargs)
    finally:
        request.method = "HEAD"
    if isinstance(response, HttpResponse):
        length = len(response.content)
        response.content = b""
        response["Content-Length"] = str(length)
    return response


def answer_wrong_methods_in_json(urls: tuple[list[Any], str, str]) -> tuple[list[Any], str, str]:
    """api.urls with every view wrapped so that a known URL asked with a method it does not take answers
    a 405 in JSON, naming the methods it takes (ninja answers those in plain text, before any exception
    handler), HEAD is answered wherever GET is, and a chunked body without a Content-Length is a 411."""
    patterns, app_name, namespace = urls

    def wrap(view: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            if _body_without_length(request):
                return length_required()
            response = view(request, *args, **kwargs)
            if not isinstance(response, HttpResponseNotAllowed):
                return response
            methods = {method.strip() for method in response["Allow"].split(",")}
            if "GET" in methods:
                if request.method == "HEAD":
                    return answer_head(view, request, *args, **kwargs)
                methods.add("HEAD")
            return not_allowed(sorted(methods))

        return wrapped

    wrapped = [URLPattern(p.pattern, wrap(p.callback), p.default_args, p.name) for p in patterns]
    return wrapped, app_name, namespace
