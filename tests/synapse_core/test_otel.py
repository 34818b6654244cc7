"""The OpenTelemetry hook: span events for transitions, metrics, nothing when not instrumented."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from breaker_support import fail_times, ok
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

from synapse_core import (
    CircuitBreaker,
    CircuitBreakerManager,
    CircuitOpenError,
    VirtualClock,
)
from synapse_core.otel import instrument

MakeBreaker = Callable[..., CircuitBreaker]


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def points(reader: InMemoryMetricReader) -> dict[str, dict[tuple[Any, ...], float]]:
    """``{metric name: {sorted attributes: value}}`` of one collection."""
    found: dict[str, dict[tuple[Any, ...], float]] = {}
    data = reader.get_metrics_data()
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    key = tuple(sorted(point.attributes.items()))
                    found.setdefault(metric.name, {})[key] = point.value
    return found


def test_transitions_become_span_events_of_the_current_span_and_metrics(
    clock: VirtualClock, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = spans
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    manager = CircuitBreakerManager(clock=clock)
    breaker = manager.get_or_create("payments")
    otel = instrument(manager, meter_provider=meters)
    try:
        tracer = provider.get_tracer("test")
        with tracer.start_as_current_span("POST /checkout"):
            fail_times(breaker, 3)  # the request whose failure trips the breaker
            with pytest.raises(CircuitOpenError):
                breaker.call(ok)
        clock.advance(10)
        with tracer.start_as_current_span("POST /checkout again"):
            breaker.call(ok)
            breaker.call(ok)
        found = points(reader)
    finally:
        otel.close()
        meters.shutdown()
    first, second = exporter.get_finished_spans()
    assert [e.name for e in first.events] == ["synapse.breaker.opened"]
    opened = first.events[0].attributes
    assert opened is not None
    assert dict(opened) == {
        "synapse.breaker.name": "payments",
        "synapse.breaker.from_state": "closed",
        "synapse.breaker.to_state": "open",
        "synapse.breaker.reason": "3 failures in 3 calls within 30s (threshold 3)",
        "synapse.breaker.failure_count": 3,
    }
    assert [e.name for e in second.events] == [
        "synapse.breaker.half_opened",
        "synapse.breaker.closed",
    ]
    transitions = found["synapse.circuit_breaker.transitions"]
    assert (
        transitions[(("breaker", "payments"), ("from_state", "closed"), ("to_state", "open"))] == 1
    )
    assert (
        found["synapse.circuit_breaker.state"][(("breaker", "payments"), ("state", "closed"))] == 1
    )
    calls = found["synapse.circuit_breaker.calls"]
    assert calls[(("breaker", "payments"), ("outcome", "failure"))] == 3
    assert calls[(("breaker", "payments"), ("outcome", "success"))] == 2
    assert found["synapse.circuit_breaker.rejected_calls"][(("breaker", "payments"),)] == 1


def test_other_managers_breakers_are_left_out_and_close_stops(
    clock: VirtualClock, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = spans
    mine = CircuitBreakerManager(clock=clock)
    other = CircuitBreakerManager(clock=clock).get_or_create("elsewhere")
    otel = instrument(mine, meter_provider=MeterProvider())
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("request"):
        fail_times(other, 3)
    otel.close()
    with tracer.start_as_current_span("after close"):
        fail_times(mine.get_or_create("payments"), 3)
    assert [list(s.events) for s in exporter.get_finished_spans()] == [[], []]


def test_importing_synapse_core_does_not_import_opentelemetry() -> None:
    """Unused, it costs nothing: not even the import."""
    code = (
        "import sys, synapse_core, synapse_core.health, synapse_core.metrics;"
        "print(any(m.startswith('opentelemetry') for m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "False"
