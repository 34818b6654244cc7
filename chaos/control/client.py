"""A typed, synchronous client for the Toxiproxy HTTP API (ours or Shopify's Toxiproxy >= 2.7).

Each :class:`ToxiproxyClient` talks to one server, so several servers can be driven from one
process (``toxiproxy-python`` keeps its address in a class attribute and cannot). Every request
has a timeout; failures raise :mod:`chaos.errors` exceptions carrying the status and message.
Connections are kept alive and reused (:mod:`chaos.control.httppool`): ``close()`` ends them.

>>> client = ToxiproxyClient("http://127.0.0.1:8474")
>>> redis = client.create_proxy("redis", upstream="127.0.0.1:6379")   # doctest: +SKIP
>>> with redis.latency(100):                                          # doctest: +SKIP
...     ...

``create_proxy`` and ``get_proxy`` return a :class:`chaos.Proxy` handle with fault methods; the
raw server data is its ``.info`` (:class:`ProxyInfo`), also returned by :meth:`proxy_info`.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

from chaos.control.httppool import ConnectionPool
from chaos.control.livefaults import DEFAULT_OWNER
from chaos.control.proxy import Proxy
from chaos.control.traffic import ProxyTraffic, TrafficUnavailable
from chaos.control.types import ProxyInfo, ToxicInfo
from chaos.errors import NotFound, ToxiproxyError, ToxiproxyUnavailable, error_for_status

if TYPE_CHECKING:
    from synapse_core.timeline import Timeline

Stream = Literal["upstream", "downstream"]
USER_AGENT = "synapse-chaos"


def _any_port(listen: str) -> bool:
    """True if *listen* lets the server pick the port (port 0, or no address at all)."""
    port = listen.rpartition(":")[2]
    return not listen or (port.isdigit() and int(port) == 0)


class ToxiproxyClient:
    """Synchronous client for one Toxiproxy API server.

    Args:
        url: base URL, e.g. ``http://127.0.0.1:8474`` (``chaos.EmbeddedToxiproxy().url``).
        timeout: seconds allowed for connecting and for each response; a request that takes
            longer raises :class:`~chaos.errors.ToxiproxyUnavailable`.
    """

    def __init__(self, url: str = "http://127.0.0.1:8474", *, timeout: float = 10.0) -> None:
        try:
            parsed = urllib.parse.urlsplit(url)
            port = parsed.port  # ValueError if not a number in 0..65535
        except ValueError:
            parsed, port = None, None
        if parsed is None or parsed.scheme != "http" or not parsed.hostname:
            raise ValueError(
                f"url must look like http://host:port (the Toxiproxy API), got {url!r}"
            )
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not 0 < timeout < math.inf
        ):
            raise ValueError(
                f"timeout must be a finite positive number of seconds, got {timeout!r}"
            )
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._host = parsed.hostname
        self._port = port or 80
        self._pool = ConnectionPool(self._host, self._port, timeout)

    def __repr__(self) -> str:
        return f"ToxiproxyClient({self.url!r}, timeout={self.timeout})"

    def close(self) -> None:
        """Close the kept-alive connections to the server (the client stays usable).

        Requests reuse connections; they are closed by this, by ``with client:``, or when the
        client is garbage-collected.
        """
        self._pool.close()

    def __enter__(self) -> ToxiproxyClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- transport -------------------------------------------------------------------------------

    def request(self, method: str, path: str, body: object = None) -> Any:
        """Send one request and return the decoded JSON (``None`` for an empty answer).

        Raises the :mod:`chaos.errors` exception matching the status for any 4xx/5xx.
        """
        url = self.url + path
        payload = None if body is None else json.dumps(body).encode()
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if payload is not None:
            headers["Content-Type"] = "application/json"
        try:
            status, raw, content_type = self._pool.request(method, path, payload, headers)
        except TimeoutError:
            raise ToxiproxyUnavailable(
                f"no answer within {self.timeout} s; is the server busy or stopped?",
                method=method,
                url=url,
                timed_out=True,
                hint="raise ToxiproxyClient(timeout=...) if it is just slow",
            ) from None
        except OSError as exc:
            raise ToxiproxyUnavailable(
                f"cannot reach the Toxiproxy API ({exc}); is the server running at {self.url}?",
                method=method,
                url=url,
            ) from None
        return self._decode(method, url, status, raw, content_type)

    @staticmethod
    def _decode(method: str, url: str, status: int, raw: bytes, content_type: str | None) -> Any:
        data: Any = None
        # Toxiproxy writes its errors with Go's http.Error: JSON, but as text/plain.
        if raw and ("json" in (content_type or "") or status >= 400):
            try:
                data = json.loads(raw)
            except ValueError:
                data = None
        if status >= 400:
            message = data.get("error") if isinstance(data, dict) else None
            hint = data.get("hint") if isinstance(data, dict) else None
            text = str(message) if message else raw.decode("utf-8", "replace").strip()
            raise error_for_status(status)(
                text or f"HTTP {status}",
                status=status,
                method=method,
                url=url,
                hint=str(hint) if isinstance(hint, str) else "",
            )
        if data is None and raw and "json" not in (content_type or ""):
            return raw.decode("utf-8", "replace")
        return data

    # -- server ----------------------------------------------------------------------------------

    def version(self) -> str:
        """Return the server's version string (e.g. ``"2.12.0"``)."""
        data = self.request("GET", "/version")
        if isinstance(data, dict):
            return str(data.get("version", ""))
        return str(data).strip().strip('"')

    def is_running(self) -> bool:
        """True if the API answers ``/version``."""
        try:
            self.version()
        except ToxiproxyError:
            return False
        return True

    def reset(self) -> None:
        """Enable every proxy and remove every toxic."""
        self.request("POST", "/reset")

    def metrics(self) -> str:
        """Return the Prometheus text of ``/metrics``."""
        return str(self.request("GET", "/metrics"))

    # -- proxies ---------------------------------------------------------------------------------

    def proxies(self) -> dict[str, ProxyInfo]:
        """Every proxy, by name."""
        data = self.request("GET", "/proxies")
        return {name: ProxyInfo.from_json(p) for name, p in data.items()}

    def proxy_info(self, name: str) -> ProxyInfo:
        """Return what the server reports about proxy *name*; ``NotFound`` if there is none."""
        return ProxyInfo.from_json(self.request("GET", f"/proxies/{quote(name, safe='')}"))

    def get_proxy(
        self, name: str, *, timeline: Timeline | None = None, owner: str = DEFAULT_OWNER
    ) -> Proxy:
        """A :class:`chaos.Proxy` handle on the existing proxy *name*.

        Raises :class:`~chaos.errors.NotFound` if there is none. *timeline* and *owner* are
        passed to the handle (see :class:`chaos.Proxy`).
        """
        return Proxy(self, self.proxy_info(name), timeline=timeline, owner=owner)

    def create_proxy(
        self,
        name: str,
        upstream: str,
        *,
        listen: str = "127.0.0.1:0",
        enabled: bool = True,
        timeline: Timeline | None = None,
        owner: str = DEFAULT_OWNER,
    ) -> Proxy:
        """Create a proxy and return a :class:`chaos.Proxy` handle on it.

        ``listen`` defaults to any free loopback port; the handle's ``listen``/``host``/``port``
        give the bound address. Raises :class:`~chaos.errors.ProxyExists` if the name is taken.

        With ``enabled=False`` and port 0 the proxy is created enabled, so the server picks and
        reports a real port, then disabled at once: the handle's port is the one enabling it
        binds again. (A connection attempt in between may be accepted and is then closed.) If
        the disable fails, the proxy is deleted again and the error raised.
        """
        pick_port = not enabled and _any_port(listen)
        body = {"name": name, "upstream": upstream, "listen": listen, "enabled": enabled}
        if pick_port:
            body["enabled"] = True  # a disabled proxy binds nothing: its port would stay 0
        info = ProxyInfo.from_json(self.request("POST", "/proxies", body))
        if pick_port:
            try:
                info = self.update_proxy(name, enabled=False)
            except BaseException:
                # Never hand back (or leave behind) an enabled proxy the caller asked disabled.
                with contextlib.suppress(ToxiproxyError):
                    self.delete_proxy(name)
                raise
        return Proxy(self, info, timeline=timeline, owner=owner)

    def update_proxy(
        self,
        name: str,
        *,
        listen: str | None = None,
        upstream: str | None = None,
        enabled: bool | None = None,
    ) -> ProxyInfo:
        """Change some fields of a proxy (PATCH); fields left ``None`` keep their value."""
        body: dict[str, object] = {}
        if listen is not None:
            body["listen"] = listen
        if upstream is not None:
            body["upstream"] = upstream
        if enabled is not None:
            body["enabled"] = enabled
        path = f"/proxies/{quote(name, safe='')}"
        return ProxyInfo.from_json(self.request("PATCH", path, body))

    def enable(self, name: str) -> ProxyInfo:
        """Enable a proxy (start listening again)."""
        return self.update_proxy(name, enabled=True)

    def disable(self, name: str) -> ProxyInfo:
        """Disable a proxy: its listener and open connections are closed."""
        return self.update_proxy(name, enabled=False)

    def delete_proxy(self, name: str) -> None:
        """Delete a proxy and close its connections."""
        self.request("DELETE", f"/proxies/{quote(name, safe='')}")

    def populate(self, proxies: Sequence[Mapping[str, Any]]) -> list[ProxyInfo]:
        """Create or replace several proxies at once (``POST /populate``)."""
        data = self.request("POST", "/populate", list(proxies))
        return [ProxyInfo.from_json(p) for p in data["proxies"]]

    def traffic(self, proxy: str) -> ProxyTraffic:
        """When clients of *proxy* connected and sent bytes (Synapse's server only).

        Raises :class:`~chaos.control.traffic.TrafficUnavailable` for a server without the extension
        (the real Toxiproxy), :class:`~chaos.errors.NotFound` for an unknown proxy.
        """
        path = f"/synapse/traffic/{quote(proxy, safe='')}"
        sent_at = time.monotonic()
        try:
            data = self.request("GET", path)
        except NotFound as exc:
            if exc.message.startswith("proxy not found"):
                raise
            raise TrafficUnavailable(
                f"the server at {self.url} does not record when traffic passed through its "
                "proxies (GET /synapse/traffic answered 404): only Synapse's server does (the "
                "embedded one, or synapse-chaos serve). A real Toxiproxy adds a connection's "
                "bytes to /metrics only when the connection closes and counts no connections"
            ) from None
        received_at = time.monotonic()
        if not isinstance(data, dict):
            raise TrafficUnavailable(f"GET {self.url}{path} answered {data!r}, not a traffic log")
        return ProxyTraffic.from_json(data, sent_at=sent_at, received_at=received_at)

    # -- toxics ----------------------------------------------------------------------------------

    def toxics(self, proxy: str) -> list[ToxicInfo]:
        """The toxics of *proxy*: upstream ones, then downstream ones."""
        data = self.request("GET", f"/proxies/{quote(proxy, safe='')}/toxics")
        return [ToxicInfo.from_json(t) for t in data]

    def get_toxic(self, proxy: str, name: str) -> ToxicInfo:
        """Return toxic *name* of *proxy*."""
        path = f"/proxies/{quote(proxy, safe='')}/toxics/{quote(name, safe='')}"
        return ToxicInfo.from_json(self.request("GET", path))

    def add_toxic(
        self,
        proxy: str,
        type: str,
        *,
        name: str | None = None,
        stream: Stream = "downstream",
        toxicity: float = 1.0,
        attributes: Mapping[str, int] | None = None,
    ) -> ToxicInfo:
        """Add a toxic (default name ``<type>_<stream>``); it applies to open connections too."""
        body: dict[str, object] = {
            "type": type,
            "stream": stream,
            "toxicity": toxicity,
            "attributes": dict(attributes or {}),
        }
        if name is not None:
            body["name"] = name
        path = f"/proxies/{quote(proxy, safe='')}/toxics"
        return ToxicInfo.from_json(self.request("POST", path, body))

    def update_toxic(
        self,
        proxy: str,
        name: str,
        *,
        attributes: Mapping[str, int] | None = None,
        toxicity: float | None = None,
    ) -> ToxicInfo:
        """Change a toxic's attributes (merged) and/or toxicity (PATCH)."""
        body: dict[str, object] = {}
        if attributes is not None:
            body["attributes"] = dict(attributes)
        if toxicity is not None:
            body["toxicity"] = toxicity
        path = f"/proxies/{quote(proxy, safe='')}/toxics/{quote(name, safe='')}"
        return ToxicInfo.from_json(self.request("PATCH", path, body))

    def remove_toxic(self, proxy: str, name: str) -> None:
        """Remove a toxic from a proxy and its open connections."""
        path = f"/proxies/{quote(proxy, safe='')}/toxics/{quote(name, safe='')}"
        self.request("DELETE", path)

    def discard_toxic(self, proxy: str, name: str) -> None:
        """Remove a toxic if it is there: one already gone (or its proxy) is not an error."""
        with contextlib.suppress(NotFound):
            self.remove_toxic(proxy, name)
