"""Breaker assertions that read like the requirement and fail with both timelines shown.

Each takes a breaker (an in-process ``CircuitBreaker``) or a breaker name (for states recorded
from another process with :class:`~pytest_synapse.poller.BreakerStatePoller`), and reads the
current test's timeline unless ``timeline=`` is given. Times are on the timeline's clock: the
test's virtual clock when it uses one, else monotonic seconds.
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from pytest_synapse.records import earliest_active_onset
from pytest_synapse.render import side_by_side
from pytest_synapse.run import current_run
from synapse_core import BreakerRecord, CircuitBreaker, CircuitOpenError, Timeline


class BreakerAssertionError(AssertionError):
    """A breaker did not behave as required; the message shows both timelines."""


def _timeline(timeline: Timeline | None) -> Timeline:
    if timeline is not None:
        return timeline
    run = current_run()
    if run is None:
        raise RuntimeError(
            "no Synapse timeline for this test: pass timeline=..., or call the assertion from "
            "a test that uses a Synapse fixture (breaker_timeline, circuit_breaker, chaos_proxy)"
        )
    return run.timeline


def _name(breaker: CircuitBreaker | str) -> str:
    return breaker if isinstance(breaker, str) else breaker.name


def _fail(message: str, timeline: Timeline, name: str) -> BreakerAssertionError:
    return BreakerAssertionError(
        f"{message}\n\nfaults and breaker {name!r}, side by side:\n{side_by_side(timeline, name)}"
    )


def _note(kind: str, **figures: Any) -> None:
    run = current_run()
    if run is not None:
        run.assertions.append({"kind": kind, **figures})


def breaker_events(
    timeline: Timeline, breaker: CircuitBreaker | str, *kinds: str
) -> list[BreakerRecord]:
    """The records of *breaker*: by name for a name, else of that very breaker.

    Two breakers may share a name (two replicas, an old and a new instance): an assertion on
    one must not pass on what the other did.
    """
    if isinstance(breaker, str):
        return timeline.events_of(breaker, kinds or None)
    source = timeline.source_of(breaker)
    if source is None:
        raise ValueError(
            f"breaker {breaker.name!r} is not recorded on this timeline: call "
            "timeline.watch(breaker) before it acts, or pass its name to match every breaker "
            "of that name"
        )
    return timeline.events_of(breaker.name, kinds or None, source=source)


def _last_heal(timeline: Timeline) -> float | None:
    ends = [s.end for s in timeline.faults if s.end is not None]
    return max(ends) if ends else None


def assert_trips_within(
    breaker: CircuitBreaker | str,
    *,
    failures: int | None = None,
    seconds: float | None = None,
    timeline: Timeline | None = None,
) -> float:
    """The breaker opened within *failures* recorded failures and/or *seconds* of fault onset.

    Fault onset is the start of the earliest fault active when the breaker first opened (as in
    the report). Returns the trip time in seconds.
    """
    __tracebackhide__ = True
    if failures is None and seconds is None:
        raise TypeError("assert_trips_within needs failures=N and/or seconds=T")
    if failures is not None:
        _check_count("failures", failures, minimum=1)
    if seconds is not None:
        _check_number("seconds", seconds)
    tl = _timeline(timeline)
    name = _name(breaker)
    opened = breaker_events(tl, breaker, "opened")
    if not opened:
        raise _fail(f"breaker {name!r} never opened", tl, name)
    first = opened[0]
    onset = earliest_active_onset(tl.faults, first.at)
    trip = first.at - (onset if onset is not None else tl.started_at)
    if seconds is not None:
        if onset is None:
            raise _fail(f"breaker {name!r} opened, but no fault was active then", tl, name)
        if trip > seconds:
            raise _fail(
                f"breaker {name!r} opened {trip:.3f}s after fault onset; required within "
                f"{seconds:g}s",
                tl,
                name,
            )
    if failures is not None:
        count = first.detail.get("failure_count")
        if count is None:
            raise TypeError(
                f"breaker {name!r}: failure counts are only known for in-process breakers; "
                "use seconds= for breakers polled from another process"
            )
        if count > failures:
            raise _fail(
                f"breaker {name!r} opened after {count} failures; required within {failures}",
                tl,
                name,
            )
    _note("trips_within", breaker=name, trip_seconds=trip)
    return trip


def assert_rejects_fast(
    breaker: CircuitBreaker | str,
    call: Callable[[], object] | None = None,
    *,
    max_ms: float,
    calls: int = 20,
    expect: type[BaseException] | None = CircuitOpenError,
    timeline: Timeline | None = None,
) -> float:
    """While open, *calls* calls each return within *max_ms* milliseconds (real time).

    ``call`` defaults to ``breaker.call(lambda: None)``. For a service in another process,
    pass a ``call`` that exercises it and ``expect=None`` (or the exception it raises while its
    breaker is open). Returns the slowest call in milliseconds. For a coroutine function use
    :func:`assert_rejects_fast_async`.
    """
    __tracebackhide__ = True
    check = _RejectsFast(breaker, call, max_ms, calls, expect, timeline)
    for i in range(calls):
        started = time.perf_counter()
        try:
            result = check.call()
        except Exception as exc:
            check.judge(i, started, exc)
        else:
            if inspect.isawaitable(result):
                if inspect.iscoroutine(result):
                    result.close()  # never awaited: close it rather than leak a warning
                raise TypeError(
                    "assert_rejects_fast: call returned an awaitable, so nothing was timed; "
                    "use `await assert_rejects_fast_async(...)` for async calls"
                )
            check.judge(i, started, None)
    return check.verdict()


async def assert_rejects_fast_async(
    breaker: CircuitBreaker | str,
    call: Callable[[], Awaitable[object]] | None = None,
    *,
    max_ms: float,
    calls: int = 20,
    expect: type[BaseException] | None = CircuitOpenError,
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

    check = _RejectsFast(breaker, call, max_ms, calls, expect, timeline)
    for i in range(calls):
        started = time.perf_counter()
        try:
            await check.call()  # type: ignore[misc]
        except Exception as exc:
            check.judge(i, started, exc)
        else:
            check.judge(i, started, None)
    return check.verdict()


class _RejectsFast:
    """The checks and figures shared by the sync and async rejects-fast assertions."""

    def __init__(
        self,
        breaker: CircuitBreaker | str,
        call: Callable[[], Any] | None,
        max_ms: float,
        calls: int,
        expect: type[BaseException] | None,
        timeline: Timeline | None,
    ) -> None:
        _check_number("max_ms", max_ms, positive=True)
        _check_count("calls", calls, minimum=1)
        if expect is not None and not (
            isinstance(expect, type) and issubclass(expect, BaseException)
        ):
            raise TypeError(f"expect must be an exception type or None, got {expect!r}")
        self.name = _name(breaker)
        self.tl = _timeline(timeline)
        if call is None:
            if isinstance(breaker, str):
                raise TypeError("pass call=... when the breaker is given by name")
            guarded = breaker

            def call() -> object:
                return guarded.call(_noop)

        elif not callable(call):
            raise TypeError(f"call must be a callable taking no arguments, got {call!r}")
        self.call = call
        self.max_ms, self.calls, self.expect = max_ms, calls, expect
        self.slowest = 0.0

    def judge(self, i: int, started: float, exc: Exception | None) -> None:
        __tracebackhide__ = True
        elapsed = (time.perf_counter() - started) * 1000.0
        expect, name, where = self.expect, self.name, f"call {i + 1} of {self.calls}"
        if exc is not None and expect is not None and not isinstance(exc, expect):
            raise _fail(
                f"{where} to breaker {name!r} raised {type(exc).__name__}: {exc} instead of "
                f"{expect.__name__}",
                self.tl,
                name,
            ) from exc
        if exc is None and expect is not None:
            raise _fail(
                f"{where} went through breaker {name!r}: it is not open "
                f"(expected {expect.__name__})",
                self.tl,
                name,
            )
        self.slowest = max(self.slowest, elapsed)

    def verdict(self) -> float:
        __tracebackhide__ = True
        name, slowest = self.name, self.slowest
        _note("rejects_fast", breaker=name, max_ms=slowest, calls=self.calls)
        if slowest > self.max_ms:
            raise _fail(
                f"breaker {name!r}: slowest rejected call took {slowest:.3f}ms; "
                f"required <= {self.max_ms:g}ms",
                self.tl,
                name,
            )
        return slowest


def _check_count(what: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{what} must be an integer >= {minimum}, got {value!r}")


def _check_number(what: str, value: object, *, positive: bool = False) -> None:
    bad = isinstance(value, bool) or not isinstance(value, int | float)
    if not bad:
        number = float(value)  # type: ignore[arg-type]
        bad = not math.isfinite(number) or number < 0 or (positive and number == 0)
    if bad:
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"{what} must be a finite number {bound}, got {value!r}")


def assert_half_open_probes_at_most(breaker: CircuitBreaker | str, k: int) -> int:
    """No half-open episode admitted more than *k* probes at once (in-process breakers)."""
    __tracebackhide__ = True
    if isinstance(breaker, str):
        raise TypeError(
            "probe counts are only known for in-process breakers; pass the CircuitBreaker"
        )
    _check_count("k", k, minimum=0)
    seen = breaker.stats().max_half_open_in_flight
    tl = _timeline(None) if current_run() is not None else Timeline()
    if seen > k:
        raise _fail(
            f"breaker {breaker.name!r} admitted {seen} half-open probes at once; required <= {k}",
            tl,
            breaker.name,
        )
    _note("half_open_probes", breaker=breaker.name, max_in_flight=seen)
    return seen


def assert_closes_within(
    breaker: CircuitBreaker | str,
    seconds: float,
    *,
    after: float | None = None,
    timeline: Timeline | None = None,
) -> float:
    """The breaker closed within *seconds* after the last heal (or after time *after*).

    Returns the recovery time in seconds.
    """
    __tracebackhide__ = True
    _check_number("seconds", seconds)
    tl = _timeline(timeline)
    name = _name(breaker)
    start = after if after is not None else _last_heal(tl)
    if start is None:
        raise _fail(
            f"no fault was healed, so breaker {name!r} had nothing to recover from", tl, name
        )
    closed = [r for r in breaker_events(tl, breaker, "closed") if r.at >= start]
    if not closed:
        if isinstance(breaker, str):
            seen = breaker_events(tl, breaker, "opened", "half_opened", "closed")
            state = seen[-1].state if seen else "unknown"
        else:
            state = breaker.state.value
        raise _fail(
            f"breaker {name!r} did not close after the heal at t={start - tl.started_at:.3f}s "
            f"(state now: {state})",
            tl,
            name,
        )
    recovery = closed[0].at - start
    if recovery > seconds:
        raise _fail(
            f"breaker {name!r} closed {recovery:.3f}s after the heal; required within {seconds:g}s",
            tl,
            name,
        )
    _note("closes_within", breaker=name, recovery_seconds=recovery)
    return recovery


def assert_no_calls_while_open(
    breaker: CircuitBreaker | str,
    upstream: str | None = None,
    *,
    timeline: Timeline | None = None,
) -> None:
    """No call reached *upstream* while the breaker was open.

    Calls are the ones noted with ``timeline.upstream_call(upstream)`` (or the
    ``breaker_timeline.upstream_call`` fixture method) by the test's fake upstream.
    """
    __tracebackhide__ = True
    tl = _timeline(timeline)
    name = _name(breaker)
    # Compare by record order, not time: on a virtual clock a leak can share the trip's instant.
    transitions = breaker_events(tl, breaker, "opened", "half_opened", "closed")
    intervals: list[tuple[int, float]] = []
    opened_seq: int | None = None
    if transitions and transitions[0].kind != "opened":
        opened_seq = 0  # it was already open when recording began
    for rec in transitions:
        if rec.kind == "opened":
            opened_seq = rec.seq
        elif opened_seq is not None:
            intervals.append((opened_seq, rec.seq))
            opened_seq = None
    if opened_seq is not None:
        intervals.append((opened_seq, float("inf")))
    leaked = [
        at for at, seq in tl.upstream_call_marks(upstream) if any(a < seq < b for a, b in intervals)
    ]
    if leaked:
        when = ", ".join(f"t={at - tl.started_at:.3f}s" for at in leaked[:5])
        raise _fail(
            f"{len(leaked)} call(s) reached {upstream or 'the upstream'} while breaker {name!r} "
            f"was open ({when})",
            tl,
            name,
        )
    _note("no_calls_while_open", breaker=name, open_intervals=len(intervals))


def _noop() -> None:
    return None


async def _noop_async() -> None:
    return None
