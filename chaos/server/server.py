"""The chaos server: control API plus proxies, started and stopped on the running event loop."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from aiohttp import web

from chaos.server.api import ControlApi
from chaos.server.config import LOOPBACK, ProxyConfig, join_address, parse_populate
from chaos.server.link import PlaneContext
from chaos.server.metrics import ServerMetrics
from chaos.server.proxy import Proxy
from chaos.server.registry import ProxyRegistry


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
    ) -> None:
        self._host = host
        self._port = port
        self._seed = seed
        self._clock = clock
        self._runner: web.AppRunner | None = None
        self._proxies: ProxyRegistry | None = None
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
        loop = asyncio.get_running_loop()
        ctx = PlaneContext(loop, self._clock, random.Random(self._seed))
        self._proxies = ProxyRegistry(ctx)
        api = ControlApi(self._proxies, ServerMetrics(self._proxies))
        runner = web.AppRunner(api.app(), access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self._host, self._port, reuse_address=True)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        address = runner.addresses[0]
        self._bound = (str(address[0]), int(address[1]))

    async def stop(self) -> None:
        """Close the control API, every proxy and every proxied connection."""
        runner = self._runner
        self._runner = None
        if self._proxies is not None:
            await self._proxies.close()
        if runner is not None:
            await runner.cleanup()

    async def populate(self, config: Sequence[Any]) -> list[Proxy]:
        """Create proxies from a ``/populate``-style list of dicts (as ``--config`` does).

        Raises :class:`~chaos.server.apierror.ApiError` naming the first bad entry.
        """
        configs: list[ProxyConfig] = parse_populate(list(config))
        return await self.proxies.populate(configs)

    async def __aenter__(self) -> ChaosServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
