"""What the breaker assertions share: their errors, the timeline they read, polled breakers.

The assertions themselves live in :mod:`pytest_synapse.assertions` (trips, closes, probes),
:mod:`pytest_synapse.rejects` (rejects fast) and :mod:`pytest_synapse.leaks` (no calls while
open).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeAlias

from pytest_synapse.poller import BreakerStatePoller, pollers_of
from pytest_synapse.render import side_by_side
from pytest_synapse.run import current_run
from synapse_core import BreakerRecord, CircuitBreaker, Timeline

if TYPE_CHECKING:
    from synapse_core.foreign import ForeignBreaker

AnyBreaker: TypeAlias = CircuitBreaker | str | object
"""What the assertions take: a Synapse breaker, a breaker name, or a watched breaker of
pybreaker, aiobreaker, purgatory (its factory) or circuitbreaker."""


class BreakerAssertionError(AssertionError):
    """A breaker did not behave as required; the message shows both timelines."""


class NotObservableError(RuntimeError):
    """An assertion was asked about something Synapse cannot observe; it checks nothing.

    Raised instead of passing vacuously (say, calls through a real Toxiproxy, which cannot tell
    when bytes passed, or through a proxy that was disabled while the breaker was open).
    """


def timeline_of(timeline: Timeline | None) -> Timeline:
    """*timeline*, or the current test's."""
    if timeline is not None:
        return timeline
    run = current_run()
    if run is None:
        raise RuntimeError(
            "no Synapse timeline for this test: pass timeline=..., or call the assertion from "
            "a test that uses a Synapse fixture (breaker_timeline, circuit_breaker, chaos_proxy)"
        )
    return run.timeline


def name_of(breaker: AnyBreaker, timeline: Timeline | None = None) -> str:
    """The breaker's name (for another library's breaker: the name its records carry)."""
    if isinstance(breaker, str):
        return breaker
    if isinstance(breaker, CircuitBreaker):
        return breaker.name
    return foreign_adapter(breaker, timeline).name


def foreign_adapter(breaker: object, timeline: Timeline | None = None) -> ForeignBreaker:
    """The adapter recording *breaker* (another library's) on *timeline* or the test's."""
    tl = timeline
    if tl is None:
        run = current_run()
        tl = run.timeline if run is not None else None
    found = [] if tl is None else tl.foreign_of(breaker)
    if found:
        return found[0]
    from synapse_core.foreign import library_of

    if library_of(breaker) is None:
        raise TypeError(
            f"expected a breaker (a synapse_core.CircuitBreaker, a breaker name, or a watched "
            f"breaker of pybreaker, aiobreaker, purgatory or circuitbreaker), got {breaker!r}"
        )
    raise ValueError(
        f"this {library_of(breaker)} breaker is not recorded on this timeline: call "
        "breaker_timeline.watch(breaker) before it acts (or mark the test "
        "@pytest.mark.synapse_watch_breakers)"
    )


def foreign_adapters(timeline: Timeline, breaker: AnyBreaker) -> list[ForeignBreaker]:
    """The adapters of another library's breaker (by object or by the name it records)."""
    if isinstance(breaker, CircuitBreaker):
        return []
    if isinstance(breaker, str):
        return timeline.foreign_of(breaker)
    return [foreign_adapter(breaker, timeline)]


def failure(message: str, timeline: Timeline, name: str) -> BreakerAssertionError:
    """The error of a failed assertion, with faults and breaker events side by side."""
    return BreakerAssertionError(
        f"{message}\n\nfaults and breaker {name!r}, side by side:\n{side_by_side(timeline, name)}"
    )


def note(kind: str, **figures: Any) -> None:
    """Keep an assertion's figures for the report."""
    run = current_run()
    if run is not None:
        run.assertions.append({"kind": kind, **figures})


def breaker_events(timeline: Timeline, breaker: AnyBreaker, *kinds: str) -> list[BreakerRecord]:
    """The records of *breaker*: by name for a name, else of that very breaker.

    Two breakers may share a name (two replicas, an old and a new instance): an assertion on
    one must not pass on what the other did. Breakers without hooks (circuitbreaker) are
    polled first, so what they did up to now is there.
    """
    timeline.refresh()
    if isinstance(breaker, str):
        return timeline.events_of(breaker, kinds or None)
    source = timeline.source_of(breaker)
    if not isinstance(breaker, CircuitBreaker):
        name = name_of(breaker, timeline)  # raises, saying what to do, if never watched
        return timeline.events_of(name, kinds or None, source=source)
    if source is None:
        raise ValueError(
            f"breaker {breaker.name!r} is not recorded on this timeline: call "
            "timeline.watch(breaker) before it acts, or pass its name to match every breaker "
            "of that name"
        )
    return timeline.events_of(breaker.name, kinds or None, source=source)


# -- breakers polled from another process -----------------------------------------------------


def poll_now(timeline: Timeline, breaker: AnyBreaker) -> list[BreakerStatePoller]:
    """For a breaker given by name, poll every poller of *timeline* once more; return those
    that know the name.

    A poller samples every ``interval`` seconds: an assertion made right after the request that
    tripped a remote breaker would otherwise conclude from a state up to one interval old.
    """
    if not isinstance(breaker, str):
        return []
    for poller in pollers_of(timeline):
        poller.poll_once()
    return pollers_of(timeline, breaker)


def wait_polled(
    timeline: Timeline,
    pollers: list[BreakerStatePoller],
    deadline: float,
    done: Callable[[], bool],
) -> None:
    """Poll until ``done()`` or the timeline clock reaches *deadline* (real clocks only).

    On a virtual clock nothing moves while we wait, so it polls once and returns.
    """
    if not pollers or timeline.clock is not timeline.real_clock:
        return
    interval = min(p.interval for p in pollers)
    while not done():
        left = deadline - timeline.clock()
        if left <= 0:
            return
        time.sleep(min(interval, left))
        for poller in pollers:
            poller.poll_once()


def check_count(what: str, value: object, *, minimum: int) -> None:
    """*value* is an int >= *minimum* (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{what} must be an integer >= {minimum}, got {value!r}")


def check_number(what: str, value: object, *, positive: bool = False) -> None:
    """*value* is a finite number >= 0 (> 0 when *positive*)."""
    bad = isinstance(value, bool) or not isinstance(value, int | float)
    if not bad:
        number = float(value)  # type: ignore[arg-type]
        bad = not math.isfinite(number) or number < 0 or (positive and number == 0)
    if bad:
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"{what} must be a finite number {bound}, got {value!r}")
