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
    VirtualClock,
)


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
