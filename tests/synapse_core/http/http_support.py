"""A real local HTTP server that counts the connections it accepts, and one client per library.

Each ``Client`` makes GET requests through a breaker-guarded client of httpx (sync or async),
requests or aiohttp, and returns the status (or raises what the client raises).
"""

from __future__ import annotations

import asyncio
import http.server
import threading
from typing import Any

from synapse_core import CircuitBreaker, CircuitBreakerConfig

CLIENTS = ("httpx", "httpx-async", "requests", "aiohttp")


class CountingServer(http.server.ThreadingHTTPServer):
    """Answers ``GET /<status>`` with that status; :attr:`accepted` counts connections."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.accepted = 0
        self._count_lock = threading.Lock()

    def get_request(self) -> Any:
        request = super().get_request()
        with self._count_lock:
            self.accepted += 1
        return request


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real clients use
    disable_nagle_algorithm = True  # headers and body written apart: no delayed-ACK stalls

    def do_GET(self) -> None:
        status = int(self.path.strip("/") or 200)
        body = b"stock: 7"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Client:
    """``get(path)``: one GET to ``http://{address}{path}`` with a client of *kind*."""

    def __init__(self, kind: str, address: str, *, timeout: float = 0.3, **guard: Any) -> None:
        self.kind = kind
        self.base = f"http://{address}"
        self.timeout = timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        if kind == "httpx":
            import httpx

            from synapse_core.http import BreakerTransport

            self.guard: Any = BreakerTransport(**guard)
            self._client: Any = httpx.Client(transport=self.guard, timeout=timeout)
            self.timeouts: tuple[type[BaseException], ...] = (httpx.TimeoutException,)
        elif kind == "httpx-async":
            import httpx

            from synapse_core.http import AsyncBreakerTransport

            self._loop = asyncio.new_event_loop()
            self.guard = AsyncBreakerTransport(**guard)
            self._client = httpx.AsyncClient(transport=self.guard, timeout=timeout)
            self.timeouts = (httpx.TimeoutException,)
        elif kind == "requests":
            import requests

            from synapse_core.http import BreakerAdapter

            self.guard = BreakerAdapter(**guard)
            self._client = requests.Session()
            self._client.mount("http://", self.guard)
            self.timeouts = (requests.Timeout,)
        else:
            import aiohttp

            from synapse_core.http import BreakerMiddleware

            self._loop = asyncio.new_event_loop()
            self.guard = BreakerMiddleware(**guard)

            async def session() -> Any:
                return aiohttp.ClientSession(
                    middlewares=(self.guard,), timeout=aiohttp.ClientTimeout(total=timeout)
                )

            self._client = self._loop.run_until_complete(session())
            self.timeouts = (asyncio.TimeoutError,)

    @property
    def breaker(self) -> CircuitBreaker:
        """The one breaker made so far (one host)."""
        (breaker,) = self.guard.breakers.breakers.values()
        return breaker  # type: ignore[no-any-return]

    def get(self, path: str = "/200") -> int:
        url = self.base + path
        if self.kind == "httpx":
            return int(self._client.get(url).status_code)
        if self.kind == "requests":
            return int(self._client.get(url, timeout=self.timeout).status_code)
        assert self._loop is not None
        return self._loop.run_until_complete(self._get_async(url))

    async def _get_async(self, url: str) -> int:
        if self.kind == "httpx-async":
            return int((await self._client.get(url)).status_code)
        async with self._client.get(url) as response:
            await response.read()
            return int(response.status)

    def close(self) -> None:
        if self.kind in ("httpx", "requests"):
            self._client.close()
            return
        assert self._loop is not None
        closing = self._client.aclose() if self.kind == "httpx-async" else self._client.close()
        self._loop.run_until_complete(closing)
        self._loop.close()


def config(**fields: Any) -> CircuitBreakerConfig:
    """Small thresholds and a short recovery, for tests."""
    fields.setdefault("failure_threshold", 3)
    fields.setdefault("recovery_timeout", 0.3)
    return CircuitBreakerConfig(**fields)
