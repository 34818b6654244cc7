"""Listen addresses read as Go's ``net.Listen("tcp", addr)`` reads them, failing with its words.

Toxiproxy does not validate a proxy's ``listen``: it calls ``net.Listen`` and answers a failure
as a 500 with Go's error text (``listen tcp: address local373: missing port in address``,
``listen tcp 127.0.0.1:7070: bind: address already in use``). Clients and their tests compare
those texts, so this module produces them: Go's ``SplitHostPort`` rules, its port parsing
(``+80``, ``http``, ``99999: invalid port``), IP literals with zones, and host names resolved
with the IPv4 address first.

One deliberate difference: an empty host (``""``, ``":8080"``) means 127.0.0.1 here, where Go
listens on every interface (see docs/server.md).
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
from typing import Final

LOOPBACK: Final = "127.0.0.1"


class ListenError(Exception):
    """A listen address Go would refuse; ``str()`` is Go's error text."""


def _addr_error(addr: str, why: str) -> ListenError:
    return ListenError(f"address {addr}: {why}" if addr else why)


def split_host_port(hostport: str) -> tuple[str, str]:
    """Go's ``net.SplitHostPort``: ``(host, port)`` or ListenError with its text."""
    missing_port, too_many_colons = "missing port in address", "too many colons in address"
    i = hostport.rfind(":")
    if i < 0:
        raise _addr_error(hostport, missing_port)
    j = k = 0
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise _addr_error(hostport, "missing ']' in address")
        if end + 1 == len(hostport):
            raise _addr_error(hostport, missing_port)
        if end + 1 != i:
            if hostport[end + 1] == ":":
                raise _addr_error(hostport, too_many_colons)
            raise _addr_error(hostport, missing_port)
        host = hostport[1:end]
        j, k = 1, end + 1
    else:
        host = hostport[:i]
        if ":" in host:
            raise _addr_error(hostport, too_many_colons)
    if "[" in hostport[j:]:
        raise _addr_error(hostport, "unexpected '[' in address")
    if "]" in hostport[k:]:
        raise _addr_error(hostport, "unexpected ']' in address")
    return host, hostport[i + 1 :]


def _parse_port(service: str) -> int | None:
    """Go's ``parsePort``: the number, or None when *service* is a name to look up."""
    if not service:
        return 0
    negative = service[0] == "-"
    digits = service[1:] if service[0] in "+-" else service
    if not digits:
        return 0  # "+" or "-" alone: Go reads no digits, port 0
    if not digits.isascii() or not digits.isdigit():
        return None
    value = min(int(digits), 1 << 30)  # Go saturates; only the range check below matters
    return -value if negative else value


def lookup_port(service: str) -> int:
    """Go's ``LookupPort("tcp", service)``: a number or a service name (``http``)."""
    port = _parse_port(service)
    if port is None:
        if len(service) > 21:  # Go's lookup buffer
            raise _addr_error(f"tcp/{service}", "unknown port")
        try:
            port = socket.getservbyname(service.lower(), "tcp")
        except OSError:
            raise _addr_error(f"tcp/{service}", "unknown port") from None
    if not 0 <= port <= 65535:
        raise _addr_error(service, "invalid port")
    return port


def parse_listen(listen: str) -> tuple[str, int]:
    """``(host, port)`` of *listen* (the host unresolved, ``""`` for none); ListenError with
    Go's text (``address x: missing port in address``) if it cannot be a listen address."""
    if not listen:
        return "", 0
    host, service = split_host_port(listen)
    return host, lookup_port(service)


def _ip_literal(host: str) -> tuple[socket.AddressFamily, str] | None:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    return (socket.AF_INET6 if ip.version == 6 else socket.AF_INET), host


async def resolve_listen(
    loop: asyncio.AbstractEventLoop, listen: str
) -> tuple[socket.AddressFamily, str, int]:
    """``(family, address, port)`` to bind for *listen*: IP literals as they are, names resolved
    (IPv4 first, as Go listens), no host 127.0.0.1. ListenError with the text Go's
    ``ResolveTCPAddr`` gives otherwise (``net.Listen`` prefixes it with ``listen tcp: ``)."""
    host, port = parse_listen(listen)
    if not host:
        return socket.AF_INET, LOOPBACK, port
    literal = _ip_literal(host)
    if literal is not None:
        return literal[0], literal[1], port
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        reason = "no such host"
        if isinstance(exc, socket.gaierror) and exc.errno not in (
            socket.EAI_NONAME,
            getattr(socket, "EAI_NODATA", socket.EAI_NONAME),
        ):
            reason = _lower_first(exc.strerror or str(exc))
        raise ListenError(f"lookup {host}: {reason}") from None
    v4 = [info for info in infos if info[0] == socket.AF_INET]
    family, _, _, _, sockaddr = (v4 or infos)[0]
    return family, str(sockaddr[0]), port


def go_address(address: str, port: int) -> str:
    """How Go prints a TCP address: ``127.0.0.1:80``, ``[::1]:80``."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def errno_text(exc: OSError) -> str:
    """*exc*'s reason as Go's ``syscall.Errno`` says it (``address already in use``)."""
    if exc.errno:
        return _lower_first(os.strerror(exc.errno))
    return str(exc)


def bind_failure(address: str, port: int, exc: OSError) -> ListenError:
    """Go's ``listen tcp 127.0.0.1:7070: bind: address already in use``."""
    return ListenError(f"listen tcp {go_address(address, port)}: bind: {errno_text(exc)}")
