"""Edge cases users ran into: broken predicates, aliases in a manager, absurd durations."""

from __future__ import annotations

import asyncio

import pytest

from synapse_core import (
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitBreakerManager,
    CircuitOpenError,
    CircuitState,
    TransportMetrics,
    VirtualClock,
)
from synapse_core.breaker import LatencyTrigger


class PredicateBug(Exception):
    pass


def _check(result: object) -> bool:
    if result == "weird":
        raise PredicateBug("the user's predicate broke")
    return result == 503


def _one_probe_breaker(clock: VirtualClock, **fields: object) -> CircuitBreaker:
    config = CircuitBreakerConfig(
        failure_threshold=1,
        minimum_requests=1,
        recovery_timeout=1.0,
        half_open_max_calls=1,
        success_threshold=1.0,
        **fields,  # type: ignore[arg-type]
    )
    return CircuitBreaker("p", config, clock=clock)


def test_a_raising_result_predicate_is_logged_and_the_value_is_not_a_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = VirtualClock()
    breaker = _one_probe_breaker(clock, is_failure_result=_check)
    breaker.call(lambda: 503)
    assert breaker.state is CircuitState.OPEN
    clock.advance(2.0)
    # The probe: the predicate raises, the caller still gets the value, the probe counts as a
    # success (as with exception predicates). Before, the probe stayed in flight forever.
    assert breaker.call(lambda: "weird") == "weird"
    assert breaker.state is CircuitState.CLOSED
    assert "is_failure_result" in caplog.text
    assert "the user's predicate broke" in caplog.text


def test_a_raising_result_predicate_on_the_async_path() -> None:
    clock = VirtualClock()
    breaker = _one_probe_breaker(clock, is_failure_result=_check)

    async def returning(value: object) -> object:
        return value

    async def scenario() -> None:
        await breaker.call_async(returning, 503)
        clock.advance(2.0)
        assert await breaker.call_async(returning, "weird") == "weird"

    asyncio.run(scenario())
    assert breaker.state is CircuitState.CLOSED


def test_an_interrupt_inside_a_predicate_frees_the_half_open_probe() -> None:
    def interrupted(result: object) -> bool:
        if result == "stop":
            raise KeyboardInterrupt
        return result == 503

    clock = VirtualClock()
    breaker = _one_probe_breaker(clock, is_failure_result=interrupted)
    breaker.call(lambda: 503)
    clock.advance(2.0)
    with pytest.raises(KeyboardInterrupt):
        breaker.call(lambda: "stop")
    assert breaker.call(lambda: 200) == 200  # the slot was freed: this call is the probe
    assert breaker.state is CircuitState.CLOSED


def test_an_alias_in_a_manager_does_not_duplicate_events_or_leak_a_listener() -> None:
    manager = CircuitBreakerManager()
    heard: list[str] = []
    manager.subscribe(lambda event: heard.append(event.kind))
    breaker = CircuitBreaker("x")
    manager.add_breaker("alias1", breaker)
    manager.add_breaker("alias2", breaker)
    late: list[str] = []
    manager.subscribe(lambda event: late.append(event.kind))  # subscribed after both names
    breaker.force_open()
    assert (heard, late) == (["opened"], ["opened"])
    manager.remove_breaker("alias1")
    breaker.force_close()  # still registered as alias2: still heard
    assert heard == ["opened", "closed"]
    manager.remove_breaker("alias2")
    breaker.force_open()
    assert heard == ["opened", "closed"], "the manager's listener outlived the breaker's names"
    with pytest.raises(CircuitOpenError):
        breaker.call(lambda: 1)


@pytest.mark.parametrize("value", [10**400, -(10**5000)], ids=["1e400", "-1e5000"])
def test_a_duration_too_large_for_a_float_is_a_value_error_naming_the_field(value: int) -> None:
    with pytest.raises(ValueError, match="recovery_timeout is too large"):
        CircuitBreakerConfig(recovery_timeout=value)


def test_call_refuses_a_coroutine_function_and_counts_nothing() -> None:
    breaker = CircuitBreaker("x", CircuitBreakerConfig(failure_threshold=2, minimum_requests=1))

    async def boom() -> None:
        raise ConnectionError("down")

    for _ in range(3):
        with pytest.raises(TypeError, match="call_async"):
            breaker.call(boom)
    stats = breaker.stats()
    assert (stats.success_count, stats.failure_count) == (0, 0)


def test_call_async_refuses_a_plain_function_without_tripping() -> None:
    clock = VirtualClock()
    breaker = _one_probe_breaker(clock)
    ran: list[int] = []

    def plain() -> int:
        ran.append(1)
        return 1

    async def returning() -> int:
        return 2

    async def scenario() -> None:
        for _ in range(3):
            with pytest.raises(TypeError, match=r"use breaker\.call\(fn"):
                await breaker.call_async(plain)  # type: ignore[arg-type]
        assert breaker.state is CircuitState.CLOSED  # a misuse is not the dependency failing
        breaker.force_open()
        breaker.force_close()
        with pytest.raises(ConnectionError):
            breaker.call(_raise, ConnectionError("down"))
        clock.advance(2.0)
        with pytest.raises(TypeError):
            await breaker.call_async(plain)  # type: ignore[arg-type]
        # The misused call gave its half-open probe slot back: the next call is the probe.
        assert await breaker.call_async(returning) == 2

    asyncio.run(scenario())
    assert breaker.state is CircuitState.CLOSED
    assert len(ran) == 4


def _raise(exc: BaseException) -> None:
    raise exc


def test_removing_the_trigger_that_opened_the_breaker_lets_it_recover() -> None:
    clock = VirtualClock()
    breaker = CircuitBreaker("t", CircuitBreakerConfig(recovery_timeout=5), clock=clock)
    trigger = LatencyTrigger(0.1, samples_required=2)
    breaker.add_trigger(trigger)
    for _ in range(2):
        breaker.check_external_triggers(TransportMetrics(latency=0.5))
    assert breaker.state is CircuitState.OPEN
    breaker.remove_trigger(trigger)
    clock.advance(6)
    assert breaker.would_admit()
    assert breaker.call(lambda: 1) == 1


def test_an_event_stream_shared_by_two_consumers_serves_both_and_closes_both() -> None:
    breaker = CircuitBreaker("s")

    async def scenario() -> tuple[list[str], list[str]]:
        stream = breaker.events()
        first: list[str] = []
        second: list[str] = []

        async def consume(into: list[str]) -> None:
            async for event in stream:
                into.append(event.kind)
                await asyncio.sleep(0)

        tasks = [asyncio.create_task(consume(first)), asyncio.create_task(consume(second))]
        await asyncio.sleep(0)
        for _ in range(3):
            breaker.force_open()
            breaker.force_close()
            await asyncio.sleep(0.01)
        stream.close()
        await asyncio.wait_for(asyncio.gather(*tasks), 2)
        return first, second

    first, second = asyncio.run(scenario())
    assert len(first) + len(second) == 6  # every event went to exactly one consumer


def test_a_decorated_sync_function_returning_a_coroutine_is_refused_in_every_state() -> None:
    clock = VirtualClock()
    breaker = _one_probe_breaker(clock)

    async def fetch() -> int:
        return 1

    @breaker
    def wrong() -> object:
        return fetch()  # a sync function handing back a coroutine: nothing gets awaited

    with pytest.raises(TypeError, match="call_async"):
        wrong()  # closed: the inlined fast path
    breaker.force_open()
    breaker.force_close()
    with pytest.raises(ConnectionError):
        breaker.call(_raise, ConnectionError("down"))
    clock.advance(2.0)
    with pytest.raises(TypeError, match="call_async"):
        wrong()  # half-open: through call()
    assert breaker.stats().success_count == 0
