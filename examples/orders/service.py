"""The service under test: ``GET /orders/<item>`` checks stock with inventory through a breaker.

While the inventory breaker is open the service answers ``503`` at once (with ``Retry-After``)
instead of making every client wait for the inventory timeout. ``GET /breakers`` shows the
states of every breaker in the process's default manager.
"""

from __future__ import annotations

import json
import math
import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from orders.background import ServesInBackground
from synapse_core import CircuitBreakerConfig, CircuitOpenError, default_manager

INVENTORY_BREAKER = CircuitBreakerConfig(
    failure_threshold=3,
    minimum_requests=3,
    failure_window=10.0,
    recovery_timeout=0.5,
    half_open_max_calls=2,
)


class OrdersService(ServesInBackground, ThreadingHTTPServer):
    """The orders HTTP API on loopback; inventory at ``inventory`` (``host:port``)."""

    daemon_threads = True

    def __init__(self, inventory: str, *, port: int = 0, timeout: float = 0.3) -> None:
        host, _, inv_port = inventory.rpartition(":")
        self.inventory = (host, int(inv_port))
        self.timeout_s = timeout
        self.breaker = default_manager.get_or_create("inventory", INVENTORY_BREAKER)
        super().__init__(("127.0.0.1", port), _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

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


class _Handler(BaseHTTPRequestHandler):
    server: OrdersService

    def log_message(self, format: str, *args: Any) -> None:
        return  # keep the demo's output readable

    def do_GET(self) -> None:
        if self.path == "/breakers":
            states = {b.name: b.state.value for b in default_manager}
            return self._reply(200, states)
        if not self.path.startswith("/orders/"):
            return self._reply(404, {"error": "unknown path"})
        item = self.path.removeprefix("/orders/")
        try:
            stock = self.server.breaker.call(self.server.check_stock, item)
        except CircuitOpenError as exc:
            # None: no time is known (probes in flight must report first); inf: forced open.
            after = exc.retry_after
            if after is None or math.isinf(after):
                retry, wait = "1", None
            else:
                retry, wait = str(max(1, math.ceil(after))), round(after, 3)
            return self._reply(
                503, {"error": "inventory unavailable", "retry_after": wait}, {"Retry-After": retry}
            )
        except (OSError, ValueError) as exc:
            return self._reply(502, {"error": f"inventory failed: {exc}"})
        return self._reply(200, {"item": item, "in_stock": stock})

    def _reply(self, status: int, body: object, headers: dict[str, str] | None = None) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(payload)
