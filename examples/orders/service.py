"""The service under test: ``GET /orders/<item>`` checks stock with inventory through a breaker.

While the inventory breaker is open the service answers ``503`` at once (with ``Retry-After``)
instead of making every client wait for the inventory timeout. It is a plain WSGI application
on the standard library's server, and it mounts ``synapse_core.health``'s endpoints next to its
own: ``/health`` (503 while the inventory breaker is open), ``/breakers``, ``/metrics``, a live
``/dashboard`` and its ``/events``.

Run it on its own (a test can then watch its breaker only from outside)::

    python -m orders.service --inventory 127.0.0.1:7000 [--port 8000]

It prints its URL on the first line and serves until interrupted (or its stdin closes, with
``--until-stdin-closes``).
"""

from __future__ import annotations

import argparse
import json
import math
import socket
import socketserver
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from orders.background import ServesInBackground
from synapse_core import CircuitBreakerConfig, CircuitOpenError, default_manager
from synapse_core.health import HealthEndpoints

INVENTORY_BREAKER = CircuitBreakerConfig(
    failure_threshold=3,
    minimum_requests=3,
    failure_window=10.0,
    recovery_timeout=0.5,
    half_open_max_calls=2,
)

StartResponse = Callable[..., Any]
_REASONS = {200: "OK", 404: "Not Found", 502: "Bad Gateway", 503: "Service Unavailable"}


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return  # keep the demo's output readable


class OrdersService(ServesInBackground, socketserver.ThreadingMixIn, WSGIServer):
    """The orders HTTP API on loopback; inventory at ``inventory`` (``host:port``)."""

    daemon_threads = True

    def __init__(
        self, inventory: str, *, host: str = "127.0.0.1", port: int = 0, timeout: float = 0.3
    ) -> None:
        inv_host, _, inv_port = inventory.rpartition(":")
        self.inventory = (inv_host, int(inv_port))
        self.timeout_s = timeout
        self.breaker = default_manager.get_or_create("inventory", INVENTORY_BREAKER)
        # /health answers 503 only for the breakers the orders cannot do without.
        self.endpoints = HealthEndpoints(critical=["inventory"], title="orders: circuit breakers")
        super().__init__((host, port), _QuietHandler)
        self.set_app(self.app)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def check_stock(self, item: str) -> int:
        """Ask inventory; raises ``OSError``/``TimeoutError`` when it does not answer."""
        with socket.create_connection(self.inventory, timeout=self.timeout_s) as conn:
            conn.sendall(f"STOCK {item}\n".encode())
            data = b""
            while not data.endswith(b"\n"):
                chunk = conn.recv(64)
                if not chunk:
                    raise ConnectionError("inventory closed the connection")
                data += chunk
        return int(data)

    def app(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """The WSGI application: the orders API, and the health endpoints for other paths."""
        path = environ.get("PATH_INFO", "")
        if not path.startswith("/orders/"):
            return self.endpoints.wsgi(environ, start_response)
        item = path.removeprefix("/orders/")
        try:
            stock = self.breaker.call(self.check_stock, item)
        except CircuitOpenError as exc:
            # None: no time is known (probes in flight must report first); inf: forced open.
            after = exc.retry_after
            if after is None or math.isinf(after):
                retry, wait = "1", None
            else:
                retry, wait = str(max(1, math.ceil(after))), round(after, 3)
            return _reply(
                start_response,
                503,
                {"error": "inventory unavailable", "retry_after": wait},
                [("Retry-After", retry)],
            )
        except (OSError, ValueError) as exc:
            return _reply(start_response, 502, {"error": f"inventory failed: {exc}"})
        return _reply(start_response, 200, {"item": item, "in_stock": stock})

    def server_close(self) -> None:
        self.endpoints.close()  # ends open dashboards' streams
        super().server_close()


def _reply(
    start_response: StartResponse,
    status: int,
    body: object,
    headers: list[tuple[str, str]] | None = None,
) -> list[bytes]:
    payload = json.dumps(body).encode()
    start_response(
        f"{status} {_REASONS[status]}",
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(payload))),
            *(headers or []),
        ],
    )
    return [payload]


def main(argv: list[str] | None = None) -> None:
    """``python -m orders.service --inventory HOST:PORT``: serve in the foreground."""
    parser = argparse.ArgumentParser(prog="python -m orders.service", description=__doc__)
    parser.add_argument("--inventory", required=True, help="inventory's HOST:PORT")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(
        "--until-stdin-closes", action="store_true", help="stop when standard input closes"
    )
    args = parser.parse_args(argv)
    with OrdersService(args.inventory, host=args.host, port=args.port) as service:
        print(service.url, flush=True)
        try:
            if args.until_stdin_closes:
                sys.stdin.read()
            else:
                threading.Event().wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
