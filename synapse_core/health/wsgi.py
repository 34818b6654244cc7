"""The health endpoints as a WSGI application (PEP 3333)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from synapse_core.health.feed import STREAM_START, Subscription
from synapse_core.health.responses import REASONS, Response

if TYPE_CHECKING:
    from synapse_core.health.endpoints import HealthEndpoints

StartResponse = Callable[..., Any]


class WsgiHealthApp:
    """``app(environ, start_response)``; mount it under any prefix (``SCRIPT_NAME``).

    ``/events`` streams for as long as the client stays: with a server that has a fixed number
    of workers (gunicorn's sync workers), each open dashboard holds one.
    """

    def __init__(self, endpoints: HealthEndpoints) -> None:
        self.endpoints = endpoints

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        path = environ.get("PATH_INFO") or "/"
        response = self.endpoints.handle(method, path, environ.get("HTTP_ACCEPT", ""))
        status = f"{response.status} {REASONS.get(response.status, '')}".rstrip()
        if isinstance(response, Response):
            headers = [*response.headers, ("Content-Length", str(len(response.body)))]
            start_response(status, headers)
            return [] if method == "HEAD" else [response.body]
        start_response(status, response.headers)
        return _EventStream(response.subscription, response.keepalive)


class _EventStream:
    """The response body of ``/events``; the server calls :meth:`close` when the client left."""

    def __init__(self, subscription: Subscription, keepalive: float) -> None:
        self._subscription = subscription
        self._keepalive = keepalive

    def __iter__(self) -> Iterator[bytes]:
        yield STREAM_START
        while True:
            chunk = self._subscription.read(self._keepalive)
            if chunk is None:
                return
            yield chunk

    def close(self) -> None:
        self._subscription.close()
