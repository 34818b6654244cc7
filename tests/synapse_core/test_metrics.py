"""synapse_core.metrics beyond a scrape: registration, and the shipped Grafana dashboard."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from synapse_core import CircuitBreakerConfig, CircuitBreakerManager, VirtualClock
from synapse_core.metrics import BreakerCollector, TransportCollector, metrics_registry

DOCS = Path(__file__).parents[2] / "docs"


def exported_samples() -> set[str]:
    """Every sample name the two collectors can export (counters' ``_total``, summaries')."""
    names = set()
    for collector in (BreakerCollector(CircuitBreakerManager()), TransportCollector([])):
        for family in collector.describe():
            if family.type == "counter":
                names.add(family.name + "_total")
            elif family.type == "summary":
                names.update({family.name + "_count", family.name + "_sum"})
            else:
                names.add(family.name)
    return names


def test_the_grafana_dashboard_only_queries_series_that_exist() -> None:
    dashboard = json.loads((DOCS / "grafana-dashboard.json").read_text(encoding="utf-8"))
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = {name for expr in exprs for name in re.findall(r"\bsynapse_[a-z_]+", expr)}
    assert used, "no query found"
    assert used <= exported_samples(), used - exported_samples()
    assert used >= {
        "synapse_circuit_breaker_state",
        "synapse_circuit_breaker_calls_total",
        "synapse_circuit_breaker_rejected_calls_total",
        "synapse_circuit_breaker_transitions_total",
    }


def test_registering_does_not_scrape_and_names_do_not_collide() -> None:
    manager = CircuitBreakerManager()
    registry = metrics_registry(manager)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        registry.register(BreakerCollector(manager))
    assert isinstance(registry, CollectorRegistry)


def test_a_manager_of_another_type_is_refused() -> None:
    with pytest.raises(TypeError, match="CircuitBreakerManager"):
        BreakerCollector(object())  # type: ignore[arg-type]


def scraped_retry_after(manager: CircuitBreakerManager) -> float:
    """The one ``synapse_circuit_breaker_retry_after_seconds`` sample a scrape of *manager* has."""
    [value] = [
        sample.value
        for family in BreakerCollector(manager).collect()
        for sample in family.samples
        if sample.name == "synapse_circuit_breaker_retry_after_seconds"
    ]
    return value


def test_retry_after_is_nan_while_no_time_is_known() -> None:
    """With every half-open probe out, no time admits the next call: the series says NaN (not
    0, which would read as "admits now")."""
    clock = VirtualClock()
    manager = CircuitBreakerManager(clock=clock)
    config = CircuitBreakerConfig(
        failure_threshold=1, minimum_requests=1, recovery_timeout=5, half_open_max_calls=1
    )
    breaker = manager.get_or_create("db", config)
    with pytest.raises(ZeroDivisionError):
        breaker.call(lambda: 1 / 0)
    clock.advance(5)
    probe = breaker.acquire()
    assert breaker.stats().retry_after is None
    assert math.isnan(scraped_retry_after(manager)), "an unknown retry time must scrape as NaN"
    probe.success()
    assert scraped_retry_after(manager) == 0.0
