"""Helpers for the chaos server tests: loopback upstreams, raw HTTP, socket utilities."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any


class LoopThread:
    """An event loop in a background thread, for upstream servers the tests talk to."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Any, timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        async def _cancel_rest() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self.run(_cancel_rest())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


class _EchoProtocol(asyncio.Protocol):
    """Echo with flow control: FIN in, FIN out once everything is echoed, then the socket closes."""

    def __init__(self, server: EchoServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server.connections.add(transport)
        self.server.accepted += 1

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def eof_received(self) -> bool:
        return False  # asyncio closes the socket once the echoed bytes are flushed: FIN out

    def pause_writing(self) -> None:
        assert self.transport is not None
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        assert self.transport is not None
        self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        assert self.transport is not None
        self.server.connections.discard(self.transport)
        self.transport.close()


class EchoServer:
    """A loopback echo server on a background loop."""

    def __init__(self, loop_thread: LoopThread) -> None:
        self.loop_thread = loop_thread
        self.connections: set[asyncio.Transport] = set()
        self.accepted = 0

        async def start() -> asyncio.Server:
            return await asyncio.get_running_loop().create_server(
                lambda: _EchoProtocol(self), "127.0.0.1", 0, backlog=4096
            )

        self._server: asyncio.Server = loop_thread.run(start())
        self.port: int = self._server.sockets[0].getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"

    def close(self) -> None:
        async def stop() -> None:
            self._server.close()
            for transport in list(self.connections):
                transport.abort()
            await asyncio.sleep(0)

        self.loop_thread.run(stop())


class RawResponse:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"<RawResponse {self.status} {self.body[:200]!r}>"


RawApi = Callable[..., RawResponse]


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def recv_exactly(sock: socket.socket, n: int, timeout: float = 10.0) -> bytes:
    """Read exactly *n* bytes or fail after *timeout* seconds."""
    sock.settimeout(timeout)
    chunks = []
    got = 0
    while got < n:
        chunk = sock.recv(n - got)
        if not chunk:
            raise AssertionError(f"connection closed after {got} of {n} bytes")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def recv_until_closed(sock: socket.socket, timeout: float = 10.0) -> tuple[bytes, str]:
    """Read until EOF or error; return (data, how) where how is 'eof', 'reset' or 'timeout'."""
    sock.settimeout(timeout)
    chunks = []
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return b"".join(chunks), "eof"
            chunks.append(chunk)
    except ConnectionResetError:
        return b"".join(chunks), "reset"
    except TimeoutError:
        return b"".join(chunks), "timeout"


@contextlib.contextmanager
def connect(address: tuple[str, int], timeout: float = 10.0) -> Iterator[socket.socket]:
    sock = socket.create_connection(address, timeout=timeout)
    try:
        yield sock
    finally:
        sock.close()


def round_trip(sock: socket.socket, payload: bytes = b"ping") -> float:
    """Send *payload* to the echo server and time until it is back."""
    start = time.perf_counter()
    sock.sendall(payload)
    recv_exactly(sock, len(payload))
    return time.perf_counter() - start
