"""One proxy: its listener, its open connections and its toxics."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Final

from chaos.server.apierror import ApiError, listen_failed, toxic_exists, toxic_not_found
from chaos.server.config import ProxyConfig, join_address, split_address
from chaos.server.golisten import ListenError, bind_failure, resolve_listen
from chaos.server.link import Connection, PlaneContext
from chaos.server.listener import Listener, bind_holdable
from chaos.server.toxics import STREAMS, Stream, ToxicSpec, parse_new_toxic, parse_toxic_update
from chaos.server.traffic import TrafficLog

# Bursts of connects (a pool warming up, the 1,000-connection test) must not overflow the queue.
LISTEN_BACKLOG: Final = 4096


class ServedProxy:
    """A TCP listener that forwards every accepted connection to ``upstream`` through toxics.

    The server's side of a proxy; :class:`chaos.Proxy` is a client's handle on one.
    """

    def __init__(self, config: ProxyConfig, ctx: PlaneContext) -> None:
        self.name = config.name
        self.listen = config.listen
        self.requested_listen = config.listen
        self.upstream = config.upstream
        self.upstream_address = split_address(config.upstream, "upstream", allow_zero_port=False)
        self.enabled = False
        self.ctx = ctx
        self.connections: set[Connection] = set()
        # Closed connections still flushing to a peer (bounded by ServerLimits.close_timeout).
        self.closing: set[Connection] = set()
        # [received, sent] bytes per direction, read by the /metrics collector.
        self.counters: dict[Stream, list[int]] = {"upstream": [0, 0], "downstream": [0, 0]}
        # When clients connected and sent bytes (GET /synapse/traffic/{name}); not listening yet.
        self.traffic = TrafficLog(ctx.clock)
        self.traffic.enabled(False)
        self._toxics: dict[str, ToxicSpec] = {}
        self._listener: Listener | None = None
        # While disabled: the paused listener holding the port, and the listen it was bound for.
        self._parked: Listener | None = None
        self._parked_listen = ""

    # -- listener --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the listen address and accept connections; raise a 500 ApiError if it cannot.

        A proxy that was disabled gets its port back: :meth:`stop` kept it (see
        :meth:`~chaos.server.listener.Listener.pause`).
        """
        if self._listener is not None:
            return
        parked = self._parked
        if parked is not None and self._parked_listen == self.listen:
            try:
                parked.resume(LISTEN_BACKLOG)
            except OSError as exc:
                self._release()
                host, port = parked.sockname
                raise self._failed(str(bind_failure(host, port, exc))) from exc
            self._parked = None
            self._listening(parked)
            return
        listener = Listener(
            self.ctx.loop,
            await self._bind(),
            lambda: Connection(self, self.ctx).client,
            self.ctx.fds,
            self.ctx.log,
            control=False,
            name=f"proxy {self.name!r}",
        )
        self._release()  # the old port, once the new one is bound (it may be the same)
        self._listening(listener)

    async def _bind(self) -> socket.socket:
        """A listening socket for :attr:`listen`; a 500 with Go's ``net.Listen`` text if not."""
        try:
            family, address, port = await resolve_listen(self.ctx.loop, self.listen)
        except ListenError as exc:
            raise self._failed(f"listen tcp: {exc}") from None
        try:
            return bind_holdable(family, (address, port), LISTEN_BACKLOG)
        except OSError as exc:
            raise self._failed(str(bind_failure(address, port, exc))) from exc

    def _failed(self, text: str) -> ApiError:
        return listen_failed(text, self.listen, self.name)

    def _listening(self, listener: Listener) -> None:
        bound = listener.sockname
        self.listen = join_address(bound[0], bound[1])
        self._listener = listener
        self.enabled = True
        self.traffic.enabled(True)
        listener.start()

    @property
    def bound(self) -> tuple[str, int] | None:
        """The listening ``(host, port)``, or None while disabled."""
        return self._listener.sockname if self._listener is not None else None

    async def stop(self) -> None:
        """Stop listening (new connects are refused) and end every open connection at once.

        As Toxiproxy: what the proxy still holds for a peer is dropped, and a peer whose data is
        left unread gets a reset, so a client blocked in ``send`` learns at once. Unlike
        Toxiproxy, the port stays reserved (bound, not listening) until the proxy is enabled
        again, moved or deleted: under load another socket took it, and enabling failed.
        """
        listener = self._listener
        self._listener = None
        self.enabled = False
        self.traffic.enabled(False)
        if listener is not None:
            listener.pause()
            self._release()
            self._parked, self._parked_listen = listener, self.listen
        for conn in [*self.connections, *self.closing]:
            conn.abort()

    async def close(self) -> None:
        """Stop, and give the port back (the proxy is deleted or replaced)."""
        await self.stop()
        self._release()

    def _release(self) -> None:
        parked, self._parked = self._parked, None
        if parked is not None:
            parked.close()

    async def update(self, listen: str | None, upstream: str | None, enabled: bool | None) -> None:
        """Apply a partial update; a new listen or upstream restarts the proxy.

        If the new listen address cannot be bound, the old settings are restored and the error
        (500) is raised.
        """
        old = (self.listen, self.requested_listen, self.upstream, self.upstream_address)
        want_enabled = self.enabled if enabled is None else enabled
        changed = (listen is not None and listen not in (self.listen, self.requested_listen)) or (
            upstream is not None and upstream != self.upstream
        )
        if changed:
            was_enabled = self.enabled
            await self.stop()
            if listen is not None:
                self.listen = self.requested_listen = listen
            if upstream is not None:
                self.upstream = upstream
                self.upstream_address = split_address(upstream, "upstream", allow_zero_port=False)
            if want_enabled:
                try:
                    await self.start()
                except Exception:
                    self.listen, self.requested_listen, self.upstream, self.upstream_address = old
                    if was_enabled:
                        await self.start()
                    raise
            elif self.listen != old[0]:
                self._release()  # moved while disabled: the old port is not wanted any more
            return
        if want_enabled and not self.enabled:
            await self.start()
        elif not want_enabled and self.enabled:
            await self.stop()

    # -- connections -----------------------------------------------------------------------------

    def connection_opened(self, conn: Connection) -> None:
        """Track a new client connection (so disabling can close it)."""
        self.connections.add(conn)

    def connection_closed(self, conn: Connection) -> None:
        """Forget a closed connection."""
        self.connections.discard(conn)

    # -- toxics ----------------------------------------------------------------------------------

    def toxic_specs(self) -> Iterator[ToxicSpec]:
        """All toxics, upstream ones first, each stream in the order they were added."""
        for stream in STREAMS:
            for spec in self._toxics.values():
                if spec.stream == stream:
                    yield spec

    def toxic_order(self, stream: Stream) -> list[str]:
        """Names of the toxics on *stream*, in chain order."""
        return [name for name, spec in self._toxics.items() if spec.stream == stream]

    def get_toxic(self, name: str) -> ToxicSpec:
        """Return toxic *name* or raise a 404."""
        spec = self._toxics.get(name)
        if spec is None:
            raise toxic_not_found(self.name, name)
        return spec

    def add_toxic(self, body: bytes) -> ToxicSpec:
        """Validate and add a toxic; it applies to open connections at once."""
        spec = parse_new_toxic(body, self._check_free)
        self._toxics[spec.name] = spec
        order = self.toxic_order(spec.stream)
        for conn in list(self.connections):
            conn.flow(spec.stream).set_toxic(spec, order)
        return spec

    def _check_free(self, name: str) -> None:
        if name in self._toxics:
            raise toxic_exists(self.name, name)

    def update_toxic(self, name: str, body: bytes) -> ToxicSpec:
        """Update a toxic's attributes/toxicity; open connections re-roll and use the new values."""
        spec = parse_toxic_update(self.get_toxic(name), body)
        self._toxics[name] = spec
        order = self.toxic_order(spec.stream)
        for conn in list(self.connections):
            conn.flow(spec.stream).set_toxic(spec, order)
        return spec

    def remove_toxic(self, name: str) -> None:
        """Remove a toxic from the proxy and from every open connection."""
        spec = self.get_toxic(name)
        del self._toxics[name]
        order = self.toxic_order(spec.stream)
        for conn in list(self.connections):
            conn.flow(spec.stream).remove_toxic(name, order)

    def reset_toxics(self) -> None:
        """Remove every toxic."""
        for name in list(self._toxics):
            self.remove_toxic(name)

    # -- views -----------------------------------------------------------------------------------

    def matches(self, config: ProxyConfig) -> bool:
        """True if *config* asks for this proxy's upstream and listen address."""
        return config.upstream == self.upstream and config.listen in (
            self.listen,
            self.requested_listen,
        )

    def to_json(self) -> dict[str, object]:
        """Return the Toxiproxy JSON form, in its order: ``name, listen, upstream, enabled,
        Logger, toxics`` (Toxiproxy shows its Go struct's logger field as an empty object)."""
        return {
            "name": self.name,
            "listen": self.listen,
            "upstream": self.upstream,
            "enabled": self.enabled,
            "Logger": {},
            "toxics": [spec.to_json() for spec in self.toxic_specs()],
        }

    def __repr__(self) -> str:
        state = "enabled" if self.enabled else "disabled"
        return f"<ServedProxy {self.name!r} {self.listen} -> {self.upstream} {state}>"
