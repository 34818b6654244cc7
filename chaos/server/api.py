"""The HTTP control API: Toxiproxy 2.12's endpoints on aiohttp, answering as it does.

What a client sees is Toxiproxy's, byte for byte (checked against a transcript recorded from the
real 2.12.0 server, ``tests/chaos/toxiproxy_transcript.json``):

* bodies are compact JSON in Toxiproxy's field order (:mod:`chaos.server.gojson`), proxies with
  Toxiproxy's empty ``"Logger":{}``; ``GET /proxies`` sorted by name;
* ``Content-Type: application/json`` on JSON answers, ``application/json;charset=utf-8`` and a
  trailing newline on ``/version``;
* errors are written as Go's ``http.Error`` writes them: ``text/plain; charset=utf-8``,
  ``X-Content-Type-Options: nosniff``, the JSON ``{"error","status"}`` and a newline (the
  ``/populate`` answer is ``application/json``, with ``proxies``); our explanation is an extra
  ``hint`` member and a log line;
* every answer of an endpoint carries ``X-Toxiproxy-Request-Id`` (an xid);
* a known path with another method is a 405 with an empty body, an unknown path a 404
  ``404 page not found`` (text); neither has a request id, as in Toxiproxy (its router answers
  them before its middleware runs);
* a browser (``User-Agent: Mozilla/...``) gets Toxiproxy's 403 ``User agent not allowed``;
* a path with empty, ``.`` or ``..`` segments is redirected (301) to its cleaned form, as
  Toxiproxy's router does (:mod:`chaos.server.cleanpath`), before any routing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import hdrs, web

from chaos.server import gojson
from chaos.server.apierror import ApiError, bad_request
from chaos.server.cleanpath import redirect_location
from chaos.server.config import parse_populate, parse_proxy_config, parse_proxy_update
from chaos.server.control import ControlConnections
from chaos.server.dashboard import PATHS as DASHBOARD_PATHS
from chaos.server.dashboard import ServerDashboard
from chaos.server.limits import ServerLimits
from chaos.server.metrics import CONTENT_TYPE, ServerMetrics
from chaos.server.proxy import ServedProxy
from chaos.server.registry import ProxyRegistry
from chaos.server.requestid import HEADER as REQUEST_ID
from chaos.server.requestid import RequestIds

API_VERSION: Final = "2.12.0"
"""The Toxiproxy API version this server implements (>= 2.7.0, so clients use PATCH)."""

MAX_BODY: Final = 1 << 20

JSON: Final = "application/json"
TEXT: Final = "text/plain; charset=utf-8"
NOSNIFF: Final = {"X-Content-Type-Options": "nosniff"}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

log = logging.getLogger("chaos.server.api")


def json_response(body: object, status: int = 200, *, float32: bool = True) -> web.Response:
    """*body* as Toxiproxy writes a JSON answer (floats as float32, see gojson.encode)."""
    text = gojson.encode(body, float32=float32)
    return web.Response(body=text.encode(), status=status, headers={hdrs.CONTENT_TYPE: JSON})


def error_response(error: ApiError) -> web.Response:
    """*error* as Toxiproxy writes one (Go's ``http.Error``: text/plain, nosniff, newline)."""
    body = gojson.encode(error.to_json()) + "\n"
    return _text(body, error.status)


def _text(body: str, status: int) -> web.Response:
    return web.Response(
        body=body.encode(), status=status, headers={hdrs.CONTENT_TYPE: TEXT, **NOSNIFF}
    )


def _log(request: web.Request, error: ApiError) -> None:
    level = logging.WARNING if error.status >= 500 else logging.INFO
    log.log(level, "%s %s -> %d %s", request.method, request.path, error.status, error)


async def _as_toxiproxy_headers(request: web.Request, response: web.StreamResponse) -> None:
    # Toxiproxy's Go server sends no Server header; aiohttp would name itself.
    response.headers.popall(hdrs.SERVER, None)
    # Every endpoint's answer has a request id (streams too: this runs before headers are sent);
    # the router's own 404, 405 and path redirects have none, as in Toxiproxy.
    if request.match_info.http_exception is None and response.status != 301:
        response.headers[REQUEST_ID] = request.app[REQUEST_IDS].next()


@web.middleware
async def _as_toxiproxy(request: web.Request, handler: Handler) -> web.StreamResponse:
    location = redirect_location(request.path, request.query_string)
    if location is not None:
        # Toxiproxy's router cleans the path first; Go clients follow the redirect.
        log.info("%s %s -> 301 %s", request.method, request.path, location)
        return web.Response(status=301, headers={hdrs.LOCATION: location, hdrs.CONTENT_LENGTH: "0"})
    unmatched = request.match_info.http_exception
    if isinstance(unmatched, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(unmatched.allowed_methods))
        log.info("%s %s -> 405 (allowed: %s)", request.method, request.path, allowed)
        # Go writes "Content-Length: 0", and no header at all in answer to a HEAD.
        headers = {} if request.method == hdrs.METH_HEAD else {hdrs.CONTENT_LENGTH: "0"}
        return web.Response(status=405, headers=headers)
    if unmatched is not None:
        log.info("%s %s -> 404 no such endpoint", request.method, request.path)
        return _text("404 page not found\n", 404)
    return await _endpoint(request, handler)


async def _endpoint(request: web.Request, handler: Handler) -> web.StreamResponse:
    # Toxiproxy refuses browsers so a web page the developer visits cannot drive the API
    # through a cross-site request (it cannot set a non-browser User-Agent).
    # The dashboard's two read-only paths are the exception: they are meant for browsers.
    readonly_page = request.method in ("GET", "HEAD") and request.path in DASHBOARD_PATHS
    if request.headers.get(hdrs.USER_AGENT, "").startswith("Mozilla/") and not readonly_page:
        log.info(
            "%s %s -> 403: the control API refuses web browsers, so that web pages cannot "
            "drive it; use curl, a Toxiproxy client or chaos.ToxiproxyClient",
            request.method,
            request.path,
        )
        return _text("User agent not allowed\n", 403)
    try:
        return await handler(request)
    except ApiError as exc:
        _log(request, exc)
        return error_response(exc)
    except web.HTTPRequestEntityTooLarge:
        error = bad_request(
            f"body larger than {MAX_BODY} bytes", "send one proxy or toxic at a time"
        )
        _log(request, error)
        return error_response(error)


REQUEST_IDS: Final = web.AppKey("request_ids", RequestIds)


async def _read_body(request: web.Request, within: float) -> bytes:
    """The request's body, read within *within* seconds (else the connection is closed)."""
    try:
        async with asyncio.timeout(within):
            return await request.read()
    except TimeoutError:
        if request.transport is not None:
            request.transport.abort()
        raise ApiError(
            "request body not received in time",
            408,
            f"the body must arrive within {within:g} s of the request's first byte",
        ) from None


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

    async def _body(self, request: web.Request) -> bytes:
        return await _read_body(request, self.limits.header_timeout)

    def app(self) -> web.Application:
        """Build the aiohttp application with every route."""
        app = web.Application(
            middlewares=[self.connections.middleware(), _as_toxiproxy],
            client_max_size=MAX_BODY,
        )
        app[REQUEST_IDS] = RequestIds()
        app.on_response_prepare.append(_as_toxiproxy_headers)
        r = app.router
        # No implicit HEAD: Toxiproxy's router answers HEAD with a 405 like any other method.
        r.add_post("/reset", self.reset)
        r.add_get("/proxies", self.proxy_index, allow_head=False)
        r.add_post("/proxies", self.proxy_create)
        r.add_post("/populate", self.populate)
        r.add_get("/proxies/{proxy}", self.proxy_show, allow_head=False)
        r.add_post("/proxies/{proxy}", self.proxy_update)
        r.add_patch("/proxies/{proxy}", self.proxy_update)
        r.add_delete("/proxies/{proxy}", self.proxy_delete)
        r.add_get("/proxies/{proxy}/toxics", self.toxic_index, allow_head=False)
        r.add_post("/proxies/{proxy}/toxics", self.toxic_create)
        r.add_get("/proxies/{proxy}/toxics/{toxic}", self.toxic_show, allow_head=False)
        r.add_post("/proxies/{proxy}/toxics/{toxic}", self.toxic_update)
        r.add_patch("/proxies/{proxy}/toxics/{toxic}", self.toxic_update)
        r.add_delete("/proxies/{proxy}/toxics/{toxic}", self.toxic_delete)
        r.add_get("/version", self.version, allow_head=False)
        r.add_route("*", "/metrics", self.metrics_text)  # any method, as Toxiproxy
        # Synapse's extension, beside the Toxiproxy API (which has no /synapse paths).
        r.add_get("/synapse/traffic/{proxy}", self.traffic, allow_head=False)
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
        return json_response({p.name: p.to_json() for p in proxies})

    async def proxy_create(self, request: web.Request) -> web.StreamResponse:
        """``POST /proxies``: create a proxy (201)."""
        config = parse_proxy_config(await self._body(request))
        proxy = await self.proxies.create(config)
        return json_response(proxy.to_json(), status=201)

    async def populate(self, request: web.Request) -> web.StreamResponse:
        """``POST /populate``: create or replace several proxies (201, ``{"proxies": [...]}``).

        Entries are created in order; the first failure stops it, and the answer is the error
        with ``proxies``: those handled before it (``null`` if none, or if the body was
        refused before anything changed), as Toxiproxy answers. An empty list answers
        ``{"proxies":null}``, as Toxiproxy does too.
        """
        done: list[ServedProxy] = []
        try:
            configs = parse_populate(await self._body(request))
            await self.proxies.populate(configs, done)
        except ApiError as exc:
            _log(request, exc)
            body: dict[str, object] = {"error": exc.message, "status": exc.status}
            body["proxies"] = [p.to_json() for p in done] or None
            if exc.hint:
                body["hint"] = exc.hint
            return json_response(body, status=exc.status)
        return json_response({"proxies": [p.to_json() for p in done] or None}, status=201)

    async def proxy_show(self, request: web.Request) -> web.StreamResponse:
        """``GET /proxies/{p}``."""
        return json_response(self.proxies.get(request.match_info["proxy"]).to_json())

    async def proxy_update(self, request: web.Request) -> web.StreamResponse:
        """``POST``/``PATCH /proxies/{p}``: partial update (200)."""
        name = request.match_info["proxy"]
        self.proxies.get(name)  # 404 before complaining about the body
        update = parse_proxy_update(await self._body(request))
        proxy = await self.proxies.update(name, update)
        return json_response(proxy.to_json())

    async def proxy_delete(self, request: web.Request) -> web.StreamResponse:
        """``DELETE /proxies/{p}`` (204)."""
        await self.proxies.delete(request.match_info["proxy"])
        return web.Response(status=204)

    async def toxic_index(self, request: web.Request) -> web.StreamResponse:
        """``GET /proxies/{p}/toxics``: upstream toxics, then downstream ones."""
        proxy = self.proxies.get(request.match_info["proxy"])
        return json_response([spec.to_json() for spec in proxy.toxic_specs()])

    async def toxic_create(self, request: web.Request) -> web.StreamResponse:
        """``POST /proxies/{p}/toxics``: add a toxic (200, as Toxiproxy answers)."""
        proxy = self.proxies.get(request.match_info["proxy"])
        spec = proxy.add_toxic(await self._body(request))
        return json_response(spec.to_json())

    async def toxic_show(self, request: web.Request) -> web.StreamResponse:
        """``GET /proxies/{p}/toxics/{t}``."""
        proxy = self.proxies.get(request.match_info["proxy"])
        return json_response(proxy.get_toxic(request.match_info["toxic"]).to_json())

    async def toxic_update(self, request: web.Request) -> web.StreamResponse:
        """``POST``/``PATCH /proxies/{p}/toxics/{t}``: update attributes/toxicity (200)."""
        proxy = self.proxies.get(request.match_info["proxy"])
        name = request.match_info["toxic"]
        proxy.get_toxic(name)
        spec = proxy.update_toxic(name, await self._body(request))
        return json_response(spec.to_json())

    async def toxic_delete(self, request: web.Request) -> web.StreamResponse:
        """``DELETE /proxies/{p}/toxics/{t}`` (204)."""
        proxy = self.proxies.get(request.match_info["proxy"])
        proxy.remove_toxic(request.match_info["toxic"])
        return web.Response(status=204)

    async def version(self, request: web.Request) -> web.StreamResponse:
        """``GET /version``: ``{"version": "2.12.0"}`` and a newline, as Toxiproxy writes it."""
        return web.Response(
            body=f'{{"version": "{API_VERSION}"}}\n'.encode(),
            headers={hdrs.CONTENT_TYPE: "application/json;charset=utf-8"},
        )

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
            raise ApiError(
                f"since must be a number of seconds, got {since!r}",
                400,
                "since is a time on the server's monotonic clock, as in `now`",
            ) from None
        body = {"proxy": proxy.name, **proxy.traffic.to_json(low)}
        return json_response(body, float32=False)

    async def metrics_text(self, request: web.Request) -> web.StreamResponse:
        """``GET /metrics``: Prometheus text with per-proxy byte counters."""
        return web.Response(body=self.metrics.render(), headers={hdrs.CONTENT_TYPE: CONTENT_TYPE})
