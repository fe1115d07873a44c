"""The Django ceiling on this box: a one-file Django app that returns the same bytes from memory.

Served by gunicorn in bench/run.py: `BENCH_PAGE=path/to/index.html gunicorn bench.bare_app`.
"""

from __future__ import annotations

import os
from pathlib import Path

from django.conf import settings
from django.core.wsgi import get_wsgi_application
from django.http import HttpRequest, HttpResponse
from django.urls import path

settings.configure(
    DEBUG=False,
    SECRET_KEY="bench-only",  # noqa: S106 - a throwaway benchmark app
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    MIDDLEWARE=[],
)
PAGE = Path(os.environ["BENCH_PAGE"]).read_bytes()


def home(request: HttpRequest) -> HttpResponse:
    return HttpResponse(PAGE, content_type="text/html; charset=utf-8")


urlpatterns = [path("", home)]
application = get_wsgi_application()
