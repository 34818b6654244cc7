"""Regressions for the transport review: each test pins one fixed bug.

TCP tests run on loopback with short real timeouts; the mDNS ones need loopback multicast (they
skip with the reason otherwise) and browse their own random service type.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

import pytest
import pytest_asyncio
from transport_support import ScriptedTransport, msg

from synapse_core import CircuitBreakerConfig, VirtualClock
from synapse_core.transport import (
    AuthenticationError,
    DeliveryTimeoutError,
    FailoverRouter,
    FrameKind,
    MdnsConfig,
    MdnsTransport,
    Message,
    MessageAuthenticator,
    MessageDecodeError,
    MessageRejectedError,
    NoRouteError,
    TcpTransport,
    TransportClosedError,
    encode_frame,
)
from synapse_core.transport.tcp import Address, _Connection

KEY = secrets.token_bytes(32)
LENIENT = CircuitBreakerConfig(failure_threshold=50, minimum_requests=50)


# ---------------------------------------------------------------- 1. busy + replay protection


def test_check_does_not_remember_and_remember_makes_a_replay() -> None:
    auth = MessageAuthenticator(KEY, max_age=30)
    signed = auth.sign(msg())
    auth.check(signed)
    auth.check(signed)  # checking is not receiving: still not a replay
    auth.remember(signed)
    with pytest.raises(AuthenticationError, match="replay"):
        auth.check(signed)


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


# ---------------------------------------------------------------- 2. stop during a connect


class _HangingConnect(TcpTransport):
    """Connection attempts never finish (a peer whose SYNs are dropped)."""

    async def _open(self, address: Address) -> _Connection:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def _until(predicate: Callable[[], bool]) -> None:
    for _ in range(200):
        if predicate():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not reached")


@pytest.mark.asyncio
async def test_stopping_during_a_connect_raises_transport_closed() -> None:
    a = _HangingConnect(node_id="a", connect_timeout=5)
    await a.start()
    try:
        a.add_peer("h", "127.0.0.1", 9)
        sender = asyncio.create_task(a.send_message("h", msg("h", "a")))
        await _until(lambda: bool(a._connecting))
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
        await _until(lambda: bool(a._connecting))
        sender.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sender
        assert a._connecting  # the shared attempt goes on for the other senders


# ---------------------------------------------------------------- 3. timeouts on a shared conn


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


# ---------------------------------------------------------------- 5. stalled inbound connections


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
        await _until(lambda: not a._conns)  # a's pooled connection was closed by b too
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


# ---------------------------------------------------------------- 6b. canonical timestamps


@pytest.mark.parametrize(
    "timestamp",
    [
        "2024-01-01T00:00:00.0+0100Z",  # an offset hidden in the fraction
        "2024-01-01T00:00:00.00000 Z",
        "2024-01-01T00:00:00.-00000Z",
        "2024-01-01T00:00:00.00000\u0661Z",  # a non-ASCII digit
        "2024-01-0\u0661T00:00:00.000000Z",
    ],
)
def test_non_canonical_timestamps_are_refused(timestamp: str) -> None:
    fields = json.loads(msg().to_bytes()[1:])
    fields["timestamp"] = timestamp
    raw = b"\x01" + json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
    with pytest.raises(MessageDecodeError, match="timestamp"):
        Message.from_bytes(raw)


def test_a_canonical_timestamp_round_trips() -> None:
    message = msg().replace(timestamp=datetime(2024, 1, 1, 12, 30, 5, 123456, tzinfo=UTC))
    assert Message.from_bytes(message.to_bytes()) == message


# ---------------------------------------------------------------- 6c. router and the docs


@pytest.mark.asyncio
async def test_router_without_failover_raises_busy() -> None:
    primary, backup = ScriptedTransport("p"), ScriptedTransport("s")
    async with primary, backup:
        primary.behaviour["b"] = MessageRejectedError("b", "busy", "queue full")
        with pytest.raises(MessageRejectedError, match="busy"):
            await FailoverRouter([primary, backup], failover_on_error=False).send_message(
                "b", msg()
            )
        assert backup.calls == []
        receipt = await FailoverRouter([primary, backup]).send_message("b", msg())
        assert receipt.breaker == backup.breaker_name("b")


@pytest.mark.asyncio
@pytest.mark.parametrize("error", [TimeoutError(), OSError("boom"), ConnectionResetError()])
async def test_router_fails_over_on_bare_errors_only_for_at_least_once(error: Exception) -> None:
    """A bare error cannot say whether the peer got the message: resending could duplicate it."""
    primary, backup = ScriptedTransport("p"), ScriptedTransport("s")
    async with primary, backup:
        primary.behaviour["b"] = error
        router = FailoverRouter([primary, backup])
        with pytest.raises(type(error)):
            await router.send_message("b", msg())
        assert backup.calls == []
        assert router.stats().not_failed_over == 1

        router = FailoverRouter([primary, backup], at_least_once=True)
        receipt = await router.send_message("b", msg())
        assert receipt.breaker == backup.breaker_name("b")
        assert router.stats().failed_attempts == 1

        backup.behaviour["b"] = error
        with pytest.raises(NoRouteError) as no_route:
            await router.send_message("b", msg())
        assert [type(e) for _, e in no_route.value.attempts] == [type(error)] * 2


@pytest.mark.asyncio
async def test_router_fails_over_on_a_refused_connection() -> None:
    primary, backup = ScriptedTransport("p"), ScriptedTransport("s")
    async with primary, backup:
        primary.behaviour["b"] = ConnectionRefusedError()
        receipt = await FailoverRouter([primary, backup]).send_message("b", msg())
        assert receipt.breaker == backup.breaker_name("b")
        with pytest.raises(ConnectionRefusedError):
            await FailoverRouter([primary, backup], failover_on_error=False).send_message(
                "b", msg()
            )


# ---------------------------------------------------------------- mDNS: 4, 6a, 7

Factory = Callable[..., Awaitable[MdnsTransport]]


@pytest.fixture
def mdns_config(mdns_config: MdnsConfig) -> MdnsConfig:
    """The shared settings with faster queries: these tests wait on re-resolution."""
    return dataclasses.replace(mdns_config, query_interval=0.3)


@pytest.mark.asyncio
async def test_breaker_time_never_expires_peers_and_reads_are_pure(
    start_peer: Factory, mdns_config: MdnsConfig
) -> None:
    breaker_clock, discovery_clock = VirtualClock(), VirtualClock()
    quiet = mdns_config.replace(query_interval=60.0, peer_timeout=30.0)
    a, _ = await asyncio.gather(
        start_peer("a", config=quiet, clock=breaker_clock, discovery_clock=discovery_clock),
        start_peer("b"),
    )
    info = await a.wait_for_peer("b")
    breaker = a.get_circuit_breaker("b")
    breaker.force_open("test")
    breaker.force_close()

    breaker_clock.advance(3600.0)  # an hour of breaker time: nothing to do with liveness
    await asyncio.sleep(0.1)
    assert await a.can_reach("b")
    assert "b" in a.discovered_peers
    assert a.circuit_breakers == {"b": breaker}

    discovery_clock.advance(31.0)  # b is overdue, but reads do not expire it
    assert a.resolve("b") == (info.host, info.port)
    assert await a.can_reach("b")
    assert "b" in a.discovered_peers
    assert "b" in a.peers
    assert a.circuit_breakers == {"b": breaker}
    await a.wait_for_peer_removed("b", timeout=2)  # the transport expires it
    assert a.circuit_breakers == {}


@pytest.mark.asyncio
async def test_a_peer_over_max_peers_is_counted_once_and_admitted_when_a_slot_frees(
    start_peer: Factory, mdns_config: MdnsConfig
) -> None:
    a = await start_peer("a", config=mdns_config.replace(max_peers=1, query_interval=0.2))
    b, c = await asyncio.gather(start_peer("b"), start_peer("c"))
    await _wait_async(lambda: bool(a.discovered_peers) and a.peers_ignored > 0)
    await asyncio.sleep(0.7)  # three query intervals: the refused peer answers each one
    assert a.peers_ignored == 1
    [kept] = a.discovered_peers
    other = "c" if kept == "b" else "b"

    await (b if kept == "b" else c).stop()  # goodbye: a slot frees up
    await a.wait_for_peer(other, timeout=5)  # the refused peer was resolved again at once
    assert other in a.discovered_peers


async def _wait_async(predicate: Callable[[], bool], limit: float = 5.0) -> None:
    for _ in range(int(limit / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached")


@pytest.mark.asyncio
async def test_a_failing_maintenance_step_is_logged_and_the_loop_lives_on(
    start_peer: Factory,
    mdns_config: MdnsConfig,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a = await start_peer("a", config=mdns_config.replace(announce_interval=0.05))
    assert a._zc is not None
    calls = 0

    async def broken(*args: object, **kwargs: object) -> None:
        nonlocal calls
        calls += 1
        raise OSError("no buffer space")

    monkeypatch.setattr(a._zc, "async_update_service", broken)
    with caplog.at_level(logging.ERROR, logger="synapse_core.transport.mdns"):
        await _wait_async(lambda: calls >= 3, limit=2.0)
    assert a._maintenance is not None
    assert not a._maintenance.done()
    assert "maintenance failed" in caplog.text
