"""Rules 3 and 7 under real threads and asyncio tasks."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

import pytest
from breaker_support import Boom, fail_times

import synapse_core.breaker.breaker as breaker_module
from synapse_core import (
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitOpenError,
    CircuitState,
    VirtualClock,
)

THREADS = 8
CALLS = 100_000


def test_counts_stay_exact_under_8_threads_x_100k_calls() -> None:
    _hammer(CALLS)


def test_counts_stay_exact_on_the_locked_path(monkeypatch: pytest.MonkeyPatch) -> None:
    # What a free-threaded build (no GIL) uses: every count under the breaker's lock.
    monkeypatch.setattr(breaker_module, "_LOCK_FREE", False)
    _hammer(CALLS // 10)


def test_counts_stay_exact_with_the_rate_rules_judging_every_change() -> None:
    """With rates, every failure searches the window's future (ageing) and successes go
    through the lock while one could change the verdict: counts stay exact all the same."""
    _hammer(CALLS // 5, failure_rate_threshold=0.9, minimum_requests=20)


def _hammer(calls: int, **rules: float) -> None:
    # Real clock: buckets roll over while threads race, exercising the lock-free path.
    breaker = CircuitBreaker(
        "hot",
        CircuitBreakerConfig(failure_threshold=10**9, failure_window=0.5, **rules),  # type: ignore[arg-type]
    )
    start = threading.Barrier(THREADS)
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        start.wait()
        try:
            for i in range(calls):
                failing = (i + worker) % 10 == 0
                if worker % 2:  # half the threads use the `with` form, which counts its own way
                    with contextlib.suppress(Boom), breaker:
                        if failing:
                            _fail()
                elif failing:
                    with contextlib.suppress(Boom):
                        breaker.call(_fail)
                else:
                    breaker.call(_ok)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors
    stats = breaker.stats()
    assert stats.total_requests == THREADS * calls
    assert stats.failure_count == THREADS * calls // 10
    assert stats.success_count == THREADS * calls * 9 // 10
    assert breaker.state is CircuitState.CLOSED


def test_no_lock_is_held_while_the_function_runs() -> None:
    breaker = CircuitBreaker("slow")
    inside = threading.Event()
    release = threading.Event()

    def blocking() -> None:
        inside.set()
        assert release.wait(10)

    thread = threading.Thread(target=breaker.call, args=(blocking,))
    thread.start()
    assert inside.wait(10)
    # While the first call runs, others go through and reads do not block.
    deadline = time.monotonic() + 5
    assert breaker.call(lambda: 1) == 1
    assert breaker.stats().success_count == 1
    breaker.force_open()
    breaker.force_close()
    assert time.monotonic() < deadline
    release.set()
    thread.join(10)
    assert breaker.stats().success_count == 1  # the long call straddled a state change


@pytest.mark.parametrize("max_calls", [1, 2, 5])
def test_exactly_max_probes_admitted_under_threads(max_calls: int) -> None:
    clock = VirtualClock()
    breaker = CircuitBreaker(
        "probe", CircuitBreakerConfig(half_open_max_calls=max_calls), clock=clock
    )
    fail_times(breaker, 3)
    clock.advance(10)
    barrier = threading.Barrier(16)
    admitted: list[object] = []
    rejected: list[CircuitOpenError] = []
    lock = threading.Lock()

    def attempt() -> None:
        barrier.wait()
        try:
            permit = breaker.acquire()
        except CircuitOpenError as exc:
            with lock:
                rejected.append(exc)
        else:
            with lock:
                admitted.append(permit)

    threads = [threading.Thread(target=attempt) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(admitted) == max_calls
    assert len(rejected) == 16 - max_calls
    assert breaker.state is CircuitState.HALF_OPEN


@pytest.mark.asyncio
async def test_exactly_max_probes_admitted_under_tasks() -> None:
    clock = VirtualClock()
    breaker = CircuitBreaker("probe", CircuitBreakerConfig(half_open_max_calls=3), clock=clock)
    fail_times(breaker, 3)
    clock.advance(10)
    gate = asyncio.Event()
    calls = 0

    async def probe() -> str:
        nonlocal calls
        calls += 1
        await gate.wait()
        return "ok"

    tasks = [asyncio.create_task(breaker.call_async(probe)) for _ in range(20)]
    await asyncio.sleep(0.01)
    gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert calls == 3
    assert sum(r == "ok" for r in results) == 3
    assert sum(isinstance(r, CircuitOpenError) for r in results) == 17
    assert breaker.state is CircuitState.CLOSED  # ceil(0.7 * 3) = 3 successes


def _ok() -> int:
    return 1


def _fail() -> None:
    raise Boom("x")
