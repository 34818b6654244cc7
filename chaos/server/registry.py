"""The set of proxies a server manages, and the operations that change several at once."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterable, Sequence

from chaos.server.apierror import listen_failed, proxy_exists, proxy_not_found
from chaos.server.config import (
    LOOPBACK,
    ProxyConfig,
    ProxyUpdate,
    check_proxy_config,
    split_address,
)
from chaos.server.golisten import ListenError, parse_listen, resolve_listen
from chaos.server.link import PlaneContext
from chaos.server.loops import Endpoint, Node, refuse_loops
from chaos.server.proxy import ServedProxy


class ProxyRegistry:
    """Proxies by name, in creation order.

    Changes that bind or close listeners are serialised by one lock, so two concurrent creates of
    the same name cannot both succeed. Toxic changes never wait on it: they touch no socket and
    complete without awaiting, so the control API answers even under heavy traffic.
    """

    def __init__(self, ctx: PlaneContext) -> None:
        self.ctx = ctx
        self._proxies: dict[str, ServedProxy] = {}
        self._lock = asyncio.Lock()

    def __len__(self) -> int:
        return len(self._proxies)

    def all(self) -> list[ServedProxy]:
        """Every proxy, in creation order."""
        return list(self._proxies.values())

    def get(self, name: str) -> ServedProxy:
        """Return proxy *name* or raise a 404."""
        proxy = self._proxies.get(name)
        if proxy is None:
            raise proxy_not_found(name)
        return proxy

    async def create(self, config: ProxyConfig) -> ServedProxy:
        """Create (and, if enabled, start) a proxy; 409 if the name is taken, then 400 for our own
        checks (name length, upstream, a loop back into its own listener), 500 if unbindable."""
        async with self._lock:
            if config.name in self._proxies:
                raise proxy_exists(config.name)
            check_proxy_config(config)
            if config.enabled:
                node = await self._node(config.name, config.listen, config.upstream)
                await refuse_loops(node, self._nodes(), self.ctx.loop)
            return await self._create_locked(config)

    async def _create_locked(self, config: ProxyConfig) -> ServedProxy:
        proxy = ServedProxy(config, self.ctx)
        if config.enabled:
            await proxy.start()
        self._proxies[config.name] = proxy
        return proxy

    async def update(self, name: str, update: ProxyUpdate) -> ServedProxy:
        """Apply a partial update to proxy *name*; 400 (nothing changed) if it would loop."""
        async with self._lock:
            proxy = self.get(name)
            if update.listen is not None:
                await self._resolvable(update.listen, name)
            enabled = proxy.enabled if update.enabled is None else update.enabled
            if enabled:
                upstream = update.upstream or proxy.upstream
                if update.listen is None and proxy.bound is not None:
                    node = Node(name, proxy.bound, _upstream(upstream), upstream)
                else:
                    node = await self._node(name, update.listen or proxy.listen, upstream)
                await refuse_loops(node, self._nodes(), self.ctx.loop)
            await proxy.update(update.listen, update.upstream, update.enabled)
            return proxy

    async def delete(self, name: str) -> None:
        """Stop and forget proxy *name*."""
        async with self._lock:
            proxy = self.get(name)
            del self._proxies[name]
            await proxy.close()

    async def populate(
        self, configs: Sequence[ProxyConfig], done: list[ServedProxy] | None = None
    ) -> list[ServedProxy]:
        """Create or replace several proxies (already validated by the caller).

        A proxy whose upstream and listen address match is kept untouched, with its toxics and
        connections; one that differs is stopped and replaced. If a listen address cannot be
        bound, the error is raised: the proxies handled before it stay as they are (and are in
        *done*, which collects them as they are handled), and a proxy that was to be replaced
        stays registered, stopped, with its old settings (as in Toxiproxy).
        """
        result = done if done is not None else []
        async with self._lock:
            # Every entry is checked against the others and the proxies it leaves in place
            # before anything changes.
            named = {c.name for c in configs}
            planned = [await self._node(c.name, c.listen, c.upstream) for c in configs if c.enabled]
            kept = [n for n in self._nodes() if n.name not in named]
            for node in planned:
                await refuse_loops(node, [*kept, *planned], self.ctx.loop)
            for config in configs:
                existing = self._proxies.get(config.name)
                if existing is not None:
                    # Toxiproxy first compares the address with the existing proxy's: an
                    # address that does not resolve fails there, in ResolveTCPAddr's words.
                    await self._resolvable(config.listen, config.name)
                if existing is not None and existing.matches(config):
                    result.append(existing)
                    continue
                if existing is not None:
                    await existing.close()
                result.append(await self._create_locked(config))
            return result

    def _nodes(self) -> Iterable[Node]:
        """The running proxies, for the loop check."""
        for proxy in self._proxies.values():
            yield Node(proxy.name, proxy.bound, proxy.upstream_address, proxy.upstream)

    async def _node(self, name: str, listen: str, upstream: str) -> Node:
        """A proxy about to listen on *listen*, for the loop check (port 0: not reachable)."""
        return Node(name, await self._fixed_endpoint(listen), _upstream(upstream), upstream)

    async def _resolvable(self, listen: str, name: str) -> None:
        """A 500 with Go's ``ResolveTCPAddr`` text (no ``listen tcp`` prefix) if *listen*
        cannot be an address: how Toxiproxy answers a changed listen that it compares first."""
        try:
            await resolve_listen(self.ctx.loop, listen)
        except ListenError as exc:
            raise listen_failed(str(exc), listen, name) from None

    async def _fixed_endpoint(self, listen: str) -> Endpoint | None:
        try:
            host, port = parse_listen(listen)
        except ListenError:
            return None  # cannot be bound either: creating it fails with Go's error
        if port == 0:
            return None  # a fresh port: nothing can point at it yet
        host = host or LOOPBACK
        try:
            infos = await self.ctx.loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            return None  # cannot be bound either: creating it fails with its own error
        return str(infos[0][4][0]), port

    async def reset(self) -> None:
        """Enable every proxy and remove every toxic."""
        async with self._lock:
            for proxy in self._proxies.values():
                proxy.reset_toxics()
                if not proxy.enabled:
                    await proxy.start()

    async def close(self) -> None:
        """Stop every proxy and forget them all (server shutdown)."""
        async with self._lock:
            proxies = list(self._proxies.values())
            self._proxies.clear()
            for proxy in proxies:
                await proxy.close()


def _upstream(upstream: str) -> Endpoint:
    return split_address(upstream, "upstream", allow_zero_port=False)
