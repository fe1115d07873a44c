"""Emails per second through the delivery engine against a bare send loop, in one run; results as ratios.

    .venv/bin/python bench/emails.py [--subscribers 10000] [--workers 1 2] [--rounds 3]
                                     [--postgres postgres://root@127.0.0.1:5432/postgres]

An aiosmtpd sink in a process of its own accepts everything (and parses nothing). Then, in alternating
rounds so that drift hits both alike:
  1. the bare loop: one process builds an email per address (the engine's email class), the same size
     as the engine's (the text, HTML, subject and headers of a real rendered update), and sends them with
     send_messages in batches of 100, one SMTP connection per batch: the ceiling on this machine;
  2. the engine: one update fanned out to N confirmed subscribers (fan_out), then sent by deliver_due
     (claim a batch under a fence, build the update's email once per batch and merge each subscriber's
     address and signed links into it, send over one connection per batch, mark each row): what the
     notify task and the delivery sweep run. With --workers 2, fan_out runs first and two processes run
     deliver_due side by side.
  3. with --workers 2, also two bare loops side by side, each sending half the addresses;
  4. a wire loop, for scale: the bare loop's messages built before the clock starts, their bytes sent
     with smtplib's sendmail in batches of 100, one connection each: what SMTP to this sink costs alone.
The bare loop runs on one process in every case. Targets: engine/bare >= 0.8 with one worker and
>= 1.6 with two. SQLite by default (a temporary file); --postgres takes a server URL, creates a scratch
database there and drops it afterwards. Prints the table and rewrites the emails section of
bench/README.md (--no-readme to leave it alone). Absolute numbers drift between machines; the ratios are
the result.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "bench" / "README.md"
# One section per database, so a run on each leaves both: <!-- emails:sqlite:start --> … :end -->.
MARKS = "<!-- emails:{vendor}:start -->", "<!-- emails:{vendor}:end -->"
BATCH = 100


# --- the SMTP sink (its own process) --------------------------------------------------------------


def run_sink(port: int, counters: Any, ready: Any, stop: Any) -> None:
    """Accept every message as fast as aiosmtpd can; count messages, bytes and connections."""
    from aiosmtpd.controller import Controller

    messages, size, connections = counters

    class Sink:
        async def handle_EHLO(
            self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
        ) -> list[str]:
            session.host_name = hostname
            with connections.get_lock():
                connections.value += 1
            return responses

        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            with messages.get_lock():
                messages.value += len(envelope.rcpt_tos)
                size.value += len(envelope.original_content or b"")
            return "250 OK"

    controller = Controller(Sink(), hostname="127.0.0.1", port=port, server_hostname="bench-sink")
    controller.start()
    ready.set()
    stop.wait()
    controller.stop()


class SmtpSink:
    def __init__(self, port: int) -> None:
        self.port = port
        context = multiprocessing.get_context("spawn")
        self.counters = (context.Value("q", 0), context.Value("q", 0), context.Value("q", 0))
        self.ready, self.stop_event = context.Event(), context.Event()
        self.process = context.Process(
            target=run_sink, args=(port, self.counters, self.ready, self.stop_event), daemon=True
        )
        self.process.start()
        if not self.ready.wait(20):
            raise SystemExit("the SMTP sink did not start")

    def reset(self) -> None:
        for counter in self.counters:
            with counter.get_lock():
                counter.value = 0

    @property
    def messages(self) -> int:
        return int(self.counters[0].value)

    @property
    def size(self) -> int:
        return int(self.counters[1].value)

    @property
    def connections(self) -> int:
        return int(self.counters[2].value)

    def stop(self) -> None:
        self.stop_event.set()
        self.process.join(10)


# --- set-up ---------------------------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def environment(tmp: Path, database_url: str, smtp_port: int) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "REDIS_URL", "EMAIL_"))}
    return {
        **keep,
        "DJANGO_SETTINGS_MODULE": "statuspage.settings",
        "DATABASE_URL": database_url,
        "SNAPSHOT_DIR": str(tmp / "snapshot"),
        "PUBLISH_STATIC_SITE": "false",
        "DEBUG": "false",
        "SECRET_KEY": "bench-only-not-secret",
        "SITE_URL": "https://status.example.com",
        "EMAIL_HOST": "127.0.0.1",
        "EMAIL_PORT": str(smtp_port),
        "EMAIL_USE_TLS": "false",
        "LOG_LEVEL": "ERROR",
    }


def setup_django(env: dict[str, str]) -> None:
    os.environ.update(env)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def create_postgres_database(server_url: str) -> tuple[str, str]:
    """A scratch database on the server: (its URL, its name)."""
    import psycopg

    name = f"signalpost_bench_{os.getpid()}"
    with psycopg.connect(server_url, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}"')
        connection.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(server_url)
    return urlunsplit(parts._replace(path=f"/{name}")), name


def drop_postgres_database(server_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(server_url, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def seed(subscribers: int) -> int:
    """An incident with one public update (its Message), then N confirmed subscribers; returns the message id."""
    from django.core.management import call_command
    from django.utils import timezone

    from incidents import actions
    from incidents.models import Message, MessageKind, Severity, Subscriber, SubscriberKind
    from incidents.tokens import new_secret

    call_command("migrate", verbosity=0)
    # Declared before anyone subscribes, so its notify task (eager here) has nobody to send to yet.
    actions.declare_incident(
        actor=None,
        title="Elevated error rates on the Query API",
        severity=Severity.objects.get(key="sev2"),
        message=(
            "We are investigating elevated error rates on the Query API in **eu-west**. About 4% of "
            "requests fail with a 503; retries usually succeed. We will post an update within 30 minutes."
        ),
        customer_impact_percent=4,
        regions=["eu-west"],
        workaround="Retry failed requests with exponential backoff.",
    )
    now = timezone.now()
    Subscriber.objects.bulk_create(
        [
            Subscriber(
                kind=SubscriberKind.EMAIL, email=f"reader{n:05}@example.com", secret=new_secret(), confirmed_at=now
            )
            for n in range(subscribers)
        ],
        batch_size=1000,
    )
    message_id = Message.objects.get(kind=MessageKind.INCIDENT_UPDATE).pk
    # Statistics as autovacuum would have them on a running site, deliveries included. Freshly bulk-loaded
    # tables have none, and PostgreSQL's first plan for the claim query is then quadratic (see README).
    from django.db import connection

    from incidents.notifications import fan_out

    fan_out(message_id)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    return message_id


# --- the two contestants ------------------------------------------------------------------------------


@dataclass
class Sample:
    """What the engine sends one subscriber, to build same-sized messages from."""

    subject: str
    text: str
    html: str
    headers: dict[str, str]


def sample_email(message_id: int) -> Sample:
    from incidents.emails import build_email
    from incidents.models import Delivery, Message, Subscriber

    delivery = Delivery(message=Message.objects.get(pk=message_id), subscriber=Subscriber.objects.first())
    email = build_email(delivery)
    [(html, _)] = email.alternatives
    return Sample(str(email.subject), str(email.body), str(html), dict(email.extra_headers))


def bare_loop(sample: Sample, addresses: list[str]) -> float:
    """Build one message per address and send them in batches of 100, one connection each; seconds taken."""
    from django.conf import settings
    from django.core.mail import mailers

    from incidents.emails import StatusEmail  # the engine's class: the same headers and line length

    started = time.perf_counter()
    for start in range(0, len(addresses), BATCH):
        batch = []
        for number, address in enumerate(addresses[start : start + BATCH], start):
            # The engine's headers (List-Unsubscribe, threading…) with a Message-ID of the same shape each.
            headers = {**sample.headers, "Message-ID": f"<incident-update.1.{number}@status.example.com>"}
            email = StatusEmail(
                subject=sample.subject,
                body=sample.text,
                from_email=settings.DEFAULT_FROM_EMAIL,
                to=[address],
                headers=headers,
            )
            email.attach_alternative(sample.html, "text/html")
            batch.append(email)
        with mailers.default as connection:
            connection.send_messages(batch)
    return time.perf_counter() - started


def wire_messages(sample: Sample, addresses: list[str]) -> list[tuple[str, bytes]]:
    """The bare loop's messages, built (untimed) into the bytes its backend would send."""
    from email.policy import SMTP

    from django.conf import settings

    from incidents.emails import StatusEmail

    built = []
    for number, address in enumerate(addresses):
        headers = {**sample.headers, "Message-ID": f"<incident-update.1.{number}@status.example.com>"}
        email = StatusEmail(sample.subject, sample.text, settings.DEFAULT_FROM_EMAIL, [address], headers=headers)
        email.attach_alternative(sample.html, "text/html")
        built.append((address, email.message(policy=SMTP).as_bytes()))
    return built


def wire_loop(messages: list[tuple[str, bytes]]) -> float:
    """Send prebuilt bytes with sendmail in batches of 100, one connection each; seconds taken."""
    from django.conf import settings
    from django.core.mail import mailers
    from django.core.mail.backends.smtp import EmailBackend

    started = time.perf_counter()
    for start in range(0, len(messages), BATCH):
        with mailers.default as backend:
            assert isinstance(backend, EmailBackend) and backend.connection is not None
            sender = backend.prep_address(settings.DEFAULT_FROM_EMAIL)
            for address, data in messages[start : start + BATCH]:
                backend.connection.sendmail(sender, [address], data)
    return time.perf_counter() - started


def reset_deliveries(message_id: int) -> None:
    from incidents.models import CircuitBreaker, Delivery

    Delivery.objects.filter(message_id=message_id).delete()
    CircuitBreaker.objects.all().delete()


def engine_in_process(message_id: int) -> float:
    """fan_out then deliver_due until nothing is due, as the notify task does; seconds taken."""
    from incidents.notifications import deliver_due, fan_out

    started = time.perf_counter()
    fan_out(message_id)
    while deliver_due():
        pass
    return time.perf_counter() - started


def in_processes(kind: str, workers: int, env: dict[str, str], message_id: int) -> float:
    """`workers` processes side by side: the engine (fan_out here first, then each runs deliver_due) or
    the bare loop (each sends its share of the addresses); seconds from the go to the last one done."""
    from django.db import connection

    from incidents.notifications import fan_out

    connection.close()  # SQLite: let the workers have the file
    processes = [
        subprocess.Popen(
            [sys.executable, __file__, "--run-worker", kind, f"{part}/{workers}", str(message_id)],
            env=env,
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for part in range(workers)
    ]
    for process in processes:
        assert process.stdout is not None
        if process.stdout.readline().strip() != "ready":
            raise SystemExit("a worker did not start")
    started = time.perf_counter()
    if kind == "engine":
        fan_out(message_id)
        connection.close()
    for process in processes:
        assert process.stdin is not None
        process.stdin.write("go\n")
        process.stdin.flush()
    for process in processes:
        process.wait(600)
        if process.returncode:
            raise SystemExit(f"a worker failed with {process.returncode}")
    return time.perf_counter() - started


def run_worker(kind: str, part: str, message_id: int) -> None:
    """--run-worker: set up Django, get ready, wait for go, then send (the engine until nothing is due,
    or the bare loop over this process's share of the addresses)."""
    setup_django({})
    from django.db import connection

    from incidents.models import Subscriber
    from incidents.notifications import deliver_due

    index, count = (int(n) for n in part.split("/"))
    if kind == "bare":
        sample = sample_email(message_id)
        addresses = list(Subscriber.objects.order_by("id").values_list("email", flat=True))[index::count]
    connection.ensure_connection()
    print("ready", flush=True)
    sys.stdin.readline()
    if kind == "bare":
        bare_loop(sample, addresses)
        return
    # Another worker may hold the last rows for a moment: stop after a few empty passes.
    empty = 0
    while empty < 3:
        if deliver_due():
            empty = 0
        else:
            empty += 1
            time.sleep(0.05)


# --- the run ------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", type=int, default=10_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1], help="Engine runs to time, e.g. 1 2.")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--postgres", help="A PostgreSQL server URL; a scratch database is made there.")
    parser.add_argument("--no-readme", action="store_true", help="Print only; leave bench/README.md alone.")
    parser.add_argument("--run-worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_worker:
        kind, part, message_id = args.run_worker
        run_worker(kind, part, int(message_id))
        return

    scratch = None
    with tempfile.TemporaryDirectory(prefix="signalpost-emails-") as name:
        tmp = Path(name)
        if args.postgres:
            database_url, scratch = create_postgres_database(args.postgres)
        else:
            database_url = f"sqlite:///{tmp}/bench.sqlite3"
        sink = SmtpSink(free_port())
        env = environment(tmp, database_url, sink.port)
        try:
            report = measure(args, env, sink)
        finally:
            sink.stop()
            if scratch and args.postgres:
                from django.db import connections

                connections.close_all()
                drop_postgres_database(args.postgres, scratch)
    print(report)
    if not args.no_readme:
        from readme import rewrite_section  # bench/, which is sys.path[0] when a bench script runs

        vendor = "postgresql" if args.postgres else "sqlite"
        start, end = (mark.format(vendor=vendor) for mark in MARKS)
        rewrite_section(README, start, end, report)


def measure(args: argparse.Namespace, env: dict[str, str], sink: SmtpSink) -> str:
    setup_django(env)
    message_id = seed(args.subscribers)
    from incidents.models import Delivery, DeliveryStatus, Subscriber

    addresses = list(Subscriber.objects.order_by("id").values_list("email", flat=True))
    sample = sample_email(message_id)
    prebuilt = wire_messages(sample, addresses)
    timings: dict[str, list[float]] = {"bare": [], "wire": []}
    for workers in args.workers:
        if workers > 1:  # the box's own ceiling for that many processes, to read the engine's figure against
            timings[f"bare{workers}"] = []
        timings[f"engine{workers}"] = []
    sizes: dict[str, int] = {}
    connections: dict[str, int] = {}
    for round_number in range(args.rounds):
        for key in timings:
            reset_deliveries(message_id)
            sink.reset()
            if key == "bare":
                seconds = bare_loop(sample, addresses)
            elif key == "wire":
                seconds = wire_loop(prebuilt)
            elif key == "engine1":
                seconds = engine_in_process(message_id)
            elif key.startswith("bare"):
                seconds = in_processes("bare", int(key.removeprefix("bare")), env, message_id)
            else:
                seconds = in_processes("engine", int(key.removeprefix("engine")), env, message_id)
            if sink.messages != len(addresses):
                raise SystemExit(f"{key}: the sink received {sink.messages} emails, expected {len(addresses)}")
            if key.startswith("engine"):
                sent = Delivery.objects.filter(message_id=message_id, status=DeliveryStatus.SENT).count()
                if sent != len(addresses):
                    raise SystemExit(f"{key}: {sent} deliveries marked sent, expected {len(addresses)}")
            timings[key].append(len(addresses) / seconds)
            sizes[key], connections[key] = sink.size // sink.messages, sink.connections
        print(f"round {round_number + 1}: " + ", ".join(f"{k} {v[-1]:.0f}/s" for k, v in timings.items()))
    median = {key: statistics.median(values) for key, values in timings.items()}
    from django.db import connection

    return render_report(args, median, sizes, connections, connection.vendor)


def render_report(
    args: argparse.Namespace, median: dict[str, float], sizes: dict[str, int], connections: dict[str, int], vendor: str
) -> str:
    targets = {1: 0.8, 2: 1.6}
    lines = [
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} cores, {vendor}: one update to "
        f"{args.subscribers:,} subscribers, {args.rounds} alternating rounds, medians.",
        "",
        "| sent by | emails/s (median) | bytes/email | SMTP connections |",
        "|---|---|---|---|",
    ]
    for key in median:
        workers = int(key.removeprefix("bare").removeprefix("engine").removeprefix("wire") or 1)
        if key == "wire":
            who = f"wire loop: the bare loop's bytes built beforehand, sendmail, batches of {BATCH}"
        elif key.startswith("bare"):
            who = f"bare loop, {workers} process{'es' if workers > 1 else ''}, batches of {BATCH}"
        else:
            where = "in-process" if workers == 1 else f"{workers} worker processes"
            who = f"engine: fan_out + deliver_due, {where}"
        lines.append(f"| {who} | {median[key]:.0f} | {sizes[key]:,} | {connections[key]} |")
    lines.append("")
    for workers in args.workers:
        ratio = median[f"engine{workers}"] / median["bare"]
        target = targets.get(workers, 0.8 * workers)
        verdict = "meets" if ratio >= target else "MISSES"
        who = "1 worker" if workers == 1 else f"{workers} workers"
        line = f"- engine ({who}) / bare = **{ratio:.2f}** (target ≥ {target}: {verdict})"
        if workers > 1:
            line += f"; {workers} bare loops side by side reach {median[f'bare{workers}'] / median['bare']:.2f}"
        lines.append(line)
    lines.append(
        f"- for scale: the wire loop (SMTP alone, nothing built) runs at {median['wire'] / median['bare']:.2f} "
        f"of the bare loop, and the engine with one worker at {median['engine1'] / median['wire']:.2f} of the "
        "wire loop"
        if "engine1" in median
        else f"- for scale: the wire loop (SMTP alone, nothing built) runs at {median['wire'] / median['bare']:.2f} "
        "of the bare loop"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
