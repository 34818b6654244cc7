"""Record the breaker states of a service running in another process, by polling them."""

from __future__ import annotations

import dataclasses
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from synapse_core import BreakerRecord, Timeline

_KIND_FOR_STATE = {"open": "opened", "half_open": "half_opened", "closed": "closed"}


@dataclasses.dataclass
class StateRun:
    """A state seen by consecutive polls, from the first to the last poll that saw it (real
    clock): the breaker was certainly in it in between."""

    state: str
    first_seen: float
    last_seen: float


@dataclasses.dataclass(frozen=True)
class PolledTransition:
    """A state change the remote side reported itself (it knows what happened between polls).

    *age* is how many seconds before the poll it happened; *detail* goes on the record
    (``reason``, ``failure_count``...).
    """

    from_state: str
    to_state: str
    age: float = 0.0
    detail: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class PolledState:
    """What a fetch can say of one breaker beyond its state.

    *transitions*: the changes since the previous poll, oldest first (each is recorded, so a
    trip and a recovery between two polls are both seen); *stats*: the breaker's own figures
    (``max_half_open_in_flight``...), kept in :attr:`BreakerStatePoller.stats`.
    """

    state: str
    transitions: tuple[PolledTransition, ...] = ()
    stats: Mapping[str, Any] | None = None


# The pollers recording onto each timeline, so an assertion on a polled name can poll once more.
_POLLERS: weakref.WeakKeyDictionary[Timeline, list[BreakerStatePoller]] = (
    weakref.WeakKeyDictionary()
)
_POLLERS_LOCK = threading.Lock()


def pollers_of(timeline: Timeline, name: str | None = None) -> list[BreakerStatePoller]:
    """The pollers recording onto *timeline* (those that have seen *name*, when given)."""
    with _POLLERS_LOCK:
        pollers = list(_POLLERS.get(timeline, ()))
    return pollers if name is None else [p for p in pollers if name in p.history]


class BreakerStatePoller:
    """Poll ``fetch() -> {breaker name: state}`` and put each state change on a timeline.

    ``fetch`` can read anything: a service's health endpoint, a file, a queue. States are the
    strings ``closed``, ``open`` and ``half_open`` (``CircuitState`` values); a fetch that knows
    more gives a :class:`PolledState` instead (the transitions since the last poll, and the
    breaker's stats), as ``breaker_timeline.watch_remote`` does. The poller runs in a
    daemon thread every *interval* seconds from :meth:`start` until :meth:`stop` (or the ``with``
    block ends); a failing fetch is counted in :attr:`errors` and retried. The breaker
    assertions then work on the recorded names exactly as on in-process breakers.
    ``on_new_breaker(name)`` is called the first time a name is seen.

    :meth:`start` polls once before it returns: the states seen then are where each breaker
    *started* (:attr:`initial_states`), not events, so a breaker already open when the test
    began is not a trip. A breaker first seen later was created during the test, closed, so a
    first sighting of it open is recorded as its opening.

    :attr:`history` keeps, per breaker, each state seen with the first and last poll that saw
    it (on the timeline's real clock): a state is certain only between those two polls, which
    is what ``assert_no_calls_while_open`` needs to tell a call made while open from a probe.
    """

    def __init__(
        self,
        fetch: Callable[[], Mapping[str, str | PolledState]],
        timeline: Timeline,
        *,
        interval: float = 0.05,
        on_new_breaker: Callable[[str], object] | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be > 0 seconds, got {interval!r}")
        self._fetch = fetch
        self._timeline = timeline
        self._interval = interval
        self._states: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._on_new = on_new_breaker
        self._poll_lock = threading.Lock()
        self._baseline = False
        self.initial_states: dict[str, str] = {}
        self.history: dict[str, list[StateRun]] = {}
        """name -> the :class:`StateRun` of each state seen, oldest first."""
        self.stats: dict[str, Mapping[str, Any]] = {}
        """name -> the last stats a :class:`PolledState` carried."""
        self.detailed = False
        """Whether the fetch reports transitions itself (:class:`PolledState`), with the
        failures that tripped a breaker."""
        self.errors = 0
        self.polls = 0
        with _POLLERS_LOCK:
            _POLLERS.setdefault(timeline, []).append(self)

    @property
    def interval(self) -> float:
        """Seconds between two polls of the background thread."""
        return self._interval

    @property
    def states(self) -> dict[str, str]:
        """The last state seen for each breaker."""
        return dict(self._states)

    def poll_once(self) -> None:
        """Fetch once and record the changes (also usable without the thread)."""
        with self._poll_lock:  # the thread and a caller may poll at once
            self._poll()

    def _poll(self) -> None:
        try:
            states = dict(self._fetch())
        except Exception:
            self.errors += 1
            return
        self.polls += 1
        seen_at = self._timeline.real_clock()
        for name, polled in states.items():
            transitions: tuple[PolledTransition, ...] = ()
            if isinstance(polled, PolledState):
                self.detailed = True
                state, transitions = polled.state, polled.transitions
                if polled.stats is not None:
                    self.stats[name] = polled.stats
            else:
                state = polled
            runs = self.history.setdefault(name, [])
            if runs and runs[-1].state == state:
                runs[-1].last_seen = seen_at
            else:
                runs.append(StateRun(state, seen_at, seen_at))
            previous = self._states.get(name)
            if state == previous and not transitions:
                continue
            self._states[name] = state
            if previous is None and self._baseline:
                self.initial_states[name] = state
            if previous is None and self._on_new is not None:
                self._on_new(name)
            if transitions and not (previous is None and self._baseline):
                self._record_transitions(name, transitions, seen_at)
                continue
            if state == previous:
                continue
            if previous is None and (self._baseline or state == "closed"):
                continue  # where it started, or a new healthy breaker: not an event
            kind = _KIND_FOR_STATE.get(state)
            if kind is None:
                continue
            now = self._timeline.clock()
            self._timeline.add(
                BreakerRecord(
                    name,
                    kind,
                    state,
                    now,
                    now,
                    {"reason": "polled", "from": previous},
                    source=f"poll:{name}",
                )
            )

    def _record_transitions(
        self, name: str, transitions: tuple[PolledTransition, ...], seen_at: float
    ) -> None:
        """Record each reported transition, dated *age* before the poll (real clocks only)."""
        timeline = self._timeline
        now = timeline.clock()
        real = timeline.clock is timeline.real_clock
        for change in transitions:
            kind = _KIND_FOR_STATE.get(change.to_state)
            if kind is None:
                continue
            age = max(0.0, change.age)
            at = max(timeline.started_at, now - age) if real else now
            timeline.add(
                BreakerRecord(
                    name,
                    kind,
                    change.to_state,
                    at,
                    at,
                    {"reason": "polled", "from": change.from_state, **change.detail},
                    source=f"poll:{name}",
                    real_at=max(timeline.real_started_at, seen_at - age),
                )
            )

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self.poll_once()
            self._stop.wait(max(0.0, self._interval - (time.monotonic() - started)))

    def start(self) -> BreakerStatePoller:
        """Start polling in a daemon thread."""
        if self._thread is None:
            if not self.polls and not self.errors:
                self._baseline = True
                try:
                    self.poll_once()
                finally:
                    self._baseline = False
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="synapse-poller", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop polling, wait for the thread, then poll one last time."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=30)
            alive = self._thread.is_alive()
            self._thread = None
            if not alive:  # never two polls at once: a fetch may still be hanging
                self.poll_once()

    def __enter__(self) -> BreakerStatePoller:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
