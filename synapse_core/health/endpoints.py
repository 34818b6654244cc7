"""The health endpoints, independent of any web server: a request in, a response out."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from synapse_core.breaker import CircuitBreakerManager, default_manager
from synapse_core.health.documents import (
    Critical,
    breakers_document,
    health_document,
    stats_document,
    to_json_bytes,
)
from synapse_core.health.feed import DEFAULT_BUFFER_BYTES, EventFeed
from synapse_core.health.journal import Transition, TransitionJournal
from synapse_core.health.page import DashboardPage
from synapse_core.health.responses import Response, StreamResponse
from synapse_core.metrics import metrics_registry

PATHS = ("/health", "/breakers", "/metrics", "/dashboard", "/events")
"""What the endpoints answer, relative to where they are mounted."""

ALLOWED_METHODS = ("GET", "HEAD")

JSON = "application/json"
EVENT_STREAM = "text/event-stream; charset=utf-8"


def _critical_of(critical: Iterable[str] | Callable[[str], bool] | None) -> Critical:
    if critical is None:
        return lambda name: True
    if isinstance(critical, str):
        raise TypeError(
            f"critical must be a collection of breaker names or a predicate, got the string "
            f"{critical!r}; write critical=[{critical!r}]"
        )
    if callable(critical):
        predicate = critical
        return lambda name: bool(predicate(name))
    names = frozenset(critical)
    bad = [n for n in names if not isinstance(n, str)]
    if bad:
        raise TypeError(f"critical names must be strings, got {bad[0]!r}")
    return names.__contains__


class HealthEndpoints:
    """``/health``, ``/breakers``, ``/metrics``, ``/dashboard`` and ``/events`` of a manager.

    Serve them with :attr:`wsgi` (Flask, Django, any WSGI server), :attr:`asgi` (FastAPI,
    Starlette, any ASGI server) or :func:`~synapse_core.health.serve_health` (a thread of its
    own). Mounted under a prefix, every path is relative to it.

    Args:
        manager: whose breakers to show (default: ``synapse_core.default_manager``).
        critical: names (or a predicate on the name) of the breakers whose opening makes
            ``/health`` answer 503; by default every breaker counts.
        registry: what ``/metrics`` serves (default: a registry of its own with a
            ``BreakerCollector`` over *manager*).
        title: the dashboard's title.
        event_interval: seconds between two ``stats`` events (call and rejection rates).
        buffer_bytes: how much a slow dashboard client may have waiting before its backlog is
            replaced by a fresh snapshot.
        keep_transitions: recent transitions kept per breaker for ``/breakers``.
    """

    def __init__(
        self,
        manager: CircuitBreakerManager | None = None,
        *,
        critical: Iterable[str] | Callable[[str], bool] | None = None,
        registry: CollectorRegistry | None = None,
        title: str = "Synapse circuit breakers",
        event_interval: float = 1.0,
        buffer_bytes: int = DEFAULT_BUFFER_BYTES,
        keep_transitions: int = 20,
    ) -> None:
        if manager is not None and not isinstance(manager, CircuitBreakerManager):
            raise TypeError(f"manager must be a CircuitBreakerManager, got {manager!r}")
        if keep_transitions < 1:
            raise ValueError(f"keep_transitions must be >= 1, got {keep_transitions!r}")
        self.manager = default_manager if manager is None else manager
        self._critical = _critical_of(critical)
        self.registry = metrics_registry(self.manager) if registry is None else registry
        self.instance = secrets.token_hex(8)
        """Changes whenever the endpoints are created anew (a restart of the service)."""
        self.feed = EventFeed(
            self.breakers,
            periodic=self._stats,
            interval=event_interval,
            buffer_bytes=buffer_bytes,
            name="synapse-health-feed",
        )
        self.journal = TransitionJournal(
            self.manager, keep=keep_transitions, on_transition=self._publish
        )
        self._page = DashboardPage(title)
        self._wsgi: Any = None
        self._asgi: Any = None

    # -- documents

    def health(self) -> tuple[bool, dict[str, Any]]:
        """``(healthy, body)`` of ``GET /health``."""
        return health_document(self.manager, self._critical)

    def breakers(self) -> dict[str, Any]:
        """The ``GET /breakers`` document."""
        return breakers_document(self.manager, self._critical, self.journal, self.instance)

    def _stats(self) -> dict[str, Any]:
        return stats_document(self.manager, self._critical, self.journal)

    def _publish(self, transition: Transition) -> None:
        self.feed.publish("transition", {"breaker": transition.breaker, **transition.to_json()})

    def metrics(self, accept: str = "") -> tuple[bytes, str]:
        """``(body, content type)`` of ``GET /metrics`` (OpenMetrics when *accept* asks)."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type

    # -- requests

    def handle(self, method: str, path: str, accept: str = "") -> Response | StreamResponse:
        """Answer one request; *path* is relative to where the endpoints are mounted."""
        if path not in PATHS:
            return _json(404, {"error": f"no such path: {path}", "paths": list(PATHS)})
        if method not in ALLOWED_METHODS:
            response = _json(
                405, {"error": f"{method} is not allowed here", "allowed": list(ALLOWED_METHODS)}
            )
            response.headers.append(("Allow", ", ".join(ALLOWED_METHODS)))
            return response
        if path == "/health":
            healthy, body = self.health()
            return _json(200 if healthy else 503, body)
        if path == "/breakers":
            return _json(200, self.breakers())
        if path == "/metrics":
            payload, content_type = self.metrics(accept)
            return Response(200, _headers(content_type), payload)
        if path == "/dashboard":
            return Response(
                200,
                [*_headers("text/html; charset=utf-8"), *self._page.security_headers],
                self._page.html,
            )
        headers = [*_headers(EVENT_STREAM), ("X-Accel-Buffering", "no")]
        if method == "HEAD":
            return Response(200, headers)
        return StreamResponse(200, headers, self.feed.subscribe())

    @property
    def wsgi(self) -> Any:
        """The endpoints as a WSGI application."""
        if self._wsgi is None:
            from synapse_core.health.wsgi import WsgiHealthApp

            self._wsgi = WsgiHealthApp(self)
        return self._wsgi

    @property
    def asgi(self) -> Any:
        """The endpoints as an ASGI application (HTTP and lifespan scopes)."""
        if self._asgi is None:
            from synapse_core.health.asgi import AsgiHealthApp

            self._asgi = AsgiHealthApp(self)
        return self._asgi

    def close(self) -> None:
        """End the event streams and stop listening to the breakers."""
        self.journal.close()
        self.feed.close()


def _headers(content_type: str) -> list[tuple[str, str]]:
    return [
        ("Content-Type", content_type),
        ("Cache-Control", "no-store"),
        ("X-Content-Type-Options", "nosniff"),
    ]


def _json(status: int, document: Any) -> Response:
    return Response(status, _headers(JSON), to_json_bytes(document))
