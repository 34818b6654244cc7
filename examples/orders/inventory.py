"""The dependency: a tiny TCP inventory service answering ``STOCK <item>`` with a number."""

from __future__ import annotations

import argparse
import signal
import socketserver
import sys

from orders.background import ServesInBackground

STOCK = {"apple": 12, "pear": 0, "plum": 7}


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        for raw in self.rfile:
            parts = raw.decode("utf-8", "replace").split()
            if len(parts) == 2 and parts[0] == "STOCK":
                self.wfile.write(f"{STOCK.get(parts[1], 0)}\n".encode())
            else:
                self.wfile.write(b"ERR expected: STOCK <item>\n")


class InventoryServer(ServesInBackground, socketserver.ThreadingTCPServer):
    """The inventory service on ``host:port`` (loopback, any free port by default)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__((host, port), _Handler)

    @property
    def address(self) -> str:
        host, port = self.server_address[:2]
        return f"{host}:{port}"


def main() -> None:
    """``python -m orders.inventory``: serve until killed (in a container)."""
    parser = argparse.ArgumentParser(description="the inventory demo service")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=7000)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # PID 1 in a container
    with InventoryServer(args.host, args.port) as server:
        print(f"inventory: {server.address}", flush=True)
        signal.pause()


if __name__ == "__main__":
    main()
