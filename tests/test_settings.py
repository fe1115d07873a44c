"""Settings come from the environment; a bad value stops start-up with a message naming it."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from tests.test_deploy import production_env

ROOT = Path(__file__).resolve().parent.parent
SETTING_VARIABLES = (
    "DEBUG", "SECRET_KEY", "SITE_URL", "DATABASE_URL", "REDIS_URL", "TIMER_SWEEP_SECONDS", "EMAIL_HOST",
    "EMAIL_PORT", "DISPLAY_TIME_ZONE", "EMAIL_BACKEND", "SECURE_SSL_REDIRECT", "SECURE_REDIRECT_EXEMPT",
    "SECURE_HSTS_SECONDS", "SECURE_HSTS_INCLUDE_SUBDOMAINS", "SECURE_HSTS_PRELOAD", "AXES_FAILURE_LIMIT",
    "AXES_COOLOFF_MINUTES", "DATABASE_CONNECT_TIMEOUT", "DATABASE_STATEMENT_TIMEOUT", "SIGNALPOST_PROCESS",
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
        ({"EMAIL_HOST": "smtp.example.com", "EMAIL_PORT": "99999"}, "EMAIL_PORT must be at most 65535"),
        ({"EMAIL_HOST": "smtp.example.com", "EMAIL_USE_SSL": "true"}, "EMAIL_USE_TLS and EMAIL_USE_SSL: choose one"),
        ({"DISPLAY_TIME_ZONE": "Mars/Olympus"}, "DISPLAY_TIME_ZONE must be an IANA zone"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL"),
        ({"DEBUG": "false", "SECRET_KEY": "x" * 50}, "EMAIL_HOST must be set when DEBUG is false"),
        ({"EMAIL_BACKEND": "pigeon"}, "EMAIL_BACKEND must be smtp or console"),
        ({"EMAIL_BACKEND": "smtp"}, "EMAIL_BACKEND=smtp needs EMAIL_HOST"),
        ({"EMAIL_BACKEND": "console", "EMAIL_HOST": "smtp.example.com"}, "EMAIL_BACKEND=console would ignore"),
        ({"SECURE_SSL_REDIRECT": "true"}, "SECURE_SSL_REDIRECT needs an https SITE_URL"),
        ({"SECURE_HSTS_SECONDS": "a year"}, "SECURE_HSTS_SECONDS must be a whole number"),
        ({"SECURE_REDIRECT_EXEMPT": "^healthz(", "SITE_URL": "https://status.example.com"}, "SECURE_REDIRECT_EXEMPT"),
        ({"AXES_FAILURE_LIMIT": "0"}, "AXES_FAILURE_LIMIT must be at least 1"),
        ({"AXES_COOLOFF_MINUTES": "a while"}, "AXES_COOLOFF_MINUTES must be a whole number"),
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


# --- production: `check --deploy` -------------------------------------------------------------------


def documented_production_environment() -> dict[str, str]:
    """deploy/production.env, which the README's Production section copies to .env, with the blank it
    asks the operator to fill (SECRET_KEY) filled."""
    env = production_env()
    assert env["SECRET_KEY"] == "", "deploy/production.env must not ship a SECRET_KEY"
    env["SECRET_KEY"] = secrets.token_urlsafe(50)  # as the README generates it; security.W009 accepts it
    return env


def run_alone(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Python in a fresh process that sees only the given variables (and PATH)."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env={"PATH": os.environ.get("PATH", ""), "DJANGO_SETTINGS_MODULE": "statuspage.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run_alone("manage.py", *args, **env)


def test_the_documented_production_environment_passes_check_deploy() -> None:
    env = documented_production_environment()
    assert env["DEBUG"] == "false" and env["SITE_URL"].startswith("https://") and env["EMAIL_HOST"]

    result = manage("check", "--deploy", "--fail-level", "WARNING", **env)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout
    assert "WARNINGS" not in result.stdout + result.stderr


def test_production_without_email_host_stops_naming_it() -> None:
    env = {k: v for k, v in documented_production_environment().items() if not k.startswith("EMAIL_")}

    result = manage("check", "--deploy", **env)

    assert result.returncode != 0
    assert "EMAIL_HOST must be set when DEBUG is false" in result.stderr
    assert "EMAIL_BACKEND=console" in result.stderr  # and it says how to opt out
    # The message alone, not at the foot of a 40-line traceback.
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("Configuration error: EMAIL_HOST must be set"), result.stderr


def test_production_can_choose_console_email_on_purpose() -> None:
    env = {k: v for k, v in documented_production_environment().items() if not k.startswith("EMAIL_")}
    code = "import django; django.setup(); from django.conf import settings; print(settings.MAILERS['default'])"

    checked = manage("check", "--deploy", "--fail-level", "WARNING", EMAIL_BACKEND="console", **env)
    mailers = run_alone("-c", code, EMAIL_BACKEND="console", **env)

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "console.EmailBackend" in mailers.stdout, mailers.stderr


@pytest.fixture
def behind_tls_proxy(settings: Any) -> None:
    """Production's https settings, as an https SITE_URL gives them (see test_it_derives_https_settings…)."""
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_HSTS_SECONDS = 31536000
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    settings.SECURE_REDIRECT_EXEMPT = [r"^(healthz|readyz|livez)/?$"]


def test_it_derives_https_settings_from_an_https_site_url() -> None:
    code = (
        "import django; django.setup(); from django.conf import settings as s; "
        "print(s.SECURE_SSL_REDIRECT, s.SECURE_HSTS_SECONDS, s.SECURE_HSTS_INCLUDE_SUBDOMAINS, "
        "s.SECURE_HSTS_PRELOAD, s.SECURE_PROXY_SSL_HEADER, s.SECURE_REDIRECT_EXEMPT)"
    )

    https = run_alone("-c", code, SITE_URL="https://s.example.com")
    http = run_alone("-c", code)

    assert https.stdout.strip() == (
        "True 31536000 True False ('HTTP_X_FORWARDED_PROTO', 'https') ['^(healthz|readyz|livez)/?$']"
    ), https.stderr
    assert http.stdout.split()[:2] == ["False", "0"], http.stderr


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/login/", "/manage/", "/", "/api/v2/status.json"])
def test_plain_http_is_sent_to_https_on_every_side(behind_tls_proxy: None, path: str) -> None:
    response = Client().get(path)  # through the proxy without TLS, or straight to gunicorn

    assert response.status_code == 301
    assert response["Location"] == f"https://testserver{path}"


@pytest.mark.django_db
def test_https_through_the_proxy_is_served_with_hsts_and_no_redirect_loop(behind_tls_proxy: None) -> None:
    client = Client(HTTP_X_FORWARDED_PROTO="https")  # what deploy/nginx.conf sets when it terminates TLS

    for path in ("/login/", "/"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert response["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains", path


def test_an_empty_redirect_exemption_exempts_nothing() -> None:
    code = "import django; django.setup(); from django.conf import settings; print(settings.SECURE_REDIRECT_EXEMPT)"

    result = run_alone("-c", code, SITE_URL="https://s.example.com", SECURE_REDIRECT_EXEMPT="^healthz$,, ")

    assert result.stdout.strip() == "['^healthz$']", result.stderr


@pytest.mark.django_db
def test_a_health_probe_on_plain_http_is_not_redirected(behind_tls_proxy: None) -> None:
    response = Client().get("/healthz")

    assert response.status_code != 301


def database_options(code: str = "", **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in SETTING_VARIABLES}
    setup = "import django; django.setup(); from django.conf import settings; "
    script = code or setup + "print(settings.DATABASES['default'].get('OPTIONS'))"
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={**clean, "DJANGO_SETTINGS_MODULE": "statuspage.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


POSTGRES = "postgres://signalpost@db.example.com:5432/signalpost"
WEB = "import statuspage.wsgi; from django.conf import settings; print(settings.DATABASES['default'].get('OPTIONS'))"


def test_postgresql_gives_up_connecting_after_the_connect_timeout() -> None:
    assert database_options(DATABASE_URL=POSTGRES) == "{'connect_timeout': 3}"
    assert database_options(DATABASE_URL=POSTGRES, DATABASE_CONNECT_TIMEOUT="7") == "{'connect_timeout': 7}"


def test_the_web_process_alone_has_a_statement_timeout() -> None:
    web = database_options(WEB, DATABASE_URL=POSTGRES)
    assert web == "{'connect_timeout': 3, 'options': '-c statement_timeout=10000'}"
    assert database_options(WEB, DATABASE_URL=POSTGRES, DATABASE_STATEMENT_TIMEOUT="2").endswith(
        "statement_timeout=2000'}"
    )
    assert database_options(WEB, DATABASE_URL=POSTGRES, DATABASE_STATEMENT_TIMEOUT="0") == "{'connect_timeout': 3}"
    # A worker, beat or manage.py migrate never loads statuspage.wsgi: no limit on their statements.
    assert "statement_timeout" not in database_options(DATABASE_URL=POSTGRES)
