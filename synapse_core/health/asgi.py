"""The health endpoints as an ASGI application (ASGI 3: ``http`` and ``lifespan`` scopes)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from synapse_core.health.feed import STREAM_START
from synapse_core.health.responses import Response, StreamResponse

if TYPE_CHECKING:
    from synapse_core.health.endpoints import HealthEndpoints

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class AsgiHealthApp:
    """``await app(scope, receive, send)``; mount it under any prefix (``root_path``).

    On ``lifespan.shutdown`` (when it is the application the server runs) the event streams
    end, so the server can stop without waiting for open dashboards.
    """

    def __init__(self, endpoints: HealthEndpoints) -> None:
        self.endpoints = endpoints

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        if kind == "websocket":
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 1003})
            return
        if kind != "http":
            raise ValueError(f"unsupported ASGI scope type {kind!r}")
        path = scope.get("path") or "/"
        root = scope.get("root_path") or ""
        if root and path.startswith(root):
            path = path[len(root) :] or "/"
        method = str(scope.get("method", "GET")).upper()
        accept = ""
        for key, value in scope.get("headers") or ():
            if key.lower() == b"accept":
                accept = value.decode("latin-1")
        response = self.endpoints.handle(method, path, accept)
        if isinstance(response, Response):
            headers = [*response.headers, ("Content-Length", str(len(response.body)))]
            await send(_start(response.status, headers))
            body = b"" if method == "HEAD" else response.body
            await send({"type": "http.response.body", "body": body, "more_body": False})
            return
        await _stream(response, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.endpoints.feed.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


def _start(status: int, headers: list[tuple[str, str]]) -> Message:
    return {
        "type": "http.response.start",
        "status": status,
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers],
    }


async def _stream(response: StreamResponse, receive: Receive, send: Send) -> None:
    subscription = response.subscription

    async def until_disconnect() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        subscription.close()

    watcher = asyncio.ensure_future(until_disconnect())
    try:
        await send(_start(response.status, response.headers))
        chunk: bytes | None = STREAM_START
        while chunk is not None:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            chunk = await subscription.read_async(response.keepalive)
        if not watcher.done():
            await send({"type": "http.response.body", "body": b"", "more_body": False})
    except OSError:
        pass  # the client went away while we wrote (ASGI servers raise OSError subclasses)
    finally:
        subscription.close()
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
