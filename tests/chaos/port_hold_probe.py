"""Run inside a fresh network namespace: does a disabled proxy keep its port under port pressure?

Started by ``test_disabled_proxy_port.py`` as ``unshare --net ... python port_hold_probe.py``.
The namespace's automatic port range is narrowed to two ports, so that once a proxy listening on
one of them is disabled, every automatic choice (listeners on port 0, outgoing connections) would
take its port if it were free. Prints one JSON object: the proxy's port, the ports those sockets
got, and whether enabling the proxy worked afterwards.
"""

from __future__ import annotations

import contextlib
import json
import socket
from pathlib import Path

from chaos import EmbeddedToxiproxy, ToxiproxyError

RANGE = (40000, 40001)
FIXED = 9000  # a listener outside the range, for outgoing connections to reach


def _taken_by_listeners(stack: contextlib.ExitStack) -> list[int]:
    ports = []
    for _ in range(10):  # bounded: the range has two ports
        sock = stack.enter_context(socket.socket())
        try:
            sock.bind(("127.0.0.1", 0))
            sock.listen(1)
        except OSError:
            break
        ports.append(int(sock.getsockname()[1]))
    return ports


def _taken_by_connections(stack: contextlib.ExitStack) -> list[int]:
    server = stack.enter_context(socket.create_server(("127.0.0.1", FIXED), backlog=64))
    ports = []
    for _ in range(10):
        sock = stack.enter_context(socket.socket())
        try:
            sock.connect(("127.0.0.1", FIXED))
        except OSError:
            break
        ports.append(int(sock.getsockname()[1]))
        stack.enter_context(server.accept()[0])
    return ports


def main() -> None:
    with EmbeddedToxiproxy(port=8474) as toxiproxy:  # before the range is narrowed
        client = toxiproxy.client()
        Path("/proc/sys/net/ipv4/ip_local_port_range").write_text(f"{RANGE[0]} {RANGE[1]}\n")
        port = client.create_proxy("held", upstream="127.0.0.1:9", listen="127.0.0.1:0").port
        client.disable("held")
        with contextlib.ExitStack() as stack:
            listeners = _taken_by_listeners(stack)
            connections = _taken_by_connections(stack)
            try:
                enabled = client.enable("held").enabled
                error = ""
            except ToxiproxyError as exc:
                enabled, error = False, exc.message
        result = {
            "port": port,
            "in_range": RANGE[0] <= port <= RANGE[1],
            "listeners": listeners,
            "connections": connections,
            "enabled": enabled,
            "error": error,
        }
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
