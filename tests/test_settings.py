"""Settings come from the environment; a bad value stops start-up with a message naming it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import Client

ROOT = Path(__file__).resolve().parent.parent
SETTING_VARIABLES = (
    "DEBUG", "SECRET_KEY", "SITE_URL", "DATABASE_URL", "REDIS_URL", "TIMER_SWEEP_SECONDS", "EMAIL_HOST",
    "EMAIL_PORT", "DISPLAY_TIME_ZONE",
)  # fmt: skip


def start_django(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in SETTING_VARIABLES}
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); from django.conf import settings; print('ok')"],
        cwd=ROOT,
        env={**clean, "DJANGO_SETTINGS_MODULE": "statuspage.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_it_starts_with_nothing_set() -> None:
    result = start_django()
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_it_treats_empty_values_as_unset() -> None:
    result = start_django(DATABASE_URL="", REDIS_URL="", DEBUG="")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DEBUG": "maybe"}, "DEBUG must be true or false"),
        ({"DEBUG": "false"}, "SECRET_KEY must be set when DEBUG is false"),
        ({"DATABASE_URL": "mysql://db/signalpost"}, "DATABASE_URL must be a URL starting with one of"),
        ({"REDIS_URL": "localhost:6379"}, "REDIS_URL must be a URL starting with one of"),
        ({"SITE_URL": "status.example.com"}, "SITE_URL must be a URL starting with one of http, https"),
        ({"TIMER_SWEEP_SECONDS": "soon"}, "TIMER_SWEEP_SECONDS must be a whole number"),
        ({"TIMER_SWEEP_SECONDS": "0"}, "TIMER_SWEEP_SECONDS must be at least 1"),
        ({"EMAIL_HOST": "smtp.example.com", "EMAIL_PORT": "smtp"}, "EMAIL_PORT must be a whole number"),
        ({"EMAIL_HOST": "smtp.example.com", "EMAIL_USE_SSL": "true"}, "EMAIL_USE_TLS and EMAIL_USE_SSL: choose one"),
        ({"DISPLAY_TIME_ZONE": "Mars/Olympus"}, "DISPLAY_TIME_ZONE must be an IANA zone"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL"),
    ],
)
def test_it_refuses_bad_values_naming_the_variable(env: dict[str, str], message: str) -> None:
    result = start_django(**env)
    assert result.returncode != 0
    assert message in result.stderr


def test_it_uses_redis_for_tasks_and_cache_when_configured() -> None:
    code = (
        "import django; django.setup(); from django.conf import settings; "
        "print(settings.CELERY_TASK_ALWAYS_EAGER, settings.CACHES['default']['BACKEND'].rsplit('.', 1)[-1])"
    )
    clean = {k: v for k, v in os.environ.items() if k not in SETTING_VARIABLES}
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**clean, "DJANGO_SETTINGS_MODULE": "statuspage.settings", "REDIS_URL": "redis://127.0.0.1:6379/0"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.split() == ["False", "RedisCache"], result.stderr


def test_it_reads_dotenv_with_the_environment_winning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from statuspage.settings import load_dotenv

    dotenv = tmp_path / ".env"
    dotenv.write_text(
        "# comment\n\nSITE_NAME=Acme status\nexport PORT=9000\n"
        'DEFAULT_FROM_EMAIL="Acme <status@acme.test>"\nSITE_URL=https://from-dotenv.test\n'
    )
    monkeypatch.setenv("SITE_URL", "https://from-environment.test")
    for name in ("SITE_NAME", "PORT", "DEFAULT_FROM_EMAIL"):
        monkeypatch.delenv(name, raising=False)

    load_dotenv(dotenv)

    assert os.environ["SITE_NAME"] == "Acme status"
    assert os.environ["PORT"] == "9000"
    assert os.environ["DEFAULT_FROM_EMAIL"] == "Acme <status@acme.test>"
    assert os.environ["SITE_URL"] == "https://from-environment.test"


def test_it_names_a_bad_dotenv_line(tmp_path: Path) -> None:
    from django.core.exceptions import ImproperlyConfigured

    from statuspage.settings import load_dotenv

    dotenv = tmp_path / ".env"
    dotenv.write_text("SITE_NAME=ok\nnot a setting\n")
    with pytest.raises(ImproperlyConfigured, match="line 2 is not KEY=value"):
        load_dotenv(dotenv)


def test_the_site_answers_favicon_ico(client: Client) -> None:
    response = client.get("/favicon.ico")
    assert response.status_code == 200
    assert response.getvalue()[:4] == b"\x00\x00\x01\x00"  # an ICO file
