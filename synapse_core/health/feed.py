"""Server-sent events for live pages: one feed, many clients, each with a bounded buffer.

A feed publishes messages (already encoded once, shared by every client) to its subscribers.
Publishing never blocks and never waits for a client: each subscriber has a buffer bounded in
bytes; when a slow client's buffer would overflow, its backlog is dropped and the client gets a
fresh ``snapshot`` instead, so it catches up with the present rather than replaying the past.
Periodic messages (``stats``) replace the one still waiting in a buffer rather than queue up.

While anyone is subscribed, a ticker thread publishes the periodic message every *interval*
seconds; it also serves as the keep-alive that finds clients that went away.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

DEFAULT_BUFFER_BYTES = 1024 * 1024
"""What a client may have waiting before its backlog is replaced by a snapshot (1 MiB)."""

STREAM_START = b"retry: 1000\n\n"
"""Sent first on every stream: a browser that loses the stream reconnects after 1 s."""

KEEPALIVE = b": keep-alive\n\n"

logger = logging.getLogger("synapse.health")


def sse(event: str, data: Any) -> bytes:
    """One server-sent event: ``event: <event>`` and *data* as one line of JSON."""
    payload = json.dumps(data, separators=(",", ":"), allow_nan=False)
    return f"event: {event}\ndata: {payload}\n\n".encode()


class Subscription:
    """One client's view of a feed: read with :meth:`read` (threads) or :meth:`read_async`.

    Each read returns the bytes to write next: a snapshot first (and again after an overflow),
    then the messages published since, or :data:`KEEPALIVE` after *keepalive* seconds with
    nothing new,
    or ``None`` once the feed or the subscription is closed.
    """

    def __init__(self, feed: EventFeed, limit: int) -> None:
        self._feed = feed
        self._limit = limit
        self._lock = threading.Lock()
        self._items: deque[tuple[str, bytes]] = deque()
        self._size = 0
        self._resync = True
        self._closed = False
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._async_ready: asyncio.Event | None = None
        self.overflows = 0
        """How many times the backlog was dropped for a snapshot."""

    def push(self, kind: str, data: bytes, *, periodic: bool = False) -> None:
        """Queue *data* (never blocks); called by the feed."""
        with self._lock:
            if self._closed:
                return
            if periodic and self._items and any(k == kind for k, _ in self._items):
                kept = [(k, d) for k, d in self._items if k != kind]
                self._items = deque(kept)
                self._size = sum(len(d) for _, d in kept)
            if self._items and self._size + len(data) > self._limit:
                # Too far behind: forget the backlog, send the present instead.
                self._items.clear()
                self._size = 0
                self._resync = True
                self.overflows += 1
            elif not self._resync:
                self._items.append((kind, data))
                self._size += len(data)
        self._wake()

    def _wake(self) -> None:
        self._ready.set()
        loop, ready = self._loop, self._async_ready
        if loop is not None and ready is not None:
            try:
                loop.call_soon_threadsafe(ready.set)
            except RuntimeError:  # its loop is closed: the reader is gone
                self.close()

    def _take(self) -> bytes | None:
        """What is ready to write (``b""`` if nothing), or ``None`` once closed.

        Clears the ready flags; builds the snapshot when one is due.
        """
        with self._lock:
            if self._closed:
                return None
            self._ready.clear()
            if self._async_ready is not None:
                self._async_ready.clear()
            resync = self._resync
            self._resync = False
            data = b"" if resync else b"".join(d for _, d in self._items)
            self._items.clear()
            self._size = 0
        return self._feed.snapshot_message() if resync else data

    def read(self, keepalive: float) -> bytes | None:
        """Wait up to *keepalive* seconds for what to write next (see the class docstring)."""
        chunk = self._take()
        if chunk == b"":
            self._ready.wait(keepalive)
            chunk = self._take()
        return KEEPALIVE if chunk == b"" else chunk

    async def read_async(self, keepalive: float) -> bytes | None:
        """:meth:`read` for asyncio: waits without blocking the event loop."""
        if self._async_ready is None:
            self._loop = asyncio.get_running_loop()
            self._async_ready = asyncio.Event()
        chunk = self._take()
        if chunk == b"":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._async_ready.wait(), keepalive)
            chunk = self._take()
        return KEEPALIVE if chunk == b"" else chunk

    def close(self) -> None:
        """Stop receiving; pending and later reads return ``None``."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._items.clear()
            self._size = 0
        self._feed._unsubscribe(self)
        self._wake()

    @property
    def closed(self) -> bool:
        """Whether the subscription (or its feed) was closed."""
        return self._closed


class EventFeed:
    """Publishes server-sent events to bounded subscriptions.

    *snapshot* builds the document a new (or lagging) client starts from, sent as a
    ``snapshot`` event; *periodic* (optional) builds the ``stats`` event published every
    *interval* seconds while someone is subscribed.
    """

    def __init__(
        self,
        snapshot: Callable[[], Any],
        *,
        periodic: Callable[[], Any] | None = None,
        interval: float = 1.0,
        buffer_bytes: int = DEFAULT_BUFFER_BYTES,
        name: str = "synapse-feed",
    ) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be > 0 seconds, got {interval!r}")
        if buffer_bytes < 1:
            raise ValueError(f"buffer_bytes must be >= 1, got {buffer_bytes!r}")
        self._snapshot = snapshot
        self._periodic = periodic
        self.interval = interval
        self._buffer_bytes = buffer_bytes
        self._name = name
        self._lock = threading.Lock()
        self._subscribers: tuple[Subscription, ...] = ()
        self._ticker: threading.Thread | None = None
        self._tick = threading.Event()
        self._closed = False

    def subscribe(self) -> Subscription:
        """A new subscription; its first read is a snapshot."""
        subscription = Subscription(self, self._buffer_bytes)
        with self._lock:
            if self._closed:
                subscription._closed = True
                return subscription
            self._subscribers = (*self._subscribers, subscription)
            if self._periodic is not None and self._ticker is None:
                self._ticker = threading.Thread(target=self._run_ticker, name=self._name)
                self._ticker.daemon = True
                self._ticker.start()
        return subscription

    def _unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            self._subscribers = tuple(s for s in self._subscribers if s is not subscription)
            if not self._subscribers:
                self._tick.set()  # the ticker ends when nobody listens

    @property
    def subscribers(self) -> int:
        """How many clients are subscribed now."""
        return len(self._subscribers)

    def publish(self, kind: str, data: Any, *, periodic: bool = False) -> None:
        """Send an event to every subscriber (encoded once); does nothing without subscribers."""
        subscribers = self._subscribers
        if not subscribers:
            return
        message = sse(kind, data)
        for subscription in subscribers:
            subscription.push(kind, message, periodic=periodic)

    def snapshot_message(self) -> bytes:
        """The ``snapshot`` event as bytes."""
        return sse("snapshot", self._snapshot())

    def _run_ticker(self) -> None:
        periodic = self._periodic
        assert periodic is not None
        while True:
            self._tick.wait(self.interval)
            with self._lock:
                self._tick.clear()
                if self._closed or not self._subscribers:
                    self._ticker = None
                    return
            try:
                document = periodic()
            except Exception:  # keep ticking: the next one may work
                logger.exception("%s: building the periodic event failed", self._name)
                continue
            self.publish("stats", document, periodic=True)

    def close(self) -> None:
        """End every subscription (their reads return ``None``) and the ticker."""
        with self._lock:
            self._closed = True
            subscribers = self._subscribers
            ticker = self._ticker
            self._tick.set()
        for subscription in subscribers:
            subscription.close()
        if ticker is not None and ticker is not threading.current_thread():
            ticker.join(timeout=5)
