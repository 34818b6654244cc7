"""An mDNS peer for the Docker tests: ``python3 mdns_peer.py ID [PEER]`` inside a container.

Finds peers on the container's own interfaces (``host_addresses()``). With PEER, it waits to
discover it, then sends it a message every 0.1 s through its per-peer breaker and serves
``GET /breakers`` (breaker name -> state, like the orders service) on port 8080.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys

from synapse_core import CircuitBreakerConfig, CircuitOpenError
from synapse_core.transport import (
    MdnsConfig,
    MdnsTransport,
    Message,
    TransportError,
    host_addresses,
)

BREAKER = CircuitBreakerConfig(
    failure_threshold=3,
    minimum_requests=3,
    failure_window=10.0,
    recovery_timeout=0.5,
    half_open_max_calls=2,
)


async def main(node: str, peer: str | None) -> None:
    config = MdnsConfig(
        interfaces=host_addresses(), probe_name=False, query_interval=0.5, peer_timeout=30
    )
    transport = MdnsTransport(
        node, 7100, config, breaker_config=BREAKER, connect_timeout=0.3, send_timeout=0.3
    )
    async with transport:
        print(f"{node}: up on {config.interfaces}", flush=True)
        if peer is None:
            async for _ in transport:  # keep the inbound queue drained
                pass
            return
        found = await transport.wait_for_peer(peer, timeout=30)
        print(f"{node}: found {peer} at {found.host}:{found.port}", flush=True)

        async def breakers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await reader.readuntil(b"\r\n\r\n")
                states = {b.name: b.state.value for b in transport.circuit_breakers.values()}
                body = json.dumps(states).encode()
                writer.write(
                    b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
            finally:
                writer.close()

        server = await asyncio.start_server(breakers, "0.0.0.0", 8080)
        async with server:
            while True:
                with contextlib.suppress(CircuitOpenError, TransportError, OSError):
                    await transport.send_message(peer, Message(peer, node, b"ping"))
                await asyncio.sleep(0.1)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None))
