"""``assert_rejects_fast``: while a breaker is open, calls come back fast.

Only the calls the breaker rejected are timed. A call it admitted (a half-open probe once the
recovery timeout has passed, or any call after it closed) is counted, not timed: a 300 ms probe
is the dependency's time, not a slow rejection. Which calls were rejected is read from the
breaker itself: its ``request_rejected`` events for a breaker in this process, its polled state
before and after each call for one in another process.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any

from pytest_synapse.poller import BreakerStatePoller, StateRun
from pytest_synapse.verdicts import (
    AnyBreaker,
    breaker_events,
    check_count,
    check_number,
    failure,
    foreign_adapters,
    name_of,
    note,
    poll_now,
    timeline_of,
)
from synapse_core import BreakerRecord, CircuitBreaker, CircuitOpenError, Timeline


class _Default:
    """The type of :data:`LIBRARY_ERROR`."""

    def __repr__(self) -> str:
        return "LIBRARY_ERROR"


LIBRARY_ERROR = _Default()
"""``expect``'s default: the error the breaker's own library raises for a rejected call
(``CircuitOpenError`` for a Synapse breaker, pybreaker's ``CircuitBreakerError``, purgatory's
``OpenedState``...)."""


def assert_rejects_fast(
    breaker: AnyBreaker,
    call: Callable[[], object] | None = None,
    *,
    max_ms: float,
    calls: int = 20,
    expect: type[BaseException] | _Default | None = LIBRARY_ERROR,
    timeline: Timeline | None = None,
) -> float:
    """Make *calls* calls (20 by default); each one the breaker rejects returns within *max_ms*.

    ``call`` defaults to ``breaker.call(lambda: None)`` (for another library's breaker, a no-op
    call guarded the way that library guards calls). *expect* is the exception a rejected
    call raises: by default the breaker library's own (``CircuitOpenError``, pybreaker's or
    circuitbreaker's ``CircuitBreakerError``, purgatory's ``OpenedState``...) as when the call
    goes straight through the breaker, or what your service turns a rejection into; ``None``
    when a rejected call returns normally (a service answering 503 from its fallback). A
    rejected call that raises anything else fails.

    Which calls were rejected is read from the breaker (see the module docstring), so a
    half-open probe admitted meanwhile is counted as admitted and not timed. At least one call
    must be rejected. Returns the slowest rejected call in real milliseconds. For a coroutine
    function use :func:`assert_rejects_fast_async`.
    """
    __tracebackhide__ = True
    check = _RejectsFast(breaker, call, max_ms, calls, expect, timeline)
    for i in range(calls):
        before = check.before()
        started = time.perf_counter()
        try:
            result = check.call()
        except Exception as exc:
            check.judge(i, started, before, exc)
        else:
            if inspect.isawaitable(result):
                if inspect.iscoroutine(result):
                    result.close()  # never awaited: close it rather than leak a warning
                raise TypeError(
                    "assert_rejects_fast: call returned an awaitable, so nothing was timed; "
                    "use `await assert_rejects_fast_async(...)` for async calls"
                )
            check.judge(i, started, before, None)
    return check.verdict()


async def assert_rejects_fast_async(
    breaker: AnyBreaker,
    call: Callable[[], Awaitable[object]] | None = None,
    *,
    max_ms: float,
    calls: int = 20,
    expect: type[BaseException] | _Default | None = LIBRARY_ERROR,
    timeline: Timeline | None = None,
) -> float:
    """:func:`assert_rejects_fast` for async code: each call is awaited and timed.

    ``call`` defaults to ``breaker.call_async(...)`` of a no-op coroutine.
    """
    __tracebackhide__ = True
    if call is None and isinstance(breaker, CircuitBreaker):
        guarded = breaker

        async def call() -> object:
            return await guarded.call_async(_noop_async)

    elif call is None and not isinstance(breaker, str):
        adapter = foreign_adapters(timeline_of(timeline), breaker)[0]

        async def call() -> object:
            return await adapter.call_async(_noop_async)

    check = _RejectsFast(breaker, call, max_ms, calls, expect, timeline)
    for i in range(calls):
        before = check.before()
        started = time.perf_counter()
        try:
            await check.call()  # type: ignore[misc]
        except Exception as exc:
            check.judge(i, started, before, exc)
        else:
            check.judge(i, started, before, None)
    return check.verdict()


class _RejectsFast:
    """The checks and figures shared by the sync and async rejects-fast assertions."""

    def __init__(
        self,
        breaker: AnyBreaker,
        call: Callable[[], Any] | None,
        max_ms: float,
        calls: int,
        expect: type[BaseException] | _Default | None,
        timeline: Timeline | None,
    ) -> None:
        check_number("max_ms", max_ms, positive=True)
        check_count("calls", calls, minimum=1)
        self.breaker = breaker
        self.tl = timeline_of(timeline)
        self.name = name_of(breaker, self.tl)
        self.adapters = foreign_adapters(self.tl, breaker)
        if isinstance(expect, _Default):
            expect = self.adapters[0].rejection_error if self.adapters else CircuitOpenError
        if expect is not None and not (
            isinstance(expect, type) and issubclass(expect, BaseException)
        ):
            raise TypeError(f"expect must be an exception type or None, got {expect!r}")
        if call is None:
            if isinstance(breaker, str):
                raise TypeError("pass call=... when the breaker is given by name")
            if self.adapters:
                adapter = self.adapters[0]

                def call() -> object:
                    return adapter.call(_noop)

            else:
                assert isinstance(breaker, CircuitBreaker)
                guarded = breaker

                def call() -> object:
                    return guarded.call(_noop)

        elif not callable(call):
            raise TypeError(f"call must be a callable taking no arguments, got {call!r}")
        self.call = call
        self.max_ms, self.calls, self.expect = max_ms, calls, expect
        self.pollers: list[BreakerStatePoller] = [] if self.adapters else poll_now(self.tl, breaker)
        self.in_process = not self.pollers and (
            not isinstance(breaker, str)
            or any(not r.source.startswith("poll:") for r in breaker_events(self.tl, breaker))
        )
        if not self.pollers and not self.in_process and expect is None:
            raise TypeError(
                f"assert_rejects_fast: cannot tell which calls breaker {self.name!r} rejected: "
                "it is not a breaker of this process that the timeline records, nor polled "
                "with breaker_timeline.poll(fetch), and expect=None says a rejected call "
                "raises nothing; pass the CircuitBreaker, poll it, or give expect="
            )
        self.slowest = 0.0
        self.rejected = 0
        self.admitted: list[str] = []

    # -- per call ----------------------------------------------------------------------------

    def before(self) -> Any:
        """What tells afterwards whether the call was rejected (taken before timing starts)."""
        if self.adapters:
            return [a.open_episode(self.name) for a in self.adapters]
        if self.pollers:
            return self._polled_state()
        if self.in_process:
            return len(breaker_events(self.tl, self.breaker, "request_rejected"))
        return None

    def _polled_state(self) -> list[StateRun | None]:
        for poller in self.pollers:
            poller.poll_once()
        return [_last(p.history.get(self.name)) for p in self.pollers]

    def _was_rejected(self, before: Any, exc: Exception | None) -> bool:
        if self.adapters:
            # Open before and after, in the same spell, and nothing admitted meanwhile.
            spells = [a.open_episode(self.name) for a in self.adapters]
            rejected = any(b is not None and b == a for b, a in zip(before, spells, strict=True))
            if rejected:
                self._note_rejection()
            return rejected
        if self.pollers:
            after = self._polled_state()
            # Open before and after, and the same run of "open" polls: nothing was admitted.
            return all(
                b is not None and b is a and a.state == "open"
                for b, a in zip(before, after, strict=True)
            )
        if self.in_process:
            return len(breaker_events(self.tl, self.breaker, "request_rejected")) > int(before)
        return exc is not None and self.expect is not None and isinstance(exc, self.expect)

    def judge(self, i: int, started: float, before: Any, exc: Exception | None) -> None:
        __tracebackhide__ = True
        elapsed = (time.perf_counter() - started) * 1000.0
        where = f"call {i + 1} of {self.calls}"
        if not self._was_rejected(before, exc):
            outcome = "returned" if exc is None else f"raised {type(exc).__name__}"
            self.admitted.append(f"{where} {outcome} after {elapsed:.1f}ms")
            return
        expect, name = self.expect, self.name
        if expect is not None and not isinstance(exc, expect):
            got = "returned normally" if exc is None else f"raised {type(exc).__name__}: {exc}"
            raise failure(
                f"{where} was rejected by breaker {name!r} but {got} instead of raising "
                f"{expect.__name__} (pass expect= the exception a rejected call raises, or "
                "expect=None if it returns normally)",
                self.tl,
                name,
            ) from exc
        self.rejected += 1
        self.slowest = max(self.slowest, elapsed)

    def _note_rejection(self) -> None:
        """Put the rejection on the timeline: these libraries do not report their own."""
        source = "" if isinstance(self.breaker, str) else self.tl.source_of(self.breaker) or ""
        real = self.tl.real_clock()
        self.tl.add(
            BreakerRecord(
                breaker=self.name,
                kind="request_rejected",
                state="open",
                at=self.tl.clock(),
                breaker_time=real,
                detail={"seen_by": "assert_rejects_fast", "library": self.adapters[0].library},
                source=source,
                real_at=real,
            )
        )

    # -- verdict -----------------------------------------------------------------------------

    def _admitted_text(self) -> str:
        if not self.admitted:
            return ""
        shown = "; ".join(self.admitted[:3])
        more = f"; {len(self.admitted) - 3} more" if len(self.admitted) > 3 else ""
        return (
            f"; {len(self.admitted)} of {self.calls} calls were admitted by the breaker "
            f"(half-open probes, or it was not open) and not timed: {shown}{more}"
        )

    def verdict(self) -> float:
        __tracebackhide__ = True
        name, slowest = self.name, self.slowest
        admitted = len(self.admitted)
        if not self.rejected:
            state = self._state_now()
            raise failure(
                f"breaker {name!r} rejected none of the {self.calls} calls, so nothing was "
                f"timed (state now: {state}){self._admitted_text()}",
                self.tl,
                name,
            )
        note(
            "rejects_fast",
            breaker=name,
            max_ms=slowest,
            calls=self.calls,
            rejected=self.rejected,
            admitted=admitted,
        )
        if slowest > self.max_ms:
            raise failure(
                f"breaker {name!r}: slowest rejected call took {slowest:.3f}ms; "
                f"required <= {self.max_ms:g}ms ({self.rejected} rejected calls timed"
                f"{self._admitted_text()})",
                self.tl,
                name,
            )
        return slowest

    def _state_now(self) -> str:
        if isinstance(self.breaker, CircuitBreaker):
            return self.breaker.state.value
        if self.adapters:
            return self.adapters[0].state_of(self.name)
        for poller in self.pollers:
            state = poller.states.get(self.name)
            if state is not None:
                return state
        seen = breaker_events(self.tl, self.breaker, "opened", "half_opened", "closed")
        return seen[-1].state if seen else "unknown"


def _last(runs: list[StateRun] | None) -> StateRun | None:
    return runs[-1] if runs else None


def _noop() -> None:
    return None


async def _noop_async() -> None:
    return None
