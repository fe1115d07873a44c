"""deploy/nginx.conf run locally, for tests and benchmarks: the production file itself, with this run's
ports and folders and plain HTTP instead of TLS (the README's "TLS" says the same edit for a trial).

Every replacement must find its text in the file, so an edit of deploy/nginx.conf that these runs would
silently stop testing fails here instead.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy" / "nginx.conf"
SNAPSHOT_SITE = "/var/lib/signalpost/snapshot/site"
STATIC_ROOT = "/var/lib/signalpost/static/"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def binary() -> str:
    return shutil.which("nginx") or "/usr/sbin/nginx"


def local_config(
    *, tmp: Path, port: int, app_port: int, snapshot_site: Path, static_root: Path, extra: str = ""
) -> str:
    """The text of deploy/nginx.conf, listening on 127.0.0.1:port over plain HTTP, logging into tmp."""
    text = DEPLOY.read_text()

    def swap(old: str, new: str) -> None:
        nonlocal text
        if old not in text:
            raise AssertionError(f"deploy/nginx.conf no longer has {old!r}: update tests/nginx.py")
        text = text.replace(old, new)

    # pytest's temporary folders are private to this user; as root, nginx's workers must be root to read them.
    swap("user www-data;", "user root;" if os.geteuid() == 0 else "")
    swap("pid /run/nginx.pid;", f"pid {tmp}/nginx.pid;")
    swap("error_log /var/log/nginx/error.log;", f"error_log {tmp}/nginx-error.log;")
    swap("access_log /var/log/nginx/access.log;", "access_log off;")
    temporary = " ".join(
        f"{kind}_temp_path {tmp}/nginx-{kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    swap("http {\n", f"http {{\n    {temporary}\n")
    swap("server 127.0.0.1:8000;", f"server 127.0.0.1:{app_port};")
    # The redirect to https, unused here, on a port of its own: the kernel can hand the same free port out
    # twice, and with both server blocks on one port the redirect answered `/` (a flaky 302 to https).
    redirect_port = free_port()
    while redirect_port in (port, app_port):
        redirect_port = free_port()
    swap("listen 80;", f"listen 127.0.0.1:{redirect_port};")
    swap("listen 443 ssl http2;", f"listen 127.0.0.1:{port};")
    swap(SNAPSHOT_SITE, str(snapshot_site))
    swap(STATIC_ROOT, f"{static_root}/")
    lines = [
        line
        for line in text.splitlines()
        if not line.strip().startswith(("listen [::]", "ssl_certificate ", "ssl_certificate_key "))
    ]
    text = "\n".join(lines).rstrip()
    if not text.endswith("}"):
        raise AssertionError("deploy/nginx.conf should end with the http block's closing brace")
    return f"{text[:-1]}{extra}\n}}\n"


@contextmanager
def running(config_text: str, tmp: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """nginx in the foreground with that configuration, until the block ends."""
    config = tmp / "nginx.conf"
    config.write_text(config_text)
    process = subprocess.Popen(
        [binary(), "-c", str(config), "-g", "daemon off;"], stderr=subprocess.PIPE, start_new_session=True
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                log = tmp / "nginx-error.log"
                errors = process.stderr.read().decode() if process.stderr and process.poll() is not None else ""
                raise RuntimeError(f"nginx did not start: {errors}{log.read_text() if log.exists() else ''}") from None
            time.sleep(0.05)
    try:
        yield process
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(10)
