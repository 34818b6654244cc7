"""Bounds that keep the server answering whatever its clients and peers do."""

from __future__ import annotations

import dataclasses
import math


@dataclasses.dataclass(frozen=True, slots=True)
class ServerLimits:
    """Time and resource bounds of one :class:`~chaos.server.ChaosServer`.

    The defaults follow Toxiproxy where it has an equivalent (its HTTP server's 15 s read
    timeout and 60 s idle timeout); the rest keep a misbehaving client or peer from holding
    descriptors or the control API for good.

    Attributes:
        header_timeout: seconds a control request may take to arrive once its first byte did
            (head and body); a slower one has its connection closed.
        idle_timeout: seconds an idle control connection (keep-alive, or connected and silent)
            is kept open.
        max_control_connections: open control connections at most; one more closes the
            connection that has been idle the longest (or itself, if none is idle), so
            half-sent requests can never lock other clients out.
        fd_reserve: descriptors the data plane leaves free for the control API: when it would
            dip into them, new proxied connections are refused (reset) instead.
        close_timeout: seconds a closing proxied connection may go without delivering anything
            to a peer that does not read, before it is reset.
        connect_after_client_eof: seconds an upstream connect still pending may go on once the
            client sent its FIN. The client may have closed for good or only half-closed to
            wait for an answer; the proxy cannot tell, so it waits this long, not the kernel's
            two minutes. A client that resets ends the attempt at once.
        log_interval: seconds between two log lines about the same kind of failure (running
            out of descriptors, unreachable upstreams); the lines in between are counted.
    """

    header_timeout: float = 15.0
    idle_timeout: float = 60.0
    max_control_connections: int = 64
    fd_reserve: int = 16
    close_timeout: float = 10.0
    connect_after_client_eof: float = 5.0
    log_interval: float = 10.0

    def __post_init__(self) -> None:
        for field in ("header_timeout", "idle_timeout", "close_timeout", "log_interval"):
            _positive_seconds(field, getattr(self, field))
        _positive_seconds("connect_after_client_eof", self.connect_after_client_eof, zero=True)
        for field in ("max_control_connections", "fd_reserve"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ServerLimits.{field} must be an integer >= 1, got {value!r}")


def _positive_seconds(field: str, value: object, *, zero: bool = False) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
        or (value == 0 and not zero)
    ):
        bound = ">= 0" if zero else "> 0"
        raise ValueError(
            f"ServerLimits.{field} must be a finite number of seconds {bound}, got {value!r}"
        )
