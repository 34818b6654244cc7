"""The per-test recording state (:class:`TestRun`) and the session's collection of records."""

from __future__ import annotations

import itertools
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from pytest_synapse.records import BreakerSummary, TestRecord, summarize_breaker
from synapse_core import (
    CircuitBreaker,
    CircuitOpenError,
    Timeline,
    VirtualClock,
    default_manager,
    live_breakers,
    watch_breakers,
)
from synapse_core.breaker.events import Unsubscribe

if TYPE_CHECKING:
    from pytest_synapse.autowatch import AutoWatch

_keys: weakref.WeakKeyDictionary[CircuitBreaker, str] = weakref.WeakKeyDictionary()
_key_counter = itertools.count(1)
_key_lock = threading.Lock()


_foreign_keys: weakref.WeakKeyDictionary[object, dict[str, str]] = weakref.WeakKeyDictionary()


def foreign_key(obj: object, name: str, worker: str) -> str:
    """:func:`breaker_key` for another library's breaker: one per name (a purgatory factory
    holds several circuits), ``<worker>:<name>#<n>`` like any breaker's."""
    with _key_lock:
        keys = _foreign_keys.setdefault(obj, {})
        key = keys.get(name)
        if key is None:
            key = keys[name] = f"{worker}:{name}#{next(_key_counter)}"
        return key


def breaker_key(breaker: CircuitBreaker, worker: str) -> str:
    """A process-wide identity for a breaker that survives across tests."""
    with _key_lock:
        key = _keys.get(breaker)
        if key is None:
            key = f"{worker}:{breaker.name}#{next(_key_counter)}"
            _keys[breaker] = key
        return key


class MeasuredBreaker(CircuitBreaker):
    """A breaker made by the ``circuit_breaker`` fixture: it also times its rejected calls.

    The time is real (``time.perf_counter``) whatever clock the breaker runs on, because it
    measures what a caller waits for a rejection.
    """

    __slots__ = ("rejected_call_ms",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rejected_call_ms: list[float] = []

    def call(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return super().call(fn, *args, **kwargs)
        except CircuitOpenError:
            self.rejected_call_ms.append((time.perf_counter() - started) * 1000.0)
            raise

    async def call_async(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await super().call_async(fn, *args, **kwargs)
        except CircuitOpenError:
            self.rejected_call_ms.append((time.perf_counter() - started) * 1000.0)
            raise

    def acquire(self) -> Any:
        started = time.perf_counter()
        try:
            return super().acquire()
        except CircuitOpenError:
            self.rejected_call_ms.append((time.perf_counter() - started) * 1000.0)
            raise

    def __enter__(self) -> Any:
        started = time.perf_counter()
        try:
            return super().__enter__()
        except CircuitOpenError:
            self.rejected_call_ms.append((time.perf_counter() - started) * 1000.0)
            raise


class WatchedBreaker(NamedTuple):
    """One breaker a test records, under its report key."""

    breaker: CircuitBreaker
    origin: str
    """How the test came to watch it: ``fixture``, ``default_manager``, ``existing``, ``created``
    (``polled`` breakers are not kept here)."""
    initial_state: str
    """Its state when watching began."""
    source: str
    """The tag of its events on the timeline."""


class TestRun:
    """What Synapse records while one test runs: a timeline, its breakers, assertion figures."""

    __test__ = False  # not a test class, whatever pytest's collection rules think

    def __init__(self, nodeid: str, *, virtual: bool, worker: str) -> None:
        self.nodeid = nodeid
        self.worker = worker
        self.virtual_clock = VirtualClock()
        self.timeline = Timeline(self.virtual_clock if virtual else None)
        self.clock_kind = "virtual" if virtual else "monotonic"
        # report key -> the breaker watched under it
        self.breakers: dict[str, WatchedBreaker] = {}
        self._keys_by_id: dict[int, str] = {}
        self._handles: dict[int, Unsubscribe] = {}
        self._untracked: set[int] = set()
        # id -> (watched object of another library, origin, initial states by name, source)
        self.foreign: dict[int, tuple[object, str, dict[str, str], str]] = {}
        self.polled: dict[str, Callable[[], str | None]] = {}
        self.polled_initial: dict[str, Callable[[], str | None]] = {}
        self.fixture_breakers: dict[str, CircuitBreaker] = {}
        self.assertions: list[dict[str, Any]] = []
        self.record: TestRecord | None = None
        self._lock = threading.Lock()
        self._stop_watching: Unsubscribe | None = None
        self.auto_watch: AutoWatch | None = None
        self.started_wall = time.time()

    def use_virtual_clock(self) -> None:
        """Put the timeline on the virtual clock, if nothing was recorded on it yet.

        For a test that asks for ``virtual_clock`` or ``circuit_breaker`` late: its breakers
        run on the virtual clock, so their timeline must too. Once something is recorded, two
        clocks on one timeline would make its times meaningless: that is an error.
        """
        timeline = self.timeline
        if self.clock_kind == "virtual":
            return
        if timeline.breaker_events or timeline.faults:
            raise RuntimeError(
                f"{self.nodeid}: virtual_clock was asked for after this test's timeline had "
                "recorded events on the real clock; request virtual_clock (or circuit_breaker) "
                "as a test argument, or call request.getfixturevalue('virtual_clock') first"
            )
        timeline.clock = self.virtual_clock
        timeline.started_at = self.virtual_clock()
        self.clock_kind = "virtual"

    def start(self) -> None:
        """Watch every breaker alive now (default manager first) and every one created later."""
        for breaker in default_manager:
            self.track(breaker, "default_manager")
        for breaker in live_breakers():
            self.track(breaker, "existing")
        self._stop_watching = watch_breakers(lambda b: self.track(b, "created"))

    def track(self, breaker: CircuitBreaker, origin: str) -> str:
        """Record *breaker*'s events on this test's timeline (once)."""
        key = (
            f"{self.nodeid}::{breaker.name}"
            if origin == "fixture"
            else breaker_key(breaker, self.worker)
        )
        source = breaker_key(breaker, self.worker)
        with self._lock:
            if id(breaker) in self._untracked:
                return key
            previous = self._keys_by_id.get(id(breaker))
            if previous is not None:
                if origin == "fixture" and previous != key:
                    # Announced at construction as "created"; the fixture claims it.
                    self.breakers[key] = self.breakers.pop(previous)._replace(origin=origin)
                    self._keys_by_id[id(breaker)] = key
                return self._keys_by_id[id(breaker)]
            self.breakers[key] = WatchedBreaker(breaker, origin, breaker.state.value, source)
            self._keys_by_id[id(breaker)] = key
            self._handles[id(breaker)] = self.timeline.watch(breaker, source=source)
        return key

    def track_foreign(self, obj: object, origin: str, name: str | None = None) -> None:
        """Record a breaker of pybreaker, aiobreaker, purgatory or circuitbreaker (once).

        ``TypeError`` for an object of none of them.
        """
        with self._lock:
            if id(obj) in self.foreign and name is None:
                return
        self.timeline.watch(obj, name=name)
        adapters = self.timeline.foreign_of(obj)
        if not adapters:
            return  # the timeline is closed: the test is over
        initial: dict[str, str] = {}
        for adapter in adapters:
            for each in adapter.names():
                initial.setdefault(each, adapter.state_of(each))
        with self._lock:
            known = self.foreign.get(id(obj))
            if known is not None:
                known[2].update({k: v for k, v in initial.items() if k not in known[2]})
                return
            self.foreign[id(obj)] = (obj, origin, initial, self.timeline.source_of(obj) or "")

    def untrack(self, breaker: CircuitBreaker) -> None:
        """Leave *breaker* out of this test's record (e.g. a property test's private breakers)."""
        with self._lock:
            self._untracked.add(id(breaker))
            key = self._keys_by_id.pop(id(breaker), None)
            if key is not None:
                self.breakers.pop(key, None)
            handle = self._handles.pop(id(breaker), None)
        if handle is not None:
            handle()

    def track_polled(
        self,
        name: str,
        current_state: Callable[[], str | None],
        initial_state: Callable[[], str | None] = lambda: None,
    ) -> None:
        """Report a breaker whose states a poller records under *name* (another process).

        *initial_state* gives its state when polling began, if it was seen then.
        """
        self.polled[name] = current_state
        self.polled_initial[name] = initial_state

    def snapshot(self, outcome: str, duration: float) -> TestRecord:
        """Freeze the figures now (before fixtures clean up) into a :class:`TestRecord`."""
        end = self.timeline.clock()
        summaries = []
        for key, (breaker, origin, initial, source) in list(self.breakers.items()):
            summary = summarize_breaker(
                self.timeline,
                key=key,
                name=breaker.name,
                origin=origin,
                initial_state=initial,
                final_state=breaker.state.value,
                end=end,
                source=source,
                rejected_call_ms=getattr(breaker, "rejected_call_ms", None),
            )
            if origin != "fixture" and not summary.events:
                continue  # nothing happened to it in this test: noise (its own tests cover it)
            summaries.append(summary)
        summaries.extend(self._foreign_summaries(end))
        for name, current_state in self.polled.items():
            first = self.polled_initial.get(name, lambda: None)()
            summaries.append(
                summarize_breaker(
                    self.timeline,
                    key=f"{self.worker}:{name}@polled",
                    name=name,
                    origin="polled",
                    initial_state=first or "closed",
                    final_state=current_state() or "closed",
                    end=end,
                    source=f"poll:{name}",
                )
            )
        self.record = TestRecord(
            nodeid=self.nodeid,
            outcome=outcome,
            duration=duration,
            clock=self.clock_kind,
            started_at=self.timeline.started_at,
            ended_at=end,
            faults=[span.to_dict() for span in self.timeline.faults],
            breakers=summaries,
            assertions=list(self.assertions),
            worker=self.worker,
        )
        return self.record

    def _foreign_summaries(self, end: float) -> list[BreakerSummary]:
        self.timeline.refresh()
        summaries = []
        for obj, origin, initial, source in list(self.foreign.values()):
            for adapter in self.timeline.foreign_of(obj):
                try:
                    names = adapter.names()
                except Exception:  # the library could not list them: the records still can
                    names = list(initial)
                recorded = {r.breaker for r in self.timeline.breaker_events if r.source == source}
                for name in sorted(set(names) | recorded):
                    summary = summarize_breaker(
                        self.timeline,
                        key=foreign_key(obj, name, self.worker),
                        name=name,
                        origin=origin,
                        initial_state=initial.get(name, "closed"),
                        final_state=adapter.state_of(name),
                        end=end,
                        source=source,
                    )
                    summary.library = adapter.library
                    if origin == "auto" and not summary.events:
                        continue  # created or found, but nothing happened to it
                    summaries.append(summary)
        return summaries

    def stop(self) -> None:
        """Stop watching (data stays)."""
        if self.auto_watch is not None:
            self.auto_watch.stop()
            self.auto_watch = None
        if self._stop_watching is not None:
            self._stop_watching()
            self._stop_watching = None
        self.timeline.close()

    @property
    def interesting(self) -> bool:
        """Whether this test produced anything worth a report entry."""
        record = self.record
        return record is not None and bool(record.faults or record.breakers or record.assertions)


_current: TestRun | None = None


def current_run() -> TestRun | None:
    """The run of the test executing now, if Synapse is recording it."""
    return _current


def set_current(run: TestRun | None) -> TestRun | None:
    """Called by the plugin around each test; returns the run it replaces (to restore later).

    Restoring matters when a test runs pytest in-process (pytester): the inner session must
    not leave the outer test without its run.
    """
    global _current
    previous, _current = _current, run
    return previous
