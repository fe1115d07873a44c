"""The public side's fast path: snapshot routes answered before the rest of the middleware stack.

The public pages, the v2 API, the feeds and the calendar read only the published snapshot: they need
no session, user, CSRF token or messages. Serving them ahead of that stack, with the same security
headers set here, is what brings a public request close to the cost of a bare Django view
(bench/README.md). Any other route takes the ordinary path.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import cast

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.loader import render_to_string
from django.urls import Resolver404, resolve
from django.utils.csp import build_policy

from incidents import database
from statuspage import subscriptions

log = logging.getLogger(__name__)

PUBLIC_URLCONF = "statuspage.urls_fastpath"


class PublicFastPathMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        # The public pages load only same-origin files, so their policy needs no per-request nonce.
        self.headers = {
            "Content-Security-Policy": build_policy(cast("dict[str, list[str]]", settings.SECURE_CSP)),
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": settings.SECURE_REFERRER_POLICY,
            "X-Frame-Options": settings.X_FRAME_OPTIONS,
            "Cross-Origin-Opener-Policy": "same-origin",
        }

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            match = resolve(request.path_info, urlconf=PUBLIC_URLCONF)
        except Resolver404:
            return self.get_response(request)
        # Every method: the views answer GET and HEAD (and a CORS preflight) and refuse the rest with
        # 405. They change nothing, so there is nothing for CSRF to protect here.
        response = match.func(request, *match.args, **match.kwargs)
        for name, value in self.headers.items():
            response.headers.setdefault(name, value)
        if not response.streaming and "Content-Length" not in response:
            response["Content-Length"] = str(len(response.content))  # as CommonMiddleware would
        return response


STAFF_RETRY_AFTER_SECONDS = 60


class DatabaseUnavailableMiddleware:
    """A request that needs the database while it is down answers a clear 503, never a 500 or a hang.

    Only what really needs the database gets here: the public pages are served from the snapshot by
    PublicFastPathMiddleware, and the sign-up page renders from it too. Subscribing (and a subscriber's
    links) gets the public page's 503, with the current status above it; the staff side a plain 503; the
    staff API answers in JSON (incidents/api/errors.py).
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        # Refused or timed-out connections, a statement ended by DATABASE_STATEMENT_TIMEOUT, a lost
        # connection; not a missing table or another bug (incidents/database.py).
        if not database.is_unavailable(exception):
            return None
        log.warning("the database is unavailable; %s %s answered 503: %s", request.method, request.path, exception)
        return database_unavailable(request)


def database_unavailable(request: HttpRequest) -> HttpResponse:
    """The 503 for a request that needed the database (also used by the 500 handler, for a failure
    outside a view)."""
    if request.path.startswith("/subscribe"):
        return subscriptions.unavailable(request)
    if request.path.startswith("/api/"):
        detail = "The database is not answering. Try again in a minute; the public status API keeps working."
        response: HttpResponse = JsonResponse({"detail": detail, "code": "database_unavailable"}, status=503)
    else:
        response = HttpResponse(render_to_string("503.html"), status=503)
    response["Retry-After"] = str(STAFF_RETRY_AFTER_SECONDS)
    response["Cache-Control"] = "no-store"
    return response
