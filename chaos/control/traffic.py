"""What a service sent through a proxy, and when: :class:`ProxyTraffic`.

Read with :meth:`chaos.Proxy.traffic` (or :meth:`chaos.ToxiproxyClient.traffic`). Only Synapse's
own server records it (``GET /synapse/traffic/{proxy}``, beside the Toxiproxy API): the real
Toxiproxy adds a connection's bytes to its ``/metrics`` counters only when that connection
closes, and counts no connections, so it cannot tell when a service sent something. Asking a
server without the extension raises :class:`TrafficUnavailable`.

Times are converted to this process's ``time.monotonic()`` seconds. A server on this host shares
that clock; for one elsewhere the offset is estimated from the server's ``now`` and the request's
round trip, and :attr:`ProxyTraffic.uncertainty` says how far each time may be off.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from chaos.errors import ChaosError


class TrafficUnavailable(ChaosError):
    """The server cannot say when traffic passed through its proxies (not Synapse's server)."""


@dataclasses.dataclass(frozen=True, slots=True)
class ProxyTraffic:
    """Connections opened and bytes sent by a proxy's clients, on the local monotonic clock.

    Attributes:
        proxy: the proxy's name.
        connections: ``(serial, time)`` of each connection a client opened (accepted).
        received: ``(serial, time, bytes)`` of each read of bytes a client sent toward the
            upstream, before toxics (a blackhole or latency toxic does not hide them).
        disabled: ``(start, end)`` periods in which the proxy was disabled (``end`` ``None``
            while still disabled). Connects are then refused by the operating system and
            never reach the proxy: nothing can be observed in those periods.
        complete_since: ``None`` if nothing was dropped, else the time from which the log is
            complete (the server keeps a bounded number of entries per proxy).
        uncertainty: seconds each time may be off (0 when the server shares this clock).
        fetched_at: when the answer was read (local clock): the log covers up to then.
    """

    proxy: str
    connections: tuple[tuple[int, float], ...]
    received: tuple[tuple[int, float, int], ...]
    disabled: tuple[tuple[float, float | None], ...]
    complete_since: float | None
    uncertainty: float
    fetched_at: float

    @classmethod
    def from_json(
        cls, data: Mapping[str, Any], *, sent_at: float, received_at: float
    ) -> ProxyTraffic:
        """Build from the server's answer, read between *sent_at* and *received_at* (local)."""
        now = float(data["now"])
        if sent_at <= now <= received_at:
            offset, uncertainty = 0.0, 0.0  # same clock (same host)
        else:
            offset = now - (sent_at + received_at) / 2
            uncertainty = (received_at - sent_at) / 2

        def local(at: float | None) -> float | None:
            return None if at is None else float(at) - offset

        return cls(
            proxy=str(data["proxy"]),
            connections=tuple((int(s), float(t) - offset) for s, t in data["connections"]),
            received=tuple((int(s), float(t) - offset, int(n)) for s, t, n in data["received"]),
            disabled=tuple((float(a) - offset, local(b)) for a, b in data.get("disabled", ())),
            complete_since=local(data.get("complete_since")),
            uncertainty=uncertainty,
            fetched_at=received_at,
        )

    def between(self, start: float, end: float) -> TrafficWindow:
        """What arrived in the closed interval [*start*, *end*]."""
        return TrafficWindow(
            start,
            end,
            tuple(c for c in self.connections if start <= c[1] <= end),
            tuple(r for r in self.received if start <= r[1] <= end),
        )

    def blind(self, start: float, end: float) -> list[tuple[float, float]]:
        """The parts of [*start*, *end*] this log cannot speak for.

        Periods the proxy was disabled, and what lies before :attr:`complete_since`.
        """
        gaps = [
            (max(start, a), min(end, self.fetched_at if b is None else b)) for a, b in self.disabled
        ]
        if self.complete_since is not None:
            gaps.append((start, min(end, self.complete_since)))
        return _merge(g for g in gaps if g[0] < g[1])


@dataclasses.dataclass(frozen=True, slots=True)
class TrafficWindow:
    """The traffic of one time interval."""

    start: float
    end: float
    connections: tuple[tuple[int, float], ...]
    received: tuple[tuple[int, float, int], ...]

    @property
    def bytes(self) -> int:
        """Bytes sent toward the upstream in the interval."""
        return sum(n for _, _, n in self.received)

    @property
    def empty(self) -> bool:
        """No connection opened and no byte sent."""
        return not self.connections and not self.received

    def first(self) -> float | None:
        """Time of the first connection or read in the interval."""
        times = [t for _, t in self.connections] + [t for _, t, _ in self.received]
        return min(times) if times else None


def _merge(spans: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[tuple[float, float]] = []
    for a, b in sorted(spans):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged
