"""Shared breakers show up like any other: in the health endpoints (validated against the
documented schema), in Prometheus, in the logs and on the pytest plugin's timeline, with the
replica that caused each transition and the fleet's figures."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from conftest import StoreFactory
from shared_support import wait_for
from test_shared_fleet import OPEN, fail, outcome

from synapse_core import CircuitBreaker, CircuitBreakerConfig, CircuitBreakerManager
from synapse_core.health import HealthEndpoints

SCHEMA = json.loads(
    (Path(__file__).parents[3] / "docs" / "breakers.schema.json").read_text(encoding="utf-8")
)
CONFIG = CircuitBreakerConfig(failure_threshold=2, minimum_requests=1, recovery_timeout=30)


def test_health_endpoints_and_metrics_show_a_shared_breaker(
    make_store: StoreFactory, caplog: pytest.LogCaptureFixture
) -> None:
    manager = CircuitBreakerManager()
    here = manager.add_breaker(
        "orders-db", CircuitBreaker("orders-db", CONFIG, store=make_store("here"))
    )
    there = CircuitBreaker("orders-db", CONFIG, store=make_store("there"))  # another replica
    endpoints = HealthEndpoints(manager)
    try:
        with caplog.at_level(logging.INFO, logger="synapse.breaker"):
            assert outcome(there, fail) == outcome(there, fail) == "ran"
            assert wait_for(lambda: here.state is OPEN, 3.0)
            # Listeners hear a transition just after the state changes (outside the lock).
            assert wait_for(lambda: opened_in(endpoints), 3.0)
        document = endpoints.breakers()
        jsonschema.validate(document, SCHEMA)
        entry = document["breakers"]["orders-db"]
        assert entry["state"] == "open"
        assert entry["stats"]["failure_count"] == 0  # none of them here
        fleet = entry["stats"]["fleet"]
        assert (fleet["replica"], fleet["caused_by"], fleet["state"]) == ("here", "there", "open")
        assert fleet["failure_count"] == 2
        [transition] = entry["recent_transitions"]
        assert transition["replica"] == "there"
        assert transition["reason"] == "2 failures in 2 calls within 30s (threshold 2)"
        healthy, body = endpoints.health()
        assert not healthy
        assert body["critical_open"] == ["orders-db"]
        text, _ = endpoints.metrics()
        assert b'synapse_circuit_breaker_state{breaker="orders-db",state="open"} 1.0' in text
        opened = [r for r in caplog.records if getattr(r, "synapse_event", "") == "breaker.opened"]
        assert {r.replica for r in opened} == {"there"}  # type: ignore[attr-defined]
    finally:
        endpoints.close()


def opened_in(endpoints: HealthEndpoints) -> bool:
    """Whether the health journal holds the transition yet."""
    return bool(endpoints.breakers()["breakers"]["orders-db"]["recent_transitions"])


def test_a_local_breakers_documents_are_unchanged() -> None:
    """No ``fleet`` in the stats and no ``replica`` in the transitions of a local breaker."""
    breaker = CircuitBreaker("plain", CONFIG)
    assert "fleet" not in breaker.stats().to_dict()
    for _ in range(2):
        outcome(breaker, fail)
    manager = CircuitBreakerManager()
    manager.add_breaker("plain", breaker)
    endpoints = HealthEndpoints(manager)
    try:
        breaker.force_close()
        [transition] = endpoints.breakers()["breakers"]["plain"]["recent_transitions"]
        assert "replica" not in transition
    finally:
        endpoints.close()


def test_the_plugin_timeline_records_a_shared_breaker(
    make_store: StoreFactory, breaker_timeline: Any
) -> None:
    """The pytest plugin watches every breaker made during a test, shared ones included."""
    mine = CircuitBreaker("stock", CONFIG, store=make_store("here"))
    theirs = CircuitBreaker("stock", CONFIG, store=make_store("there"))
    assert outcome(theirs, fail) == outcome(theirs, fail) == "ran"
    assert wait_for(lambda: mine.state is OPEN, 3.0)
    [opened] = breaker_timeline.events(mine, "opened")
    assert opened.detail["replica"] == "there"
    assert opened.detail["failure_count"] == 2
    assert breaker_timeline.states(mine) == ["open"]
    assert breaker_timeline.states(theirs) == ["open"]
