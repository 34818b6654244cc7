"""Connections that land on a listener while it is being closed."""

from __future__ import annotations

import asyncio
import socket

from chaos_helpers import LoopThread

from chaos.server import ChaosServer
from chaos.server.link import Connection


def test_a_connection_accepted_just_before_a_disable_is_closed(loop_thread: LoopThread) -> None:
    server = ChaosServer(port=0)
    loop_thread.run(server.start())
    ours, theirs = socket.socketpair()
    try:

        async def accept_after_disable() -> tuple[bool, int]:
            (proxy,) = await server.populate(
                [{"name": "p", "listen": "127.0.0.1:0", "upstream": "127.0.0.1:9"}]
            )
            await proxy.stop()
            # What the listener's already-queued accept delivers after the disable: a socket
            # whose protocol is made only now.
            transport, _ = await asyncio.get_running_loop().connect_accepted_socket(
                lambda: Connection(proxy, proxy.ctx).client, ours
            )
            return transport.is_closing(), len(proxy.connections)

        closing, tracked = loop_thread.run(accept_after_disable())
        assert closing, "a disabled proxy kept a connection open"
        assert tracked == 0
        theirs.settimeout(5)
        assert theirs.recv(1) == b""  # the client sees the close
    finally:
        theirs.close()
        loop_thread.run(server.stop())
