"""Where webhooks may connect: public addresses only, unless WEBHOOK_ALLOW_PRIVATE is on.

A webhook URL is typed by staff, but it makes our server send requests: to 127.0.0.1:6379 (Redis), to a
cloud's metadata service at 169.254.169.254, to anything on the private network behind us (SSRF). So
a URL is refused when it is added if its host resolves to any loopback, private, link-local or
otherwise non-public address, and every request checks again at connect time and connects to exactly
the address it checked: a host that resolved to a public address when it was added and to 127.0.0.1
now (DNS rebinding) is refused, never connected to.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings

AddrInfo = tuple[Any, Any, int, str, tuple[Any, ...]]


class PrivateAddress(OSError):
    """The host resolves to an address webhooks may not reach. An OSError, so urllib passes it on."""


def resolve(host: str, port: int) -> list[AddrInfo]:
    """The host's addresses (the system resolver); tests stand in for DNS here."""
    return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)


def is_public(address: str) -> bool:
    """Whether an IP address is on the public internet (not loopback, private, link-local, shared,
    multicast, reserved or documentation), looking through IPv4-mapped IPv6 addresses."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # a scope id (fe80::1%eth0) says nothing more
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def allowed_addresses(host: str, port: int) -> list[AddrInfo]:
    """The host's addresses, each checked; raises PrivateAddress if any is not public (and private ones
    are not allowed), socket.gaierror if it does not resolve."""
    found = resolve(host, port)
    if not settings.WEBHOOK_ALLOW_PRIVATE:
        for *_, sockaddr in found:
            address = str(sockaddr[0])
            if not is_public(address):
                where = address if _is_ip(host) else f"{host} resolves to {address}, which"
                raise PrivateAddress(f"{where} is not a public address")
    return found


def url_problem(url: str) -> str | None:
    """Why webhooks may not be sent to this http(s) URL, in words for staff; None when they may."""
    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return "The port in this URL is not a number from 1 to 65535."
    host = parts.hostname or ""
    if not host:
        return "The URL has no host."
    try:
        allowed_addresses(host, port)
    except PrivateAddress as refused:
        return (
            f"{refused}: webhooks may reach only public addresses "
            "(set WEBHOOK_ALLOW_PRIVATE=true for a receiver on your own network)."
        )
    except (socket.gaierror, UnicodeError) as error:
        return f"Could not find the host {host} ({error}); check the URL."
    return None


def connect(address: tuple[str, int], timeout: Any = None, source_address: Any = None) -> socket.socket:
    """socket.create_connection, but only to addresses checked just now, and to exactly those."""
    host, port = address
    error: OSError | None = None
    for family, kind, proto, _, sockaddr in allowed_addresses(host, port):
        sock = socket.socket(family, kind, proto)
        try:
            if timeout is not socket._GLOBAL_DEFAULT_TIMEOUT:  # type: ignore[attr-defined]
                sock.settimeout(timeout)
            if source_address:
                sock.bind(source_address)
            sock.connect(sockaddr)
            return sock
        except OSError as failed:
            error = failed
            sock.close()
    raise error or OSError(f"{host} has no address")


class GuardedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._create_connection = connect


class GuardedHTTPSConnection(http.client.HTTPSConnection):
    """TLS as usual (certificate checked against the URL's host name), over a checked connection."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._create_connection = connect
