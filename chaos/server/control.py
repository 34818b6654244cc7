"""The control API's connections: capped in number, each request bounded in time.

aiohttp has no request-header timeout: a client that sends half a request head holds its
connection (and a descriptor) for as long as it likes, and enough of them locked every other
client out. Each connection's protocol is wrapped here so that:

* a request must arrive within ``ServerLimits.header_timeout`` of its first byte (the head;
  the API bounds reading the body by the same time), else the connection is closed;
* at most ``ServerLimits.max_control_connections`` are open: one more closes the connection
  idle the longest (no request being handled), or itself if every one is busy;
* a closed connection's descriptor goes back to the :class:`~chaos.server.fds.FdReserve` if the
  API had taken it from there.

Idle keep-alive connections are closed by aiohttp itself after ``idle_timeout``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from chaos.server.fds import FdReserve
from chaos.server.limits import ServerLimits


class ControlConnections:
    """The open control connections of one server."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, limits: ServerLimits, fds: FdReserve
    ) -> None:
        self._loop = loop
        self._limits = limits
        self._fds = fds
        # Least recently active first: the front is what makes room for a new connection.
        self._open: dict[ControlProtocol, None] = {}
        self._by_transport: dict[asyncio.BaseTransport, ControlProtocol] = {}

    def __len__(self) -> int:
        return len(self._open)

    def factory(self, inner: Callable[[], asyncio.BaseProtocol]) -> Callable[[], ControlProtocol]:
        """A protocol factory wrapping each protocol *inner* makes (aiohttp's handler)."""

        def make() -> ControlProtocol:
            protocol = inner()
            assert isinstance(protocol, asyncio.Protocol)
            return ControlProtocol(self, protocol)

        return make

    def middleware(self) -> Middleware:
        """An aiohttp middleware marking each request's connection busy while it is handled."""

        @web.middleware
        async def track(request: web.Request, handler: Handler) -> web.StreamResponse:
            transport = request.transport
            conn = self._by_transport.get(transport) if transport is not None else None
            if conn is None:
                return await handler(request)
            conn.request_started()
            try:
                return await handler(request)
            finally:
                conn.request_finished()

        return track

    # -- called by the connections -----------------------------------------------------------------

    def opened(self, conn: ControlProtocol, transport: asyncio.BaseTransport) -> None:
        self._open[conn] = None
        self._by_transport[transport] = conn
        if len(self._open) > self._limits.max_control_connections:
            victim = next((c for c in self._open if not c.busy), conn)
            self._open.pop(victim)  # no longer counted, though its close completes later
            victim.close()

    def active(self, conn: ControlProtocol) -> None:
        if conn in self._open:
            self._open.pop(conn)
            self._open[conn] = None

    def closed(self, conn: ControlProtocol, transport: asyncio.BaseTransport | None) -> None:
        self._open.pop(conn, None)
        if transport is not None:
            self._by_transport.pop(transport, None)
        # The transport closes its socket once connection_lost returns: refill after that.
        self._loop.call_soon(self._fds.fill)

    @property
    def header_timeout(self) -> float:
        return self._limits.header_timeout


class ControlProtocol(asyncio.Protocol):
    """aiohttp's protocol for one control connection, plus its deadline and busy state."""

    __slots__ = ("_conns", "_deadline", "_inner", "busy", "transport")

    def __init__(self, conns: ControlConnections, inner: asyncio.Protocol) -> None:
        self._conns = conns
        self._inner = inner
        self.transport: asyncio.Transport | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self.busy = 0  # requests being handled

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._inner.connection_made(transport)
        self._conns.opened(self, transport)

    def data_received(self, data: bytes) -> None:
        self._conns.active(self)
        if not self.busy and self._deadline is None:
            # The first byte of a request: all of it must be here within the header timeout.
            loop = asyncio.get_running_loop()
            self._deadline = loop.call_later(self._conns.header_timeout, self.close)
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        self._conns.closed(self, self.transport)
        self._inner.connection_lost(exc)

    def request_started(self) -> None:
        """The head of a request arrived and its handler runs."""
        self.busy += 1
        self._cancel_deadline()

    def request_finished(self) -> None:
        self.busy -= 1
        self._conns.active(self)

    def close(self) -> None:
        """Drop the connection (a missed deadline, or room made for a newer one) at once."""
        self._cancel_deadline()
        if self.transport is not None:
            self.transport.abort()

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
