"""Data plane under load: byte-exact bulk transfer, many concurrent connections, no fd leaks."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import socketserver
import struct
import threading
import time

import pytest
from chaos_helpers import (
    MIB,
    ClosingUpstream,
    EchoServer,
    LoopThread,
    Plane,
    Upstream,
    blackhole,
    echo_transfer,
    fds_settle,
    open_fds,
    running_plane,
    wait_until,
)
from threaded_servers import serving

from chaos import ToxiproxyClient
from chaos.server import ServerLimits

TOTAL = 100 * MIB


@pytest.mark.slow
def test_100_mb_byte_exact_both_directions(echo_proxy: tuple[str, int]) -> None:
    echo_transfer(echo_proxy, TOTAL)


@pytest.mark.slow
def test_100_mb_byte_exact_through_slicer(
    client: ToxiproxyClient, echo_proxy: tuple[str, int]
) -> None:
    for stream in ("upstream", "downstream"):
        client.add_toxic(
            "echo",
            "slicer",
            stream=stream,  # type: ignore[arg-type]
            attributes={"average_size": 32768, "size_variation": 16384, "delay": 0},
        )
    echo_transfer(echo_proxy, TOTAL)


@pytest.mark.slow
@pytest.mark.asyncio
async def test_1000_concurrent_connections(
    echo_server: EchoServer, echo_proxy: tuple[str, int]
) -> None:
    writers: list[asyncio.StreamWriter] = []
    try:
        streams = []
        for i in range(1000):
            reader, writer = await asyncio.wait_for(asyncio.open_connection(*echo_proxy), 10)
            writers.append(writer)
            streams.append((i, reader, writer))

        async def exchange(i: int, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> bytes:
            message = f"conn-{i:04d}\n".encode()
            w.write(message)
            await w.drain()
            return await reader.readexactly(len(message))

        results = await asyncio.wait_for(
            asyncio.gather(*(exchange(*s) for s in streams)), timeout=60
        )
        assert results == [f"conn-{i:04d}\n".encode() for i in range(1000)]
        assert echo_server.accepted == 1000
    finally:
        for writer in writers:
            writer.close()
        await asyncio.gather(*(w.wait_closed() for w in writers), return_exceptions=True)


@pytest.mark.slow
@pytest.mark.asyncio
async def test_10000_open_close_cycles_leak_no_fds(echo_proxy: tuple[str, int]) -> None:

    async def cycle() -> None:
        reader, writer = await asyncio.open_connection(*echo_proxy)
        try:
            writer.write(b"x")
            assert await reader.readexactly(1) == b"x"
        finally:
            writer.close()
            await writer.wait_closed()

    async def worker(count: int) -> None:
        for _ in range(count):
            await cycle()

    await asyncio.wait_for(worker(200), 30)  # warm up: lazily created fds/buffers
    await asyncio.sleep(0.2)
    baseline = open_fds()
    start = time.monotonic()
    await asyncio.wait_for(asyncio.gather(*(worker(500) for _ in range(20))), 100)
    elapsed = time.monotonic() - start
    fds = await asyncio.to_thread(fds_settle, baseline + 5)
    assert fds <= baseline + 5, f"fds grew from {baseline} to {fds}"
    assert elapsed < 100


def test_client_gone_while_a_latency_toxic_holds_the_upstream_eof_logs_nothing(
    plane: Plane, loop_thread: LoopThread
) -> None:
    """A client that half-closes and then aborts (as asyncpg does on a timeout) while a latency
    toxic holds the upstream's end of stream: passing that EOF on (``write_eof``) met a socket the
    client had reset and raised ``OSError: [Errno 107]`` in the direction's task, which the loop
    logged as "Task exception was never retrieved". A peer that went away ends the connection
    quietly."""
    closer = ClosingUpstream(loop_thread, after=0.2)
    try:
        address = plane.proxy(closer.address)
        plane.client.add_toxic("p", "latency", stream="downstream", attributes={"latency": 50})
        sock = socket.create_connection(address, timeout=5)
        try:
            sock.shutdown(socket.SHUT_WR)  # the proxy stops reading the client after this FIN
            assert wait_until(lambda: closer.eofs == 1, 5), "the FIN never reached the upstream"
        finally:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()  # RST, which the proxy does not read
        plane.all_closed()
        assert plane.loop_errors() == []
    finally:
        closer.close()


@pytest.mark.parametrize("how", ["delete", "disable"])
def test_a_removed_proxy_ends_connections_whose_client_does_not_read(
    plane: Plane, echo_server: EchoServer, how: str
) -> None:
    """A client that sends without reading (its echo backs up through the proxy until the
    client blocks in ``send``), then the proxy is deleted or disabled. Closing waited for the
    client to read what the proxy still held for it, which it never does: the sockets stayed
    open and the client stayed blocked forever. Toxiproxy resets such a connection at once;
    so does the proxy now, and its sockets are released."""
    address = plane.proxy(echo_server.address)
    outcome: list[BaseException | None] = []
    started = threading.Event()
    sock = socket.create_connection(address, timeout=10)

    def flood() -> None:
        block = b"f" * 65536
        started.set()
        try:
            for _ in range(2048):  # 128 MiB: far more than every buffer on the way holds
                sock.sendall(block)
        except OSError as exc:
            outcome.append(exc)
        else:
            outcome.append(None)

    thread = threading.Thread(target=flood)
    thread.start()
    try:
        started.wait(5)
        plane.wait_until_blocked()
        assert not outcome, "the client was not blocked"
        start = time.monotonic()
        if how == "delete":
            plane.client.delete_proxy("p")
        else:
            plane.client.disable("p")
        thread.join(15)
        elapsed = time.monotonic() - start
        assert len(outcome) == 1, outcome
        assert isinstance(outcome[0], ConnectionError), outcome
        assert elapsed < 5, f"the blocked client got its error after {elapsed:.1f} s"
        plane.wait_for(
            lambda: all(
                e is None or e.transport is None
                for c in plane.conns
                for e in (c.client, c.upstream_side)
            )
        )
    finally:
        sock.close()
        thread.join(15)


@pytest.mark.parametrize("leaves_by", ["reset", "close"])
def test_a_client_leaving_during_a_pending_upstream_connect_releases_it(
    loop_thread: LoopThread, leaves_by: str
) -> None:
    """The upstream drops SYNs (a blackholed host), so the proxy's connect stays pending; the
    client gives up. The proxy did not read the client until the upstream answered, so it never
    noticed, and kept both sockets for the kernel's whole connect timeout (about 130 s). Now a
    reset ends the attempt at once; a FIN (the client closed, or only half-closed and still
    waits for an answer: the proxy cannot tell) gives the connect
    ``ServerLimits.connect_after_client_eof`` more seconds."""
    limits = ServerLimits(connect_after_client_eof=0.3)
    with blackhole() as upstream, running_plane(loop_thread, limits=limits) as plane:
        address = plane.proxy(upstream)
        sock = socket.create_connection(address, timeout=5)
        try:
            plane.wait_for(lambda: len(plane.conns) == 1)
            time.sleep(0.2)  # the connect is under way
            if leaves_by == "reset":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        finally:
            sock.close()
        start = time.monotonic()
        plane.all_closed()
        plane.wait_for(lambda: plane.conns[0].client.transport is None)
        assert time.monotonic() - start < 5


def test_a_graceful_close_toward_a_client_that_does_not_read_is_bounded(
    loop_thread: LoopThread,
) -> None:
    """A graceful close flushes what the proxy holds for the client first; a client that never
    reads held the connection (and its descriptors) open for good. Now a close that delivers
    nothing for ``ServerLimits.close_timeout`` seconds is turned into a reset."""

    def flood(conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            for _ in range(512):  # 32 MiB, far more than the buffers on the way hold
                conn.sendall(b"d" * 65536)

    limits = ServerLimits(close_timeout=0.3)
    with running_plane(loop_thread, limits=limits) as plane:
        upstream = Upstream(flood)
        address = plane.proxy(upstream.address)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(5)
        try:
            sock.connect(address)
            plane.wait_until_blocked()
            # removing a timeout toxic closes its connections gracefully, as in Toxiproxy
            plane.client.add_toxic("p", "timeout", stream="upstream", attributes={"timeout": 0})
            plane.client.remove_toxic("p", "timeout_upstream")
            start = time.monotonic()
            plane.wait_for(lambda: plane.conns[0].client.transport is None, timeout=5)
            assert time.monotonic() - start < 3
        finally:
            sock.close()
            upstream.join()


class _AnswerAfterEof(socketserver.BaseRequestHandler):
    """Reads the whole request (to the client's FIN), then answers and closes."""

    def handle(self) -> None:
        self.request.settimeout(10)
        request = b""
        while chunk := self.request.recv(65536):
            request += chunk
        self.request.sendall(b"reply:" + request)


def test_a_half_close_reaches_the_upstream_and_its_reply_still_arrives(
    client: ToxiproxyClient,
) -> None:
    """A documented difference from Toxiproxy 2.12, which closes both directions when the client
    half-closes (the client reads EOF at once, the reply is lost): here the FIN is forwarded and
    the other direction stays open, as on a direct TCP connection."""
    with serving(socketserver.ThreadingTCPServer(("127.0.0.1", 0), _AnswerAfterEof)) as upstream:
        proxy = client.create_proxy("halfclose", upstream=upstream)
        with socket.create_connection((proxy.host, proxy.port), timeout=10) as sock:
            sock.sendall(b"hello")
            sock.shutdown(socket.SHUT_WR)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
    assert answer == b"reply:hello"
