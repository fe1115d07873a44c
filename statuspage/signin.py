"""Signing in: failed attempts are throttled per account and per client address (django-axes).

django-axes records each failed sign-in (its AccessAttempt rows, in the database, so it works the same
on SQLite without Redis and across gunicorn workers) and its authentication backend refuses an account
or an address with AXES_FAILURE_LIMIT failures within AXES_COOLOFF_TIME, even with the right password.
This module is the part people see: the forms of /login/ and /admin/login/ say that sign-in is paused
and until when (in the display zone, named), and the lockout answers 429 with Retry-After.
Unlocking early: `manage.py axes_reset_username NAME`, `axes_reset_ip ADDRESS`, or delete the rows
under "Access attempts" in /admin/.
"""

from __future__ import annotations

import ipaddress
import math
from datetime import datetime, timedelta
from typing import Any

from axes.helpers import get_client_parameters, get_cool_off, get_failure_limit
from axes.models import AccessAttempt
from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from incidents.templatetags.incident_ui import display_time, duration
from statuspage.subscriptions import client_address


def client_ip(request: HttpRequest) -> str | None:
    """AXES_CLIENT_IP_CALLABLE: the address sign-up limits use (X-Forwarded-For behind a trusted proxy),
    if it is an IP address; else REMOTE_ADDR. Axes stores it in an inet column, and a header that
    is not an address must neither fail the sign-in nor escape the count."""
    for candidate in (client_address(request), request.META.get("REMOTE_ADDR")):
        try:
            return str(ipaddress.ip_address(str(candidate).strip()))
        except ValueError:
            continue
    return None


def locked_until(request: HttpRequest, username: str | None) -> datetime | None:
    """When the lockout that refused this request ends: None if nothing locks it.

    Axes counts, per lockout parameter (the account; the address), the failures of the attempt rows
    whose last failure is within the cool-off. Rows drop out oldest first, so the lock lifts when the
    row that brings the newest-first sum to the limit leaves the window.
    """
    cool_off = get_cool_off(request)
    if cool_off is None:
        return None
    credentials = {settings.AXES_USERNAME_FORM_FIELD: username}
    limit = get_failure_limit(request, credentials)
    now: datetime = getattr(request, "axes_attempt_time", None) or timezone.now()
    ends = []
    parameters = get_client_parameters(
        username or "",
        getattr(request, "axes_ip_address", ""),
        getattr(request, "axes_user_agent", ""),
        request,
        credentials,
    )
    for filter_kwargs in parameters:
        if not all(filter_kwargs.values()):
            continue  # no username given: only the address can be locked
        rows = (
            AccessAttempt.objects.filter(**filter_kwargs, attempt_time__gte=now - cool_off)
            .order_by("-attempt_time")
            .values_list("attempt_time", "failures_since_start")
        )
        total = 0
        for attempt_time, failures in rows:
            total += failures
            if total >= limit:
                ends.append(attempt_time + cool_off)
                break
    return max(ends) if ends else None


def lockout_message(request: HttpRequest, username: str | None) -> str:
    until = locked_until(request, username)
    limit = settings.AXES_FAILURE_LIMIT
    cause = f"Sign-in is paused: {limit} failed attempts for this account or from your address."
    if until is None:
        return f"{cause} Try again later, or ask an administrator to unlock it."
    # Unlocked just after `until`: name the next whole minute, so that trying at the time shown works.
    shown = (until + timedelta(seconds=1)).replace(second=0, microsecond=0)
    if shown < until + timedelta(seconds=1):
        shown += timedelta(minutes=1)
    wait = shown - timezone.now()
    return f"{cause} Try again at {display_time(shown)} (in {duration(wait)}), or ask an administrator to unlock it."


class LockoutMessageMixin:
    """Says 'paused until …' instead of 'wrong password' when axes refused the attempt."""

    request: HttpRequest | None
    cleaned_data: dict[str, Any]

    def get_invalid_login_error(self) -> ValidationError:
        if self.request is not None and getattr(self.request, "axes_locked_out", False):
            return ValidationError(lockout_message(self.request, self.cleaned_data.get("username")), code="locked_out")
        return super().get_invalid_login_error()  # type: ignore[misc]


class SignInForm(LockoutMessageMixin, AuthenticationForm):
    """/login/"""


class AdminSignInForm(LockoutMessageMixin, AdminAuthenticationForm):
    """/admin/login/"""


def lockout_response(
    request: HttpRequest, original_response: HttpResponse | None = None, credentials: dict[str, Any] | None = None
) -> HttpResponse:
    """AXES_LOCKOUT_CALLABLE: the login page as rendered (its form says until when), as 429 Too Many Requests.

    A sign-in that did not come through those forms gets the same sentence as plain text.
    """
    username = (credentials or {}).get(settings.AXES_USERNAME_FORM_FIELD)
    if isinstance(original_response, HttpResponse):
        response = original_response
    else:
        response = HttpResponse(lockout_message(request, username), content_type="text/plain; charset=utf-8")
    response.status_code = settings.AXES_HTTP_RESPONSE_CODE
    until = locked_until(request, username)
    if until is not None:
        response["Retry-After"] = str(max(1, math.ceil((until - timezone.now()).total_seconds()) + 1))
    return response
