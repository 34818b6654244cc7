"""The per-test recording state (:class:`TestRun`) and the session's collection of records."""

from __future__ import annotations

import itertools
import threading
import time
import weakref
from typing import Any

from pytest_synapse.records import TestRecord, summarize_breaker
from synapse_core import (
    CircuitBreaker,
    CircuitOpenError,
    Timeline,
    VirtualClock,
    default_manager,
    watch_breakers,
)
from synapse_core.breaker.events import Unsubscribe

_keys: weakref.WeakKeyDictionary[CircuitBreaker, str] = weakref.WeakKeyDictionary()
_key_counter = itertools.count(1)
_key_lock = threading.Lock()


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


class TestRun:
    """What Synapse records while one test runs: a timeline, its breakers, assertion figures."""

    __test__ = False  # not a test class, whatever pytest's collection rules think

    def __init__(self, nodeid: str, *, virtual: bool, worker: str) -> None:
        self.nodeid = nodeid
        self.worker = worker
        self.virtual_clock = VirtualClock()
        self.timeline = Timeline(self.virtual_clock if virtual else None)
        self.clock_kind = "virtual" if virtual else "monotonic"
        self.breakers: dict[str, tuple[CircuitBreaker, str, str]] = {}
        self._keys_by_id: dict[int, str] = {}
        self.fixture_breakers: dict[str, CircuitBreaker] = {}
        self.assertions: list[dict[str, Any]] = []
        self.record: TestRecord | None = None
        self._lock = threading.Lock()
        self._stop_watching: Unsubscribe | None = None
        self.started_wall = time.time()

    def start(self) -> None:
        """Watch every breaker in the default manager and every breaker created from now on."""
        for breaker in default_manager:
            self.track(breaker, "default_manager")
        self._stop_watching = watch_breakers(lambda b: self.track(b, "created"))

    def track(self, breaker: CircuitBreaker, origin: str) -> str:
        """Record *breaker*'s events on this test's timeline (once)."""
        key = (
            f"{self.nodeid}::{breaker.name}"
            if origin == "fixture"
            else breaker_key(breaker, self.worker)
        )
        with self._lock:
            previous = self._keys_by_id.get(id(breaker))
            if previous is not None:
                if origin == "fixture" and previous != key:
                    # Announced at construction as "created"; the fixture claims it.
                    _, _, initial = self.breakers.pop(previous)
                    self.breakers[key] = (breaker, origin, initial)
                    self._keys_by_id[id(breaker)] = key
                return self._keys_by_id[id(breaker)]
            self.breakers[key] = (breaker, origin, breaker.state.value)
            self._keys_by_id[id(breaker)] = key
        self.timeline.watch(breaker)
        return key

    def snapshot(self, outcome: str, duration: float) -> TestRecord:
        """Freeze the figures now (before fixtures clean up) into a :class:`TestRecord`."""
        end = self.timeline.clock()
        summaries = []
        for key, (breaker, origin, initial) in list(self.breakers.items()):
            summary = summarize_breaker(
                self.timeline,
                key=key,
                name=breaker.name,
                origin=origin,
                initial_state=initial,
                final_state=breaker.state.value,
                end=end,
                rejected_call_ms=getattr(breaker, "rejected_call_ms", None),
            )
            if origin == "created" and not summary.events:
                continue  # a breaker the test made and never exercised: noise
            summaries.append(summary)
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

    def stop(self) -> None:
        """Stop watching (data stays)."""
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


def set_current(run: TestRun | None) -> None:
    """Called by the plugin around each test."""
    global _current
    _current = run
