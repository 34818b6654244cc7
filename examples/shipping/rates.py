"""The dependency: a rates API over HTTP (``GET /rates/<zone>`` -> ``{"zone", "price"}``)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PRICES = {"eu": 4.5, "us": 7.0}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are written apart: no delayed-ACK stalls

    def do_GET(self) -> None:
        zone = self.path.removeprefix("/rates/")
        status, body = (
            (200, {"zone": zone, "price": PRICES[zone]})
            if zone in PRICES
            else (
                404,
                {"error": f"no zone {zone!r}"},
            )
        )
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        return


class RatesServer(ThreadingHTTPServer):
    """The rates API on loopback, served from a thread between ``start()`` and ``stop()``."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self._thread = threading.Thread(target=self.serve_forever, args=(0.02,), daemon=True)

    @property
    def address(self) -> str:
        host, port = self.server_address[:2]
        return f"{host!s}:{port}"

    def start(self) -> RatesServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(5)
