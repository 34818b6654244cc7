"""When traffic reached a proxy: the connections its clients opened and the bytes they sent.

Toxiproxy's ``/metrics`` counts a connection's bytes only when that connection ends, so nobody can
tell from it *when* a service sent something. This log keeps, per proxy and with times on the
server's monotonic clock, every connection a client opened and every read of bytes the client
sent toward the upstream (before toxics, so a blackhole or a latency toxic does not hide them).
``GET /synapse/traffic/{proxy}`` (an extension beside the Toxiproxy API, see docs/server.md)
serves it; ``pytest_synapse.assert_no_calls_while_open`` reads it to see whether a service called
its dependency while its circuit breaker was open.

Memory is bounded: each log keeps the last :data:`TRAFFIC_LIMIT` connections and reads, and
``complete_since`` says from when on nothing was dropped.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Final

TRAFFIC_LIMIT: Final = 8192
"""Connections, and reads, kept per proxy (the oldest go first)."""


class TrafficLog:
    """Connections opened and bytes received from clients of one proxy, with times."""

    __slots__ = ("_clock", "_connections", "_disabled", "_next", "_reads", "complete_since")

    def __init__(self, clock: Callable[[], float], limit: int = TRAFFIC_LIMIT) -> None:
        self._clock = clock
        self._connections: deque[tuple[int, float]] = deque(maxlen=limit)
        self._reads: deque[tuple[int, float, int]] = deque(maxlen=limit)
        # [disabled at, enabled again at or None]: while disabled, connects are refused by the
        # kernel and never reach the log, so a reader must know those periods are blind.
        self._disabled: deque[list[float | None]] = deque(maxlen=limit)
        self._next = 0
        self.complete_since: float | None = None
        """``None`` while nothing was dropped, else the time from which the log is complete."""

    def connected(self) -> int:
        """Note a new client connection; returns its serial number (1, 2, ...)."""
        self._next += 1
        connections = self._connections
        if len(connections) == connections.maxlen:
            self._dropped(connections[0][1])
        connections.append((self._next, self._clock()))
        return self._next

    def received(self, serial: int, nbytes: int) -> None:
        """Note *nbytes* read from client connection *serial* (hot path: one append)."""
        reads = self._reads
        if len(reads) == reads.maxlen:
            self._dropped(reads[0][1])
        reads.append((serial, self._clock(), nbytes))

    def enabled(self, on: bool) -> None:
        """Note that the proxy started (``True``) or stopped (``False``) listening."""
        disabled = self._disabled
        open_period = bool(disabled) and disabled[-1][1] is None
        if not on and not open_period:
            if len(disabled) == disabled.maxlen:
                self._dropped(disabled[0][1] or disabled[0][0] or 0.0)
            disabled.append([self._clock(), None])
        elif on and open_period:
            disabled[-1][1] = self._clock()

    def _dropped(self, at: float) -> None:
        if self.complete_since is None or at > self.complete_since:
            self.complete_since = at

    def to_json(self, since: float | None = None) -> dict[str, object]:
        """The entries at or after *since* (all when ``None``), with the server's time now."""
        low = float("-inf") if since is None else since
        return {
            "clock": "monotonic",
            "now": self._clock(),
            "complete_since": self.complete_since,
            "disabled": [
                [start, end] for start, end in self._disabled if end is None or end >= low
            ],
            "connections": [[serial, at] for serial, at in self._connections if at >= low],
            "received": [[serial, at, n] for serial, at, n in self._reads if at >= low],
        }
