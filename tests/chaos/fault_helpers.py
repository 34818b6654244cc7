"""Helpers for the fault and scenario tests: a byte-counting echo server, probes, polling."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable

from chaos_helpers import LoopThread


class _CountingEcho(asyncio.Protocol):
    def __init__(self, server: CountingEchoServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server.connections.add(transport)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.server.received += len(data)
        if self.server.echo:
            self.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        assert self.transport is not None
        self.server.connections.discard(self.transport)


class CountingEchoServer:
    """A loopback server counting the bytes it receives (and echoing them unless told not to)."""

    def __init__(self, loop_thread: LoopThread, *, echo: bool = True) -> None:
        self.loop_thread = loop_thread
        self.echo = echo
        self.received = 0
        self.connections: set[asyncio.Transport] = set()

        async def start() -> asyncio.Server:
            return await asyncio.get_running_loop().create_server(
                lambda: _CountingEcho(self), "127.0.0.1", 0
            )

        self._server: asyncio.Server = loop_thread.run(start())
        self.address = f"127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    def close(self) -> None:
        async def stop() -> None:
            self._server.close()
            for transport in list(self.connections):
                transport.abort()
            await asyncio.sleep(0)

        self.loop_thread.run(stop())


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0, interval: float = 0.01) -> bool:
    """Poll *predicate* until true or *timeout* seconds pass; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def connect_state(address: tuple[str, int], timeout: float = 2.0) -> str:
    """``"refused"`` if nothing listens at *address*, ``"open"`` if a connection is accepted."""
    try:
        sock = socket.create_connection(address, timeout=timeout)
    except ConnectionRefusedError:
        return "refused"
    sock.close()
    return "open"


def echoes(address: tuple[str, int], payload: bytes = b"ping", timeout: float = 2.0) -> bool:
    """True if a new connection to *address* echoes *payload* back within *timeout* seconds."""
    try:
        with socket.create_connection(address, timeout=timeout) as sock:
            sock.sendall(payload)
            got = b""
            while len(got) < len(payload):
                chunk = sock.recv(len(payload) - len(got))
                if not chunk:
                    return False
                got += chunk
            return got == payload
    except OSError:
        return False


def is_silent(sock: socket.socket, seconds: float) -> bool:
    """True if nothing (no data, no EOF, no reset) arrives on *sock* for *seconds*."""
    sock.settimeout(seconds)
    try:
        sock.recv(1)
    except TimeoutError:
        return True
    except OSError:
        return False
    return False
