"""The production files in deploy/ agree with each other and with the README's layout, and are valid
(tests/test_settings.py runs `check --deploy` on deploy/production.env).

The README's Production section was followed by hand from a clean clone (PostgreSQL, Redis, the units'
commands, nginx with deploy/nginx.conf); these tests keep the files from drifting apart afterwards.
"""

from __future__ import annotations

import configparser
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import need

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
UNITS = ("signalpost-web", "signalpost-worker", "signalpost-beat")
CODE = "/srv/signalpost"


def production_env() -> dict[str, str]:
    """deploy/production.env as systemd's EnvironmentFile= and settings.py's .env loader read it."""
    values = {}
    for line in (DEPLOY / "production.env").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep and key.isidentifier() and " " not in key, line
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values


def unit(name: str) -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(DEPLOY / "systemd" / f"{name}.service")
    return parser["Service"]


def nginx_directive(pattern: str) -> str:
    match = re.search(pattern, (DEPLOY / "nginx.conf").read_text())
    assert match, pattern
    return match.group(1)


def test_nginx_serves_the_folders_the_environment_names() -> None:
    env = production_env()

    assert nginx_directive(r"\n\s*root (\S+);\n\s*charset") == f"{env['SNAPSHOT_DIR']}/site"
    assert nginx_directive(r"location /static/ \{\s*alias (\S+);") == f"{env['STATIC_ROOT']}/"
    assert env["TRUST_X_FORWARDED_FOR"] == "true"
    assert "include /etc/nginx/mime.types;" in (DEPLOY / "nginx.conf").read_text()
    assert "Strict-Transport-Security" in (DEPLOY / "nginx.conf").read_text()


@pytest.mark.parametrize("name", UNITS)
def test_each_unit_runs_as_the_readme_says(name: str) -> None:
    service = unit(name)
    env = production_env()

    assert (service["User"], service["Group"]) == ("signalpost", "signalpost")
    assert service["WorkingDirectory"] == CODE
    assert service["EnvironmentFile"] == f"{CODE}/.env"
    assert service["Restart"] == "always"
    command = shlex.split(service["ExecStart"])
    assert command[0].startswith(f"{CODE}/.venv/bin/")
    if name != "signalpost-beat":  # the web and the worker write the snapshot and the site
        assert Path(env["SNAPSHOT_DIR"]).is_relative_to(service["ReadWritePaths"])


def test_the_web_unit_binds_where_nginx_sends_requests() -> None:
    command = shlex.split(unit("signalpost-web")["ExecStart"])

    assert command[1:3] == ["-c", "deploy/gunicorn.conf.py"]
    assert command[command.index("--bind") + 1] == nginx_directive(r"upstream signalpost_app \{\s*server (\S+);")
    assert command[-1] == "statuspage.wsgi"


def test_the_worker_and_beat_are_separate_processes() -> None:
    assert shlex.split(unit("signalpost-worker")["ExecStart"])[1:4] == ["-A", "statuspage", "worker"]
    assert shlex.split(unit("signalpost-beat")["ExecStart"])[1:4] == ["-A", "statuspage", "beat"]
    assert "--beat" not in unit("signalpost-worker")["ExecStart"]


@pytest.mark.parametrize("name", UNITS)
def test_systemd_accepts_each_unit(name: str, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    need(analyze is not None, "needs systemd-analyze (apt-get install systemd)")
    # This checkout stands in for /srv/signalpost: its .venv has gunicorn and celery.
    text = (DEPLOY / "systemd" / f"{name}.service").read_text().replace(CODE, str(ROOT))
    (tmp_path / f"{name}.service").write_text(text)

    result = subprocess.run(
        [str(analyze), "verify", f"./{name}.service"], cwd=tmp_path, capture_output=True, text=True, check=False
    )

    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr
