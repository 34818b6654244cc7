"""Breaker events, synchronous listeners and bounded async event streams."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Generic, TypeVar

from synapse_core.breaker.state import CircuitState

logger = logging.getLogger("synapse_core.breaker")


@dataclass(frozen=True, slots=True)
class CircuitEvent:
    """Something that happened to a breaker. ``timestamp`` is on the breaker's clock."""

    kind: ClassVar[str] = "event"
    breaker_name: str
    timestamp: float


@dataclass(frozen=True, slots=True)
class CircuitOpened(CircuitEvent):
    """The breaker opened: calls are rejected until ``retry_at`` (on the breaker's clock).

    ``replica`` (on every transition event) is ``None`` for a local breaker; for one shared
    through a store it names the replica whose outcomes or command caused the transition.
    """

    kind: ClassVar[str] = "opened"
    reason: str
    failure_count: int
    previous_state: CircuitState
    retry_at: float
    replica: str | None = None


@dataclass(frozen=True, slots=True)
class CircuitHalfOpened(CircuitEvent):
    """The recovery timeout passed and the breaker admits probe calls."""

    kind: ClassVar[str] = "half_opened"
    replica: str | None = None


@dataclass(frozen=True, slots=True)
class CircuitClosed(CircuitEvent):
    """The breaker closed: probes succeeded, or it was forced closed or reset."""

    kind: ClassVar[str] = "closed"
    previous_state: CircuitState
    reason: str
    replica: str | None = None


@dataclass(frozen=True, slots=True)
class RequestRejected(CircuitEvent):
    """A call was rejected without running; ``retry_after`` as ``breaker.retry_after`` says it."""

    kind: ClassVar[str] = "request_rejected"
    state: CircuitState
    retry_after: float | None


@dataclass(frozen=True, slots=True)
class ExternalTriggerActivated(CircuitEvent):
    """An external trigger (latency, reliability, packet loss...) asked the breaker to trip."""

    kind: ClassVar[str] = "external_trigger_activated"
    trigger_name: str


Listener = Callable[[CircuitEvent], object]


class Unsubscribe:
    """Returned by ``subscribe``: call it (or use it as a context manager) to stop listening."""

    __slots__ = ("_action", "_done")

    def __init__(self, action: Callable[[], None]) -> None:
        self._action = action
        self._done = False

    def __call__(self) -> None:
        if not self._done:
            self._done = True
            self._action()

    def __enter__(self) -> Unsubscribe:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self()


W = TypeVar("W", bound=Callable[..., object])


class Watchers(Generic[W]):
    """Process-wide callbacks, copied on write: :attr:`current` is read without a lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.current: tuple[W, ...] = ()

    def add(self, watcher: W) -> Unsubscribe:
        """Add *watcher*; returns the handle that removes it."""
        if not callable(watcher):
            raise TypeError(f"watcher must be callable, got {watcher!r}")

        def stop() -> None:
            with self._lock:
                self.current = tuple(w for w in self.current if w is not watcher)

        with self._lock:
            self.current = (*self.current, watcher)
        return Unsubscribe(stop)


def dispatch(listeners: tuple[Listener, ...], event: CircuitEvent) -> None:
    """Deliver *event* to every listener; a listener that raises is logged, never propagated."""
    for listener in listeners:
        try:
            listener(event)
        except Exception:
            logger.exception("circuit breaker event listener %r failed on %r", listener, event)


class EventStream:
    """An async iterator over a breaker's events, fed through a bounded buffer.

    The breaker never waits for the consumer: when ``maxsize`` events are already buffered, new
    events are dropped and counted in :attr:`dropped`. Events may come from any thread. Use it as
    an async context manager (or call :meth:`close`) to stop listening::

        async with breaker.events() as stream:
            async for event in stream:
                ...
    """

    def __init__(self, maxsize: int, subscribe: Callable[[Listener], Unsubscribe]) -> None:
        if isinstance(maxsize, bool) or not isinstance(maxsize, int) or maxsize < 1:
            raise ValueError(f"maxsize must be an int >= 1, got {maxsize!r}")
        self._buffer: deque[CircuitEvent] = deque()
        self._maxsize = maxsize
        self._lock = threading.Lock()
        self._loop = asyncio.get_running_loop()
        # Every task waiting in __anext__: several consumers may share one stream, and each
        # event goes to whichever gets it first.
        self._waiters: set[asyncio.Future[None]] = set()
        self._closed = False
        self.dropped = 0
        """Events dropped because the buffer was full."""
        self._unsubscribe = subscribe(self._push)

    def _push(self, event: CircuitEvent) -> None:
        with self._lock:
            if self._closed:
                return
            if len(self._buffer) >= self._maxsize:
                self.dropped += 1
                return
            self._buffer.append(event)
            waiters = list(self._waiters)
        if waiters:
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            for waiter in waiters:
                if running is self._loop:
                    _wake(waiter)
                else:
                    self._loop.call_soon_threadsafe(_wake, waiter)

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> CircuitEvent:
        while True:
            with self._lock:
                if self._buffer:
                    return self._buffer.popleft()
                if self._closed:
                    raise StopAsyncIteration
                waiter = self._loop.create_future()
                self._waiters.add(waiter)
            try:
                await waiter
            finally:
                with self._lock:
                    self._waiters.discard(waiter)

    def get_nowait(self) -> CircuitEvent | None:
        """The next buffered event, or ``None`` if there is none yet."""
        with self._lock:
            return self._buffer.popleft() if self._buffer else None

    def close(self) -> None:
        """Stop listening; iteration ends once the buffered events are consumed."""
        with self._lock:
            self._closed = True
            waiters = list(self._waiters)
        self._unsubscribe()
        if not self._loop.is_closed():
            for waiter in waiters:
                self._loop.call_soon_threadsafe(_wake, waiter)

    async def __aenter__(self) -> EventStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
