"""What a transport measures feeds a peer breaker's external triggers: reliability, packet loss
and latency; a refused connection is a failure, never a latency sample.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from transport_support import ScriptedTransport, msg

from synapse_core import (
    CircuitBreakerConfig,
    CircuitState,
    ExternalTriggerActivated,
    PacketLossTrigger,
    ReliabilityTrigger,
    TransportMetrics,
    VirtualClock,
)
from synapse_core.breaker import LatencyTrigger
from synapse_core.transport import (
    DeliveryError,
    FrameDecoder,
    FrameKind,
    TcpTransport,
    encode_frame,
)


@pytest.mark.asyncio
async def test_external_triggers_judge_the_measured_metrics(scripted: ScriptedTransport) -> None:
    seen: list[TransportMetrics] = []

    class Recorder:
        description = "recorder"

        def should_trip(self, metrics: TransportMetrics, state: CircuitState) -> bool:
            seen.append(metrics)
            return False

        def should_recover(self, state: CircuitState) -> bool:
            return True

    async with scripted:
        breaker = scripted.get_circuit_breaker("b")
        breaker.add_trigger(Recorder())
        await scripted.send_message("b", msg())
        scripted.behaviour["b"] = DeliveryError("b", "down")
        with pytest.raises(DeliveryError):
            await scripted.send_message("b", msg())
    assert len(seen) == 2
    assert seen[0].packet_loss == 0.0
    assert seen[1].packet_loss == 0.5
    assert seen[1].reliability_score < seen[0].reliability_score


@pytest.mark.asyncio
async def test_reliability_trigger_opens_a_breaker_the_failure_count_would_not(
    clock: VirtualClock,
) -> None:
    lenient = CircuitBreakerConfig(failure_threshold=100)
    transport = ScriptedTransport(clock=clock, breaker_config=lenient)
    events: list[object] = []
    async with transport:
        breaker = transport.get_circuit_breaker("b")
        breaker.add_trigger(ReliabilityTrigger(min_reliability=0.7))
        breaker.subscribe(events.append)
        transport.behaviour["b"] = DeliveryError("b", "down")
        sent = 0
        while breaker.state is CircuitState.CLOSED and sent < 10:
            sent += 1
            with pytest.raises(DeliveryError):
                await transport.send_message("b", msg())
    # 0.95 * 0.9^n < 0.7 first holds at n = 3
    assert sent == 3
    assert any(isinstance(e, ExternalTriggerActivated) for e in events)
    assert transport.get_metrics("b").reliability_score < 0.7


@pytest.mark.asyncio
async def test_packet_loss_trigger_sees_the_loss_estimate(clock: VirtualClock) -> None:
    lenient = CircuitBreakerConfig(failure_threshold=100)
    transport = ScriptedTransport(clock=clock, breaker_config=lenient)
    async with transport:
        breaker = transport.get_circuit_breaker("b")
        breaker.add_trigger(PacketLossTrigger(max_packet_loss=0.4))
        await transport.send_message("b", msg())
        await transport.send_message("b", msg())
        transport.behaviour["b"] = DeliveryError("b", "lost")
        with pytest.raises(DeliveryError):
            await transport.send_message("b", msg())
        assert breaker.state is CircuitState.CLOSED  # 1 of 3 lost
        with pytest.raises(DeliveryError):
            await transport.send_message("b", msg())
        assert breaker.state is CircuitState.OPEN  # 2 of 4 lost


class _SlowPeer:
    """A loopback server that acknowledges every frame after *delay* seconds."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        decoder = FrameDecoder()
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                for kind, seq, body in decoder.feed(data):
                    await asyncio.sleep(self.delay)
                    if kind is FrameKind.MESSAGE:
                        writer.write(encode_frame(FrameKind.ACK, seq))
                    else:
                        writer.write(encode_frame(FrameKind.PONG, seq, body))

    async def kill(self) -> None:
        """Stop listening and drop every connection: connections are refused from now on."""
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.close()
        await self.server.wait_closed()


@pytest_asyncio.fixture
async def slow_peer() -> AsyncIterator[tuple[_SlowPeer, int]]:
    peer = _SlowPeer(0.1)
    port = await peer.start()
    try:
        yield peer, port
    finally:
        await peer.kill()


@pytest.mark.asyncio
async def test_refused_probes_do_not_let_a_latency_trigger_recover(
    slow_peer: tuple[_SlowPeer, int],
) -> None:
    peer, port = slow_peer
    clock = VirtualClock()
    async with TcpTransport(node_id="a", clock=clock, connect_timeout=1.0) as a:
        a.add_peer("b", "127.0.0.1", port)
        breaker = a.get_circuit_breaker("b")
        latency = LatencyTrigger(max_latency=0.05, samples_required=3)
        reliability = ReliabilityTrigger(min_reliability=0.0)  # never trips; keeps the figure
        breaker.add_trigger(latency)
        breaker.add_trigger(reliability)
        for _ in range(3):
            await a.send_message("b", msg("b", "a"))
        assert breaker.state is CircuitState.OPEN  # slow: opened by the latency trigger
        assert reliability.last is not None
        healthy = reliability.last

        await peer.kill()
        clock.advance(breaker.config.recovery_timeout + 1)
        requests = breaker.stats().total_requests
        for _ in range(4):  # measured outside the breaker, since the trigger holds it open
            with pytest.raises(DeliveryError):
                await a.test_connectivity("b")
        assert latency.average is not None
        assert latency.average > 0.05  # a 0.3 ms refusal is no round trip
        assert not latency.should_recover(CircuitState.OPEN)
        assert breaker.state is CircuitState.OPEN
        assert breaker.stats().total_requests == requests  # no half-open probe was admitted
        assert reliability.last < healthy  # the failures still count for reliability
        assert a.stats().probe_failures == 4


@pytest.mark.asyncio
async def test_refused_sends_feed_loss_but_no_latency_sample(
    slow_peer: tuple[_SlowPeer, int],
) -> None:
    peer, port = slow_peer
    lenient = CircuitBreakerConfig(failure_threshold=50, minimum_requests=50)
    async with TcpTransport(node_id="a", breaker_config=lenient, connect_timeout=1.0) as a:
        a.add_peer("b", "127.0.0.1", port)
        breaker = a.get_circuit_breaker("b")
        latency = LatencyTrigger(max_latency=10.0, samples_required=2)
        loss = PacketLossTrigger(max_packet_loss=1.0)
        breaker.add_trigger(latency)
        breaker.add_trigger(loss)
        for _ in range(2):
            await a.send_message("b", msg("b", "a"))
        assert latency.average is not None
        assert latency.average >= 0.09
        await peer.kill()
        for _ in range(2):
            with pytest.raises(DeliveryError):
                await a.send_message("b", msg("b", "a"))
        assert latency.average >= 0.09  # the smoothed round trip, not the refusal's duration
        assert loss.last == 0.5  # 2 of 4 lost


@pytest.mark.asyncio
async def test_failures_before_any_success_give_a_latency_trigger_no_sample(
    slow_peer: tuple[_SlowPeer, int],
) -> None:
    peer, port = slow_peer
    await peer.kill()  # refused from the start: no round trip was ever measured
    lenient = CircuitBreakerConfig(failure_threshold=50, minimum_requests=50)
    async with TcpTransport(node_id="a", breaker_config=lenient, connect_timeout=1.0) as a:
        a.add_peer("b", "127.0.0.1", port)
        breaker = a.get_circuit_breaker("b")
        latency = LatencyTrigger(max_latency=0.01, samples_required=1)
        breaker.add_trigger(latency)
        for _ in range(3):
            with pytest.raises(DeliveryError):
                await a.send_message("b", msg("b", "a"))
        # The estimate (50 ms default) is above 10 ms, but it is no measurement: no sample,
        # so no "latency" trip of a breaker whose peer simply refuses.
        assert latency.average is None
        assert breaker.state is CircuitState.CLOSED
