"""Breaker assertions that read like the requirement and fail with both timelines shown.

Each takes a breaker (an in-process ``CircuitBreaker``, or a pybreaker, aiobreaker, purgatory or
circuitbreaker breaker watched with ``breaker_timeline.watch``) or a breaker name (also for
states recorded from another process with :class:`~pytest_synapse.poller.BreakerStatePoller`),
and reads the current test's timeline unless ``timeline=`` is given. Times are on the timeline's
clock: the test's virtual clock when it uses one, else monotonic seconds.

For a name that a poller records, an assertion polls once more before it concludes (the last
sample may be up to one poll interval old), and the ones with a deadline
(:func:`assert_trips_within` with ``seconds=``, :func:`assert_closes_within`) keep polling up to
that deadline before they fail.
"""

from __future__ import annotations

import math

from pytest_synapse.leaks import assert_no_calls_while_open
from pytest_synapse.records import earliest_active_onset
from pytest_synapse.rejects import assert_rejects_fast, assert_rejects_fast_async
from pytest_synapse.run import current_run
from pytest_synapse.verdicts import (
    AnyBreaker,
    BreakerAssertionError,
    NotObservableError,
    breaker_events,
    check_count,
    check_number,
    failure,
    foreign_adapters,
    name_of,
    note,
    poll_now,
    timeline_of,
    wait_polled,
)
from synapse_core import CircuitBreaker, Timeline
from synapse_core.foreign import PROBES

__all__ = [
    "BreakerAssertionError",
    "NotObservableError",
    "assert_closes_within",
    "assert_half_open_probes_at_most",
    "assert_no_calls_while_open",
    "assert_rejects_fast",
    "assert_rejects_fast_async",
    "assert_trips_within",
    "breaker_events",
]


_NO_FAILURE_COUNT = (
    "breaker {name!r}: failure counts are only known for in-process breakers and for those "
    "watched with breaker_timeline.watch_remote(url), not for states polled with poll(fetch); "
    "use seconds="
)


def _last_heal(timeline: Timeline) -> float | None:
    ends = [s.end for s in timeline.faults if s.end is not None]
    return max(ends) if ends else None


def assert_trips_within(
    breaker: AnyBreaker,
    *,
    failures: int | None = None,
    seconds: float | None = None,
    timeline: Timeline | None = None,
) -> float:
    """The breaker opened within *failures* recorded failures and/or *seconds* of fault onset.

    Fault onset is the start of the earliest fault active when the breaker first opened (as in
    the report). Returns the trip time in seconds. A polled breaker that has not opened yet is
    polled until *seconds* after the onset of the faults active now.
    """
    __tracebackhide__ = True
    if failures is None and seconds is None:
        raise TypeError("assert_trips_within needs failures=N and/or seconds=T")
    if failures is not None:
        check_count("failures", failures, minimum=1)
    if seconds is not None:
        check_number("seconds", seconds)
    tl = timeline_of(timeline)
    name = name_of(breaker, tl)
    pollers = poll_now(tl, breaker)
    if pollers and failures is not None and not any(p.detailed for p in pollers):
        raise TypeError(_NO_FAILURE_COUNT.format(name=name))
    opened = breaker_events(tl, breaker, "opened")
    if not opened and pollers and seconds is not None:
        onset = earliest_active_onset(tl.faults, tl.clock())
        if onset is not None:
            wait_polled(
                tl, pollers, onset + seconds, lambda: bool(breaker_events(tl, breaker, "opened"))
            )
            opened = breaker_events(tl, breaker, "opened")
    if not opened:
        waited = " (polled until the deadline)" if pollers and seconds is not None else ""
        raise failure(f"breaker {name!r} never opened{waited}", tl, name)
    first = opened[0]
    onset = earliest_active_onset(tl.faults, first.at)
    trip = first.at - (onset if onset is not None else tl.started_at)
    if seconds is not None:
        if onset is None:
            raise failure(f"breaker {name!r} opened, but no fault was active then", tl, name)
        if trip > seconds:
            raise failure(
                f"breaker {name!r} opened {trip:.3f}s after fault onset; required within "
                f"{seconds:g}s",
                tl,
                name,
            )
    if failures is not None:
        count = first.detail.get("failure_count")
        if count is None:
            raise TypeError(_NO_FAILURE_COUNT.format(name=name))
        if count > failures:
            raise failure(
                f"breaker {name!r} opened after {count} failures; required within {failures}",
                tl,
                name,
            )
    note("trips_within", breaker=name, trip_seconds=trip)
    return trip


def assert_half_open_probes_at_most(breaker: AnyBreaker, k: int) -> int:
    """No half-open episode admitted more than *k* probes at once.

    For a breaker in this process, one given by name that ``watch_remote`` reads (its
    ``max_half_open_in_flight``, since the remote breaker was created or reset), or a watched
    pybreaker or aiobreaker breaker (the calls in flight at once while it was half-open, since
    watching began). purgatory and circuitbreaker do not tell when a call starts: for them it
    raises :class:`NotObservableError`.
    """
    __tracebackhide__ = True
    check_count("k", k, minimum=0)
    tl = timeline_of(None) if current_run() is not None else Timeline()
    name = name_of(breaker, tl)
    adapters = foreign_adapters(tl, breaker)
    if adapters:
        blind = sorted({a.library for a in adapters if PROBES not in a.observes})
        if blind:
            raise NotObservableError(
                f"breaker {name!r}: {' and '.join(blind)} does not tell when a call starts, so "
                "half-open probes cannot be counted (pybreaker, aiobreaker and Synapse breakers "
                "can)"
            )
        seen = max(a.max_half_open_in_flight for a in adapters)
    elif isinstance(breaker, str):
        stats = [p.stats[name] for p in poll_now(tl, breaker) if name in p.stats]
        if not stats:
            raise TypeError(
                f"breaker {name!r}: probe counts are known for in-process breakers (pass the "
                "CircuitBreaker) and for breakers watched with breaker_timeline.watch_remote(url)"
            )
        seen = max(int(s.get("max_half_open_in_flight", 0)) for s in stats)
    else:
        assert isinstance(breaker, CircuitBreaker)
        seen = breaker.stats().max_half_open_in_flight
    if seen > k:
        raise failure(
            f"breaker {name!r} admitted {seen} half-open probes at once; required <= {k}",
            tl,
            name,
        )
    note("half_open_probes", breaker=name, max_in_flight=seen)
    return seen


def assert_closes_within(
    breaker: AnyBreaker,
    seconds: float,
    *,
    after: float | None = None,
    timeline: Timeline | None = None,
) -> float:
    """The breaker closed within *seconds* after the last heal (or after time *after*).

    Returns the recovery time in seconds. A polled breaker that has not closed yet is polled
    until that deadline.
    """
    __tracebackhide__ = True
    check_number("seconds", seconds)
    tl = timeline_of(timeline)
    name = name_of(breaker, tl)
    start = after if after is not None else _last_heal(tl)
    if start is None:
        raise failure(
            f"no fault was healed, so breaker {name!r} had nothing to recover from", tl, name
        )
    heal = start

    def closed_since_heal() -> list[float]:
        return [r.at for r in breaker_events(tl, breaker, "closed") if r.at >= heal]

    pollers = poll_now(tl, breaker)
    closed = closed_since_heal()
    if not closed and pollers:
        wait_polled(tl, pollers, heal + seconds, lambda: bool(closed_since_heal()))
        closed = closed_since_heal()
    if not closed:
        seen = breaker_events(tl, breaker, "opened", "half_opened", "closed")
        state = breaker.state.value if isinstance(breaker, CircuitBreaker) else None
        for adapter in foreign_adapters(tl, breaker):
            state = adapter.state_of(name)
        state = state or (seen[-1].state if seen else "unknown")
        waited = " (polled until the deadline)" if pollers else ""
        earlier = ""
        if seen and seen[-1].kind == "closed":
            earlier = (
                f"; it closed at t={seen[-1].at - tl.started_at:.3f}s, before that heal (give "
                "after= the time the outage ended if a later fault overlapped the recovery)"
            )
        if isinstance(breaker, CircuitBreaker) and state == "open":
            due = breaker.retry_after
            if due is not None and math.isinf(due):
                earlier = "; it is held open (force_open) until force_close() or reset()"
            elif due is not None and due > seconds:
                earlier = (
                    f"; its next probe is not due for {due:.1f}s (recovery_timeout "
                    f"{breaker.config.recovery_timeout:g}s)"
                )
        raise failure(
            f"breaker {name!r} did not close after the heal at t={heal - tl.started_at:.3f}s "
            f"(state now: {state}){waited}{earlier}",
            tl,
            name,
        )
    recovery = closed[0] - heal
    if recovery > seconds:
        raise failure(
            f"breaker {name!r} closed {recovery:.3f}s after the heal; required within {seconds:g}s",
            tl,
            name,
        )
    note("closes_within", breaker=name, recovery_seconds=recovery)
    return recovery
