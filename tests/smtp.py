"""A real SMTP server for tests (aiosmtpd in a thread): it keeps what it receives, can refuse chosen
recipients with 550 or 450 (or hang up on them), can be stopped and started again on the same port, and
counts connections.

    with SmtpServer() as smtp:
        settings.MAILERS = smtp.mailers()   # or smtp.env() for a worker subprocess
        ...
        assert smtp.inbox("ann@example.com")[0]["Subject"] == "..."

Each received email records which connection carried it (numbered from 1 by EHLO/HELO), so a test can
tell that a batch went over one connection.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller

DEFER = "450 4.2.1 Mailbox busy, try again later"
REFUSE = "550 5.1.1 No such user here"


def free_port() -> int:
    """aiosmtpd needs a real port number: ask the kernel for one that is free now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Received:
    recipient: str
    message: EmailMessage
    size: int
    connection: int
    raw: bytes = b""  # as it came over the wire


class Handler:
    """aiosmtpd's handler hooks. They run on the server's thread; the lists are read from the test's."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.connections = 0
        self.connection_of: dict[int, int] = {}  # id(session) → its connection number
        self.refusals: dict[str, str] = {}  # address → the SMTP reply to RCPT TO (e.g. REFUSE, DEFER)
        self.refused: list[tuple[str, str]] = []
        self.drops: set[str] = set()  # addresses whose RCPT TO makes the server hang up
        self.delay = 0.0  # seconds to hold each message after accepting it, before answering 250
        self.slow: dict[str, float] = {}  # address → seconds to hold a message to it (instead of delay)
        self.parse = True  # False keeps only sizes, for a benchmark sink
        self.lock = threading.Lock()

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        self._count(session, hostname)
        return responses

    async def handle_HELO(self, server: Any, session: Any, envelope: Any, hostname: str) -> str:
        self._count(session, hostname)
        return f"250 {server.hostname}"

    def _count(self, session: Any, hostname: str) -> None:
        session.host_name = hostname  # what aiosmtpd does itself when there is no hook
        with self.lock:
            self.connections += 1
            self.connection_of[id(session)] = self.connections

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]) -> str:
        if address.lower() in self.drops:
            with self.lock:
                self.refused.append((address, "hung up"))
            server.transport.close()  # the client reads no reply: SMTPServerDisconnected
            return "421 4.3.0 Closing connection"
        reply = self.refusals.get(address.lower())
        if reply:
            with self.lock:
                self.refused.append((address, reply))
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content: bytes = envelope.original_content or envelope.content
        parsed = email.message_from_bytes(content, policy=email.policy.default) if self.parse else EmailMessage()
        with self.lock:
            for recipient in envelope.rcpt_tos:
                number = self.connection_of.get(id(session), 0)
                self.received.append(Received(recipient.lower(), parsed, len(content), number, content))
        delay = max([self.delay, *(self.slow.get(recipient.lower(), 0.0) for recipient in envelope.rcpt_tos)])
        if delay:
            # Accepted (as a real server has queued it) but not yet answered: a client killed now
            # never hears the 250, which is where an at-least-once outbox sends a second copy.
            await asyncio.sleep(delay)
        return "250 Message accepted for delivery"


class SmtpServer:
    """An aiosmtpd server on 127.0.0.1 and a fixed free port, so a stopped server comes back on it."""

    def __init__(self, port: int | None = None) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.handler = Handler()
        self.controller: Controller | None = None

    # --- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        assert self.controller is None, "already running"
        deadline = time.monotonic() + 10
        while True:
            controller = Controller(self.handler, hostname=self.host, port=self.port, ready_timeout=5)
            try:
                controller.start()
            except (OSError, RuntimeError):
                # The port can take a moment to be free again after a stop.
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
                continue
            self.controller = controller
            return

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    @property
    def running(self) -> bool:
        return self.controller is not None

    def __enter__(self) -> SmtpServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- configuration ----------------------------------------------------------------------------

    def mailers(self, timeout: float = 5) -> dict[str, Any]:
        """A MAILERS setting that sends through this server."""
        return {
            "default": {
                "BACKEND": "django.core.mail.backends.smtp.EmailBackend",
                "OPTIONS": {"host": self.host, "port": self.port, "timeout": timeout},
            }
        }

    def env(self) -> dict[str, str]:
        """The environment variables that point a Signalpost process (a worker) at this server."""
        return {"EMAIL_HOST": self.host, "EMAIL_PORT": str(self.port), "EMAIL_USE_TLS": "false"}

    def refuse(self, address: str, reply: str = REFUSE) -> None:
        self.handler.refusals[address.lower()] = reply

    def defer(self, address: str) -> None:
        self.refuse(address, DEFER)

    def hang_up_on(self, address: str) -> None:
        """Close the connection when a client gives this recipient (as a server that crashes on it would)."""
        self.handler.drops.add(address.lower())

    def accept(self, address: str) -> None:
        self.handler.refusals.pop(address.lower(), None)
        self.handler.drops.discard(address.lower())

    # --- what arrived -----------------------------------------------------------------------------

    @property
    def connections(self) -> int:
        return self.handler.connections

    @property
    def received(self) -> list[Received]:
        with self.handler.lock:
            return list(self.handler.received)

    def inbox(self, address: str) -> list[EmailMessage]:
        return [r.message for r in self.received if r.recipient == address.lower()]

    def raw(self, address: str) -> list[bytes]:
        return [r.raw for r in self.received if r.recipient == address.lower()]

    def copies(self) -> Counter[str]:
        """How many emails each address received."""
        return Counter(r.recipient for r in self.received)

    def reset(self) -> None:
        with self.handler.lock:
            self.handler.received.clear()
            self.handler.refused.clear()
            self.handler.connections = 0
            self.handler.connection_of.clear()


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 10.0, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} after {timeout:.0f} s")
        time.sleep(interval)


def text_and_html(email: EmailMessage) -> tuple[str, str]:
    """A received email's text and HTML parts, decoded."""
    text, html = email.get_body(("plain",)), email.get_body(("html",))
    assert text is not None and html is not None
    return text.get_content(), html.get_content()
