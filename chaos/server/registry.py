"""The set of proxies a server manages, and the operations that change several at once."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from chaos.server.apierror import proxy_exists, proxy_not_found
from chaos.server.config import ProxyConfig, ProxyUpdate
from chaos.server.link import PlaneContext
from chaos.server.proxy import Proxy


class ProxyRegistry:
    """Proxies by name, in creation order.

    Changes that bind or close listeners are serialised by one lock, so two concurrent creates of
    the same name cannot both succeed. Toxic changes never wait on it: they touch no socket and
    complete without awaiting, so the control API answers even under heavy traffic.
    """

    def __init__(self, ctx: PlaneContext) -> None:
        self.ctx = ctx
        self._proxies: dict[str, Proxy] = {}
        self._lock = asyncio.Lock()

    def __len__(self) -> int:
        return len(self._proxies)

    def all(self) -> list[Proxy]:
        """Every proxy, in creation order."""
        return list(self._proxies.values())

    def get(self, name: str) -> Proxy:
        """Return proxy *name* or raise a 404."""
        proxy = self._proxies.get(name)
        if proxy is None:
            raise proxy_not_found(name)
        return proxy

    async def create(self, config: ProxyConfig) -> Proxy:
        """Create (and, if enabled, start) a proxy; 409 if the name is taken, 500 if unbindable."""
        async with self._lock:
            if config.name in self._proxies:
                raise proxy_exists(config.name)
            return await self._create_locked(config)

    async def _create_locked(self, config: ProxyConfig) -> Proxy:
        proxy = Proxy(config, self.ctx)
        if config.enabled:
            await proxy.start()
        self._proxies[config.name] = proxy
        return proxy

    async def update(self, name: str, update: ProxyUpdate) -> Proxy:
        """Apply a partial update to proxy *name*."""
        async with self._lock:
            proxy = self.get(name)
            await proxy.update(update.listen, update.upstream, update.enabled)
            return proxy

    async def delete(self, name: str) -> None:
        """Stop and forget proxy *name*."""
        async with self._lock:
            proxy = self.get(name)
            del self._proxies[name]
            await proxy.stop()

    async def populate(
        self, configs: Sequence[ProxyConfig], done: list[Proxy] | None = None
    ) -> list[Proxy]:
        """Create or replace several proxies (already validated by the caller).

        A proxy whose upstream and listen address match is kept untouched, with its toxics and
        connections; one that differs is stopped and replaced. If a listen address cannot be
        bound, the error is raised: the proxies handled before it stay as they are (and are in
        *done*, which collects them as they are handled), and a proxy that was to be replaced
        stays registered, stopped, with its old settings (as in Toxiproxy).
        """
        result = done if done is not None else []
        async with self._lock:
            for config in configs:
                existing = self._proxies.get(config.name)
                if existing is not None and existing.matches(config):
                    result.append(existing)
                    continue
                if existing is not None:
                    await existing.stop()
                result.append(await self._create_locked(config))
            return result

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
                await proxy.stop()
