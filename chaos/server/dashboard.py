"""``GET /dashboard`` and ``GET /events`` of the chaos server: proxies and faults, live.

The same page as ``synapse_core.health``'s dashboard: every proxy with its route, whether it is
enabled and its active toxics, and, when circuit breakers live in the same process (the
embedded server inside a test run, say), their states next to the faults. Toxiproxy has no
such paths; they sit beside its API and are the only ones a browser may open (they change
nothing).

Proxy changes reach the page with the next ``stats`` event (every *interval* seconds while a
page is open), breaker transitions at once. At most *max_clients* pages are served at once, so
open dashboards cannot take the control connections the API needs.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from chaos.server.registry import ProxyRegistry
from synapse_core.breaker import CircuitBreakerManager, default_manager
from synapse_core.health.documents import breakers_document, stats_document
from synapse_core.health.endpoints import EVENT_STREAM
from synapse_core.health.feed import STREAM_START, EventFeed
from synapse_core.health.journal import Transition, TransitionJournal
from synapse_core.health.page import DashboardPage

PATHS = ("/dashboard", "/events")


def _none_critical(name: str) -> bool:
    return False  # /health's notion; the chaos server has no health verdict


class ServerDashboard:
    """The live page of one chaos server (see the module docstring)."""

    def __init__(
        self,
        proxies: ProxyRegistry,
        *,
        manager: CircuitBreakerManager | None = None,
        interval: float = 0.25,
        max_clients: int = 8,
    ) -> None:
        self._proxies = proxies
        self._manager = default_manager if manager is None else manager
        self._max_clients = max_clients
        self._interval = interval
        self._page = DashboardPage("Synapse chaos server")
        # No ticker thread: the proxies belong to the event loop, so the loop publishes the
        # periodic event itself (_tick), while a page is open.
        self.feed = EventFeed(self._snapshot, name="synapse-chaos-feed")
        self._ticker: asyncio.Task[None] | None = None
        self._journal = TransitionJournal(self._manager, on_transition=self._publish)
        self._instance = f"chaos-{id(self):x}"

    # -- documents, built on the server's event loop (which owns the proxies)

    def _proxy_documents(self) -> list[dict[str, Any]]:
        return [p.to_json() for p in sorted(self._proxies.all(), key=lambda p: p.name)]

    def _snapshot(self) -> dict[str, Any]:
        document = breakers_document(self._manager, _none_critical, self._journal, self._instance)
        document["proxies"] = self._proxy_documents()
        return document

    def _stats(self) -> dict[str, Any]:
        document = stats_document(self._manager, _none_critical, self._journal)
        document["proxies"] = self._proxy_documents()
        return document

    def _publish(self, transition: Transition) -> None:
        self.feed.publish("transition", {"breaker": transition.breaker, **transition.to_json()})

    async def _tick(self) -> None:
        while self.feed.subscribers:
            await asyncio.sleep(self._interval)
            self.feed.publish("stats", self._stats(), periodic=True)
        self._ticker = None

    # -- handlers

    async def page(self, request: web.Request) -> web.StreamResponse:
        """``GET /dashboard``."""
        response = web.Response(body=self._page.html, content_type="text/html", charset="utf-8")
        for key, value in self._page.security_headers:
            response.headers[key] = value
        response.headers["Cache-Control"] = "no-store"
        return response

    async def events(self, request: web.Request) -> web.StreamResponse:
        """``GET /events``: server-sent events until the page goes away or the server stops."""
        if request.method == "HEAD":
            return web.Response(headers={"Content-Type": EVENT_STREAM, "Cache-Control": "no-store"})
        if self.feed.subscribers >= self._max_clients:
            raise web.HTTPServiceUnavailable(
                text=f"at most {self._max_clients} dashboards at once; close one",
                headers={"Retry-After": "5"},
            )
        response = web.StreamResponse(
            headers={
                "Content-Type": EVENT_STREAM,
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        subscription = self.feed.subscribe()
        if self._ticker is None:
            self._ticker = asyncio.ensure_future(self._tick())
        try:
            chunk: bytes | None = STREAM_START
            while chunk is not None:
                await response.write(chunk)
                chunk = await subscription.read_async(15.0)
        except (ConnectionResetError, asyncio.CancelledError):
            pass  # the page went away, or the server is stopping
        finally:
            subscription.close()
        return response

    async def close(self) -> None:
        """End the pages' streams and stop listening to breakers."""
        self._journal.close()
        self.feed.close()
        ticker, self._ticker = self._ticker, None
        if ticker is not None:
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)
