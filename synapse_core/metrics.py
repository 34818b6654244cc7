"""Prometheus metrics of circuit breakers (and transports), computed when they are scraped.

Register a collector with any ``prometheus_client`` registry; nothing is counted per call, the
figures are read from the breakers' own counters at scrape time::

    from prometheus_client import REGISTRY
    from synapse_core.metrics import BreakerCollector

    REGISTRY.register(BreakerCollector())  # every breaker in default_manager

Series (label ``breaker`` is the breaker's name in the manager):

* ``synapse_circuit_breaker_state{breaker,state}``: 1 for the current state, 0 for the two
  others (``closed``, ``open``, ``half_open``);
* ``synapse_circuit_breaker_calls_total{breaker,outcome}``: recorded outcomes, ``success``,
  ``failure`` (not timeouts), ``timeout`` and ``ignored``;
* ``synapse_circuit_breaker_rejected_calls_total{breaker}``: calls rejected without running;
* ``synapse_circuit_breaker_transitions_total{breaker,from_state,to_state}``: state changes
  (every possible pair is present, from 0);
* ``synapse_circuit_breaker_failure_rate{breaker}``: failures / outcomes in the current window;
* ``synapse_circuit_breaker_retry_after_seconds{breaker}``: seconds until a call would be
  admitted (0 when it would be now, ``+Inf`` while forced open, ``NaN`` when no time is known).

Call counters restart from 0 after ``breaker.reset()`` (Prometheus treats that as a counter
reset); transition counters do not. For transports see :class:`TransportCollector`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector

from synapse_core.breaker import (
    CircuitBreaker,
    CircuitBreakerManager,
    CircuitState,
    CircuitStats,
    default_manager,
)

if TYPE_CHECKING:
    from synapse_core.transport import Transport

__all__ = [
    "BreakerCollector",
    "TransportCollector",
    "metrics_registry",
    "named_breakers",
    "outcome_counts",
    "render_metrics",
]

_STATES = tuple(CircuitState)
# Every transition a breaker can make: the series exist from the start, at 0.
_TRANSITIONS = (
    (CircuitState.CLOSED, CircuitState.OPEN),
    (CircuitState.OPEN, CircuitState.HALF_OPEN),
    (CircuitState.HALF_OPEN, CircuitState.CLOSED),
    (CircuitState.HALF_OPEN, CircuitState.OPEN),
    (CircuitState.OPEN, CircuitState.CLOSED),
)


def named_breakers(manager: CircuitBreakerManager) -> Iterator[tuple[str, CircuitBreaker]]:
    """``(name, breaker)`` for every breaker registered now, in registration order."""
    for name in manager.names():
        breaker = manager.get_breaker(name)
        if breaker is not None:  # removed meanwhile
            yield name, breaker


def outcome_counts(stats: CircuitStats) -> tuple[tuple[str, int], ...]:
    """The recorded outcomes by label: ``success``, ``failure`` (not timeouts), ``timeout``,
    ``ignored``."""
    return (
        ("success", stats.success_count),
        ("failure", stats.failure_count - stats.timeout_count),
        ("timeout", stats.timeout_count),
        ("ignored", stats.ignored_count),
    )


class BreakerCollector(Collector):
    """The ``synapse_circuit_breaker_*`` series of every breaker in *manager*.

    *manager* defaults to ``synapse_core.default_manager``. Breakers added to or removed from
    the manager appear in or leave the next scrape.
    """

    def __init__(self, manager: CircuitBreakerManager | None = None) -> None:
        if manager is not None and not isinstance(manager, CircuitBreakerManager):
            raise TypeError(f"manager must be a CircuitBreakerManager, got {manager!r}")
        self._manager = default_manager if manager is None else manager

    def describe(self) -> Iterator[Metric]:
        """The metric families, without samples (registration does not scrape)."""
        return iter(_BreakerFamilies().all())

    def collect(self) -> Iterator[Metric]:
        families = _BreakerFamilies()
        for name, breaker in named_breakers(self._manager):
            stats = breaker.stats()
            transitions = breaker.transition_counts()
            for state in _STATES:
                families.state.add_metric([name, state.value], 1.0 if stats.state is state else 0.0)
            for outcome, value in outcome_counts(stats):
                families.calls.add_metric([name, outcome], value)
            families.rejected.add_metric([name], stats.rejection_count)
            for source, target in _TRANSITIONS:
                families.transitions.add_metric(
                    [name, source.value, target.value], transitions.get((source, target), 0)
                )
            families.failure_rate.add_metric([name], stats.window_failure_rate)
            families.retry_after.add_metric([name], _seconds(stats.retry_after))
        return iter(families.all())


def _seconds(value: float | None) -> float:
    """``NaN`` for a time that is not known (``None``)."""
    return math.nan if value is None else value


class _BreakerFamilies:
    def __init__(self) -> None:
        self.state = GaugeMetricFamily(
            "synapse_circuit_breaker_state",
            "Current state of a circuit breaker: 1 for the state it is in, 0 for the others.",
            labels=["breaker", "state"],
        )
        self.calls = CounterMetricFamily(
            "synapse_circuit_breaker_calls",
            "Calls a circuit breaker admitted, by recorded outcome.",
            labels=["breaker", "outcome"],
        )
        self.rejected = CounterMetricFamily(
            "synapse_circuit_breaker_rejected_calls",
            "Calls a circuit breaker rejected without running them.",
            labels=["breaker"],
        )
        self.transitions = CounterMetricFamily(
            "synapse_circuit_breaker_transitions",
            "State changes of a circuit breaker.",
            labels=["breaker", "from_state", "to_state"],
        )
        self.failure_rate = GaugeMetricFamily(
            "synapse_circuit_breaker_failure_rate",
            "Failures / recorded outcomes in the circuit breaker's current window (0 if none).",
            labels=["breaker"],
        )
        self.retry_after = GaugeMetricFamily(
            "synapse_circuit_breaker_retry_after_seconds",
            "Seconds until the circuit breaker admits a call (+Inf: forced open; NaN: unknown).",
            labels=["breaker"],
        )

    def all(self) -> list[Metric]:
        return [
            self.state,
            self.calls,
            self.rejected,
            self.transitions,
            self.failure_rate,
            self.retry_after,
        ]


class TransportCollector(Collector):
    """The ``synapse_transport_*`` series, per transport and peer.

    *transports* is a list of transports, or a callable returning the current ones (a service
    whose transports come and go). Labels: ``transport`` (its kind, ``tcp``/``mdns``), ``node``
    (its ``node_id``) and ``peer``.

    * ``synapse_transport_messages_sent_total{...,peer}`` /
      ``synapse_transport_messages_failed_total{...,peer}``: messages delivered to a peer, and
      those that failed (timeouts and refusals of an overloaded peer included);
    * ``synapse_transport_round_trips_total{...,peer,outcome}``: sends and probes to a peer that
      succeeded or failed (a refused message is a successful round trip);
    * ``synapse_transport_round_trip_seconds{...,peer}``: a summary (``_count``, ``_sum``) of
      the successful round trips to a peer;
    * ``synapse_transport_reliability_score{...,peer}``: 0 to 1, falls with each failure and
      rises with each success;
    * ``synapse_transport_latency_seconds{...,peer}``: the smoothed round-trip latency the
      transport's triggers judge.
    """

    def __init__(self, transports: Iterable[Transport] | Callable[[], Iterable[Transport]]) -> None:
        self._transports = transports

    def _current(self) -> list[Transport]:
        source = self._transports
        return list(source() if callable(source) else source)

    def describe(self) -> Iterator[Metric]:
        """The metric families, without samples."""
        return iter(_TransportFamilies().all())

    def collect(self) -> Iterator[Metric]:
        families = _TransportFamilies()
        for transport in self._current():
            base = [transport.kind, transport.node_id]
            for peer, link in transport.link_stats().items():
                labels = [*base, peer]
                families.sent.add_metric(labels, link.messages_sent)
                families.failed.add_metric(labels, link.messages_failed)
                families.round_trips.add_metric([*labels, "success"], link.successes)
                families.round_trips.add_metric([*labels, "failure"], link.failures)
                families.round_trip_seconds.add_metric(
                    labels, count_value=link.successes, sum_value=link.latency_sum
                )
                families.reliability.add_metric(labels, link.reliability)
                families.latency.add_metric(labels, link.latency)
        return iter(families.all())


class _TransportFamilies:
    def __init__(self) -> None:
        node = ["transport", "node"]
        peer = [*node, "peer"]
        self.sent = CounterMetricFamily(
            "synapse_transport_messages_sent", "Messages delivered to a peer.", labels=peer
        )
        self.failed = CounterMetricFamily(
            "synapse_transport_messages_failed",
            "Messages that failed to reach a peer (timeouts included).",
            labels=peer,
        )
        self.round_trips = CounterMetricFamily(
            "synapse_transport_round_trips",
            "Sends and probes to a peer, by outcome.",
            labels=[*peer, "outcome"],
        )
        self.round_trip_seconds = SummaryMetricFamily(
            "synapse_transport_round_trip_seconds",
            "Duration of the successful round trips to a peer.",
            labels=peer,
        )
        self.reliability = GaugeMetricFamily(
            "synapse_transport_reliability_score",
            "Reliability of the link to a peer, 0 (every recent round trip failed) to 1.",
            labels=peer,
        )
        self.latency = GaugeMetricFamily(
            "synapse_transport_latency_seconds",
            "Smoothed round-trip latency to a peer.",
            labels=peer,
        )

    def all(self) -> list[Metric]:
        return [
            self.sent,
            self.failed,
            self.round_trips,
            self.round_trip_seconds,
            self.reliability,
            self.latency,
        ]


def metrics_registry(
    manager: CircuitBreakerManager | None = None, *collectors: Collector
) -> CollectorRegistry:
    """A registry of its own with a :class:`BreakerCollector` over *manager* and *collectors*."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(BreakerCollector(manager))
    for collector in collectors:
        registry.register(collector)
    return registry


def render_metrics(registry: CollectorRegistry) -> bytes:
    """The Prometheus text exposition (format 0.0.4) of *registry*."""
    return generate_latest(registry)
