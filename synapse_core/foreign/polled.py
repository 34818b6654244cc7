"""circuitbreaker breakers, watched by polling their state.

The ``circuitbreaker`` package has no hooks, so a daemon thread reads each watched breaker's
public state (``state``, ``failure_count``) every :data:`POLL_INTERVAL` seconds, and once more
whenever an assertion or the report reads the timeline. It dates what it finds from the
breaker's own record of when it opened (its monotonic ``_opened`` time, the one attribute read
that is not public), so an opening and the half-open moment (``recovery_timeout`` later) are
exact; a closing is dated by the poll that saw it. Rejections and half-open probes leave no
trace in its state: rejections are seen only by the assertion that makes the calls, probes not
at all (its half-open state admits every call).
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from typing import Any

from synapse_core.breaker.events import Unsubscribe
from synapse_core.clock import Clock, monotonic_clock
from synapse_core.foreign.base import (
    FAILURE_COUNT,
    ForeignBreaker,
    ForeignEvent,
    Sink,
    opened_detail,
)

POLL_INTERVAL = 0.01
"""Seconds between two polls of a watched circuitbreaker (its closings are dated this finely)."""


class CircuitbreakerBreaker(ForeignBreaker):
    """A ``circuitbreaker.CircuitBreaker`` (or a function it decorates: pass the breaker)."""

    library = "circuitbreaker"
    observes = frozenset({FAILURE_COUNT})
    polled = True

    def __init__(self, obj: object, name: str | None, *, clock: Clock = monotonic_clock) -> None:
        super().__init__(obj, name)
        # circuitbreaker reads time.monotonic itself; its times are only comparable to that.
        self._clock = clock
        self._poll_lock = threading.Lock()
        self._sinks: list[Sink] = []
        self._last = self.state
        self._spell: float | None = self._opened() if self._last != "closed" else None
        self._half_seen = self._last == "half_open"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def rejection_error(self) -> type[BaseException]:
        import circuitbreaker

        error: type[BaseException] = circuitbreaker.CircuitBreakerError
        return error

    def _opened(self) -> float:
        return float(self.obj._opened)  # type: ignore[attr-defined]

    def state_of(self, name: str) -> str:
        return str(self.obj.state)  # type: ignore[attr-defined]

    def open_episode(self, name: str) -> object | None:
        return ("open", self._opened()) if self.state_of(name) == "open" else None

    # -- reporting -------------------------------------------------------------------------

    def attach(self, sink: Sink) -> Unsubscribe:
        with self._poll_lock:
            self._sinks.append(sink)
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"synapse-poll-circuitbreaker-{self.name}", daemon=True
            )
            self._thread.start()

        def stop() -> None:
            with self._poll_lock:
                if sink in self._sinks:
                    self._sinks.remove(sink)
                last = not self._sinks
            if last:
                self._stop.set()
                if self._thread is not None and self._thread is not threading.current_thread():
                    self._thread.join(timeout=1.0)

        return Unsubscribe(stop)

    def _run(self) -> None:
        while not self._stop.wait(POLL_INTERVAL):
            self.poll()

    def poll(self) -> None:
        with self._poll_lock:
            now = self._clock()
            state = self.state
            events = self._changes(state, now)
            self._last = state
            sinks = list(self._sinks)
        for event in events:
            for sink in sinks:
                sink(event)

    def _changes(self, state: str, now: float) -> list[ForeignEvent]:
        timeout = float(getattr(self.obj, "_recovery_timeout", 0.0))
        name = self.name
        events: list[ForeignEvent] = []

        def half_opened(spell: float) -> None:
            at = spell + timeout
            if not self._half_seen and at <= now:
                events.append(ForeignEvent(name, "half_opened", {}, now - at, at))
            self._half_seen = True

        if state in ("open", "half_open"):
            opened = self._opened()
            if opened != self._spell:
                previous = "closed"
                if self._spell is not None and self._last != "closed":
                    half_opened(self._spell)  # the failed probe ended the previous spell
                    previous = "half_open"
                failures = int(self.obj.failure_count)  # type: ignore[attr-defined]
                detail = opened_detail(previous, failures)
                events.append(ForeignEvent(name, "opened", detail, max(0.0, now - opened), opened))
                self._spell, self._half_seen = opened, False
            if state == "half_open":
                half_opened(opened)
        elif state == "closed" and self._spell is not None:
            half_opened(self._spell)
            events.append(ForeignEvent(name, "closed", {"reason": "call succeeded"}, 0.0, now))
            self._spell = None
        return events

    # -- calls -----------------------------------------------------------------------------

    def _guarded(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        # Its own decorator, so an open breaker rejects as in the user's code (``call`` does
        # not check the state). Not ``decorate``: that would rename an unnamed breaker.
        decorate = getattr(self.obj, "_decorate_sync", None)
        if fn is not None and getattr(fn, "__code__", None) and fn.__code__.co_flags & 0x80:
            decorate = getattr(self.obj, "_decorate_async", None)
        if decorate is None:
            raise TypeError("this circuitbreaker version cannot guard a call for the assertion")
        guarded: Callable[..., Any] = decorate(fn)
        return guarded

    def call(self, fn: Callable[[], object]) -> object:
        return self._guarded(fn)()

    async def call_async(self, fn: Callable[[], Awaitable[object]]) -> object:
        result: object = await self._guarded(fn)()
        return result
