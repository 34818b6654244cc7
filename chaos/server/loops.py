"""Refuse a proxy whose upstream leads back into its own listener.

A proxy whose upstream is its own listen address connects to itself for every connection it
accepts, which accepts another, and so on until the process runs out of descriptors: the server
stopped answering altogether. The same happens around a cycle of proxies (``a`` in front of
``b``'s listener, ``b`` in front of ``a``'s). Such a proxy is refused with a 400 when it is
created, updated or populated.

Only this server's own listeners are followed (a loop through another process cannot be seen);
the descriptor reserve (:mod:`chaos.server.fds`) keeps the control API answering in that case.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import Iterable, Sequence

from chaos.server.apierror import ApiError, bad_request

Endpoint = tuple[str, int]

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class Node:
    """What the check needs of a proxy: its name, where it listens, where it connects."""

    __slots__ = ("listen", "name", "upstream", "upstream_text")

    def __init__(
        self, name: str, listen: Endpoint | None, upstream: Endpoint, upstream_text: str
    ) -> None:
        self.name = name
        self.listen = listen  # None: not bound and no fixed port yet (cannot be reached)
        self.upstream = upstream
        self.upstream_text = upstream_text


async def refuse_loops(node: Node, others: Iterable[Node], loop: asyncio.AbstractEventLoop) -> None:
    """Raise a 400 if connecting to *node*'s upstream leads back to *node*'s listener."""
    if node.listen is None:
        return
    nodes = [node, *(o for o in others if o.name != node.name)]
    path = await _cycle(node, nodes, loop)
    if path is None:
        return
    raise _loop_error(node, path)


def _loop_error(node: Node, path: Sequence[Node]) -> ApiError:
    consequence = (
        "its connections would connect back into it, over and over, until the server ran out "
        "of file descriptors; point it at the real service"
    )
    if len(path) == 1:
        return bad_request(
            f"upstream {node.upstream_text} is proxy {node.name!r}'s own listen address",
            consequence,
        )
    route = " -> ".join(repr(n.name) for n in [*path, node])
    return bad_request(
        f"upstream {node.upstream_text} leads back to proxy {node.name!r} through other "
        f"proxies ({route})",
        consequence,
    )


async def _cycle(
    start: Node, nodes: Sequence[Node], loop: asyncio.AbstractEventLoop
) -> list[Node] | None:
    """The proxies from *start* round to *start* again, or None (a bounded graph search)."""
    seen = {start.name}
    frontier: list[list[Node]] = [[start]]
    while frontier:
        path = frontier.pop()
        for target in await _reached(path[-1].upstream, nodes, loop):
            if target is start:
                return path
            if target.name not in seen:
                seen.add(target.name)
                frontier.append([*path, target])
    return None


async def _reached(
    upstream: Endpoint, nodes: Sequence[Node], loop: asyncio.AbstractEventLoop
) -> list[Node]:
    """The nodes whose listener a connection to *upstream* would reach."""
    host, port = upstream
    candidates = [n for n in nodes if n.listen is not None and n.listen[1] == port]
    if not candidates:
        return []  # the usual case: no listener of ours on that port, nothing to resolve
    addresses = await _resolve(host, port, loop)
    return [
        n
        for n in candidates
        if n.listen is not None and any(_reaches(a, n.listen[0]) for a in addresses)
    ]


async def _resolve(host: str, port: int, loop: asyncio.AbstractEventLoop) -> list[IpAddress]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []  # does not resolve: whatever it is, it is not one of our listeners
    return [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]


def _reaches(address: IpAddress, listen_host: str) -> bool:
    """True if connecting to *address* lands on a socket listening on *listen_host*."""
    try:
        listen = ipaddress.ip_address(listen_host.split("%", 1)[0])
    except ValueError:
        return False
    if address.version != listen.version:
        return False  # IPv6 listeners are IPv6-only (as asyncio makes them)
    if address.is_unspecified:  # connecting to 0.0.0.0 / :: means this host's loopback
        address = ipaddress.ip_address("127.0.0.1" if address.version == 4 else "::1")
    if listen.is_unspecified:
        return _is_local(address)
    return address == listen


def _is_local(address: IpAddress) -> bool:
    """True if *address* is one of this machine's (it can be bound)."""
    if address.is_loopback:
        return True
    family = socket.AF_INET if address.version == 4 else socket.AF_INET6
    with contextlib.closing(socket.socket(family, socket.SOCK_DGRAM)) as probe:
        try:
            probe.bind((str(address), 0))
        except OSError:
            return False
    return True
