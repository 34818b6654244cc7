"""TcpTransport's connections on loopback: one pooled connection per peer, shared connect
attempts and timeouts, sends on connections the peer closed or reset, idle and stalled
connections, inbound connection limits, and clients that never read.

Breakers run on the virtual clock; timeouts are real and short. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import select
import socket
import struct
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any, TypeVar

import pytest
import pytest_asyncio
from transport_support import RawClient, msg, until

from chaos import ToxiproxyClient
from synapse_core import CircuitBreakerConfig, VirtualClock
from synapse_core.transport import (
    DeliveryError,
    DeliveryTimeoutError,
    FrameKind,
    Message,
    MessageAuthenticator,
    TcpTransport,
    TransportClosedError,
    encode_frame,
)
from synapse_core.transport.tcp import Address, _Connection

T = TypeVar("T")
Pair = tuple[TcpTransport, TcpTransport]
KEY = secrets.token_bytes(32)
LENIENT = CircuitBreakerConfig(failure_threshold=50, minimum_requests=50)


@pytest.mark.asyncio
async def test_connection_is_reused_and_requests_are_pipelined(tcp_pair: Pair) -> None:
    a, b = tcp_pair
    for i in range(20):
        await a.send_message("b", msg(content=str(i).encode()))
    receipts = await asyncio.gather(*(a.send_message("b", msg()) for _ in range(200)))
    assert len({r.message_id for r in receipts}) == 200
    assert len(await b.receive_messages()) == 220
    assert a.stats().connections_opened == 1
    assert b.stats().connections_accepted == 1


@pytest.mark.asyncio
async def test_max_connections(clock: VirtualClock, caplog: pytest.LogCaptureFixture) -> None:
    """A full listener serves the newcomer and says GOAWAY to its least useful connection."""
    caplog.set_level(logging.INFO, "synapse_core.transport")
    async with TcpTransport(node_id="b", max_connections=1) as b:
        first_reader, first_writer = await asyncio.open_connection(*b.address)
        second_reader, second_writer = None, None
        try:
            first_writer.write(encode_frame(FrameKind.PING, 1, b"ok"))
            assert await first_reader.readexactly(11) == encode_frame(FrameKind.PONG, 1, b"ok")
            second_reader, second_writer = await asyncio.open_connection(*b.address)
            second_writer.write(encode_frame(FrameKind.PING, 2, b"ok"))
            assert await second_reader.readexactly(11) == encode_frame(FrameKind.PONG, 2, b"ok")
            goaway = encode_frame(FrameKind.GOAWAY, 0, b"closed to make room for a new connection")
            assert await asyncio.wait_for(first_reader.read(), 5) == goaway  # and the end
        finally:
            for writer in (first_writer, second_writer):
                if writer is not None:
                    writer.close()
                    with contextlib.suppress(ConnectionError):
                        await writer.wait_closed()
    assert b.stats().connections_evicted == 1
    assert "closing the least useful connection" in caplog.text


async def _squat(address: tuple[str, int], source: str, seq: int = 1) -> RawClient:
    """A connection that only ever pings (9-byte frames), from *source*, answered once."""
    client = await RawClient.connect(address, source)
    client.send(encode_frame(FrameKind.PING, seq))
    assert [kind for kind, _, _ in await client.replies(1)] == [FrameKind.PONG]
    return client


@pytest.mark.asyncio
async def test_connections_that_only_ping_cannot_lock_a_real_peer_out(clock: VirtualClock) -> None:
    """256 connections each pinging now and then locked every new client out indefinitely,
    and a peer whose pooled connection had idled out could not reconnect."""
    squatters: list[RawClient] = []
    async with (
        TcpTransport(node_id="b", max_connections=8) as b,
        TcpTransport(node_id="a", clock=clock) as a,
    ):
        a.add_peer("b", *b.address)
        try:
            for i in range(8):  # four sources, two each: within the per-source limit of 4
                squatters.append(await _squat(b.address, f"127.0.0.{2 + i % 4}"))
            await a.send_message("b", msg("b", "a"))  # served: a squatter made room
            for i in range(8):  # more squatters push each other out, never the useful one
                squatters.append(await _squat(b.address, f"127.0.0.{2 + i % 4}"))
            await a.send_message("b", msg("b", "a"))
            assert a.stats().connections_opened == 1  # its connection was never closed
            assert b.stats().connections_evicted == 9
            assert [await squatter.closed_by_server(2.0) for squatter in squatters[:9]] == [
                True
            ] * 9  # the oldest squatters went first
            assert len(await b.receive_messages()) == 2
        finally:
            for squatter in squatters:
                await squatter.close()


@pytest.mark.asyncio
async def test_one_source_holds_at_most_its_share_of_connections(clock: VirtualClock) -> None:
    squatters: list[RawClient] = []
    async with (
        TcpTransport(node_id="b", max_connections=8, max_connections_per_source=3) as b,
        TcpTransport(node_id="a", clock=clock) as a,
    ):
        a.add_peer("b", *b.address)
        await a.send_message("b", msg("b", "a"))
        try:
            for seq in range(6):
                squatters.append(await _squat(b.address, "127.0.0.2", seq))
            goaway = (FrameKind.GOAWAY, 0, b"closed to make room for a new connection")
            for squatter in squatters[:3]:  # the oldest of that source, each told why
                assert await squatter.closed_by_server(2.0)
                assert await squatter.replies(1) == [goaway]
            for seq, squatter in enumerate(squatters[3:]):
                squatter.send(encode_frame(FrameKind.PING, 100 + seq))
                assert [k for k, _, _ in await squatter.replies(1)] == [FrameKind.PONG]
            await a.send_message("b", msg("b", "a"))  # another source: untouched
            assert a.stats().connections_opened == 1
            assert b.stats().connections_evicted == 3
        finally:
            for squatter in squatters:
                await squatter.close()
    with pytest.raises(ValueError, match="max_connections_per_source"):
        TcpTransport(max_connections=4, max_connections_per_source=5)


@pytest.mark.asyncio
async def test_a_send_crossing_the_receivers_idle_close_goes_again_quietly(
    toxiproxy: ToxiproxyClient, clock: VirtualClock
) -> None:
    """A periodic sender whose period is near the receiver's idle_timeout failed every time
    (each failure counted against its breaker): the frame was on its way while the receiver
    closed. Now the receiver says GOAWAY, and the unprocessed send goes once more."""
    idle, delay = 0.5, 0.3
    async with (
        TcpTransport(node_id="b", idle_timeout=idle) as b,
        TcpTransport(node_id="a", clock=clock, send_timeout=5.0) as a,
    ):
        toxiproxy.create_proxy("b", upstream="{}:{}".format(*b.address))
        listen = toxiproxy.proxies()["b"]
        a.add_peer("b", listen.listen_host, listen.listen_port)
        # Frames from a reach b `delay` late: one written between `idle - delay` and `idle`
        # after the last ack leaves on a connection that still looks alive, and arrives after
        # b closed it for idleness.
        toxiproxy.add_toxic(
            "b", "latency", stream="upstream", attributes={"latency": int(delay * 1000)}
        )
        await a.send_message("b", msg("b", "a"))
        for _ in range(2):
            await asyncio.sleep(idle - delay / 2)
            await a.send_message("b", msg("b", "a"))
        stats = a.get_circuit_stats("b")
        assert (stats.success_count, stats.failure_count) == (3, 0)
        assert a.stats().connections_opened == 3  # the crossing sends went on new ones
        assert len(await b.receive_messages()) == 3


class _HangingConnect(TcpTransport):
    """Connection attempts never finish (a peer whose SYNs are dropped)."""

    async def _open(self, address: Address) -> _Connection:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


@pytest.mark.asyncio
async def test_stopping_during_a_connect_raises_transport_closed() -> None:
    a = _HangingConnect(node_id="a", connect_timeout=5)
    await a.start()
    try:
        a.add_peer("h", "127.0.0.1", 9)
        sender = asyncio.create_task(a.send_message("h", msg("h", "a")))
        await until(lambda: bool(a._connecting), within=1.0)
    finally:
        await a.stop()
    with pytest.raises(TransportClosedError):
        await sender
    stats = a.get_circuit_stats("h")
    assert (stats.success_count, stats.failure_count) == (0, 0)  # our shutdown: no outcome
    assert a.stats().send_failures == 0


@pytest.mark.asyncio
async def test_a_cancelled_sender_still_sees_its_cancellation() -> None:
    async with _HangingConnect(node_id="a", connect_timeout=5) as a:
        a.add_peer("h", "127.0.0.1", 9)
        sender = asyncio.create_task(a.send_message("h", msg("h", "a")))
        await until(lambda: bool(a._connecting), within=1.0)
        sender.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sender
        assert a._connecting  # the shared attempt goes on for the other senders


@pytest_asyncio.fixture
async def hung_peer() -> AsyncIterator[int]:
    """The port of a server that accepts, reads and never answers."""
    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        with contextlib.suppress(ConnectionError):
            while await reader.read(65536):
                pass

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()


@pytest.mark.asyncio
async def test_one_timeout_on_a_shared_connection_times_out_every_waiting_send(
    hung_peer: int,
) -> None:
    clock = VirtualClock()
    async with TcpTransport(
        node_id="a", send_timeout=0.2, breaker_config=LENIENT, clock=clock
    ) as a:
        a.add_peer("h", "127.0.0.1", hung_peer)

        async def one(delay: float) -> BaseException | None:
            await asyncio.sleep(delay)
            try:
                await a.send_message("h", msg("h", "a"))
            except Exception as exc:
                return exc
            return None

        results = await asyncio.gather(*(one(i * 0.02) for i in range(4)))
        assert all(isinstance(r, DeliveryTimeoutError) for r in results), results
        assert {r.phase for r in results if isinstance(r, DeliveryTimeoutError)} == {"ack"}
        assert a.stats().connections_opened == 1  # they did share one connection
        assert a.stats().send_timeouts == 4
        stats = a.get_circuit_stats("h")
        assert (stats.failure_count, stats.timeout_count) == (4, 4)


@pytest.mark.asyncio
async def test_stalled_inbound_connections_are_dropped_and_free_their_slots() -> None:
    async with (
        TcpTransport(
            node_id="b",
            max_connections=2,
            max_connections_per_source=2,
            send_timeout=0.2,
            idle_timeout=0.3,
        ) as b,
        TcpTransport(node_id="a", send_timeout=1.0) as a,
    ):
        a.add_peer("b", *b.address)
        half = await asyncio.open_connection(*b.address)
        trickle = await asyncio.open_connection(*b.address)
        half[1].write(b"\x00\x00")  # half a header, then silence
        frame = encode_frame(FrameKind.PING, 1, b"x" * 64)
        started = asyncio.get_running_loop().time()
        for byte in frame:  # one byte every 40 ms: each read is in time, the frame is not
            if trickle[0].at_eof() or trickle[0].exception() is not None:
                break  # b hung up
            trickle[1].write(bytes([byte]))
            await asyncio.sleep(0.04)
        assert asyncio.get_running_loop().time() - started < 1.0  # cut off on the way
        assert await asyncio.wait_for(half[0].read(), 1.0) == b""  # closed by b
        with contextlib.suppress(ConnectionError):
            assert await asyncio.wait_for(trickle[0].read(), 1.0) == b""
        assert b.stats().protocol_errors == 2

        await a.send_message("b", msg("b", "a"))  # the slots are free again
        for _, writer in (half, trickle):
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


@pytest.mark.asyncio
async def test_idle_connections_are_reaped_without_a_protocol_error() -> None:
    async with (
        TcpTransport(node_id="b", idle_timeout=0.15) as b,
        TcpTransport(node_id="a", send_timeout=1.0) as a,
    ):
        a.add_peer("b", *b.address)
        await a.send_message("b", msg("b", "a"))
        idle_reader, idle_writer = await asyncio.open_connection(*b.address)
        goaway = encode_frame(FrameKind.GOAWAY, 0, b"idle for 0.15s")
        assert await asyncio.wait_for(idle_reader.read(), 1.0) == goaway  # then end of stream
        await until(lambda: not a._conns, within=1.0)  # a's pooled connection was closed by b too
        await a.send_message("b", msg("b", "a"))  # and a reconnects by itself
        assert a.stats().connections_opened == 2
        assert b.stats().protocol_errors == 0
        assert len(await b.receive_messages()) == 2
        idle_writer.close()
        await idle_writer.wait_closed()


def test_idle_timeout_is_validated() -> None:
    with pytest.raises(ValueError, match="idle_timeout"):
        TcpTransport(idle_timeout=0)
    assert TcpTransport(idle_timeout=None).idle_timeout is None


def _wait_readable(fd: int, timeout: float) -> bool:
    """Block (on purpose: the event loop must not run) until *fd* is readable or *timeout*."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(int(timeout * 1000)))


class _LoopThread:
    """An event loop on another thread: its transport acts while the test's loop is blocked."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="peer", daemon=True)
        self._thread.start()

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        async with asyncio.timeout(10):
            return await asyncio.wrap_future(future)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@pytest_asyncio.fixture
async def idle_closing_peer() -> AsyncIterator[tuple[TcpTransport, _LoopThread]]:
    """``b`` (authenticated, ``idle_timeout=0.5``) running on its own loop and thread."""
    thread = _LoopThread()

    async def make() -> TcpTransport:
        b = TcpTransport(
            node_id="b", idle_timeout=0.5, authenticator=MessageAuthenticator(KEY, max_age=30)
        )
        await b.start()
        return b

    b = await thread.run(make())
    try:
        yield b, thread
    finally:
        await thread.run(b.stop())
        thread.close()


@pytest.mark.asyncio
async def test_a_send_on_a_connection_the_peer_closed_while_idle_goes_on_a_new_one(
    idle_closing_peer: tuple[TcpTransport, _LoopThread],
) -> None:
    b, thread = idle_closing_peer
    async with TcpTransport(
        node_id="a",
        breaker_config=LENIENT,
        connect_timeout=2.0,
        send_timeout=2.0,
        authenticator=MessageAuthenticator(KEY, max_age=30),
    ) as a:
        a.add_peer("b", *b.address)
        await a.send_message("b", Message("b", "a", b"first"))
        conn = a._conns[b.address]
        sock = conn._writer.get_extra_info("socket")
        # b closes the idle connection on its own loop; ours is blocked meanwhile, so a's
        # reader cannot see the end of stream before the next send writes.
        assert _wait_readable(sock.fileno(), timeout=5.0)
        assert not conn.closed

        receipt = await a.send_message("b", Message("b", "a", b"second"))

        assert receipt.target == "b"
        received = await thread.run(b.receive_messages())
        assert [m.content for m in received] == [b"first", b"second"]  # once each
        assert a.stats().connections_opened == 2
        assert b.stats().auth_failures == 0  # the resend was no replay
        stats = a.get_circuit_stats("b")
        assert (stats.success_count, stats.failure_count, stats.total_requests) == (2, 0, 2)


class _ResettingPeer:
    """A frame-speaking peer on a thread: resets its first connection after reading one frame
    (never answering it), then acknowledges every message on its second connection."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(5.0)
        self.address: tuple[str, int] = self._listener.getsockname()[:2]
        self.received: list[Message] = []
        self.got_first = threading.Event()
        self.reset_now = threading.Event()
        self.reset_done = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, name="resetting-peer", daemon=True)
        self._thread.start()

    @staticmethod
    def _read_exactly(sock: socket.socket, size: int) -> bytes | None:
        data = b""
        while len(data) < size:
            chunk = sock.recv(size - len(data))
            if not chunk:
                return None
            data += chunk
        return data

    def _read_frame(self, sock: socket.socket) -> tuple[int, int, bytes] | None:
        header = self._read_exactly(sock, 4)
        if header is None:
            return None
        rest = self._read_exactly(sock, struct.unpack(">I", header)[0])
        if rest is None:
            return None
        kind, seq = struct.unpack(">BI", rest[:5])
        return kind, seq, rest[5:]

    def _serve(self) -> None:
        try:
            first, _ = self._listener.accept()
            with first:
                first.settimeout(5.0)
                frame = self._read_frame(first)
                assert frame is not None
                assert frame[0] == FrameKind.MESSAGE
                self.received.append(Message.from_bytes(frame[2]))
                self.got_first.set()
                assert self.reset_now.wait(5.0)
                first.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.reset_done.set()
            second, _ = self._listener.accept()
            with second:
                second.settimeout(5.0)
                while (frame := self._read_frame(second)) is not None:
                    kind, seq, body = frame
                    assert kind == FrameKind.MESSAGE
                    self.received.append(Message.from_bytes(body))
                    second.sendall(encode_frame(FrameKind.ACK, seq))
        except BaseException as exc:  # reported by close()
            self.error = exc
            self.got_first.set()
            self.reset_done.set()

    def close(self) -> None:
        self.reset_now.set()
        self._listener.close()
        self._thread.join(10)


@pytest.fixture
def resetting_peer() -> Iterator[_ResettingPeer]:
    peer = _ResettingPeer()
    try:
        yield peer
    finally:
        peer.close()
    if peer.error is not None and not isinstance(peer.error, (OSError, TimeoutError)):
        raise peer.error


@pytest.mark.asyncio
async def test_a_write_refused_at_once_on_a_reset_connection_is_sent_again_once(
    resetting_peer: _ResettingPeer,
) -> None:
    peer = resetting_peer
    async with TcpTransport(
        node_id="a", breaker_config=LENIENT, connect_timeout=2.0, send_timeout=2.0
    ) as a:
        a.add_peer("b", *peer.address)
        first = asyncio.create_task(a.send_message("b", Message("b", "a", b"first")))
        try:
            assert await asyncio.to_thread(peer.got_first.wait, 5.0)
            conn = a._conns[peer.address]
            sock = conn._writer.get_extra_info("socket")
            peer.reset_now.set()
            # Blocking waits: a's reader must not learn of the reset before the next send.
            assert peer.reset_done.wait(5.0)
            assert _wait_readable(sock.fileno(), timeout=5.0)
            assert not conn.closed

            second = Message("b", "a", b"second")
            receipt = await a.send_message("b", second)  # "first" still waits on that connection

            assert receipt.message_id == second.message_id
            with pytest.raises(DeliveryError):
                await first  # it left this host before the reset: not sent again
        finally:
            first.cancel()
            await asyncio.gather(first, return_exceptions=True)
        assert [m.content for m in peer.received] == [b"first", b"second"]
        assert a.stats().connections_opened == 2
        stats = a.get_circuit_stats("b")
        assert (stats.success_count, stats.failure_count, stats.total_requests) == (1, 1, 2)


@pytest.mark.asyncio
async def test_a_client_that_never_reads_replies_is_cut_off_and_stop_leaves_no_handler() -> None:
    b = TcpTransport(node_id="b", send_timeout=0.5)
    await b.start()
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.connect(b.address)
    client.setblocking(False)
    body = b"p" * 60_000
    ping = encode_frame(FrameKind.PING, 1, body, b.max_frame_size)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 1.5
    cut_off = False
    while loop.time() < deadline and not cut_off:  # PINGs, never reading the PONGs
        try:
            client.send(ping)
        except BlockingIOError:
            pass
        except OSError:
            cut_off = True  # reset by the server: what a graceful close never got to
        await asyncio.sleep(0.01)
    await asyncio.sleep(1.0)
    await asyncio.wait_for(b.stop(), 5)
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert not [t for t in others if "_serve" in repr(t.get_coro())]
    with contextlib.suppress(OSError):
        client.recv(1 << 20)  # drains what was sent before the cut, then sees the close
    client.close()
