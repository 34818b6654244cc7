"""``assert_no_calls_while_open``: nothing reached the dependency while its breaker was open.

Two ways to observe calls:

* a ``chaos.Proxy`` in front of the dependency (the common case): the real traffic the
  proxy saw, read from Synapse's server (:meth:`chaos.Proxy.traffic`): every connection the
  service opened and every byte it sent toward the dependency, before toxics, with times.
  The open intervals are placed on the same real clock (``BreakerRecord.real_at``, or the
  polls that saw a remote breaker open).
* a name: the calls a fake dependency noted with ``breaker_timeline.upstream_call(name)``.

A breaker in another process that ``breaker_timeline.poll`` reads states of (no transitions)
counts as open only between the first and the last poll that saw it open: a half-open probe
that starts and fails between two polls cannot be told from a call made while open, so poll
often (``interval=``), or use ``watch_remote``, whose service reports every transition.

What cannot be observed is refused with :class:`~pytest_synapse.NotObservableError`, never
passed: a real Toxiproxy (it cannot say when bytes passed), a proxy that was disabled while
the breaker was open (``down()``, ``partition(mode="reject")``, flapping: connects are refused
by the operating system and never reach the proxy), a name nothing was ever noted under.
A breaker that never opened fails: there was nothing to check.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from pytest_synapse.poller import BreakerStatePoller, pollers_of
from pytest_synapse.verdicts import (
    AnyBreaker,
    NotObservableError,
    breaker_events,
    check_number,
    failure,
    name_of,
    note,
    poll_now,
    timeline_of,
)
from synapse_core import CircuitBreaker, Timeline

if TYPE_CHECKING:
    from chaos.control.proxy import Proxy
    from chaos.control.traffic import ProxyTraffic

_INF = float("inf")


def assert_no_calls_while_open(
    breaker: AnyBreaker,
    upstream: Proxy | str | None = None,
    *,
    grace: float = 0.0,
    timeline: Timeline | None = None,
) -> None:
    """No call reached *upstream* while the breaker was open (half-open probes are allowed).

    *upstream* is the ``chaos.Proxy`` the service reaches its dependency through: every
    connection opened and every byte sent through it while the breaker was open counts as a
    call (a blackhole or latency fault does not hide them: they are counted as they reach the
    proxy). Or a name given to ``breaker_timeline.upstream_call(name)`` by a fake dependency
    (``None``: any name).

    *grace* (seconds) leaves out traffic in the first moments after each opening: calls
    already under way when the breaker opened, such as the cancel request asyncpg sends on a
    new connection after a query timed out. The default 0 counts everything.

    Raises :class:`~pytest_synapse.NotObservableError` rather than pass when the calls cannot
    be observed (see the module docstring).
    """
    __tracebackhide__ = True
    check_number("grace", grace)
    tl = timeline_of(timeline)
    poll_now(tl, breaker)
    proxy_type = getattr(sys.modules.get("chaos.control.proxy"), "Proxy", None)
    if proxy_type is not None and isinstance(upstream, proxy_type):
        _no_traffic_while_open(tl, breaker, upstream, grace)
    elif upstream is None or isinstance(upstream, str):
        _no_noted_calls_while_open(tl, breaker, upstream, grace)
    else:
        raise TypeError(
            "assert_no_calls_while_open: upstream must be the chaos.Proxy in front of the "
            "dependency (its real traffic is observed) or the name given to "
            f"breaker_timeline.upstream_call(name); got {upstream!r}"
        )


# -- open intervals ----------------------------------------------------------------------------


def _open_intervals(tl: Timeline, breaker: AnyBreaker, *, real: bool) -> list[tuple[float, float]]:
    """When the breaker was certainly open: ``(start, end)`` pairs, ``end`` inf if still open.

    On the real clock (*real*) or in record order (``seq``, for calls noted on the timeline:
    on a virtual clock a leak can share the trip's instant). A breaker polled from another
    process counts as open between the first and the last poll that saw it open, and one the
    first poll found open counts as open from that poll.
    """
    name = name_of(breaker, tl)
    pollers = pollers_of(tl, name) if isinstance(breaker, str) else []
    if pollers and real and not any(p.detailed for p in pollers):
        # Only states were polled: the breaker was certainly open between the first and the
        # last poll that saw it open. (A poller that reports each transition, as
        # watch_remote's does, dates them: its records are used below instead.)
        runs = [run for poller in pollers for run in poller.history[name]]
        return [(r.first_seen, r.last_seen) for r in runs if r.state == "open"]
    transitions = breaker_events(tl, breaker, "opened", "half_opened", "closed")

    def at(rec: Any) -> float:
        return float(rec.real_at) if real else float(rec.seq)

    intervals: list[tuple[float, float]] = []
    opened: float | None = None
    # Seen open by the first poll: open since polling began (its state before is unknown).
    polled_open = [p.history[name][0].first_seen for p in pollers if _started_open(p, name)]
    already_open = (transitions and transitions[0].kind != "opened") or (
        not transitions
        and (
            bool(polled_open)
            or (isinstance(breaker, CircuitBreaker) and breaker.state.value == "open")
        )
    )
    if already_open:
        # On the real clock from the first poll that saw it, else from when recording began
        # (in record order).
        opened = (min(polled_open, default=tl.real_started_at)) if real else 0.0
    for rec in transitions:
        if rec.kind == "opened":
            if opened is None:
                opened = at(rec)
        elif opened is not None:
            intervals.append((opened, at(rec)))
            opened = None
    if opened is not None:
        intervals.append((opened, _INF))
    return intervals


def _started_open(poller: BreakerStatePoller, name: str) -> bool:
    """Whether *poller*'s first poll found the breaker *name* open."""
    return poller.initial_states.get(name) == "open" and bool(poller.history.get(name))


def _never_opened(tl: Timeline, name: str) -> Exception:
    return failure(
        f"breaker {name!r} was never open during this test, so no call could be checked "
        "against it: make it trip first (assert_trips_within shows whether it did)",
        tl,
        name,
    )


# -- calls noted by a fake dependency ------------------------------------------------------------


def _no_noted_calls_while_open(
    tl: Timeline, breaker: AnyBreaker, upstream: str | None, grace: float
) -> None:
    __tracebackhide__ = True
    name = name_of(breaker, tl)
    marks = tl.upstream_call_marks(upstream)
    if not marks:
        what = f"to {upstream!r}" if upstream is not None else "to any upstream"
        raise NotObservableError(
            f"assert_no_calls_while_open: no call {what} was noted in this test "
            "(breaker_timeline.upstream_call(name)), so there is nothing to observe; pass the "
            "chaos.Proxy in front of the dependency to observe its real traffic"
        )
    intervals = _open_intervals(tl, breaker, real=False)
    if not intervals:
        raise _never_opened(tl, name)
    opened_at = {seq: at for at, seq in _seq_times(tl)}
    leaked = [
        at
        for at, seq in marks
        if any(a < seq < b and at - opened_at.get(a, tl.started_at) >= grace for a, b in intervals)
    ]
    if leaked:
        when = ", ".join(f"t={at - tl.started_at:.3f}s" for at in leaked[:5])
        raise failure(
            f"{len(leaked)} call(s) reached {upstream or 'the upstream'} while breaker {name!r} "
            f"was open ({when})",
            tl,
            name,
        )
    note("no_calls_while_open", breaker=name, open_intervals=len(intervals), upstream=upstream)


def _seq_times(tl: Timeline) -> list[tuple[float, float]]:
    return [(r.at, float(r.seq)) for r in tl.breaker_events]


# -- real traffic through a chaos proxy -----------------------------------------------------------


def _no_traffic_while_open(tl: Timeline, breaker: AnyBreaker, proxy: Proxy, grace: float) -> None:
    __tracebackhide__ = True
    from chaos.errors import ChaosError

    name = name_of(breaker, tl)
    intervals = _open_intervals(tl, breaker, real=True)
    if not intervals:
        raise _never_opened(tl, name)
    try:
        traffic = proxy.traffic()
    except ChaosError as exc:
        raise NotObservableError(
            f"assert_no_calls_while_open: cannot observe the traffic of proxy {proxy.name!r}: "
            f"{exc}. Run the chaos tests on Synapse's server (--synapse-toxiproxy=embedded, or "
            "synapse-chaos serve), or note the calls with breaker_timeline.upstream_call(name)"
        ) from None
    end_of_log = traffic.fetched_at
    observed = 0.0
    connections = 0
    sent = 0
    first: tuple[float, float] | None = None  # (when, the opening it followed)
    for start, end in intervals:
        end = min(end, end_of_log)
        blind = traffic.blind(start, end)
        if blind:
            raise NotObservableError(_blind_message(tl, traffic, proxy, name, start, end, blind))
        low, high = start + grace + traffic.uncertainty, end - traffic.uncertainty
        if low >= high:
            continue
        observed += high - low
        window = traffic.between(low, high)
        if window.empty:
            continue
        connections += len(window.connections)
        sent += window.bytes
        when = window.first()
        if when is not None and (first is None or when < first[0]):
            first = (when, start)
    if first is not None:
        when, opened = first
        raise failure(
            f"calls reached {proxy.upstream} through proxy {proxy.name!r} while breaker "
            f"{name!r} was open: {connections} new connection(s) and {sent} byte(s) sent "
            f"toward it, the first {when - opened:.3f}s after it opened "
            f"(t={_timeline_time(tl, when):.3f}s). A fallback or another code path still calls "
            "the dependency while the breaker rejects calls",
            tl,
            name,
        )
    note(
        "no_calls_while_open",
        breaker=name,
        open_intervals=len(intervals),
        upstream=proxy.name,
        observed_seconds=observed,
    )


def _timeline_time(tl: Timeline, real: float) -> float:
    """A real-clock time as seconds since the timeline started (its own clock when real)."""
    return real - tl.real_started_at


def _blind_message(
    tl: Timeline,
    traffic: ProxyTraffic,
    proxy: Proxy,
    name: str,
    start: float,
    end: float,
    blind: list[tuple[float, float]],
) -> str:
    lost = sum(b - a for a, b in blind)
    first = blind[0][0]
    if traffic.complete_since is not None and first < traffic.complete_since:
        why = (
            f"the server kept only the latest traffic of proxy {proxy.name!r} and dropped what "
            "came before"
        )
    else:
        why = (
            f"proxy {proxy.name!r} was disabled (down(), partition(mode='reject') or flapping), "
            "so connection attempts were refused by the operating system and never reached it"
        )
    return (
        f"assert_no_calls_while_open cannot see calls for {lost:.3f}s of the "
        f"{end - start:.3f}s breaker {name!r} was open (from t={_timeline_time(tl, first):.3f}s): "
        f"{why}. Use partition() (mode='drop') or blackhole() to cut the dependency off: the "
        "proxy then keeps accepting connections and every call is seen"
    )
