"""The public side's fast path: snapshot routes answered before the rest of the middleware stack.

The public pages, the v2 API, the feeds and the calendar read only the published snapshot: they need
no session, user, CSRF token or messages. Serving them ahead of that stack, with the same security
headers set here, is what brings a public request close to the cost of a bare Django view
(bench/README.md). Any other route takes the ordinary path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.urls import Resolver404, resolve
from django.utils.csp import build_policy

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
