"""Every way to guard a call, and how exceptions and results are classified."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable

import pytest
from breaker_support import Boom, fail, fail_times, ok

from synapse_core import (
    CircuitBreaker,
    CircuitOpenError,
    CircuitState,
    RequestOutcome,
    VirtualClock,
)

MakeBreaker = Callable[..., CircuitBreaker]


def test_call_passes_arguments_and_returns(make_breaker: MakeBreaker) -> None:
    breaker = make_breaker()
    assert breaker.call(lambda a, *, b: a + b, 1, b=2) == 3
    assert breaker.stats().success_count == 1


@pytest.mark.asyncio
async def test_call_async(make_breaker: MakeBreaker) -> None:
    breaker = make_breaker()

    async def add(a: int, b: int) -> int:
        await asyncio.sleep(0)
        return a + b

    async def boom() -> None:
        raise Boom("async")

    assert await breaker.call_async(add, 1, b=2) == 3
    for _ in range(3):
        with pytest.raises(Boom):
            await breaker.call_async(boom)
    with pytest.raises(CircuitOpenError):
        await breaker.call_async(add, 1, 2)
    assert breaker.stats().success_count == 1


def test_decorator_on_sync_function_keeps_identity(make_breaker: MakeBreaker) -> None:
    breaker = make_breaker()

    def fetch(user_id: int, *, verbose: bool = False) -> str:
        """Fetch a user."""
        return f"user {user_id}"

    guarded = breaker(fetch)
    assert guarded(7) == "user 7"
    assert guarded.__wrapped__ is fetch  # type: ignore[attr-defined]
    assert guarded.__name__ == "fetch"
    assert guarded.__doc__ == "Fetch a user."
    assert inspect.signature(guarded) == inspect.signature(fetch)
    assert not inspect.iscoroutinefunction(guarded)


@pytest.mark.asyncio
async def test_decorator_on_async_function_stays_async(make_breaker: MakeBreaker) -> None:
    breaker = make_breaker()

    @breaker
    async def fetch(user_id: int) -> str:
        return f"user {user_id}"

    assert inspect.iscoroutinefunction(fetch)
    assert await fetch(3) == "user 3"
    assert "user_id" in inspect.signature(fetch).parameters


def test_decorated_calls_are_rejected_while_open(make_breaker: MakeBreaker) -> None:
    breaker = make_breaker()
    calls = []

    @breaker
    def work(fail_it: bool) -> None:
        calls.append(fail_it)
        if fail_it:
            raise Boom("x")

    for _ in range(3):
        with pytest.raises(Boom):
            work(True)
    with pytest.raises(CircuitOpenError):
        work(False)
    assert len(calls) == 3


def test_context_manager_records_outcomes(make_breaker: MakeBreaker) -> None:
    breaker = make_breaker()
    with breaker as permit:
        assert not permit.reported
    for _ in range(3):
        with pytest.raises(Boom), breaker:
            raise Boom("in block")
    assert breaker.state is CircuitState.OPEN
    ran = False
    with pytest.raises(CircuitOpenError), breaker:
        ran = True
    assert not ran
    assert breaker.stats().success_count == 1


def test_nested_context_managers_of_two_breakers(clock: VirtualClock) -> None:
    outer = CircuitBreaker("outer", clock=clock)
    inner = CircuitBreaker("inner", clock=clock)
    with outer:
        with pytest.raises(Boom), inner:
            raise Boom("inner only")
        with inner:
            pass
    assert outer.stats().success_count == 1
    assert inner.stats().failure_count == 1
    assert inner.stats().success_count == 1


def test_nested_context_manager_of_same_breaker(make_breaker: MakeBreaker) -> None:
    breaker = make_breaker(failure_threshold=5)

    def nested() -> None:
        with breaker:
            with breaker:
                pass
            raise Boom("outer")

    with pytest.raises(Boom):
        nested()
    stats = breaker.stats()
    assert (stats.success_count, stats.failure_count) == (1, 1)


@pytest.mark.asyncio
async def test_async_context_manager_per_task(make_breaker: MakeBreaker) -> None:
    breaker = make_breaker(failure_threshold=100)

    async def task(i: int) -> None:
        async with breaker:
            await asyncio.sleep(0.001 * (i % 3))
            if i % 2:
                raise Boom(str(i))

    results = await asyncio.gather(*(task(i) for i in range(20)), return_exceptions=True)
    assert sum(isinstance(r, Boom) for r in results) == 10
    stats = breaker.stats()
    assert (stats.success_count, stats.failure_count) == (10, 10)


def test_exit_without_enter_is_an_error(make_breaker: MakeBreaker) -> None:
    with pytest.raises(RuntimeError, match="without a matching __enter__"):
        make_breaker().__exit__(None, None, None)


def test_two_step_permits(make_breaker: MakeBreaker) -> None:
    breaker = make_breaker(failure_threshold=2, minimum_requests=1)
    permit = breaker.acquire()
    permit.record(RequestOutcome.SUCCESS, duration=0.01)
    with pytest.raises(RuntimeError, match="already reported"):
        permit.success()
    breaker.acquire().timeout(duration=5.0)
    stats = breaker.stats()
    assert (stats.timeout_count, stats.failure_count) == (1, 1)
    breaker.acquire().release()
    assert breaker.stats().total_requests == 2
    breaker.acquire().record(RequestOutcome.FAILURE, error=Boom("x"))
    assert breaker.state is CircuitState.OPEN
    assert breaker.try_acquire() is None
    assert isinstance(breaker.last_failure, Boom)
    breaker.force_close()
    permit = breaker.acquire()
    with pytest.raises(ValueError, match="RequestOutcome"):
        permit.record("success")  # type: ignore[arg-type]


def test_ignored_exceptions_count_as_neither(make_breaker: MakeBreaker) -> None:
    breaker = make_breaker(failure_threshold=1, minimum_requests=1, ignore_exceptions=(KeyError,))
    for _ in range(5):
        with pytest.raises(KeyError):
            breaker.call(_raise, KeyError("missing"))
    stats = breaker.stats()
    assert breaker.state is CircuitState.CLOSED
    assert (stats.success_count, stats.failure_count, stats.ignored_count) == (0, 0, 5)
    assert stats.window_requests == 0


def test_ignored_exception_in_half_open_frees_the_probe_slot(
    make_breaker: MakeBreaker, clock: VirtualClock
) -> None:
    breaker = make_breaker(ignore_exceptions=(KeyError,))
    fail_times(breaker, 3)
    clock.advance(10)
    with pytest.raises(KeyError):
        breaker.call(_raise, KeyError("x"))
    breaker.call(ok)
    breaker.call(ok)
    assert breaker.state is CircuitState.CLOSED


def test_failure_exceptions_by_type_and_predicate(make_breaker: MakeBreaker) -> None:
    breaker = make_breaker(
        failure_threshold=2,
        minimum_requests=1,
        failure_exceptions=(ConnectionError, lambda e: "503" in str(e)),
    )
    with pytest.raises(ValueError, match="bad input"):
        breaker.call(_raise, ValueError("bad input"))  # not a failure: counts as success
    with pytest.raises(RuntimeError):
        breaker.call(_raise, RuntimeError("HTTP 503"))
    assert breaker.state is CircuitState.CLOSED
    with pytest.raises(Boom):
        breaker.call(fail)
    assert breaker.state is CircuitState.OPEN
    assert breaker.stats().success_count == 1


def test_predicate_that_raises_is_not_a_match(
    make_breaker: MakeBreaker, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(exc: BaseException) -> bool:
        raise RuntimeError("bug in predicate")

    breaker = make_breaker(failure_exceptions=(broken,))
    with pytest.raises(Boom):
        breaker.call(fail)
    assert breaker.stats().success_count == 1
    assert "bug in predicate" in caplog.text


def test_is_failure_result(make_breaker: MakeBreaker) -> None:
    breaker = make_breaker(is_failure_result=lambda status: status >= 500)
    for status in (200, 503, 502, 500):
        assert breaker.call(lambda s=status: s) == status  # values are still returned
    assert breaker.state is CircuitState.OPEN
    assert breaker.stats().success_count == 1


def test_timeouts_are_failures_counted_apart(make_breaker: MakeBreaker) -> None:
    breaker = make_breaker()
    for _ in range(3):
        with pytest.raises(TimeoutError):
            breaker.call(_raise, TimeoutError())
    stats = breaker.stats()
    assert breaker.state is CircuitState.OPEN
    assert (stats.failure_count, stats.timeout_count) == (3, 3)


@pytest.mark.asyncio
async def test_cancellation_is_not_a_failure(make_breaker: MakeBreaker) -> None:
    breaker = make_breaker(failure_threshold=1, minimum_requests=1)
    started = asyncio.Event()

    async def hang() -> None:
        started.set()
        await asyncio.sleep(3600)

    task = asyncio.create_task(breaker.call_async(hang))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    stats = breaker.stats()
    assert breaker.state is CircuitState.CLOSED
    assert (stats.failure_count, stats.success_count) == (0, 0)


def test_keyboard_interrupt_is_not_a_failure(make_breaker: MakeBreaker) -> None:
    breaker = make_breaker(failure_threshold=1, minimum_requests=1)
    with pytest.raises(KeyboardInterrupt):
        breaker.call(_raise, KeyboardInterrupt())
    assert breaker.state is CircuitState.CLOSED


class Halt(BaseException):
    """A BaseException of the user's that is not an Exception."""


@pytest.mark.parametrize("exc", [SystemExit(3), GeneratorExit(), Halt()], ids=type)
def test_a_base_exception_that_is_not_an_exception_counts_as_nothing(
    make_breaker: MakeBreaker, clock: VirtualClock, exc: BaseException
) -> None:
    """They used to count as nothing while the README said "any other exception is a success";
    now the README says they are neither, like a cancellation, and frees a probe's slot."""
    breaker = make_breaker(failure_threshold=1, minimum_requests=1, half_open_max_calls=1)
    with pytest.raises(type(exc)):
        breaker.call(_raise, exc)
    stats = breaker.stats()
    assert (stats.success_count, stats.failure_count, stats.ignored_count) == (0, 0, 0)
    assert stats.window_requests == 0
    fail_times(breaker, 1)
    clock.advance(10)
    with pytest.raises(type(exc)):
        breaker.call(_raise, exc)  # the only probe: no verdict, and its slot is free again
    assert breaker.state is CircuitState.HALF_OPEN
    assert breaker.call(ok) == "ok"
    assert breaker.state is CircuitState.CLOSED


def test_a_listed_base_exception_is_a_failure_or_ignored(make_breaker: MakeBreaker) -> None:
    """``failure_exceptions=(Halt,)`` with a BaseException subclass was accepted but never
    recorded a failure."""
    failing = make_breaker("a", failure_threshold=2, failure_exceptions=(ConnectionError, Halt))
    for _ in range(2):
        with pytest.raises(Halt):
            failing.call(_raise, Halt())
    assert failing.state is CircuitState.OPEN
    assert isinstance(failing.last_failure, Halt)
    ignoring = make_breaker("b", ignore_exceptions=(Halt,))
    with pytest.raises(Halt):
        ignoring.call(_raise, Halt())
    assert ignoring.stats().ignored_count == 1


def test_predicates_are_not_asked_about_cancellations(make_breaker: MakeBreaker) -> None:
    """A predicate expects the dependency's errors (``exc.status``...), not a KeyboardInterrupt."""
    asked: list[BaseException] = []

    def predicate(exc: BaseException) -> bool:
        asked.append(exc)
        return True

    breaker = make_breaker(failure_exceptions=(predicate,), ignore_exceptions=(predicate,))
    with pytest.raises(KeyboardInterrupt):
        breaker.call(_raise, KeyboardInterrupt())
    assert asked == []
    assert breaker.stats().ignored_count == 0


def test_decorating_a_non_callable_is_a_type_error(make_breaker: MakeBreaker) -> None:
    with pytest.raises(TypeError, match="decorates a function"):
        make_breaker()(42)  # type: ignore[call-overload]


def _raise(exc: BaseException) -> None:
    raise exc


def test_permit_error_classifies_like_a_guarded_call(make_breaker: MakeBreaker) -> None:
    breaker = make_breaker(
        failure_threshold=10, ignore_exceptions=(KeyError,), failure_exceptions=(OSError,)
    )
    breaker.acquire().error(TimeoutError("slow"), duration=2.0)
    breaker.acquire().error(ConnectionError("down"))
    breaker.acquire().error(ValueError("bad input"))  # not a failure: the peer answered
    breaker.acquire().error(KeyError("ignored"))
    stats = breaker.stats()
    assert (stats.failure_count, stats.timeout_count) == (2, 1)
    assert (stats.success_count, stats.ignored_count) == (1, 1)
