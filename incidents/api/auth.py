"""Bearer-token authentication: `Authorization: Bearer sp_…`, tokens made by `manage.py create_api_token`."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.http import HttpRequest
from django.utils import timezone
from ninja.errors import AuthenticationError
from ninja.security import HttpBearer

from incidents import access
from incidents.models import ApiToken

# Bookkeeping, not an audit trail: one write per token per minute keeps reads read-only.
LAST_USED_RESOLUTION = timedelta(minutes=1)


class ApiTokenAuth(HttpBearer):
    """Resolves a token to its user. Inactive users get 401, non-staff users 403 (tokens are staff-only)."""

    def __call__(self, request: HttpRequest) -> Any:
        # ninja's HttpBearer logs the whole header of a request with another scheme (Basic, Token …)
        # when DEBUG is on, which writes passwords and tokens to the log. Ours says only the scheme.
        scheme, _, token = request.headers.get(self.header, "").partition(" ")
        if not scheme:
            return None
        if scheme.lower() != self.openapi_scheme:
            raise AuthenticationError(message=f"Use 'Authorization: Bearer <token>', not the {scheme[:20]!r} scheme.")
        return self.authenticate(request, token)

    def authenticate(self, request: HttpRequest, token: str) -> Any:
        api_token = access.api_token_for(token.strip())
        if api_token is None:
            raise AuthenticationError(message="Invalid API token.")
        user = api_token.user
        if not user.is_active:
            raise AuthenticationError(message="This API token's user is deactivated.")
        access.require_staff(user)  # PermissionDenied → 403
        now = timezone.now()
        if api_token.last_used_at is None or now - api_token.last_used_at >= LAST_USED_RESOLUTION:
            ApiToken.objects.filter(pk=api_token.pk).update(last_used_at=now)
        return user
