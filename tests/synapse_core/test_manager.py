"""CircuitBreakerManager, the default manager and breaker watching."""

from __future__ import annotations

import gc

import pytest

from synapse_core import (
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitBreakerManager,
    CircuitEvent,
    CircuitManager,
    CircuitState,
    PacketLossTrigger,
    TransportMetrics,
    VirtualClock,
    default_manager,
    get_breaker,
    live_breakers,
    watch_breakers,
)


def test_get_or_create_returns_one_breaker_per_name() -> None:
    clock = VirtualClock()
    manager = CircuitBreakerManager(CircuitBreakerConfig(failure_threshold=7), clock=clock)
    first = manager.get_or_create("db")
    assert manager.get_or_create("db") is first
    assert first.config.failure_threshold == 7
    assert manager.get_breaker("db") is first
    assert manager["db"] is first
    assert "db" in manager
    assert len(manager) == 1
    with pytest.raises(ValueError, match="different config"):
        manager.get_or_create("db", CircuitBreakerConfig(failure_threshold=2))
    assert manager.get_or_create("db", CircuitBreakerConfig(failure_threshold=7)) is first


def test_add_remove_iterate() -> None:
    manager = CircuitManager()
    assert CircuitManager is CircuitBreakerManager
    cache = CircuitBreaker("cache")
    manager.add_breaker("cache", cache)
    manager.add_breaker("cache", cache)  # same object again: fine
    with pytest.raises(ValueError, match="already registered"):
        manager.add_breaker("cache", CircuitBreaker("cache"))
    with pytest.raises(TypeError):
        manager.add_breaker("x", object())  # type: ignore[arg-type]
    manager.get_or_create("db")
    assert [b.name for b in manager] == ["cache", "db"]
    assert manager.names() == ["cache", "db"]
    assert manager.remove_breaker("cache") is cache
    assert manager.remove_breaker("cache") is None
    assert manager.get_breaker("cache") is None
    with pytest.raises(KeyError, match="known: db"):
        manager["cache"]


def test_stats_checks_and_reset_all() -> None:
    manager = CircuitBreakerManager()
    db = manager.get_or_create("db")
    db.add_trigger(PacketLossTrigger(0.1))
    manager.get_or_create("cache").force_open()
    stats = manager.get_all_stats()
    assert set(stats) == {"db", "cache"}
    assert stats["cache"].state is CircuitState.OPEN
    opened = manager.check_all_breakers(
        {"db": TransportMetrics(packet_loss=0.5), "unknown": TransportMetrics()}
    )
    assert opened == ["db"]
    manager.reset_all()
    assert all(b.state is CircuitState.CLOSED for b in manager)


def test_manager_subscription_covers_present_and_future_breakers() -> None:
    manager = CircuitBreakerManager()
    events: list[CircuitEvent] = []
    manager.get_or_create("a")
    handle = manager.subscribe(events.append)
    manager.get_or_create("b")
    manager["a"].force_open()
    manager["b"].force_open()
    handle()
    manager["a"].force_close()
    assert [(e.breaker_name, e.kind) for e in events] == [("a", "opened"), ("b", "opened")]


def test_default_manager_and_watchers() -> None:
    created: list[CircuitBreaker] = []
    with watch_breakers(created.append):
        breaker = get_breaker("test_default_manager_and_watchers")
        other = CircuitBreaker("standalone")
    CircuitBreaker("after-unwatch")
    assert created == [breaker, other]
    assert default_manager.get_breaker("test_default_manager_and_watchers") is breaker
    assert breaker in live_breakers()
    default_manager.remove_breaker("test_default_manager_and_watchers")
    del breaker, created, other
    gc.collect()
    assert all(b.name != "standalone" for b in live_breakers())
    with pytest.raises(TypeError):
        watch_breakers(3)  # type: ignore[arg-type]


def test_removed_breakers_are_no_longer_heard() -> None:
    manager = CircuitBreakerManager()
    events: list[CircuitEvent] = []
    manager.subscribe(events.append)
    breaker = manager.get_or_create("churn")
    manager.remove_breaker("churn")
    breaker.force_open()
    assert events == []
    manager.add_breaker("churn", breaker)
    breaker.force_close()
    assert [e.kind for e in events] == ["closed"]  # once, not twice
