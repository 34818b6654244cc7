"""A shared breaker obeys the local breaker's rules: the fleet's window is judged by the same
TripRule. One replica that flushes after every outcome trips exactly where a local breaker
trips, with the same reason; ageing trips are dated as locally."""

from __future__ import annotations

import itertools
import os
from typing import Any

import pytest
from conftest import StoreFactory
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from synapse_core import CircuitBreaker, CircuitBreakerConfig, CircuitState, VirtualClock
from synapse_core.breaker import CircuitOpened
from synapse_core.breaker.shared import SharedBreakerStore
from synapse_core.breaker.shared.verdict import judge
from synapse_core.breaker.window import SlidingWindow

EXAMPLES = int(os.environ.get("SYNAPSE_SHARED_EXAMPLES", "40"))
_names = itertools.count()

configs = st.builds(
    dict,
    failure_threshold=st.integers(1, 5),
    minimum_requests=st.integers(1, 6),
    failure_rate_threshold=st.sampled_from([None, 0.25, 0.28, 0.5, 0.7, 1.0]),
    slow=st.booleans(),
)
# (failed, slow) per outcome
outcomes = st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=25)


def build(fields: dict[str, Any]) -> CircuitBreakerConfig:
    slow = fields.pop("slow")
    return CircuitBreakerConfig(
        failure_window=1000.0,  # nothing ages out during the test
        recovery_timeout=1000.0,
        slow_call_duration=1.0 if slow else None,
        slow_call_rate_threshold=0.5 if slow else None,
        **fields,
    )


def report(breaker: CircuitBreaker, failed: bool, slow: bool) -> None:
    permit = breaker.acquire()
    duration = 2.0 if slow else 0.0
    if failed:
        permit.failure(RuntimeError("down"), duration=duration)
    else:
        permit.success(duration=duration)


@pytest.fixture
def store(make_store: StoreFactory) -> SharedBreakerStore:
    """One replica for every example (a test's examples share its fixtures)."""
    return make_store("only", flush_interval=10.0, sync_interval=10.0)


@pytest.mark.parametrize("target", ["server"], indirect=True)
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(fields=configs, sequence=outcomes)
def test_one_replica_trips_where_a_local_breaker_trips(
    store: SharedBreakerStore, fields: dict[str, Any], sequence: list[tuple[bool, bool]]
) -> None:
    """Counts, minimum_requests, exact rates and slow calls, judged after every flush."""
    same_as_local(store, fields, sequence)


@pytest.mark.parametrize("target", ["cluster"], indirect=True)
@settings(
    max_examples=max(5, EXAMPLES // 4),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(fields=configs, sequence=outcomes)
def test_one_replica_trips_where_a_local_breaker_trips_on_a_cluster(
    store: SharedBreakerStore, fields: dict[str, Any], sequence: list[tuple[bool, bool]]
) -> None:
    """The same, with the window on a cluster node (fewer examples: the rules are the same)."""
    same_as_local(store, fields, sequence)


def same_as_local(
    store: SharedBreakerStore, fields: dict[str, Any], sequence: list[tuple[bool, bool]]
) -> None:
    """One outcome at a time to a local breaker and a shared one (flushed): same states, same
    reason when they open."""
    config = build(fields)
    name = f"rules-{next(_names)}"
    shared = CircuitBreaker(name, config, store=store)
    local = CircuitBreaker(name, config, clock=VirtualClock())
    reasons: dict[str, list[str]] = {"shared": [], "local": []}
    for key, breaker in (("shared", shared), ("local", local)):
        breaker.subscribe(
            lambda e, k=key: reasons[k].append(e.reason) if isinstance(e, CircuitOpened) else None
        )
    for step, (failed, slow) in enumerate(sequence):
        report(local, failed, slow)
        report(shared, failed, slow)
        assert store.flush()
        assert shared.state is local.state, (step, shared.stats(), local.stats())
        if local.state is CircuitState.OPEN:
            assert reasons["shared"] == reasons["local"]
            break


def test_ageing_trips_the_fleet_when_a_local_breaker_would_and_dates_it_alike() -> None:
    """3 successes, then 2 failures: 40%; once the successes age out the 2 failures are 100%.
    The fleet learns at its next flush, and dates the trip when it happened."""
    config = CircuitBreakerConfig(
        failure_threshold=10, minimum_requests=2, failure_rate_threshold=0.5, failure_window=1.0
    )
    clock = VirtualClock(0.0)
    local = CircuitBreaker("ageing", config, clock=clock)
    opened: list[CircuitOpened] = []
    local.subscribe(lambda e: opened.append(e) if isinstance(e, CircuitOpened) else None)
    for failed in (False, False, False):
        report(local, failed, False)
    clock.advance(0.5)
    report(local, True, False)
    report(local, True, False)
    clock.advance(0.7)  # t = 1.2: the successes left at t = 1.0
    assert not local.would_admit()
    assert local.state is CircuitState.CLOSED  # applied at the next call
    with pytest.raises(Exception, match="open"):
        local.call(lambda: None)
    [event] = opened
    # The fleet's window as stored after its last change: successes in bucket 0, failures in
    # bucket 50; now is bucket 120 and a success arrives.
    verdict = judge(config, [(0.0, 3, 0, 0), (50.0, 0, 2, 0)], 120.0, (1, 0, 0))
    assert verdict.trip is not None
    assert verdict.trip.at_index == 100.0
    assert verdict.trip.at_index * config.failure_window / 100 == event.timestamp
    assert verdict.trip.reason == event.reason
    assert verdict.trip.failures == event.failure_count


def test_a_stored_window_that_trips_is_tripped_at_the_next_flush() -> None:
    """A replica that decided a trip and died before committing it: the next flush does."""
    config = CircuitBreakerConfig(failure_threshold=3)
    verdict = judge(config, [(7.0, 1, 3, 0)], 8.0, (0, 0, 0))
    assert verdict.trip is not None
    assert verdict.trip.at_index is None
    assert verdict.trip.reason == "3 failures in 4 calls within 30s (threshold 3)"


def test_a_batch_is_one_change_of_the_fleet_window() -> None:
    """Judged after the batch, as documented: F, F then 3 S in one flush is 2/5 < 0.5."""
    config = CircuitBreakerConfig(failure_threshold=9, failure_rate_threshold=0.5)
    assert judge(config, [], 1.0, (3, 2, 0)).trip is None
    assert judge(config, [], 1.0, (2, 2, 0)).trip is not None


def test_a_window_restored_from_counts_holds_them() -> None:
    window = SlidingWindow.restore(10.0, [(3.0, 2, 1, 0), (5.0, 4, 0, 1)])
    assert (window.total, window.failures, window.slow) == (7, 1, 1)
    window.add_counts(5.0, 1, 1, 0)
    assert (window.total, window.failures) == (9, 2)
    window.add_counts(104.0, 0, 0, 0)  # bucket 3 leaves (it is 101 buckets old)
    assert (window.total, window.failures, window.slow) == (6, 1, 1)
    assert window.lifetime_successes == 7
