"""The fault suite's quick run (bench/faults.py --quick), as CI runs it: the production shape (gunicorn,
a Celery worker, beat, PostgreSQL, Redis, an SMTP sink, a webhook receiver) broken one fault at a time.
It fails on any lost or doubled message, any public 5xx and any public request over 2.5 s (the full
run's 1 s, loosened for CPU noise on a shared machine: a request that waited on a broken dependency takes
3 s or more); its table is printed on failure. A person runs the long version (bench/README.md)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.worker, pytest.mark.django_db]


def own_redis_database(url: str) -> str:
    """The same server as the tests' Redis, a database of the suite's own (it flushes it)."""
    parts = urlsplit(url)
    current = int(parts.path.strip("/") or 0)
    return urlunsplit(parts._replace(path=f"/{(current + 8) % 16}"))


def test_the_quick_fault_suite_loses_nothing_and_keeps_the_public_side_answering(
    requires_postgres: None, requires_redis: None
) -> None:
    database = connection.settings_dict
    server = f"postgres://{database['USER'] or 'root'}@{database['HOST'] or '127.0.0.1'}:{database['PORT'] or 5432}"
    result = subprocess.run(
        [
            sys.executable,
            "bench/faults.py",
            "--quick",
            "--postgres",
            f"{server}/{database['NAME']}",
            "--redis",
            own_redis_database(settings.REDIS_URL),
        ],
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")},
        capture_output=True,
        text=True,
        timeout=600,
    )

    assert result.returncode == 0, result.stdout + result.stderr[-20_000:]
    assert "| fault |" in result.stdout
