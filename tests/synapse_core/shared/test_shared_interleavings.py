"""Random interleavings of calls, probes and their reports across three replicas on a real
Redis (Hypothesis): a half-open episode never has more than ``half_open_max_calls`` probes
admitted and not released fleet-wide (a released probe gives its slot back, as locally), and
once the fleet is closed every replica is closed within the documented propagation bound
(``sync_interval + timeout``; pub/sub normally does it in milliseconds).

``SYNAPSE_SHARED_EXAMPLES=200`` searches deeper."""

from __future__ import annotations

import gc
import itertools
import os
import threading
import time
from collections import Counter
from typing import Any

import pytest
from conftest import StoreFactory
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shared_support import Target, wait_for

from synapse_core import CallPermit, CircuitBreaker, CircuitBreakerConfig, CircuitState
from synapse_core.breaker.shared import SharedBreakerStore

EXAMPLES = int(os.environ.get("SYNAPSE_SHARED_EXAMPLES", "12"))
SYNC, TIMEOUT = 0.5, 0.25
BOUND = SYNC + TIMEOUT + 0.5  # the documented bound, and slack for a loaded 2-core machine
CONFIG = CircuitBreakerConfig(
    failure_threshold=2,
    minimum_requests=1,
    recovery_timeout=0.03,
    half_open_max_calls=3,
    success_threshold=0.6,  # 2 successes close, a second failure re-opens
)
_names = itertools.count()
Episode = tuple[str, int]  # the fleet's (token, epoch) of a half-open episode

# Weighted so that episodes happen: trips, waits past the recovery timeout, bursts of probes.
KINDS = ["acquire"] * 4 + ["report"] * 3 + ["fail"] * 2 + ["succeed", "sleep", "trip", "burst"]
steps = st.lists(
    st.tuples(
        st.sampled_from(KINDS),
        st.integers(0, 2),
        st.sampled_from(["success", "success", "failure", "release"]),
        st.sampled_from([0.0, 0.01, 0.035, 0.06]),
    ),
    min_size=4,
    max_size=40,
)


class Fleet:
    """Three replicas of one breaker, and what the test saw them do."""

    def __init__(self, stores: list[SharedBreakerStore], redis: Any, prefix: str) -> None:
        self.name = f"mix-{next(_names)}"
        self.breakers = [CircuitBreaker(self.name, CONFIG, store=store) for store in stores]
        # Permits not reported yet, each with the episode it counts in (None: a closed call).
        self.held: list[list[tuple[CallPermit, Episode | None]]] = [[] for _ in stores]
        self.granted: Counter[Episode] = Counter()  # probes held (admitted, not released)
        self.lock = threading.Lock()
        self.violations: list[str] = []  # seen in any thread, asserted in the test's
        self.redis = redis
        self.state_key = f"{prefix}:v1:{{{self.name}}}:state"

    def run(self, step: tuple[str, int, str, float]) -> None:
        kind, arg, how, pause = step
        if kind == "sleep":
            time.sleep(pause)
            return
        if kind == "trip":  # failures on two replicas, then past the recovery timeout
            self.run(("fail", arg, how, pause))
            self.run(("fail", (arg + 1) % 3, how, pause))
            time.sleep(0.04)
            return
        if kind == "burst":  # two threads per replica ask at the same moment
            start = threading.Barrier(6)

            def attempt(index: int) -> None:
                start.wait()
                self.run(("acquire", index, how, pause))

            threads = [threading.Thread(target=attempt, args=(i % 3,)) for i in range(6)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            return
        breaker = self.breakers[arg]
        if kind == "fail":
            permit = breaker.try_acquire()
            if permit is not None:
                permit.failure(RuntimeError("down"))
        elif kind == "succeed":
            permit = breaker.try_acquire()
            if permit is not None:
                permit.success()
        elif kind == "acquire":
            permit = breaker.try_acquire()
            if permit is not None:
                episode = self._count_probe(breaker, permit)
                with self.lock:
                    self.held[arg].append((permit, episode))
        elif self.held[arg]:
            permit, episode = self.held[arg].pop(0)
            if how == "release" and episode is not None:
                # A released probe gives its slot back, as locally (it was stopped, not
                # answered); the fleet hears a moment later, and grants none on it before.
                with self.lock:
                    self.granted[episode] -= 1
            getattr(permit, how)()

    def _count_probe(self, breaker: CircuitBreaker, permit: CallPermit) -> Episode | None:
        """A probe counts toward the fleet's episode its breaker mirrored when admitted."""
        link = breaker._shared
        assert link is not None
        with breaker._lock:
            fleet = link.fleet
            if (
                breaker._state is not CircuitState.HALF_OPEN
                or link.synced_epoch != permit.epoch
                or fleet is None
            ):
                return None  # admitted as a closed call, or its episode is already over
            key = (fleet.token, fleet.epoch)
        with self.lock:
            self.granted[key] += 1
            if self.granted[key] > CONFIG.half_open_max_calls:
                self.violations.append(f"episode {key}: {self.granted[key]} probes held")
        return key

    def check_closed_reaches_everyone(self) -> None:
        state = self.redis.hmget(self.state_key, "state", "epoch")
        if state[0] != b"closed":
            return
        epoch = state[1]

        def settled() -> bool:
            if all(b.state is CircuitState.CLOSED for b in self.breakers):
                return True
            return self.redis.hget(self.state_key, "epoch") != epoch  # the fleet moved on

        assert wait_for(settled, BOUND), [b.stats() for b in self.breakers]

    def close(self) -> None:
        for permits in self.held:
            for permit, _ in permits:
                permit.release()


@pytest.fixture
def stores(make_store: StoreFactory) -> list[SharedBreakerStore]:
    """Three replicas for every example (a test's examples share its fixtures)."""
    return [make_store(f"r{i}", sync_interval=SYNC, timeout=TIMEOUT) for i in range(3)]


def interleavings(
    stores: list[SharedBreakerStore], target: Target, prefix: str, plan: list[Any]
) -> None:
    redis = target.client()
    fleet = Fleet(stores, redis, prefix)
    try:
        for step in plan:
            fleet.run(step)
            assert not fleet.violations, fleet.violations
            fleet.check_closed_reaches_everyone()
    finally:
        fleet.close()
        redis.close()
        del fleet
        gc.collect()  # the breakers' links leave their stores


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(plan=steps)
@pytest.mark.parametrize("target", ["server"], indirect=True)
def test_interleavings_on_a_server(
    stores: list[SharedBreakerStore], target: Target, prefix: str, plan: list[Any]
) -> None:
    interleavings(stores, target, prefix, plan)


@settings(
    max_examples=max(3, EXAMPLES // 3),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(plan=steps)
@pytest.mark.parametrize("target", ["cluster"], indirect=True)
def test_interleavings_on_a_cluster(
    stores: list[SharedBreakerStore], target: Target, prefix: str, plan: list[Any]
) -> None:
    interleavings(stores, target, prefix, plan)
