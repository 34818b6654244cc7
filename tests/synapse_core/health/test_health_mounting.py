"""Mounting the endpoints: WSGI under a prefix on wsgiref, ASGI called as a server would."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest
from health_support import Breakers, EventReader, get, get_json

from synapse_core.health import HealthEndpoints

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def mount(prefix: str, inner: WsgiApp, fallback: WsgiApp) -> WsgiApp:
    """What Werkzeug's DispatcherMiddleware does: move *prefix* to SCRIPT_NAME."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == prefix or path.startswith(prefix + "/"):
            environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + prefix
            environ["PATH_INFO"] = path[len(prefix) :]
            return inner(environ, start_response)
        return fallback(environ, start_response)

    return app


def hello(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"the service itself"]


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return


class _ThreadingWSGIServer(WSGIServer):
    def process_request(self, request: Any, client_address: Any) -> None:
        def run() -> None:
            try:
                self.finish_request(request, client_address)
            except Exception:
                self.handle_error(request, client_address)
            finally:
                self.shutdown_request(request)

        threading.Thread(target=run, daemon=True).start()


@pytest.fixture
def wsgi_service(breakers: Breakers) -> Iterator[tuple[str, HealthEndpoints]]:
    """A service on wsgiref with the endpoints mounted under /ops."""
    endpoints = HealthEndpoints(breakers.manager)
    app = mount("/ops", endpoints.wsgi, hello)
    server = make_server(
        "127.0.0.1", 0, app, server_class=_ThreadingWSGIServer, handler_class=_Quiet
    )
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", endpoints
    finally:
        endpoints.close()  # ends the event streams
        server.shutdown()
        thread.join()
        server.server_close()


def test_wsgi_mounted_under_a_prefix(
    wsgi_service: tuple[str, HealthEndpoints], breakers: Breakers
) -> None:
    url, _ = wsgi_service
    inventory = breakers.make("inventory")
    assert get(url + "/")[2] == b"the service itself"
    breakers.trip(inventory)
    status, body = get_json(url + "/ops/health")
    assert (status, body["open"]) == (503, ["inventory"])
    assert get_json(url + "/ops/breakers")[1]["breakers"]["inventory"]["state"] == "open"
    status, headers, body = get(url + "/ops/metrics")
    assert b'synapse_circuit_breaker_state{breaker="inventory",state="open"} 1.0' in body
    status, headers, page = get(url + "/ops/dashboard")
    assert (status, headers["Content-Type"]) == (200, "text/html; charset=utf-8")
    assert b'new EventSource("events")' in page  # relative: /ops/events
    assert get(url + "/ops/nothing")[0] == 404


def test_wsgi_event_stream(wsgi_service: tuple[str, HealthEndpoints], breakers: Breakers) -> None:
    url, _ = wsgi_service
    inventory = breakers.make("inventory")
    host, port = url.removeprefix("http://").split(":")
    reader = EventReader(host, int(port), "/ops/events")
    try:
        assert reader.until("snapshot")["breakers"]["inventory"]["state"] == "closed"
        breakers.trip(inventory)
        assert reader.until("transition")["to_state"] == "open"
    finally:
        reader.close()


# -- ASGI, called directly as an ASGI server calls it ------------------------------------------


class AsgiClient:
    """Runs one ASGI request and records what the app sent."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def request(
        self,
        path: str,
        *,
        method: str = "GET",
        root_path: str = "",
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": root_path + path,
            "raw_path": (root_path + path).encode(),
            "root_path": root_path,
            "query_string": b"",
            "headers": headers or [],
        }
        await self.app(scope, receive, send)
        start, *bodies = sent
        assert start["type"] == "http.response.start"
        assert bodies[-1]["more_body"] is False
        head = {k.decode(): v.decode() for k, v in start["headers"]}
        return start["status"], head, b"".join(b["body"] for b in bodies)


@pytest.mark.asyncio
async def test_asgi_endpoints_and_a_mount_prefix(breakers: Breakers) -> None:
    endpoints = HealthEndpoints(breakers.manager, critical=["inventory"])
    client = AsgiClient(endpoints.asgi)
    inventory = breakers.make("inventory")
    try:
        status, headers, body = await client.request("/health")
        assert (status, json.loads(body)["status"]) == (200, "ok")
        assert headers["content-length"] == str(len(body))
        breakers.trip(inventory)
        status, _, body = await client.request("/health", root_path="/ops")  # mounted
        assert (status, json.loads(body)["critical_open"]) == (503, ["inventory"])
        status, _, body = await client.request("/breakers")
        assert json.loads(body)["breakers"]["inventory"]["recent_transitions"][0]["to_state"] == (
            "open"
        )
        status, headers, body = await client.request(
            "/metrics", headers=[(b"accept", b"application/openmetrics-text; version=1.0.0")]
        )
        assert headers["content-type"].startswith("application/openmetrics-text")
        status, headers, body = await client.request("/dashboard")
        assert "script-src 'sha256-" in headers["content-security-policy"]
        assert (await client.request("/health", method="HEAD"))[2] == b""
        status, headers, _ = await client.request("/health", method="PUT")
        assert (status, headers["allow"]) == (405, "GET, HEAD")
        assert (await client.request("/x"))[0] == 404
    finally:
        endpoints.close()


@pytest.mark.asyncio
async def test_asgi_event_stream_ends_when_the_client_disconnects(breakers: Breakers) -> None:
    endpoints = HealthEndpoints(breakers.manager)
    inventory = breakers.make("inventory")
    chunks: asyncio.Queue[bytes] = asyncio.Queue()
    disconnect = asyncio.Event()
    started: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        await disconnect.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            started.append(message)
        else:
            await chunks.put(message["body"])

    scope = {"type": "http", "method": "GET", "path": "/events", "root_path": "", "headers": []}
    task = asyncio.ensure_future(endpoints.asgi(scope, receive, send))
    try:
        assert await asyncio.wait_for(chunks.get(), 5) == b"retry: 1000\n\n"
        assert (await asyncio.wait_for(chunks.get(), 5)).startswith(b"event: snapshot")
        assert started[0]["status"] == 200
        # A transition in another thread reaches the stream through the event loop.
        await asyncio.to_thread(breakers.trip, inventory)
        assert (await asyncio.wait_for(chunks.get(), 5)).startswith(b"event: transition")
        assert endpoints.feed.subscribers == 1
        disconnect.set()
        await asyncio.wait_for(task, 5)
        assert endpoints.feed.subscribers == 0
    finally:
        task.cancel()
        endpoints.close()


@pytest.mark.asyncio
async def test_asgi_lifespan_shutdown_ends_streams(breakers: Breakers) -> None:
    endpoints = HealthEndpoints(breakers.manager)
    messages = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    replies: list[str] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: dict[str, Any]) -> None:
        replies.append(message["type"])

    subscription = endpoints.feed.subscribe()
    await endpoints.asgi({"type": "lifespan"}, receive, send)
    assert replies == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert subscription.closed
    endpoints.close()
