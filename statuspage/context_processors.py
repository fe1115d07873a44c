from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest


def site(request: HttpRequest) -> dict[str, str]:
    # Not "site_name": Django's auth views put the request's host there.
    return {"site_title": settings.SITE_NAME, "site_url": settings.SITE_URL}
