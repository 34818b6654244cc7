"""One replica of the "quotes" service: ``GET /quote/<item>`` asks the pricing service, through
a circuit breaker that every replica shares through Redis.

While the breaker is open the replica answers ``503`` at once, whichever replica saw the
failures; ``/breakers``, ``/health``, ``/metrics`` and ``/dashboard`` are
``synapse_core.health``'s endpoints (the shared breaker's ``stats.fleet`` says which replica
tripped it and what the fleet has seen).

    python replica.py --name quotes-1 --redis redis://127.0.0.1:6379/0 --pricing http://127.0.0.1:7000

It prints its URL on the first line and serves until its stdin closes.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from synapse_core import CircuitBreaker, CircuitBreakerConfig, CircuitOpenError
from synapse_core.breaker import CircuitBreakerManager
from synapse_core.breaker.shared import SharedBreakerStore
from synapse_core.health import HealthEndpoints

PRICING = CircuitBreakerConfig(
    failure_threshold=3,
    minimum_requests=1,
    failure_window=30.0,
    recovery_timeout=1.0,
    half_open_max_calls=2,
    success_threshold=1.0,
)

StartResponse = Callable[..., Any]


class Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return


class Quotes:
    """The service: its breaker, and the WSGI application around it."""

    def __init__(self, name: str, redis_url: str, pricing: str) -> None:
        self.store = SharedBreakerStore(redis_url, replica=name, prefix="quotes-demo")
        self.manager = CircuitBreakerManager()
        self.breaker = self.manager.add_breaker(
            "pricing", CircuitBreaker("pricing", PRICING, store=self.store)
        )
        self.endpoints = HealthEndpoints(self.manager, title=f"quotes replica {name}")
        self.pricing = pricing

    def price(self, item: str) -> Any:
        with urllib.request.urlopen(f"{self.pricing}/price/{item}", timeout=2) as answer:
            return json.loads(answer.read())

    def app(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if not path.startswith("/quote/"):
            return self.endpoints.wsgi(environ, start_response)
        try:
            body, status = self.breaker.call(self.price, path.removeprefix("/quote/")), "200 OK"
        except CircuitOpenError as exc:
            wait = exc.retry_after
            body = {"error": "pricing unavailable", "retry_after": _finite(wait)}
            status = "503 Service Unavailable"
        except urllib.error.URLError as exc:
            body, status = {"error": f"pricing failed: {exc}"}, "502 Bad Gateway"
        data = json.dumps(body).encode()
        start_response(status, [("Content-Type", "application/json")])
        return [data]

    def close(self) -> None:
        self.endpoints.close()
        self.store.close()


def _finite(seconds: float | None) -> float | None:
    """JSON has no infinity: forced open (or waiting on probes) is null."""
    return seconds if seconds is not None and seconds != float("inf") else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--redis", required=True, help="redis://host:port/db")
    parser.add_argument("--pricing", required=True, help="the pricing service's base URL")
    args = parser.parse_args()
    quotes = Quotes(args.name, args.redis, args.pricing)
    server = make_server("127.0.0.1", 0, quotes.app, server_class=Server, handler_class=Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    print(f"http://127.0.0.1:{server.server_port}", flush=True)
    try:
        sys.stdin.read()  # serve until the demo closes our stdin
    finally:
        server.shutdown()
        server.server_close()
        quotes.close()


if __name__ == "__main__":
    main()
