"""Take the README screenshots: `make screenshots` (needs Chromium; Debian: apt-get install chromium).

Seeds a throwaway SQLite database with the demo, serves it on a free local port, captures the public
status page, then logs in as the demo user and captures the dashboard, the story incident, the response
report and the story's published post-mortem into docs/. Then, on a 390 px phone, declares a SEV2
through the form and captures the dashboard and that incident's header (the Acknowledge button and the
clocks) as docs/phone-dashboard.png and docs/phone-incident.png.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import Browser, ViewportSize, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
STORY = "Query API degraded for US customers"
PHONE: ViewportSize = {"width": 390, "height": 844}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_up(url: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"the server at {url} did not start")


def main() -> None:
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        env = {
            **{k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}},
            "DATABASE_URL": f"sqlite:///{tmp}/screenshots.sqlite3",
            "SITE_URL": f"http://127.0.0.1:{port}",
        }
        manage = [sys.executable, str(ROOT / "manage.py")]
        subprocess.run([*manage, "migrate", "-v0"], env=env, check=True, cwd=ROOT)
        subprocess.run([*manage, "seed_demo"], env=env, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        subprocess.run([*manage, "publish"], env=env, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        server = subprocess.Popen(
            [*manage, "runserver", "--noreload", f"127.0.0.1:{port}"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # The sweep, as `make run` runs it beside the server: without it the dashboard rightly warns that
        # the timers stopped.
        timers = subprocess.Popen(
            [*manage, "run_timers", "--loop"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            base = f"http://127.0.0.1:{port}"
            wait_until_up(f"{base}/login/", time.monotonic() + 30)
            with sync_playwright() as pw:
                flags = ["--disable-gpu", "--disable-quic", "--disable-background-networking"]
                browser = pw.chromium.launch(executable_path=chromium, args=flags)
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.goto(f"{base}/")
                page.wait_for_load_state("networkidle")
                page.screenshot(path=ROOT / "docs" / "status-page.png", full_page=True)
                page.goto(f"{base}/login/?next=/manage/")
                page.get_by_label("Username").fill("oncall")
                page.get_by_label("Password").fill("signalpost")
                page.get_by_role("button", name="Log in").click()
                page.wait_for_url(f"{base}/manage/")
                page.screenshot(path=ROOT / "docs" / "dashboard.png", full_page=True)
                page.get_by_role("link", name=STORY).first.click()
                page.wait_for_load_state("networkidle")
                # The top of the incident page: header, milestones, clocks and the first forms.
                page.screenshot(path=ROOT / "docs" / "incident.png")
                # The last 90 days of SEV1s (the story became one): its 2.5 h acknowledgment against the target
                # and the reported industry average.
                page.goto(f"{base}/manage/reports/?severity=sev1&unit=week")
                page.wait_for_load_state("networkidle")
                page.screenshot(path=ROOT / "docs" / "report.png", full_page=True)
                # The story's post-mortem as customers read it.
                page.goto(f"{base}/history")
                page.get_by_role("link", name=STORY).first.click()
                page.wait_for_load_state("networkidle")
                page.screenshot(path=ROOT / "docs" / "postmortem.png", full_page=True)
                phone_screenshots(browser, base)
                browser.close()
        finally:
            for process in (server, timers):
                process.terminate()
                process.wait(15)
    print(
        "wrote docs/status-page.png, dashboard.png, incident.png, report.png, postmortem.png, "
        "phone-dashboard.png and phone-incident.png"
    )


def phone_screenshots(browser: Browser, base: str) -> None:
    """The on-call side at night, on a phone: a fresh SEV2 nobody has acknowledged yet."""
    page = browser.new_page(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
    page.goto(f"{base}/login/?next=/manage/incidents/new")
    page.get_by_label("Username").fill("oncall")
    page.get_by_label("Password").fill("signalpost")
    page.get_by_role("button", name="Log in").click()
    page.get_by_label("Title").fill("Checkout requests time out")
    page.get_by_role("radio", name="SEV2", exact=False).first.check()
    page.get_by_label("Customers affected (%)").fill("30")
    page.get_by_label("Regions or segments").fill("eu-west, us-east")
    page.get_by_label("First message").fill("We are investigating timeouts at checkout.")
    page.get_by_role("button", name="Declare incident").last.click()
    page.wait_for_url(f"{base}/manage/incidents/*")
    incident_url = page.url
    page.goto(f"{base}/manage/")
    page.locator("#maintenance-panel .panel__head p").get_by_text("upcoming").wait_for()
    page.screenshot(path=ROOT / "docs" / "phone-dashboard.png")
    page.goto(incident_url)
    page.wait_for_load_state("networkidle")
    page.locator("#incident-header").screenshot(path=ROOT / "docs" / "phone-incident.png")
    page.close()


if __name__ == "__main__":
    main()
