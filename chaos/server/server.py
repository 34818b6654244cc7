"""The chaos server: control API plus proxies, started and stopped on the running event loop."""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

from aiohttp import web

from chaos.server.api import ControlApi
from chaos.server.config import LOOPBACK, join_address, parse_populate, populate_body
from chaos.server.control import ControlConnections
from chaos.server.dashboard import ServerDashboard
from chaos.server.fds import FdReserve, raise_open_file_limit
from chaos.server.limits import ServerLimits
from chaos.server.link import PlaneContext
from chaos.server.listener import Listener, bind_socket
from chaos.server.metrics import ServerMetrics
from chaos.server.proxy import ServedProxy
from chaos.server.registry import ProxyRegistry

API_BACKLOG: Final = 128


class ChaosServer:
    """A Toxiproxy-compatible server running on the current asyncio event loop.

    ``await start()`` binds the control API (``port=0`` picks a free port; read :attr:`port`),
    ``await stop()`` closes the API, every proxy listener and every proxied connection.

    Args:
        host: address of the control API; loopback unless you mean to expose it.
        port: control API port (Toxiproxy's default is 8474).
        seed: seed for toxicity rolls, jitter and slice sizes, for reproducible runs.
        clock: monotonic seconds used to timestamp chunks (latency deadlines); it must advance
            in step with the event loop's own clock, which drives the waits.
        limits: time and resource bounds (:class:`~chaos.server.ServerLimits`; defaults follow
            Toxiproxy where it has them).

    Starting raises the process's soft open-file limit to its hard limit, as Go programs (and
    so Toxiproxy) do: a proxy under load needs far more descriptors than the usual 1024.

    >>> async def main():
    ...     async with ChaosServer(port=0) as server:
    ...         print(server.url)
    """

    def __init__(
        self,
        host: str = LOOPBACK,
        port: int = 8474,
        *,
        seed: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        limits: ServerLimits | None = None,
    ) -> None:
        self._host = host
        self._port = port
        self._seed = seed
        self._clock = clock
        self.limits = limits if limits is not None else ServerLimits()
        self._runner: web.AppRunner | None = None
        self._dashboard: ServerDashboard | None = None
        self._proxies: ProxyRegistry | None = None
        self._ctx: PlaneContext | None = None
        self._listeners: list[Listener] = []
        self._bound: tuple[str, int] | None = None

    @property
    def proxies(self) -> ProxyRegistry:
        """The proxies this server manages (only once started)."""
        if self._proxies is None:
            raise RuntimeError("the server is not started; await start() first")
        return self._proxies

    @property
    def host(self) -> str:
        """The address the control API is bound to."""
        return self._bound[0] if self._bound else self._host

    @property
    def port(self) -> int:
        """The control API port (the real one once started with port 0)."""
        return self._bound[1] if self._bound else self._port

    @property
    def url(self) -> str:
        """Base URL of the control API, e.g. ``http://127.0.0.1:8474``."""
        return f"http://{join_address(self.host, self.port)}"

    async def start(self) -> None:
        """Bind the control API; raise ``OSError`` if the address is taken."""
        if self._runner is not None:
            return
        raise_open_file_limit()
        loop = asyncio.get_running_loop()
        limits = self.limits
        fds = FdReserve(limits.fd_reserve)
        ctx = PlaneContext(loop, self._clock, random.Random(self._seed), limits=limits, fds=fds)
        self._proxies = ProxyRegistry(ctx)
        connections = ControlConnections(loop, limits, fds)
        self._dashboard = ServerDashboard(self._proxies)
        api = ControlApi(
            self._proxies, ServerMetrics(self._proxies), limits, connections, self._dashboard
        )
        runner = web.AppRunner(
            api.app(),
            access_log=None,
            handle_signals=False,
            keepalive_timeout=limits.idle_timeout,
        )
        await runner.setup()
        try:
            server = runner.server
            assert server is not None
            factory = connections.factory(server)
            for sock in await self._bind_api(loop):
                listener = Listener(
                    loop, sock, factory, fds, ctx.log, control=True, name="control API"
                )
                self._listeners.append(listener)
                listener.start()
        except BaseException:
            self._close_listeners()
            await runner.cleanup()
            ctx.close()
            raise
        self._runner = runner
        self._ctx = ctx
        self._bound = self._listeners[0].sockname

    async def _bind_api(self, loop: asyncio.AbstractEventLoop) -> list[socket.socket]:
        """One listening socket per address the API host resolves to (as ``create_server``)."""
        port = self._port
        infos = await loop.getaddrinfo(
            self._host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        sockets: list[socket.socket] = []
        try:
            for family, _, _, _, sockaddr in dict.fromkeys(
                (i[0], i[1], i[2], i[3], i[4]) for i in infos
            ):
                # Port 0 on several addresses: all on the port the first one got.
                address = (str(sockaddr[0]), port, *sockaddr[2:])
                sock = bind_socket(family, address, API_BACKLOG)
                sockets.append(sock)
                port = sock.getsockname()[1]
        except BaseException:
            for sock in sockets:
                sock.close()
            raise
        return sockets

    def _close_listeners(self) -> None:
        listeners, self._listeners = self._listeners, []
        for listener in listeners:
            listener.close()

    async def stop(self) -> None:
        """Close the control API, every proxy and every proxied connection."""
        runner = self._runner
        self._runner = None
        self._close_listeners()
        if self._dashboard is not None:
            await self._dashboard.close()  # ends open pages' streams
            self._dashboard = None
        if self._proxies is not None:
            await self._proxies.close()
        if runner is not None:
            await runner.cleanup()
        if self._ctx is not None:
            self._ctx.close()
            self._ctx = None

    async def populate(self, config: Sequence[Any]) -> list[ServedProxy]:
        """Create proxies from a ``/populate``-style list of dicts (as ``--config`` does).

        Raises :class:`~chaos.server.apierror.ApiError` naming the first bad entry.
        """
        return await self.proxies.populate(parse_populate(populate_body(config)))

    async def __aenter__(self) -> ChaosServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
