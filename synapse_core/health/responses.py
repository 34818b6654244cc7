"""What the health endpoints answer, for the WSGI and ASGI adapters to write out."""

from __future__ import annotations

from dataclasses import dataclass, field

from synapse_core.health.feed import Subscription


@dataclass(slots=True)
class Response:
    """A complete response."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes = b""


@dataclass(slots=True)
class StreamResponse:
    """``GET /events``: the adapter writes :attr:`subscription`'s reads until ``None``."""

    status: int
    headers: list[tuple[str, str]]
    subscription: Subscription
    keepalive: float = field(default=15.0)


REASONS = {
    200: "OK",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}
