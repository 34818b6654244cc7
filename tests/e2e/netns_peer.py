"""One mDNS peer driven over stdin/stdout, for the network-namespace tests.

Run inside a namespace: ``python netns_peer.py ENTITY_ID LISTEN_IP SERVICE_TYPE [PORT
[RECOVERY]]`` (port 7000 and a breaker recovery of 1 s by default; the transport tests also run it
on loopback). It prints ``{"ready": ...}`` once started, then answers one JSON line per JSON
command line:

* ``{"cmd": "wait_peer", "id": "b", "timeout": 10}`` -> ``{"ok": true, "host": .., "port": ..}``
* ``{"cmd": "send", "to": "b", "text": "hi"}`` -> ``{"ok": bool, "error": name, "elapsed": s}``
* ``{"cmd": "state", "to": "b"}`` -> ``{"state": "closed" | "open" | "half_open"}``
* ``{"cmd": "received"}`` -> ``{"texts": [...]}``
* ``{"cmd": "quit"}`` -> stops the transport and exits

By default the breaker recovers after 1 s of real time and timeouts are 0.5 s, so a test stays
short.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from synapse_core import CircuitBreakerConfig
from synapse_core.transport import MdnsConfig, MdnsTransport, Message


async def _lines() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


def _reply(data: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(data) + "\n")
    sys.stdout.flush()


async def _handle(peer: MdnsTransport, request: dict[str, Any]) -> dict[str, Any]:
    cmd = request["cmd"]
    if cmd == "wait_peer":
        info = await peer.wait_for_peer(request["id"], timeout=float(request["timeout"]))
        return {"ok": True, "host": info.host, "port": info.port}
    if cmd == "send":
        target = request["to"]
        started = time.perf_counter()
        try:
            message = Message(target, peer.entity_id, request["text"].encode())
            await peer.send_message(target, message)
        except Exception as exc:
            return {
                "ok": False,
                "error": type(exc).__name__,
                "elapsed": time.perf_counter() - started,
            }
        return {"ok": True, "elapsed": time.perf_counter() - started}
    if cmd == "state":
        return {"state": peer.get_circuit_breaker(request["to"]).state.value}
    if cmd == "received":
        return {"texts": [m.content.decode() for m in await peer.receive_messages()]}
    return {"error": f"unknown command {cmd!r}"}


async def main(
    entity_id: str, listen_ip: str, service_type: str, port: str = "7000", recovery: str = "1.0"
) -> None:
    config = MdnsConfig(
        interfaces=[listen_ip], service_type=service_type, probe_name=False, query_interval=1.0
    )
    breaker = CircuitBreakerConfig(recovery_timeout=float(recovery))
    peer = MdnsTransport(
        entity_id, int(port), config, breaker_config=breaker, connect_timeout=0.5, send_timeout=0.5
    )
    async with peer:
        _reply({"ready": True, "address": list(peer.address), "instance": peer.instance})
        reader = await _lines()
        while line := await reader.readline():
            request = json.loads(line)
            if request["cmd"] == "quit":
                break
            try:
                _reply(await _handle(peer, request))
            except Exception as exc:  # report, keep serving: the test decides
                _reply({"ok": False, "error": f"{type(exc).__name__}: {exc}"})


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
