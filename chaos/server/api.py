"""The HTTP control API: Toxiproxy 2.12's endpoints on aiohttp.

Every error is JSON ``{"error": ..., "status": ...}``, including unknown paths (404), wrong
methods (405) and browser requests (403).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web

from chaos.server.apierror import ApiError, bad_request
from chaos.server.config import parse_populate, parse_proxy_config, parse_proxy_update
from chaos.server.control import ControlConnections
from chaos.server.dashboard import PATHS as DASHBOARD_PATHS
from chaos.server.dashboard import ServerDashboard
from chaos.server.limits import ServerLimits
from chaos.server.metrics import CONTENT_TYPE, ServerMetrics
from chaos.server.proxy import Proxy
from chaos.server.registry import ProxyRegistry

API_VERSION: Final = "2.12.0"
"""The Toxiproxy API version this server implements (>= 2.7.0, so clients use PATCH)."""

MAX_BODY: Final = 1 << 20

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(error: ApiError) -> web.Response:
    """Render *error* as Toxiproxy does."""
    return web.json_response(error.to_json(), status=error.status)


@web.middleware
async def _errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    # Toxiproxy refuses browsers so a web page the developer visits cannot drive the API
    # through a cross-site request (it cannot set a non-browser User-Agent).
    # The dashboard's two read-only paths are the exception: they are meant for browsers.
    readonly_page = request.method in ("GET", "HEAD") and request.path in DASHBOARD_PATHS
    if request.headers.get("User-Agent", "").startswith("Mozilla/") and not readonly_page:
        return error_response(
            ApiError(
                "User agent not allowed: the control API refuses web browsers so that web pages "
                "cannot drive it; use curl, a Toxiproxy client or chaos.ToxiproxyClient",
                403,
            )
        )
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc)
    except web.HTTPMethodNotAllowed as exc:
        allowed = ", ".join(sorted(exc.allowed_methods))
        return error_response(
            ApiError(
                f"method not allowed: {request.method} {request.path} (allowed: {allowed})", 405
            )
        )
    except web.HTTPNotFound:
        return error_response(
            ApiError(
                f"not found: no endpoint {request.path}; the API has /proxies, /populate, "
                "/reset, /version and /metrics",
                404,
            )
        )
    except web.HTTPRequestEntityTooLarge:
        return error_response(
            bad_request(f"body larger than {MAX_BODY} bytes; send one proxy or toxic at a time")
        )


async def _json_body(request: web.Request, within: float) -> object:
    """The request's JSON body, read within *within* seconds (else the connection is closed).

    Bytes that are not UTF-8 become U+FFFD, as Go's decoder (Toxiproxy) makes them.
    """
    try:
        async with asyncio.timeout(within):
            raw = await request.read()
    except TimeoutError:
        if request.transport is not None:
            request.transport.abort()
        raise ApiError(f"request body not received within {within:g} s", 408) from None
    text = raw.decode("utf-8", "replace")
    if not text.strip():
        raise bad_request("empty body; send a JSON document")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise bad_request(f"invalid JSON: {exc}") from None


class ControlApi:
    """Request handlers bound to one server's proxies."""

    def __init__(
        self,
        proxies: ProxyRegistry,
        metrics: ServerMetrics,
        limits: ServerLimits,
        connections: ControlConnections,
        dashboard: ServerDashboard | None = None,
    ) -> None:
        self.proxies = proxies
        self.metrics = metrics
        self.limits = limits
        self.connections = connections
        self.dashboard = dashboard

    async def _body(self, request: web.Request) -> object:
        return await _json_body(request, self.limits.header_timeout)

    def app(self) -> web.Application:
        """Build the aiohttp application with every route."""
        app = web.Application(
            middlewares=[self.connections.middleware(), _errors_as_json],
            client_max_size=MAX_BODY,
        )
        r = app.router
        r.add_post("/reset", self.reset)
        r.add_get("/proxies", self.proxy_index)
        r.add_post("/proxies", self.proxy_create)
        r.add_post("/populate", self.populate)
        r.add_get("/proxies/{proxy}", self.proxy_show)
        r.add_post("/proxies/{proxy}", self.proxy_update)
        r.add_patch("/proxies/{proxy}", self.proxy_update)
        r.add_delete("/proxies/{proxy}", self.proxy_delete)
        r.add_get("/proxies/{proxy}/toxics", self.toxic_index)
        r.add_post("/proxies/{proxy}/toxics", self.toxic_create)
        r.add_get("/proxies/{proxy}/toxics/{toxic}", self.toxic_show)
        r.add_post("/proxies/{proxy}/toxics/{toxic}", self.toxic_update)
        r.add_patch("/proxies/{proxy}/toxics/{toxic}", self.toxic_update)
        r.add_delete("/proxies/{proxy}/toxics/{toxic}", self.toxic_delete)
        r.add_get("/version", self.version)
        r.add_get("/metrics", self.metrics_text)
        # Synapse's extension, beside the Toxiproxy API (which has no /synapse paths).
        r.add_get("/synapse/traffic/{proxy}", self.traffic)
        if self.dashboard is not None:  # Synapse's live page of proxies, faults and breakers
            r.add_get("/dashboard", self.dashboard.page)
            r.add_get("/events", self.dashboard.events)
        return app

    async def reset(self, request: web.Request) -> web.StreamResponse:
        """``POST /reset``: enable every proxy, remove every toxic (204)."""
        await self.proxies.reset()
        return web.Response(status=204)

    async def proxy_index(self, request: web.Request) -> web.StreamResponse:
        """``GET /proxies``: every proxy keyed by name, names in sorted order (as Go's JSON)."""
        proxies = sorted(self.proxies.all(), key=lambda p: p.name)
        return web.json_response({p.name: p.to_json() for p in proxies})

    async def proxy_create(self, request: web.Request) -> web.StreamResponse:
        """``POST /proxies``: create a proxy (201)."""
        config = parse_proxy_config(await self._body(request))
        proxy = await self.proxies.create(config)
        return web.json_response(proxy.to_json(), status=201)

    async def populate(self, request: web.Request) -> web.StreamResponse:
        """``POST /populate``: create or replace several proxies (201, ``{"proxies": [...]}``).

        A failure answers, as Toxiproxy does, the error plus ``proxies``: those handled before
        it, or ``null`` if none (always ``null`` for invalid input: nothing was changed).
        """
        done: list[Proxy] = []
        try:
            configs = parse_populate(await self._body(request))
            await self.proxies.populate(configs, done)
        except ApiError as exc:
            body = exc.to_json()
            body["proxies"] = [p.to_json() for p in done] or None
            return web.json_response(body, status=exc.status)
        return web.json_response({"proxies": [p.to_json() for p in done]}, status=201)

    async def proxy_show(self, request: web.Request) -> web.StreamResponse:
        """``GET /proxies/{p}``."""
        return web.json_response(self.proxies.get(request.match_info["proxy"]).to_json())

    async def proxy_update(self, request: web.Request) -> web.StreamResponse:
        """``POST``/``PATCH /proxies/{p}``: partial update (200)."""
        name = request.match_info["proxy"]
        self.proxies.get(name)  # 404 before complaining about the body
        update = parse_proxy_update(await self._body(request))
        proxy = await self.proxies.update(name, update)
        return web.json_response(proxy.to_json())

    async def proxy_delete(self, request: web.Request) -> web.StreamResponse:
        """``DELETE /proxies/{p}`` (204)."""
        await self.proxies.delete(request.match_info["proxy"])
        return web.Response(status=204)

    async def toxic_index(self, request: web.Request) -> web.StreamResponse:
        """``GET /proxies/{p}/toxics``: upstream toxics, then downstream ones."""
        proxy = self.proxies.get(request.match_info["proxy"])
        return web.json_response([spec.to_json() for spec in proxy.toxic_specs()])

    async def toxic_create(self, request: web.Request) -> web.StreamResponse:
        """``POST /proxies/{p}/toxics``: add a toxic (200, as Toxiproxy answers)."""
        proxy = self.proxies.get(request.match_info["proxy"])
        spec = proxy.add_toxic(await self._body(request))
        return web.json_response(spec.to_json())

    async def toxic_show(self, request: web.Request) -> web.StreamResponse:
        """``GET /proxies/{p}/toxics/{t}``."""
        proxy = self.proxies.get(request.match_info["proxy"])
        return web.json_response(proxy.get_toxic(request.match_info["toxic"]).to_json())

    async def toxic_update(self, request: web.Request) -> web.StreamResponse:
        """``POST``/``PATCH /proxies/{p}/toxics/{t}``: update attributes/toxicity (200)."""
        proxy = self.proxies.get(request.match_info["proxy"])
        name = request.match_info["toxic"]
        proxy.get_toxic(name)
        spec = proxy.update_toxic(name, await self._body(request))
        return web.json_response(spec.to_json())

    async def toxic_delete(self, request: web.Request) -> web.StreamResponse:
        """``DELETE /proxies/{p}/toxics/{t}`` (204)."""
        proxy = self.proxies.get(request.match_info["proxy"])
        proxy.remove_toxic(request.match_info["toxic"])
        return web.Response(status=204)

    async def version(self, request: web.Request) -> web.StreamResponse:
        """``GET /version``: ``{"version": "2.12.0"}``."""
        return web.json_response({"version": API_VERSION})

    async def traffic(self, request: web.Request) -> web.StreamResponse:
        """``GET /synapse/traffic/{p}[?since=T]``: when clients connected and sent bytes.

        Not part of Toxiproxy's API (see :mod:`chaos.server.traffic`); times are the server's
        monotonic seconds, ``now`` included so a client on another clock can align them.
        """
        proxy = self.proxies.get(request.match_info["proxy"])
        since = request.query.get("since")
        try:
            low = None if since is None else float(since)
        except ValueError:
            raise bad_request(f"since must be a number of seconds, got {since!r}") from None
        body = {"proxy": proxy.name, **proxy.traffic.to_json(low)}
        return web.json_response(body)

    async def metrics_text(self, request: web.Request) -> web.StreamResponse:
        """``GET /metrics``: Prometheus text with per-proxy byte counters."""
        return web.Response(body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE})
