"""assert_rejects_fast (and its async form) times only the calls the breaker rejected.

A half-open probe admitted during its calls used to be timed as a "rejected call" (a 300 ms
"rejection" that also landed in max_rejected_call_ms), failing a breaker that did the right
thing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from threaded_servers import trip

from pytest_synapse import BreakerAssertionError, assert_rejects_fast
from pytest_synapse.run import current_run
from synapse_core import CircuitOpenError


def _service(breaker: Any, clock: Any) -> Callable[[], str]:
    """A service answering 503 from its fallback; call 3 finds the recovery timeout passed,
    and its probe fails after 300 ms (the breaker opens again)."""
    calls = [0]

    def dependency() -> str:
        time.sleep(0.3)
        raise ConnectionError("still down")

    def handle() -> str:
        calls[0] += 1
        if calls[0] == 3:
            clock.advance(10)
        try:
            return breaker.call(dependency)
        except CircuitOpenError:
            return "503"
        except ConnectionError:
            return "502"

    return handle


def test_a_probe_admitted_meanwhile_is_counted_not_timed(
    circuit_breaker: Callable[..., Any], virtual_clock: Any
) -> None:
    breaker = circuit_breaker("db", failure_threshold=3, recovery_timeout=10, half_open_max_calls=1)
    trip(breaker)
    slowest = assert_rejects_fast(
        breaker, _service(breaker, virtual_clock), max_ms=100, calls=5, expect=None
    )
    assert slowest < 100
    run = current_run()
    assert run is not None
    figures = run.assertions[-1]
    assert (figures["rejected"], figures["admitted"]) == (4, 1)
    assert figures["max_ms"] < 100  # the 300 ms probe is not a rejected call
    assert max(breaker.rejected_call_ms) < 100


def test_slow_rejections_fail_and_say_how_many_calls_were_admitted(
    circuit_breaker: Callable[..., Any], virtual_clock: Any
) -> None:
    breaker = circuit_breaker("db", failure_threshold=3, recovery_timeout=10, half_open_max_calls=1)
    trip(breaker)
    handle = _service(breaker, virtual_clock)

    def slow_fallback() -> str:
        answer = handle()
        if answer == "503":
            time.sleep(0.02)  # the bug: the fallback waits on something
        return answer

    with pytest.raises(BreakerAssertionError) as info:
        assert_rejects_fast(breaker, slow_fallback, max_ms=10, calls=4, expect=None)
    message = str(info.value)
    assert "slowest rejected call took" in message
    assert "3 rejected calls timed; 1 of 4 calls were admitted by the breaker" in message
    assert "call 3 of 4 returned after" in message


def test_a_breaker_that_rejects_nothing_fails(circuit_breaker: Callable[..., Any]) -> None:
    breaker = circuit_breaker("db")
    with pytest.raises(BreakerAssertionError, match="rejected none of the 3 calls"):
        assert_rejects_fast(breaker, lambda: breaker.call(lambda: 1), max_ms=10, calls=3)


def test_a_rejection_turned_into_another_error_fails_naming_expect(
    circuit_breaker: Callable[..., Any],
) -> None:
    breaker = circuit_breaker("db")
    trip(breaker)

    def handler() -> None:
        try:
            breaker.call(lambda: 1)
        except CircuitOpenError:
            raise KeyError("no fallback") from None

    with pytest.raises(BreakerAssertionError, match="rejected by breaker 'db' but raised KeyError"):
        assert_rejects_fast(breaker, handler, max_ms=10, calls=2)


def test_a_name_nobody_records_with_expect_none_is_refused(breaker_timeline: Any) -> None:
    with pytest.raises(TypeError, match="cannot tell which calls breaker 'remote' rejected"):
        breaker_timeline.assert_rejects_fast("remote", lambda: 1, max_ms=10, expect=None)


def test_rejects_fast_refuses_an_async_call_and_has_an_async_form(
    synapse_pytester: pytest.Pytester,
) -> None:
    synapse_pytester.makepyfile(
        """
        import asyncio
        import pytest
        from synapse_core import CircuitOpenError

        async def slow_service():
            await asyncio.sleep(1.0)

        def test_sync_form_refuses_a_coroutine(circuit_breaker, breaker_timeline):
            b = circuit_breaker("svc")
            b.force_open()
            with pytest.raises(TypeError, match="assert_rejects_fast_async"):
                breaker_timeline.assert_rejects_fast(b, slow_service, max_ms=50, expect=None)
            b.force_close()

        @pytest.mark.asyncio
        async def test_async_form_times_the_awaited_call(circuit_breaker, breaker_timeline):
            b = circuit_breaker("svc")
            b.force_open()
            ms = await breaker_timeline.assert_rejects_fast_async(b, max_ms=50, calls=5)
            assert 0 < ms < 50

            async def guarded():
                return await b.call_async(slow_service)

            await breaker_timeline.assert_rejects_fast_async(b, guarded, max_ms=50)
            b.force_close()
            with pytest.raises(AssertionError, match="rejected none of the"):
                await breaker_timeline.assert_rejects_fast_async(
                    b, lambda: asyncio.sleep(0), max_ms=50, calls=1
                )
        """
    )
    synapse_pytester.runpytest().assert_outcomes(passed=2)
