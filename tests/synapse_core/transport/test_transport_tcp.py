"""TcpTransport over real loopback sockets: acks, timeouts, breakers, bad input, auth, limits
(the connections themselves are in ``test_transport_tcp_connections.py``).

Breakers run on the virtual clock (so recovery needs no sleeping); timeouts are real and short.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import statistics
import struct
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
from transport_support import exchange, free_port, msg

from synapse_core import CircuitBreakerConfig, CircuitOpenError, CircuitState, VirtualClock
from synapse_core.transport import (
    DeliveryError,
    DeliveryTimeoutError,
    FrameKind,
    FrameTooLargeError,
    Message,
    MessageAuthenticator,
    MessageRejectedError,
    PeerUnknownError,
    TcpTransport,
    TransportClosedError,
    encode_frame,
)
from synapse_core.transport.tcp import parse_address

Pair = tuple[TcpTransport, TcpTransport]
KEY = secrets.token_bytes(32)
LENIENT = CircuitBreakerConfig(failure_threshold=50, minimum_requests=50)


class SilentServer:
    """Accepts connections and reads everything, but never answers (a hung peer)."""

    def __init__(self) -> None:
        self.connections = 0
        self.received = bytearray()
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> SilentServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                self.received += data
        writer.close()

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        await self._server.wait_closed()
        for writer in self._writers:
            with contextlib.suppress(Exception):
                await writer.wait_closed()


@pytest_asyncio.fixture
async def silent() -> AsyncIterator[SilentServer]:
    async with SilentServer() as server:
        yield server


@pytest.fixture
def full_backlog() -> Iterator[int]:
    """A port whose listen backlog is full: connecting there hangs (SYNs are dropped)."""
    listener = socket.socket()
    fillers: list[socket.socket] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        for _ in range(3):
            filler = socket.socket()
            filler.setblocking(False)
            fillers.append(filler)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


async def _raw_exchange(port: int, data: bytes) -> bytes:
    """Send *data* on a fresh connection and return what comes back until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 5)
    except ConnectionResetError:
        return b""  # closed with unread data: the kernel resets instead of a clean close
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


@pytest.mark.asyncio
async def test_message_round_trip_with_receipt(tcp_pair: Pair) -> None:
    a, b = tcp_pair
    message = Message("b", "a", b"hello", metadata={"k": "v"}, routing_path=("a",))
    receipt = await a.send_message("b", message)
    assert receipt.message_id == message.message_id
    assert receipt.transport == "tcp"
    assert receipt.latency > 0
    assert await b.receive_messages() == [message]
    assert a.stats().bytes_sent == b.stats().bytes_received == receipt.size


@pytest.mark.asyncio
async def test_send_to_a_host_port_literal(tcp_pair: Pair) -> None:
    a, b = tcp_pair
    host, port = b.address
    await a.send_message(f"{host}:{port}", msg(f"{host}:{port}"))
    assert len(await b.receive_messages()) == 1


@pytest.mark.asyncio
async def test_refused_connections_open_the_breaker_then_rejections_are_instant(
    tcp_pair: Pair, clock: VirtualClock
) -> None:
    a, _ = tcp_pair
    a.add_peer("dead", "127.0.0.1", free_port())
    for _ in range(2):
        with pytest.raises(DeliveryError, match="cannot connect"):
            await a.send_message("dead", msg("dead"))
    assert a.get_circuit_breaker("dead").state is CircuitState.OPEN
    durations = []
    for _ in range(50):
        started = time.perf_counter()
        with pytest.raises(CircuitOpenError):
            await a.send_message("dead", msg("dead"))
        durations.append(time.perf_counter() - started)
    assert statistics.median(durations) < 0.0005
    assert a.stats().rejected_by_breaker == 50
    # The healthy peer is unaffected, and the dead one is retried after the recovery timeout.
    await a.send_message("b", msg())
    clock.advance(5.0)
    with pytest.raises(DeliveryError):
        await a.send_message("dead", msg("dead"))
    assert a.get_circuit_breaker("b").state is CircuitState.CLOSED


@pytest.mark.asyncio
async def test_unacknowledged_send_times_out_and_closes_the_connection(
    clock: VirtualClock, silent: SilentServer
) -> None:
    async with TcpTransport(node_id="a", clock=clock, send_timeout=0.2) as a:
        a.add_peer("hung", "127.0.0.1", silent.port)
        started = time.perf_counter()
        with pytest.raises(DeliveryTimeoutError) as info:
            await a.send_message("hung", msg("hung"))
        assert 0.2 <= time.perf_counter() - started < 1.0
        assert info.value.phase == "ack"
        with pytest.raises(DeliveryTimeoutError):
            await a.test_connectivity("hung")
        stats = a.get_circuit_stats("hung")
        assert silent.received  # the frame did reach the hung peer
    assert (stats.timeout_count, stats.failure_count) == (2, 2)
    assert silent.connections == 2  # the timed-out connection was not reused


@pytest.mark.asyncio
async def test_connect_timeout(clock: VirtualClock, full_backlog: int) -> None:
    async with TcpTransport(node_id="a", clock=clock, connect_timeout=0.2) as a:
        a.add_peer("slow", "127.0.0.1", full_backlog)
        results = await asyncio.gather(
            *(a.send_message("slow", msg("slow")) for _ in range(3)), return_exceptions=True
        )
        stats = a.get_circuit_stats("slow")
    assert all(isinstance(r, DeliveryTimeoutError) and r.phase == "connect" for r in results)
    assert stats.timeout_count == 3


@pytest.mark.asyncio
async def test_stop_during_a_send_records_nothing(
    clock: VirtualClock, silent: SilentServer
) -> None:
    a = TcpTransport(node_id="a", clock=clock, send_timeout=5.0)
    await a.start()
    try:
        a.add_peer("hung", "127.0.0.1", silent.port)
        send = asyncio.create_task(a.send_message("hung", msg("hung")))
        for _ in range(500):
            if silent.received:
                break
            await asyncio.sleep(0.01)
    finally:
        await a.stop()
    with pytest.raises(TransportClosedError):
        await send
    assert a.get_circuit_stats("hung").total_requests == 0


@pytest.mark.asyncio
async def test_peer_restart_is_survived_by_reconnecting(
    clock: VirtualClock, fast_breaker: CircuitBreakerConfig
) -> None:
    async with TcpTransport(node_id="a", clock=clock, breaker_config=fast_breaker) as a:
        async with TcpTransport(node_id="b") as b:
            a.add_peer("b", *b.address)
            await a.send_message("b", msg())
            port = b.address[1]
        with pytest.raises(DeliveryError):
            await a.send_message("b", msg())
        async with TcpTransport(port=port, node_id="b") as b2:
            await a.send_message("b", msg())
            assert len(await b2.receive_messages()) == 1
        assert a.stats().connections_opened == 2


@pytest.mark.asyncio
async def test_connectivity_probe(tcp_pair: Pair) -> None:
    a, _ = tcp_pair
    metrics = await a.test_connectivity("b")
    assert 0 < metrics.latency < 1.0
    assert metrics.packet_loss == 0.0
    assert a.get_circuit_stats("b").success_count == 1


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (struct.pack(">I", 50_000_000), "exceeds the maximum"),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "exceeds the maximum"),
        (struct.pack(">IBI", 5, 77, 1), "unknown frame kind 77"),
        (encode_frame(FrameKind.MESSAGE, 1, b"\x01{not json"), "not valid UTF-8 JSON"),
        (encode_frame(FrameKind.MESSAGE, 1, b"\x01{}"), "bad message keys"),
        (encode_frame(FrameKind.ACK, 1), "unexpected ACK frame"),
        (encode_frame(FrameKind.MESSAGE, 1, b"x" * 100)[:50], "ended inside a frame"),
    ],
)
async def test_bad_input_closes_the_connection_and_the_listener_keeps_serving(
    tcp_pair: Pair, caplog: pytest.LogCaptureFixture, data: bytes, reason: str
) -> None:
    a, b = tcp_pair
    caplog.set_level(logging.WARNING, logger="synapse_core.transport")
    if reason == "ended inside a frame":
        _, writer = await asyncio.open_connection(*b.address)
        writer.write(data)
        await writer.drain()
        writer.close()
        await writer.wait_closed()
        for _ in range(100):
            if b.stats().protocol_errors:
                break
            await asyncio.sleep(0.01)
    else:
        assert await _raw_exchange(b.address[1], data) == b""  # closed without an answer
    assert b.stats().protocol_errors == 1
    assert reason in caplog.text
    await a.send_message("b", msg())  # still serving
    assert len(await b.receive_messages()) == 1


@pytest.mark.asyncio
async def test_valid_frames_before_garbage_are_answered(tcp_pair: Pair) -> None:
    _, b = tcp_pair
    good = encode_frame(FrameKind.PING, 9, b"n")
    answer = await _raw_exchange(b.address[1], good + b"\xff" * 20)
    assert answer == encode_frame(FrameKind.PONG, 9, b"n")


@pytest.mark.asyncio
async def test_a_server_that_speaks_nonsense_fails_the_send(clock: VirtualClock) -> None:
    async def nonsense(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(encode_frame(FrameKind.MESSAGE, 1, b"surprise"))
        await writer.drain()
        with contextlib.suppress(ConnectionError):
            await reader.read()
        writer.close()

    server = await asyncio.start_server(nonsense, "127.0.0.1", 0)
    try:
        async with TcpTransport(node_id="a", clock=clock) as a:
            a.add_peer("odd", *server.sockets[0].getsockname()[:2])
            with pytest.raises(DeliveryError, match="protocol error"):
                await a.send_message("odd", msg("odd"))
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.asyncio
async def test_shared_key_authentication(clock: VirtualClock) -> None:
    key = b"k" * 32
    async with (
        TcpTransport(node_id="a", authenticator=MessageAuthenticator(key), clock=clock) as a,
        TcpTransport(node_id="b", authenticator=MessageAuthenticator(key)) as b,
        TcpTransport(node_id="m", authenticator=MessageAuthenticator(b"m" * 32), clock=clock) as m,
        TcpTransport(node_id="p", clock=clock) as plain,
    ):
        for sender in (a, m, plain):
            sender.add_peer("b", *b.address)
        await a.send_message("b", msg())
        for sender in (m, plain):
            with pytest.raises(MessageRejectedError) as info:
                await sender.send_message("b", msg())
            assert info.value.code == "unauthenticated"
            assert sender.get_circuit_breaker("b").state is CircuitState.CLOSED
        [received] = await b.receive_messages()
        assert "authenticated" in a.capabilities
    assert MessageAuthenticator(key).is_valid(received)
    assert b.stats().auth_failures == 2


@pytest.mark.asyncio
async def test_a_full_inbound_queue_answers_busy(clock: VirtualClock) -> None:
    async with (
        TcpTransport(node_id="a", clock=clock) as a,
        TcpTransport(node_id="b", inbound_queue_size=1) as b,
    ):
        a.add_peer("b", *b.address)
        await a.send_message("b", msg())
        with pytest.raises(MessageRejectedError) as info:
            await a.send_message("b", msg())
        assert info.value.code == "busy"
        await b.receive_messages()
        await a.send_message("b", msg())
        stats = a.get_circuit_stats("b")
    assert (stats.success_count, stats.failure_count) == (2, 1)
    assert b.stats().inbound_dropped == 1


@pytest.mark.asyncio
async def test_frame_size_limits(clock: VirtualClock) -> None:
    async with (
        TcpTransport(node_id="a", clock=clock, max_frame_size=300) as a,
        TcpTransport(node_id="b", clock=clock, max_frame_size=300) as b,
    ):
        a.add_peer("b", *b.address)
        with pytest.raises(FrameTooLargeError):
            await a.send_message("b", msg(content=b"x" * 300))
        stats = a.get_circuit_stats("b")  # nothing was sent: no outcome recorded
        assert (stats.total_requests, stats.half_open_calls_in_flight) == (0, 0)
        async with TcpTransport(node_id="big", clock=clock) as big:
            big.add_peer("b", *b.address)
            with pytest.raises(DeliveryError, match="closed by the peer"):
                await big.send_message("b", msg(content=b"x" * 300))
        assert b.stats().protocol_errors == 1


@pytest.mark.asyncio
async def test_peers_and_addresses(clock: VirtualClock) -> None:
    transport = TcpTransport(node_id="a", clock=clock, peers={"b": ("127.0.0.1", 9)})
    with pytest.raises(TransportClosedError, match="before start"):
        _ = transport.address
    assert transport.resolve("b") == ("127.0.0.1", 9)
    assert transport.resolve("[::1]:80") == ("::1", 80)
    with pytest.raises(PeerUnknownError, match="add_peer"):
        transport.resolve("nobody")
    transport.get_circuit_breaker("b")
    transport.remove_peer("b")
    assert transport.peers == {}
    assert transport.circuit_breakers == {}
    async with TcpTransport() as auto:
        assert auto.node_id == f"127.0.0.1:{auto.address[1]}"
        assert {"tcp", "framed", "acknowledged"} <= auto.capabilities


@pytest.mark.parametrize("text", ["nohost", ":80", "host:", "host:0", "host:70000", "h:x"])
def test_parse_address_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=r"host:port|port"):
        parse_address(text)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"connect_timeout": 0}, "timeout"),
        ({"send_timeout": -1}, "timeout"),
        ({"max_frame_size": 5}, "max_frame_size"),
        ({"max_connections": 0}, "max_connections"),
        ({"inbound_queue_bytes": 0}, "inbound_queue_bytes"),
        ({"dedup_window": -1}, "dedup_window"),
        ({"target_cache_size": 0}, "target_cache_size"),
    ],
)
def test_constructor_validation(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TcpTransport(**kwargs)  # type: ignore[arg-type]


def test_add_peer_validation() -> None:
    transport = TcpTransport()
    with pytest.raises(TypeError):
        transport.add_peer("", "127.0.0.1", 1)
    with pytest.raises(ValueError, match="port"):
        transport.add_peer("x", "127.0.0.1", 0)


# ---------------------------------------------------------------- under attack and failure


@pytest.mark.asyncio
async def test_state_kept_for_passing_targets_is_bounded(clock: VirtualClock) -> None:
    """Every distinct "host:port" target kept a breaker and metrics (~14.7 KB) forever:
    5,000 targets cost 72 MB, and only remove_peer freed them."""
    by_default = TcpTransport(node_id="a", clock=clock)
    for i in range(1100):  # the default bound, without a network round trip for each
        by_default.get_circuit_breaker(f"10.0.{i // 250}.{i % 250}:80")
    assert len(by_default.circuit_breakers) == 1024
    port = free_port()
    async with TcpTransport(node_id="a", clock=clock, target_cache_size=64) as a:
        a.add_peer("known", "127.0.0.1", port)
        with pytest.raises(DeliveryError):
            await a.send_message("known", msg("known", "a"))
        targets = [f"127.0.0.{i}:{port}" for i in range(1, 101)]  # all refused, all distinct
        for target in targets:
            with pytest.raises(DeliveryError):
                await a.send_message(target, msg(target, "a"))
        breakers = a.circuit_breakers
        assert set(breakers) == {"known", *targets[-64:]}  # the least recently used went
        assert set(a._links) == set(breakers)
        assert a.stats().targets_forgotten == 100 - 64


@pytest.mark.asyncio
async def test_the_inbound_queue_is_bounded_in_bytes(clock: VirtualClock) -> None:
    """One unauthenticated client grew a receiver from 27 to 841 MB with 1,024 messages of
    about 1 MiB: the queue was counted in messages only."""
    limit = 3 * 1024 * 1024
    async with (
        TcpTransport(node_id="b", inbound_queue_bytes=limit) as b,
        TcpTransport(node_id="a", clock=clock) as a,
    ):
        a.add_peer("b", *b.address)
        big = b"x" * (700 * 1024)  # about 0.9 MiB once encoded
        for _ in range(3):
            await a.send_message("b", msg("b", "a", big))
        with pytest.raises(MessageRejectedError, match="busy"):
            await a.send_message("b", msg("b", "a", big))
        assert 0 < b.inbound_bytes <= limit
        assert len(await b.receive_messages()) == 3
        assert b.inbound_bytes == 0
        await a.send_message("b", msg("b", "a", big))  # room again
    async with TcpTransport(node_id="b", inbound_queue_bytes=1024) as small:
        a2 = TcpTransport(node_id="a", clock=clock)
        async with a2:
            a2.add_peer("b", *small.address)
            await a2.send_message("b", msg("b", "a", big))  # larger than the limit, queue empty
            with pytest.raises(MessageRejectedError, match="busy"):
                await a2.send_message("b", msg("b", "a"))


def _frames(*messages: Message) -> list[bytes]:
    return [encode_frame(FrameKind.MESSAGE, seq, m.to_bytes()) for seq, m in enumerate(messages, 1)]


@pytest.mark.asyncio
async def test_without_replay_memory_the_last_dedup_window_ids_are_recognised() -> None:
    """With no authenticator (or one without ``max_age``), a receiver recognises a message that
    arrives again among the last ``dedup_window`` ids only: the memory is bounded by that count,
    an id pushed out of it is delivered again, and ``dedup_window=0`` turns the check off."""
    oldest, *newer = [msg("b", "a", str(i).encode()) for i in range(4)]
    async with TcpTransport(node_id="b", dedup_window=3) as b:
        replies = await exchange(b.address, *_frames(oldest, *newer))
        assert [kind for kind, _, _ in replies] == [FrameKind.ACK] * 4
        assert len(await b.receive_messages()) == 4
        replies = await exchange(b.address, *_frames(newer[-1], newer[0], oldest))
        assert [kind for kind, _, _ in replies] == [FrameKind.ACK] * 3
        # the two still in the window are only acknowledged; the oldest was pushed out
        assert [m.message_id for m in await b.receive_messages()] == [oldest.message_id]
        assert b.stats().duplicates == 2
    async with TcpTransport(node_id="b", dedup_window=0) as off:
        await exchange(off.address, *_frames(oldest, oldest))
        assert [m.message_id for m in await off.receive_messages()] == [oldest.message_id] * 2
        assert off.stats().duplicates == 0


@pytest.mark.asyncio
async def test_a_message_refused_as_busy_can_be_delivered_later() -> None:
    async with (
        TcpTransport(
            node_id="b",
            authenticator=MessageAuthenticator(KEY, max_age=30),
            inbound_queue_size=1,
        ) as b,
        TcpTransport(
            node_id="a",
            authenticator=MessageAuthenticator(KEY, max_age=30),
            breaker_config=LENIENT,
        ) as a,
    ):
        a.add_peer("b", *b.address)
        await a.send_message("b", Message("b", "a", b"fill"))
        important = Message("b", "a", b"important")
        with pytest.raises(MessageRejectedError) as busy:
            await a.send_message("b", important)
        assert busy.value.code == "busy"
        assert [m.content for m in await b.receive_messages()] == [b"fill"]

        receipt = await a.send_message("b", important)  # the retry of the same message
        assert receipt.message_id == important.message_id
        assert [m.message_id for m in await b.receive_messages()] == [important.message_id]
        assert b.stats().auth_failures == 0
        assert b.stats().inbound_dropped == 1
        stats = a.get_circuit_stats("b")
        assert (stats.success_count, stats.failure_count) == (2, 1)  # busy was a failure

        again = await a.send_message("b", important)  # delivered once: acked, not queued
        assert again.message_id == important.message_id
        assert await b.receive_messages() == []
        assert b.stats().duplicates == 1
        assert b.stats().auth_failures == 0
