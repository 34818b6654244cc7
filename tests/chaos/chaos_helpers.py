"""Helpers for the chaos tests: loopback upstreams, raw HTTP, socket utilities, probes, bulk."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import json
import os
import socket
import threading
import time
import warnings
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
            # Any transport still open on this loop (an accept that was under way when its
            # server closed, say) is aborted, and the socket is only released by a
            # connection_lost callback a loop iteration later: run a few before stopping, or
            # the collector finds an open socket (a ResourceWarning, an error under -W error).
            # _transports is the selector loop's own registry of every transport it made.
            leftover = getattr(asyncio.get_running_loop(), "_transports", {})
            for _ in range(5):
                for transport in list(leftover.values()):
                    # One whose connection_lost already ran has no loop left to abort on.
                    if getattr(transport, "_loop", None) is not None:
                        transport.abort()
                await asyncio.sleep(0)

        self.run(_cancel_rest())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()
        # What this helper loop still held (an accept its server's close overtook) is collected
        # now, quietly: left to the collector's own timing, its ResourceWarning would fail
        # whichever test happens to be running then.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()


class _EchoProtocol(asyncio.Protocol):
    """Echo with flow control: FIN in, FIN out once everything is echoed, then the socket closes."""

    def __init__(self, server: EchoServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if self.server.closing:
            # Accepted just before close() (the accept was already queued): nobody would close
            # it later, and the garbage collector would warn about the open socket.
            transport.abort()
            return
        self.server.connections.add(transport)
        self.server.accepted += 1

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.server.received += len(data)
        if self.server.echo:
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
    """A loopback echo server on a background loop, counting what it accepts and receives.

    With ``echo=False`` it only counts (a sink).
    """

    def __init__(self, loop_thread: LoopThread, *, echo: bool = True) -> None:
        self.loop_thread = loop_thread
        self.echo = echo
        self.connections: set[asyncio.Transport] = set()
        self.closing = False
        self.accepted = 0
        self.received = 0

        async def start() -> asyncio.Server:
            return await asyncio.get_running_loop().create_server(
                lambda: _EchoProtocol(self), "127.0.0.1", 0, backlog=4096
            )

        self._server: asyncio.Server = loop_thread.run(start())
        self.port: int = self._server.sockets[0].getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"

    def close(self) -> None:
        async def stop() -> None:
            self.closing = True
            self._server.close()
            # Accepts already under way reach connection_made (which aborts them, as closing
            # is set) within a few loop iterations; aborts finish one iteration later.
            for _ in range(5):
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


def fds_settle(limit: int, timeout: float = 10.0) -> int:
    """Wait (bounded) for this process's open descriptors to drop to *limit*; return the count.

    Closes complete asynchronously on the server threads, so a leak check waits for them.
    """
    wait_until(lambda: open_fds() <= limit, timeout, interval=0.05)
    return open_fds()


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0, interval: float = 0.01) -> bool:
    """Poll *predicate* until true or *timeout* seconds pass; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def recv_upto(sock: socket.socket, n: int) -> bytes:
    """Read until *n* bytes have arrived or the peer closes; may return fewer."""
    chunks = []
    got = 0
    while got < n:
        chunk = sock.recv(n - got)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def recv_exactly(sock: socket.socket, n: int, timeout: float = 10.0) -> bytes:
    """Read exactly *n* bytes or fail after *timeout* seconds."""
    sock.settimeout(timeout)
    data = recv_upto(sock, n)
    if len(data) < n:
        raise AssertionError(f"connection closed after {len(data)} of {n} bytes")
    return data


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


def timed_echo(sock: socket.socket, payload: bytes) -> tuple[bytes, float]:
    """Send *payload* to the echo server; return what came back and how long it took."""
    start = time.perf_counter()
    sock.sendall(payload)
    echoed = recv_exactly(sock, len(payload))
    return echoed, time.perf_counter() - start


def round_trip(sock: socket.socket, payload: bytes = b"ping") -> float:
    """Send *payload* to the echo server and time until it is back."""
    return timed_echo(sock, payload)[1]


# -- probes: what a client sees of a proxy under a fault -----------------------------------------


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
        with connect(address, timeout=timeout) as sock:
            sock.sendall(payload)
            return recv_upto(sock, len(payload)) == payload
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


# -- bulk transfers ------------------------------------------------------------------------------

MIB = 1024 * 1024


def pattern_stream(total: int) -> Iterator[bytes]:
    """Blocks of pseudo-random bytes whose position matters (a misplaced block changes a hash)."""
    seed = os.urandom(MIB + 4099)
    offset = sent = 0
    while sent < total:
        block = seed[offset : offset + min(MIB, total - sent)]
        offset = (offset + 4099) % 4100
        sent += len(block)
        yield block


def read_all(sock: socket.socket, deadline_s: float = 60) -> tuple[int, str]:
    """Read to EOF; return (count, sha256)."""
    digest = hashlib.sha256()
    buffer = bytearray(MIB)
    view = memoryview(buffer)
    total = 0
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        n = sock.recv_into(buffer)
        if n == 0:
            break
        digest.update(view[:n])
        total += n
    return total, digest.hexdigest()


def echo_transfer(
    address: tuple[str, int], total: int, during: Callable[[], None] | None = None
) -> None:
    """Send *total* bytes through an echo proxy while reading them back; compare hashes.

    A sender and a receiver thread run at once, so both directions of the proxy carry the full
    stream at the same time. *during* runs in this thread while the transfer is in flight
    (toxic changes, checks).
    """
    sent_hash = hashlib.sha256()
    errors: list[BaseException] = []
    got: list[tuple[int, str]] = []
    done = threading.Event()
    with socket.create_connection(address, timeout=60) as sock:

        def send() -> None:
            try:
                for block in pattern_stream(total):
                    sent_hash.update(block)
                    sock.sendall(block)
                sock.shutdown(socket.SHUT_WR)
            except BaseException as exc:
                errors.append(exc)

        def receive() -> None:
            try:
                got.append(read_all(sock, 90))
            except BaseException as exc:
                errors.append(exc)
            finally:
                done.set()

        threads = [threading.Thread(target=send), threading.Thread(target=receive)]
        for thread in threads:
            thread.start()
        try:
            if during is not None:
                during()
        finally:
            done.wait(90)
            for thread in threads:
                thread.join(30)
    assert not errors, errors
    assert got == [(total, sent_hash.hexdigest())]
