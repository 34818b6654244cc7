"""synapse_transport_* series: per-peer messages, round trips, latency summary, reliability."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from transport_support import free_port, msg

from synapse_core import CircuitOpenError
from synapse_core.metrics import TransportCollector
from synapse_core.transport import DeliveryError, TcpTransport


def samples(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    """``{(sample name, peer): value}`` (outcome appended to the name for round trips)."""
    found = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            assert (sample.labels["transport"], sample.labels["node"]) == ("tcp", "a")
            name = sample.name
            if "outcome" in sample.labels:
                name += ":" + sample.labels["outcome"]
            found[(name, sample.labels["peer"])] = sample.value
    return found


@pytest.mark.asyncio
async def test_transport_series_per_peer(tcp_pair: tuple[TcpTransport, TcpTransport]) -> None:
    a, _ = tcp_pair
    registry = CollectorRegistry()
    registry.register(TransportCollector([a]))
    for _ in range(5):
        await a.send_message("b", msg("b", "a"))
    a.add_peer("c", "127.0.0.1", free_port())  # nothing listens: refused
    for _ in range(2):
        with pytest.raises(DeliveryError):
            await a.send_message("c", msg("c", "a"))
    with pytest.raises(CircuitOpenError):  # rejected by the breaker: never sent, not counted
        await a.send_message("c", msg("c", "a"))

    found = samples(registry)
    assert found[("synapse_transport_messages_sent_total", "b")] == 5
    assert found[("synapse_transport_messages_failed_total", "b")] == 0
    assert found[("synapse_transport_messages_sent_total", "c")] == 0
    assert found[("synapse_transport_messages_failed_total", "c")] == 2
    assert found[("synapse_transport_round_trips_total:success", "b")] == 5
    assert found[("synapse_transport_round_trips_total:failure", "c")] == 2
    assert found[("synapse_transport_round_trip_seconds_count", "b")] == 5
    mean = found[("synapse_transport_round_trip_seconds_sum", "b")] / 5
    assert 0 < mean < 1.0
    assert (
        found[("synapse_transport_reliability_score", "b")]
        > found[("synapse_transport_reliability_score", "c")]
    )
    assert found[("synapse_transport_latency_seconds", "b")] > 0


def test_a_callable_gives_the_current_transports() -> None:
    current: list[TcpTransport] = []
    registry = CollectorRegistry()
    registry.register(TransportCollector(lambda: current))
    assert b"synapse_transport_messages_sent_total{" not in generate_latest(registry)
