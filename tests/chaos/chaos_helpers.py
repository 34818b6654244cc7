"""Helpers for the chaos tests: loopback upstreams, raw HTTP, socket utilities, probes, bulk."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import http.client
import http.server
import json
import os
import resource
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from chaos import ToxiproxyClient


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


# -- an in-process server whose connections and loop errors the test can see ---------------------


class Plane:
    """A ChaosServer on a background loop, every connection its proxies accepted, and every error
    the loop reported (a task exception never retrieved, an exception in a callback...).

    The data plane must never leave an exception for the loop to log: a peer that went away is a
    normal end of a connection. :func:`running_plane` fails the test if anything was reported.
    """

    def __init__(self, loop_thread: LoopThread, server: Any) -> None:
        self.loop_thread = loop_thread
        self.server = server
        self.client = ToxiproxyClient(server.url, timeout=10)
        self.conns: list[Any] = []
        self.errors: list[dict[str, Any]] = []

    def proxy(self, upstream: str, name: str = "p") -> tuple[str, int]:
        """Create proxy *name* in front of *upstream*; record the connections it accepts."""
        info = self.client.create_proxy(name, upstream=upstream)
        proxy = self.server.proxies.get(name)
        opened = proxy.connection_opened

        def record(conn: Any) -> None:
            self.conns.append(conn)
            opened(conn)

        proxy.connection_opened = record
        return info.listen_host, info.listen_port

    def on_loop(self, fn: Callable[[], Any]) -> Any:
        """Run *fn* on the server's loop (its state is only consistent there)."""

        async def call() -> Any:
            return fn()

        return self.loop_thread.run(call())

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        assert wait_until(lambda: self.on_loop(predicate), timeout), "condition not reached in time"

    def flows(self, stream: str) -> list[Any]:
        return [c.flow(stream) for c in self.conns]

    def spliced(self, stream: str) -> int:
        return int(self.on_loop(lambda: sum(f.spliced for f in self.flows(stream))))

    def counters(self, name: str = "p") -> dict[str, list[int]]:
        proxy = self.server.proxies.get(name)
        return self.on_loop(lambda: {k: list(v) for k, v in proxy.counters.items()})  # type: ignore[no-any-return]

    def all_closed(self, name: str = "p") -> None:
        self.wait_for(lambda: not self.server.proxies.get(name).connections)

    def wait_until_blocked(self, name: str = "p", timeout: float = 20.0) -> None:
        """Wait until proxy *name* moves no more bytes (a peer stopped reading, every buffer on
        the way is full) after having moved some."""
        counts = [self.counters(name)]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(0.2)
            counts.append(self.counters(name))
            moved = counts[-1]["upstream"][0] + counts[-1]["downstream"][0]
            if counts[-1] == counts[-2] and moved > 0:
                return
        raise AssertionError(f"the proxy never stopped moving bytes: {counts[-3:]}")

    def loop_errors(self) -> list[str]:
        """What the loop reported so far, after a collection (an unretrieved task exception is
        only reported when the task is collected)."""
        gc.collect()
        return [f"{ctx.get('message')}: {ctx.get('exception')!r}" for ctx in list(self.errors)]

    def echo_until_spliced(self, sock: socket.socket, stream: str) -> bytes:
        """Echo 4 MiB through *sock*, then wait until *stream* of the first connection is spliced.

        Returns the 1 MiB block it sent, for more of the same.
        """
        block = os.urandom(MIB)
        for _ in range(4):
            sock.sendall(block)
            got = 0
            while got < len(block):
                got += len(sock.recv(MIB))
        self.wait_for(lambda: self.flows(stream)[0].spliced > 0)
        return block


@contextlib.contextmanager
def running_plane(loop_thread: LoopThread, **server_options: Any) -> Iterator[Plane]:
    """A started ChaosServer (ephemeral port) on *loop_thread*; stopped on the way out.

    Fails the test if the loop reported any error meanwhile (see :class:`Plane`).
    """
    from chaos.server import ChaosServer

    server = ChaosServer(port=0, **server_options)
    errors: list[dict[str, Any]] = []
    loop = loop_thread.loop
    previous = loop.get_exception_handler()
    loop.call_soon_threadsafe(loop.set_exception_handler, lambda _loop, ctx: errors.append(ctx))
    loop_thread.run(server.start())
    plane = Plane(loop_thread, server)
    plane.errors = errors
    failed = False
    try:
        yield plane
    except BaseException:
        failed = True
        raise
    finally:
        loop_thread.run(server.stop())
        errors = plane.loop_errors()
        loop.call_soon_threadsafe(loop.set_exception_handler, previous)
        if not failed:
            assert not errors, f"the server's loop reported errors: {errors}"


class Upstream:
    """A one-connection blocking upstream run by *handler(conn)* in a thread."""

    def __init__(self, handler: Callable[[socket.socket], None], rcvbuf: int = 0) -> None:
        self.listener = socket.socket()
        if rcvbuf:
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.listener.settimeout(30)
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.errors: list[BaseException] = []
        self._handler = handler
        self._thread = threading.Thread(target=self._run)
        self._thread.start()

    def _run(self) -> None:
        try:
            conn, _ = self.listener.accept()
            with conn:
                conn.settimeout(60)
                self._handler(conn)
        except BaseException as exc:
            self.errors.append(exc)

    def join(self) -> None:
        self._thread.join(60)
        self.listener.close()
        assert not self._thread.is_alive()


class _ClosingProtocol(asyncio.Protocol):
    def __init__(self, upstream: ClosingUpstream) -> None:
        self.upstream = upstream
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.upstream.transports.add(transport)

    def eof_received(self) -> bool:
        self.upstream.eofs += 1
        transport = self.transport
        assert transport is not None
        asyncio.get_running_loop().call_later(self.upstream.after, transport.close)
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.upstream.transports.discard(self.transport)


class ClosingUpstream:
    """An upstream that closes its side *after* seconds once the client's FIN arrived."""

    def __init__(self, loop_thread: LoopThread, after: float) -> None:
        self.loop_thread = loop_thread
        self.after = after
        self.eofs = 0
        self.transports: set[asyncio.Transport] = set()

        async def start() -> asyncio.Server:
            return await asyncio.get_running_loop().create_server(
                lambda: _ClosingProtocol(self), "127.0.0.1", 0
            )

        self._server: asyncio.Server = loop_thread.run(start())
        self.address = f"127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    def close(self) -> None:
        async def stop() -> None:
            self._server.close()
            for transport in list(self.transports):
                transport.abort()
            await asyncio.sleep(0)

        self.loop_thread.run(stop())


@contextlib.contextmanager
def blackhole() -> Iterator[str]:
    """A loopback address whose connects hang: a listener with a full accept queue (backlog 0,
    one connection already waiting) drops further SYNs, as a firewalled host would."""
    listener = socket.socket()
    filler = socket.socket()
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        filler.connect(listener.getsockname())
        host, port = listener.getsockname()
        yield f"{host}:{port}"
    finally:
        filler.close()
        listener.close()


# -- the server in a subprocess -----------------------------------------------------------------

_LAUNCH = (
    "import resource, sys\n"
    "resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), int(sys.argv[2])))\n"
    "from chaos.cli import main\n"
    "sys.exit(main(sys.argv[3:]))\n"
)


class LimitedServer:
    """``synapse-chaos serve`` in a subprocess under an open-file limit (stderr to *log*)."""

    def __init__(self, soft: int, hard: int, log: Path) -> None:
        self._log_path = log
        self._log = log.open("wb")
        command = [sys.executable, "-c", _LAUNCH, str(soft), str(hard), "serve", "--port", "0"]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=self._log)
        assert self.process.stdout is not None
        line = b""
        deadline = time.monotonic() + 30
        while b"\n" not in line and time.monotonic() < deadline:
            ready, _, _ = select.select([self.process.stdout], [], [], 1)
            if ready:
                chunk = os.read(self.process.stdout.fileno(), 4096)
                if not chunk:
                    break
                line += chunk
        if b"http://" not in line:
            self.close()
            raise AssertionError(f"the server did not start: {line!r} {self.log()!r}")
        self.url = line.split(b"http://", 1)[1].split()[0].decode()
        self.client = ToxiproxyClient(f"http://{self.url}", timeout=5)

    def fds(self) -> int:
        """Descriptors the server process holds now."""
        return len(os.listdir(f"/proc/{self.process.pid}/fd"))

    def soft_limit(self) -> int:
        """The server's soft open-file limit now (it may raise its own)."""
        for line in Path(f"/proc/{self.process.pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                return int(line.split()[3])
        raise AssertionError("no open-file limit in /proc/PID/limits")

    def log(self) -> str:
        self._log.flush()
        return self._log_path.read_text(errors="replace")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._log.close()


@contextlib.contextmanager
def limited_server(
    tmp_path: Path, soft: int | None = None, hard: int | None = None
) -> Iterator[LimitedServer]:
    """A :class:`LimitedServer` (limits default to this process's own), stopped on the way out."""
    own = resource.getrlimit(resource.RLIMIT_NOFILE)
    server = LimitedServer(
        own[0] if soft is None else soft, own[1] if hard is None else hard, tmp_path / "server.log"
    )
    try:
        yield server
    finally:
        server.close()


Answer = tuple[int, Any]


class FakeApi:
    """A loopback HTTP server answering each request with ``answer(method, path)``.

    With ``hold=True`` every request waits (at most ``max_hold`` seconds) until
    :meth:`release`: a server that stopped answering. ``requests`` records ``(method, path)``.
    """

    def __init__(
        self,
        answer: Callable[[str, str, bytes], Answer],
        *,
        hold: bool = False,
        max_hold: float = 20.0,
    ) -> None:
        self.requests: list[tuple[str, str]] = []
        self.requested = threading.Event()
        self._released = threading.Event()
        if not hold:
            self._released.set()
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                received = self.rfile.read(length) if length else b""
                api.requests.append((self.command, self.path))
                api.requested.set()
                api._released.wait(max_hold)
                status, body = answer(self.command, self.path, received)
                payload = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PATCH = do_DELETE = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def release(self) -> None:
        self._released.set()

    def close(self) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)


# A marker as another process would hold it: the in-process live-fault registry does not know
# it, exactly as it does not know the faults of another process sharing the server.
OTHER_MARKER = "synapse:alice:down:0badf0-1:marker"


def other_owner_takes_it_down(client: ToxiproxyClient, proxy: str) -> None:
    # What alice's down() does in her process: marker first, then disable.
    client.add_toxic(proxy, "noop", name=OTHER_MARKER)
    client.disable(proxy)
