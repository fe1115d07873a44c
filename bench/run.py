"""Requests per second of the public page, four ways, alternating in one run; results as ratios.

    .venv/bin/python bench/run.py [--seconds 5] [--rounds 3] [--connections 32]

Needs gunicorn (in requirements), and nginx and wrk from Debian (`apt-get install nginx wrk`).
It builds a demo page with 20 showcased components in a temporary folder, publishes it (the static
site included), then measures GET / through:
  1. our Django (gunicorn, 2 workers, DEBUG off), which renders from the snapshot in memory;
  2. a bare one-file Django app returning the same bytes from memory (bench/bare_app.py): the ceiling;
  3. nginx with deploy/nginx.conf, serving the published files;
  4. nginx serving the same page as a plain static file.
Targets: (1)/(2) >= 0.8 and (3)/(4) >= 0.9. Prints the table and rewrites the results section of
bench/README.md. Absolute numbers drift between machines; the ratios are the result.
"""

from __future__ import annotations

import argparse
import gzip
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests import nginx  # noqa: E402 - deploy/nginx.conf with local ports and folders, as the tests run it

README = ROOT / "bench" / "README.md"
MARK_START, MARK_END = "<!-- results:start -->", "<!-- results:end -->"
EXTRA_COMPONENTS = ["Alerts API", "Webhooks", "SSO", "Billing", "Mobile SDK", "Status API", "Search", "Audit log"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(url: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not answer 200 within {seconds:.0f} s")


def prepare(tmp: Path) -> dict[str, str]:
    """A demo database with 20 showcased components, published with its static site."""
    env = {
        **{k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}},
        "DATABASE_URL": f"sqlite:///{tmp}/bench.sqlite3",
        "SNAPSHOT_DIR": str(tmp / "snapshot"),
        "PUBLISH_STATIC_SITE": "true",
        "DEBUG": "false",
        "SECRET_KEY": "bench-only-not-secret",
        "EMAIL_BACKEND": "console",  # no email is sent; DEBUG=false otherwise demands EMAIL_HOST
        "STATIC_ROOT": str(tmp / "static"),
        "LOG_LEVEL": "WARNING",
    }
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "-v0"], env=env, check=True, cwd=ROOT)
    subprocess.run([*manage, "collectstatic", "--noinput", "-v0"], env=env, check=True, cwd=ROOT)
    subprocess.run([*manage, "seed_demo", "--force"], env=env, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    script = (
        "from incidents import actions; from incidents.models import Component; "
        f"names = {EXTRA_COMPONENTS!r}; "
        "missing = [n for n in names if not Component.objects.filter(name=n).exists()]; "
        "[actions.create_component(actor=None, name=n) for n in missing]; "
        "from incidents.publishing import publish; publish(force=True); "
        "print(Component.objects.filter(showcase=True, is_group=False).count())"
    )
    showcased = subprocess.run(
        [*manage, "shell", "-c", script], env=env, check=True, cwd=ROOT, capture_output=True, text=True
    ).stdout.split()[-1]
    env["BENCH_SHOWCASED"] = showcased
    return env


def start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            command, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def nginx_config(tmp: Path, app_port: int, deploy_port: int, static_port: int, static_root: Path) -> Path:
    """deploy/nginx.conf with this run's paths and ports, plus a plain static server for the baseline."""
    plain = tmp / "plain"
    plain.mkdir(exist_ok=True)
    shutil.copyfile(tmp / "snapshot" / "site" / "index.html", plain / "index.html")
    baseline = f"""
    server {{
        listen 127.0.0.1:{static_port};
        root {plain};
        location / {{ try_files $uri /index.html; }}
    }}
"""
    text = nginx.local_config(
        tmp=tmp,
        port=deploy_port,
        app_port=app_port,
        snapshot_site=tmp / "snapshot" / "site",
        static_root=static_root,
        extra=baseline,
    )
    config = tmp / "nginx.conf"
    config.write_text(text)
    return config


def wrk(url: str, seconds: int, connections: int) -> float:
    result = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
    )
    match = re.search(r"Requests/sec:\s+([\d.]+)", result.stdout)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", result.stdout)
    if not match or non_2xx:
        raise SystemExit(f"wrk against {url} failed:\n{result.stdout}")
    return float(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--no-readme", action="store_true", help="Print only; leave bench/README.md alone.")
    args = parser.parse_args()
    for tool in ("nginx", "wrk"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing: apt-get install nginx wrk")

    with tempfile.TemporaryDirectory(prefix="signalpost-bench-") as name:
        tmp = Path(name)
        tmp.chmod(0o755)  # nginx's workers run as another user and must read the published files
        env = prepare(tmp)
        page = (tmp / "snapshot" / "site" / "index.html").read_bytes()
        ports = {key: free_port() for key in ("ours", "bare", "deploy", "static")}
        gunicorn = [sys.executable, "-m", "gunicorn", "--workers", "2", "--log-level", "warning"]
        processes = [
            start([*gunicorn, "--bind", f"127.0.0.1:{ports['ours']}", "statuspage.wsgi"], env, tmp / "ours.log"),
            start(
                [*gunicorn, "--bind", f"127.0.0.1:{ports['bare']}", "bench.bare_app"],
                {**env, "BENCH_PAGE": str(tmp / "snapshot" / "site" / "index.html")},
                tmp / "bare.log",
            ),
        ]
        config = nginx_config(tmp, ports["ours"], ports["deploy"], ports["static"], tmp / "static")
        processes.append(start(["nginx", "-c", str(config), "-g", "daemon off;"], env, tmp / "nginx.log"))
        urls = {key: f"http://127.0.0.1:{port}/" for key, port in ports.items()}
        try:
            for key, url in urls.items():
                try:
                    wait_for(url)
                except SystemExit:
                    print((tmp / f"{key}.log").read_text() if (tmp / f"{key}.log").exists() else "", file=sys.stderr)
                    print((tmp / "nginx-error.log").read_text() if key in {"deploy", "static"} else "", file=sys.stderr)
                    raise
            served = {key: urllib.request.urlopen(url, timeout=5).read() for key, url in urls.items()}
            for key, body in served.items():
                if len(body) < 0.9 * len(page):
                    raise SystemExit(f"{key} served {len(body)} bytes, the page has {len(page)}")
            results: dict[str, list[float]] = {key: [] for key in urls}
            for round_number in range(args.rounds):
                for key, url in urls.items():  # alternate, so drift hits every target alike
                    results[key].append(wrk(url, args.seconds, args.connections))
                print(f"round {round_number + 1}: " + ", ".join(f"{k} {v[-1]:.0f}/s" for k, v in results.items()))
        finally:
            for process in processes:
                os.killpg(process.pid, signal.SIGTERM)
            for process in processes:
                process.wait(15)

    median = {key: statistics.median(values) for key, values in results.items()}
    django_ratio = median["ours"] / median["bare"]
    nginx_ratio = median["deploy"] / median["static"]
    weight = (len(page), len(gzip.compress(page, 6)))
    report = render_report(median, django_ratio, nginx_ratio, weight, env["BENCH_SHOWCASED"], args)
    print(report)
    if not args.no_readme:
        from readme import rewrite_section  # bench/, which is sys.path[0] when a bench script runs

        rewrite_section(README, MARK_START, MARK_END, report)


def render_report(
    median: dict[str, float],
    django_ratio: float,
    nginx_ratio: float,
    weight: tuple[int, int],
    showcased: str,
    args: argparse.Namespace,
) -> str:
    def verdict(ratio: float, target: float) -> str:
        return "meets" if ratio >= target else "MISSES"

    return "\n".join(
        [
            f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} cores: wrk -t2 "
            f"-c{args.connections}, {args.rounds} alternating rounds of {args.seconds} s, medians.",
            "",
            "| GET / through | requests/s (median) |",
            "|---|---|",
            f"| (1) Signalpost, gunicorn 2 workers | {median['ours']:.0f} |",
            f"| (2) bare one-file Django, same bytes from memory | {median['bare']:.0f} |",
            f"| (3) nginx with deploy/nginx.conf | {median['deploy']:.0f} |",
            f"| (4) nginx, plain static file | {median['static']:.0f} |",
            "",
            f"- (1)/(2) = **{django_ratio:.2f}** (target ≥ 0.8: {verdict(django_ratio, 0.8)})",
            f"- (3)/(4) = **{nginx_ratio:.2f}** (target ≥ 0.9: {verdict(nginx_ratio, 0.9)})",
            f"- Page weight of / with {showcased} showcased components: {weight[0]:,} bytes, "
            f"{weight[1]:,} gzipped (an existing Django status page sends 322 KB).",
        ]
    )


if __name__ == "__main__":
    main()
