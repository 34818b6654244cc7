"""Fixtures for the transport tests: scripted transports on a virtual clock, TCP pairs.

Every transport a fixture starts is stopped by that fixture, also when the test fails.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest
import pytest_asyncio
from transport_support import ScriptedTransport, unique_service_type

from chaos import EmbeddedToxiproxy, ToxiproxyClient
from synapse_core import CircuitBreakerConfig, VirtualClock
from synapse_core.transport import MdnsConfig, MdnsTransport, TcpTransport

PeerFactory = Callable[..., Awaitable[MdnsTransport]]


@pytest.fixture
def scripted(clock: VirtualClock) -> ScriptedTransport:
    """A scripted transport with the default (original) breaker preset on the virtual clock."""
    return ScriptedTransport(clock=clock)


@pytest.fixture
def fast_breaker() -> CircuitBreakerConfig:
    """Opens after 2 failures; recovers after 5 s of (virtual) time with 1 probe."""
    return CircuitBreakerConfig(
        failure_threshold=2, minimum_requests=2, recovery_timeout=5.0, half_open_max_calls=1
    )


@pytest_asyncio.fixture
async def tcp_pair(
    clock: VirtualClock, fast_breaker: CircuitBreakerConfig
) -> AsyncIterator[tuple[TcpTransport, TcpTransport]]:
    """Two started TCP transports ``a`` and ``b`` on loopback; ``a`` knows ``b`` as ``"b"``."""
    a = TcpTransport(
        node_id="a", clock=clock, breaker_config=fast_breaker, connect_timeout=1.0, send_timeout=1.0
    )
    b = TcpTransport(node_id="b", clock=clock, breaker_config=fast_breaker)
    try:
        await a.start()
        await b.start()
        a.add_peer("b", *b.address)
        yield a, b
    finally:
        await a.stop()
        await b.stop()


@pytest.fixture
def toxiproxy() -> Iterator[ToxiproxyClient]:
    """A client of a fresh embedded Toxiproxy-compatible server (stopped after the test)."""
    with EmbeddedToxiproxy(seed=7) as server:
        yield server.client(timeout=10.0)


@pytest.fixture
def mdns_config() -> MdnsConfig:
    """Loopback-only mDNS settings with a service type no other test uses."""
    return MdnsConfig(
        interfaces=["127.0.0.1"],
        service_type=unique_service_type(),
        probe_name=False,
        query_interval=0.5,
        discovery_timeout=10.0,
    )


@pytest_asyncio.fixture
async def start_peer(
    loopback_multicast: None, mdns_config: MdnsConfig
) -> AsyncIterator[PeerFactory]:
    """``await start_peer("id", **kwargs)``: a started transport, stopped after the test."""
    started: list[MdnsTransport] = []

    async def start(entity_id: str, **kwargs: object) -> MdnsTransport:
        kwargs.setdefault("config", mdns_config)
        transport = MdnsTransport(entity_id, 0, **kwargs)  # type: ignore[arg-type]
        started.append(transport)
        await transport.start()
        return transport

    try:
        yield start
    finally:
        await asyncio.gather(*(t.stop() for t in started), return_exceptions=True)
