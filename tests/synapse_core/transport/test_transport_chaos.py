"""Transports under real network faults from the chaos harness (embedded Toxiproxy server).

A proxy stands between peer ``a`` and peer ``b``; ``a`` also talks to a healthy peer ``c``
directly. Latency, a blackhole, resets and a partition each trip a's breaker for ``b`` only;
while it is open, sends are rejected in microseconds instead of waiting for a timeout; after
the fault heals and the (virtual) recovery timeout passes, probes close it again.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest
import pytest_asyncio
from transport_support import msg, unique_service_type

from chaos import ToxiproxyClient
from synapse_core import (
    CircuitBreakerConfig,
    CircuitEvent,
    CircuitOpenError,
    CircuitState,
    ExternalTriggerActivated,
    LatencyTrigger,
    VirtualClock,
)
from synapse_core.transport import (
    DeliveryError,
    DeliveryTimeoutError,
    MdnsConfig,
    MdnsTransport,
    TcpTransport,
)

TIMEOUT = 0.3  # connect and ack timeout of the sender, seconds
BREAKER = CircuitBreakerConfig(
    failure_threshold=3, minimum_requests=2, recovery_timeout=10.0, half_open_max_calls=2
)


@dataclass
class Link:
    a: TcpTransport
    b: TcpTransport
    c: TcpTransport
    client: ToxiproxyClient
    clock: VirtualClock


@pytest_asyncio.fixture
async def link(toxiproxy: ToxiproxyClient) -> AsyncIterator[Link]:
    clock = VirtualClock()
    a = TcpTransport(
        node_id="a",
        clock=clock,
        breaker_config=BREAKER,
        connect_timeout=TIMEOUT,
        send_timeout=TIMEOUT,
    )
    b = TcpTransport(node_id="b")
    c = TcpTransport(node_id="c")
    try:
        for transport in (a, b, c):
            await transport.start()
        toxiproxy.create_proxy("b", upstream="{}:{}".format(*b.address))
        listen = toxiproxy.proxies()["b"]
        a.add_peer("b", listen.listen_host, listen.listen_port)
        a.add_peer("c", *c.address)
        await a.send_message("b", msg("b", "a"))  # a pooled connection through the proxy
        yield Link(a, b, c, toxiproxy, clock)
    finally:
        for transport in (a, b, c):
            await transport.stop()


def _latency(client: ToxiproxyClient) -> Callable[[], None]:
    client.add_toxic("b", "latency", stream="downstream", attributes={"latency": 2000})
    return lambda: client.remove_toxic("b", "latency_downstream")


def _blackhole(client: ToxiproxyClient) -> Callable[[], None]:
    client.add_toxic("b", "timeout", stream="upstream", attributes={"timeout": 0})
    return lambda: client.remove_toxic("b", "timeout_upstream")


def _reset(client: ToxiproxyClient) -> Callable[[], None]:
    client.add_toxic("b", "reset_peer", stream="upstream", attributes={"timeout": 0})
    return lambda: client.remove_toxic("b", "reset_peer_upstream")


def _partition(client: ToxiproxyClient) -> Callable[[], None]:
    client.update_proxy("b", enabled=False)
    return lambda: client.update_proxy("b", enabled=True) and None


FAULTS = {
    "latency": (_latency, DeliveryTimeoutError),
    "blackhole": (_blackhole, DeliveryTimeoutError),
    "reset": (_reset, DeliveryError),
    "partition": (_partition, DeliveryError),
}


async def _send_until_open(transport: TcpTransport, target: str) -> list[BaseException]:
    """Send until the breaker opens (at most 10 sends); return the errors seen."""
    errors: list[BaseException] = []
    breaker = transport.get_circuit_breaker(target)
    for _ in range(10):
        if breaker.state is CircuitState.OPEN:
            break
        try:
            await transport.send_message(target, msg(target, transport.node_id))
        except (DeliveryError, CircuitOpenError) as exc:
            errors.append(exc)
    return errors


async def _rejection_times(transport: TcpTransport, target: str, count: int = 200) -> list[float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        with pytest.raises(CircuitOpenError):
            await transport.send_message(target, msg(target, transport.node_id))
        times.append(time.perf_counter() - started)
    return times


@pytest.mark.asyncio
@pytest.mark.parametrize("fault", list(FAULTS))
async def test_fault_trips_only_the_sick_peer_then_recovery_closes_it(
    link: Link, fault: str
) -> None:
    inject, expected_error = FAULTS[fault]
    breaker = link.a.get_circuit_breaker("b")
    events: list[CircuitEvent] = []
    breaker.subscribe(events.append)

    heal = inject(link.client)
    started = time.perf_counter()
    errors = await _send_until_open(link.a, "b")
    time_to_open = time.perf_counter() - started
    assert breaker.state is CircuitState.OPEN
    assert 2 <= len(errors) <= 3
    assert all(isinstance(e, expected_error) for e in errors), errors
    if expected_error is DeliveryTimeoutError:
        assert breaker.stats().timeout_count == len(errors)
    assert time_to_open < 3 * TIMEOUT + 1.0

    rejections = await _rejection_times(link.a, "b")
    assert statistics.median(rejections) < 0.0005  # well under a millisecond ...
    assert max(rejections) < TIMEOUT / 3  # ... and never anywhere near a timeout
    assert link.a.stats().rejected_by_breaker == 200

    await link.a.send_message("c", msg("c", "a"))  # the healthy peer is unaffected
    assert link.a.get_circuit_breaker("c").state is CircuitState.CLOSED

    heal()
    link.clock.advance(BREAKER.recovery_timeout)
    for _ in range(2):  # half_open_max_calls probes, all must succeed (0.7 x 2 -> 2)
        await link.a.send_message("b", msg("b", "a"))
    assert breaker.state is CircuitState.CLOSED
    assert [e.kind for e in events if e.kind != "request_rejected"] == [
        "opened",
        "half_opened",
        "closed",
    ]
    assert len(await link.b.receive_messages()) >= 3


@pytest.mark.asyncio
async def test_probe_during_a_lingering_fault_reopens(link: Link) -> None:
    heal = _partition(link.client)
    await _send_until_open(link.a, "b")
    link.clock.advance(BREAKER.recovery_timeout)
    with pytest.raises(DeliveryError):
        await link.a.test_connectivity("b")  # the probe fails: straight back to open
    assert link.a.get_circuit_breaker("b").state is CircuitState.OPEN
    heal()
    link.clock.advance(BREAKER.recovery_timeout)
    await link.a.test_connectivity("b")
    await link.a.test_connectivity("b")
    assert link.a.get_circuit_breaker("b").state is CircuitState.CLOSED


@pytest.mark.asyncio
async def test_latency_trigger_opens_on_measured_latency(link: Link) -> None:
    breaker = link.a.get_circuit_breaker("b")
    trigger = LatencyTrigger(max_latency=0.1, samples_required=3)
    breaker.add_trigger(trigger)
    events: list[CircuitEvent] = []
    breaker.subscribe(events.append)
    link.client.add_toxic("b", "latency", stream="downstream", attributes={"latency": 200})
    for _ in range(3):  # slow but successful: only the trigger can open the breaker
        await link.a.send_message("b", msg("b", "a"))
    assert breaker.state is CircuitState.OPEN
    assert breaker.stats().failure_count == 0
    assert any(isinstance(e, ExternalTriggerActivated) for e in events)
    assert trigger.average is not None
    assert trigger.average > 0.1  # fed with each measured round trip

    # Recovery: the latency is gone, but only fresh measurements can satisfy the trigger.
    link.client.remove_toxic("b", "latency_downstream")
    link.clock.advance(BREAKER.recovery_timeout)
    with pytest.raises(CircuitOpenError):
        await link.a.send_message("b", msg("b", "a"))  # the trigger still holds it open
    calls_before = breaker.stats().total_requests
    metrics = await link.a.test_connectivity("b")  # measured outside the breaker ...
    assert metrics.latency < 0.1
    assert breaker.stats().total_requests == calls_before  # ... so not recorded as a call
    for _ in range(5):  # until the moving average is low enough and a probe is admitted
        if breaker.state is not CircuitState.OPEN:
            break
        await link.a.test_connectivity("b")
    assert breaker.state is CircuitState.HALF_OPEN
    for _ in range(2):
        if breaker.state is CircuitState.CLOSED:
            break
        await link.a.send_message("b", msg("b", "a"))
    assert breaker.state is CircuitState.CLOSED


@pytest.mark.asyncio
async def test_mdns_peer_behind_a_proxy_partition_and_heal(toxiproxy: ToxiproxyClient) -> None:
    clock = VirtualClock()
    config = MdnsConfig(service_type=unique_service_type(), probe_name=False)
    # The proxy's upstream is only known once b listens: point it there later.
    toxiproxy.create_proxy("b", upstream="127.0.0.1:9")
    listen = toxiproxy.proxies()["b"]
    a = MdnsTransport(
        "a", 0, config, clock=clock, breaker_config=BREAKER, connect_timeout=TIMEOUT,
        send_timeout=TIMEOUT,
    )  # fmt: skip
    b = MdnsTransport(
        "b", 0, config, advertise_host=listen.listen_host, advertise_port=listen.listen_port
    )
    try:
        await asyncio.gather(a.start(), b.start())
        toxiproxy.update_proxy("b", upstream="{}:{}".format(*b.address))
        info = await a.wait_for_peer("b", timeout=10)
        assert (info.host, info.port) == (listen.listen_host, listen.listen_port)
        await a.send_message("b", msg("b", "a"))

        toxiproxy.update_proxy("b", enabled=False)  # partition: no goodbye reaches a
        await _send_until_open(a, "b")
        assert a.get_circuit_breaker("b").state is CircuitState.OPEN
        assert "b" in a.discovered_peers  # discovery still believes in b; the breaker knows
        assert statistics.median(await _rejection_times(a, "b", 50)) < 0.0005

        toxiproxy.update_proxy("b", enabled=True)
        clock.advance(BREAKER.recovery_timeout)
        for _ in range(2):
            await a.send_message("b", msg("b", "a"))
        assert a.get_circuit_breaker("b").state is CircuitState.CLOSED
        assert len(await b.receive_messages()) == 3
    finally:
        await asyncio.gather(a.stop(), b.stop())
