"""Where proxies live: the embedded server, an external Toxiproxy, or a container.

One interface, :class:`Backend`, so faults and scenarios run the same way on each:

=============================  ==========================================================
spec                           backend
=============================  ==========================================================
``None`` / ``"embedded"``      :class:`EmbeddedBackend`: starts :class:`~chaos.EmbeddedToxiproxy`
``"http://host:port"``         :class:`ExternalBackend`: a running Toxiproxy 2.x (or ours)
``"docker"``                   :class:`chaos.docker.DockerBackend`: a chaos server container
=============================  ==========================================================

:func:`resolve_backend` reads ``SYNAPSE_TOXIPROXY`` when no spec is given::

    with resolve_backend(None) as backend:          # embedded unless SYNAPSE_TOXIPROXY says
        redis = backend.create_proxy("127.0.0.1:6379", name="redis")
        with redis.partition():
            ...

Stopping a backend heals and deletes every proxy it created; proxies it only attached to
(:meth:`Backend.attach`) are healed and left in place.
"""

from __future__ import annotations

import importlib
import itertools
import math
import os
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Final, Self

from chaos.control.client import ToxiproxyClient
from chaos.control.livefaults import DEFAULT_OWNER, check_owner
from chaos.control.proxy import Proxy
from chaos.embedded import EmbeddedToxiproxy, Mode
from chaos.errors import BackendError, NotFound, ProxyExists
from chaos.lifecycle import StartStop, call_all
from synapse_core.timeline import Timeline

ENV_VAR: Final = "SYNAPSE_TOXIPROXY"
"""Environment variable selecting the backend: ``embedded``, ``http://host:port`` or ``docker``."""

_names = itertools.count(1)

BackendFactory = Callable[..., "Backend"]
"""Called as ``factory(owner=..., timeout=..., seed=..., env=...)``."""
_FACTORIES: dict[str, BackendFactory] = {}


def register_backend(name: str, factory: BackendFactory) -> None:
    """Make ``resolve_backend(name)`` build a backend with *factory* (used by ``chaos.docker``)."""
    _FACTORIES[name] = factory


class Backend(StartStop):
    """A Toxiproxy server to create proxies on; a context manager (start on enter, stop on exit).

    Attributes:
        kind: ``"embedded"``, ``"external"`` or ``"docker"``.
        owner: owner tag of the faults of the proxies it hands out (see :class:`chaos.Proxy`).
        timeout: seconds allowed for each API request.
    """

    kind = "backend"

    def __init__(self, *, owner: str = DEFAULT_OWNER, timeout: float = 10.0) -> None:
        self.owner = check_owner(owner)
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not (0 < timeout < math.inf)
        ):
            raise BackendError(
                f"timeout must be a finite number of seconds > 0, got {timeout!r}", spec=""
            )
        self.timeout = timeout
        self._client: ToxiproxyClient | None = None
        self._created: list[Proxy] = []
        self._attached: list[Proxy] = []

    def __repr__(self) -> str:
        where = self._client.url if self._client is not None else "stopped"
        return f"<{type(self).__name__} {where}>"

    @property
    def running(self) -> bool:
        """True between start() and stop()."""
        return self._client is not None

    @property
    def client(self) -> ToxiproxyClient:
        """The API client (raises :class:`~chaos.errors.BackendError` before start())."""
        if self._client is None:
            raise BackendError(f"the {self.kind} backend is not started; call start() first")
        return self._client

    @property
    def url(self) -> str:
        """Base URL of the Toxiproxy API."""
        return self.client.url

    def start(self) -> Self:
        """Make the server available (start it, or check it answers); return self."""
        raise NotImplementedError

    def stop(self) -> None:
        """Heal every proxy handed out; delete those created here. Safe to call twice.

        The backend counts as stopped afterwards even if cleaning up a proxy failed.
        """
        created, self._created = self._created, []
        attached, self._attached = self._attached, []
        try:
            call_all(
                [
                    *(proxy.heal for proxy in reversed(attached)),
                    *(proxy.delete for proxy in reversed(created)),
                ]
            )
        finally:
            self._client = None

    def create_proxy(
        self,
        upstream: object,
        name: str | None = None,
        timeline: Timeline | None = None,
        *,
        listen: str = "127.0.0.1:0",
    ) -> Proxy:
        """Create a proxy to *upstream* (``host:port``) and return its handle.

        Args:
            upstream: where the proxy forwards to: ``host:port``, or a container and its port
                (``(container, 6379)``; a container alone if it exposes one port), the container
                a :class:`chaos.docker.Container`, a docker SDK or a testcontainers container.
            name: proxy name (default ``synapse-<n>``, unique in this process).
            timeline: the timeline its faults record into (default: a new one).
            listen: where it listens (default any free loopback port).

        Raises :class:`~chaos.errors.ProxyExists` if the server already has that name: pick
        another, or :meth:`attach` to it.
        """
        client = self.client
        chosen = name or f"synapse-{os.getpid()}-{next(_names)}"
        try:
            proxy = self._handle(
                client.create_proxy(
                    chosen,
                    self._upstream(upstream),
                    listen=self._listen(listen),
                    timeline=timeline,
                    owner=self.owner,
                )
            )
        except ProxyExists as exc:
            exc.message = (
                f"{exc.message}; a proxy named {chosen!r} already exists on {client.url}: "
                "choose another name, delete it, or use attach() to take it over"
            )
            raise
        self._created.append(proxy)
        return proxy

    def attach(
        self, name: str, timeline: Timeline | None = None, *, remove_stale: bool = True
    ) -> Proxy:
        """A handle on the existing proxy *name*, cleared of stale faults of this owner.

        Pass ``remove_stale=False`` when a :class:`~chaos.ScenarioRunner` will do it (and log it).
        """
        proxy = self._handle(self.client.get_proxy(name, timeline=timeline, owner=self.owner))
        if remove_stale:
            proxy.remove_stale_faults()
        self._attached.append(proxy)
        return proxy

    # -- hooks of the docker backend ---------------------------------------------------------

    def _upstream(self, upstream: object) -> str:
        """The ``host:port`` the server forwards to (a container: its host-published port)."""
        if isinstance(upstream, str):
            return upstream
        from chaos.docker.upstream import host_upstream

        return host_upstream(upstream)

    def _listen(self, listen: str) -> str:
        """The ``listen`` address to ask the server for."""
        return listen

    def _handle(self, proxy: Proxy) -> Proxy:
        """The handle given out for *proxy* (the docker backend maps its addresses)."""
        return proxy


class EmbeddedBackend(Backend):
    """Starts the embedded Toxiproxy-compatible server (a thread by default) for its lifetime."""

    kind = "embedded"

    def __init__(
        self,
        *,
        mode: Mode = "thread",
        seed: int | None = None,
        owner: str = DEFAULT_OWNER,
        timeout: float = 10.0,
    ) -> None:
        super().__init__(owner=owner, timeout=timeout)
        self.server = EmbeddedToxiproxy(mode=mode, seed=seed)

    def start(self) -> Self:
        """Start the embedded server (idempotent)."""
        if self._client is None:
            self.server.start()
            self._client = self.server.client(timeout=self.timeout)
        return self

    def stop(self) -> None:
        """Heal and delete the proxies, then stop the server."""
        try:
            super().stop()
        finally:
            self.server.stop()


class ExternalBackend(Backend):
    """A Toxiproxy already running at *url* (Toxiproxy 2.x, or ``synapse-chaos serve``)."""

    kind = "external"

    def __init__(self, url: str, *, owner: str = DEFAULT_OWNER, timeout: float = 10.0) -> None:
        super().__init__(owner=owner, timeout=timeout)
        self.target = _check_url(url, "argument")

    def start(self) -> Self:
        """Check the server answers (ToxiproxyUnavailable names the URL if not)."""
        if self._client is None:
            client = ToxiproxyClient(self.target, timeout=self.timeout)
            client.version()
            self._client = client
        return self


def _check_url(url: str, source: str) -> str:
    try:
        parsed = urllib.parse.urlsplit(url)
        parsed.port  # noqa: B018 (ValueError if the port is not a number in 0..65535)
        valid = bool(parsed.scheme == "http" and parsed.hostname and parsed.path in ("", "/"))
    except ValueError:  # e.g. an unclosed IPv6 bracket: http://[::1
        valid = False
    if not valid:
        raise BackendError(
            f"{_source_text(source)}: {url!r} is not a Toxiproxy API URL; "
            "expected http://host:port (e.g. http://127.0.0.1:8474)",
            spec=url,
            source=source,
        )
    return url.rstrip("/")


def _source_text(source: str) -> str:
    return ENV_VAR if source == ENV_VAR else "backend"


def resolve_backend(
    spec: str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    owner: str = DEFAULT_OWNER,
    timeout: float = 10.0,
    seed: int | None = None,
) -> Backend:
    """Build (not start) the backend *spec* names; ``None`` reads ``SYNAPSE_TOXIPROXY``.

    Args:
        spec: ``"embedded"`` (the default when nothing is set), ``"http://host:port"`` or
            ``"docker"``.
        env: environment to read (default ``os.environ``).
        owner: owner tag for the faults (see :class:`chaos.Proxy`).
        timeout: seconds allowed for each API request.
        seed: seed of the embedded server's randomness (toxicity rolls, jitter, slices);
            ignored by servers Synapse does not start.

    Raises :class:`~chaos.errors.BackendError` for a spec it does not understand or bad docker
    settings (``SYNAPSE_DOCKER_*``). Nothing is started: a missing Docker engine is reported by
    ``start()`` (:class:`chaos.docker.DockerUnavailable`).
    """
    source = "argument"
    if spec is None:
        spec = (os.environ if env is None else env).get(ENV_VAR, "").strip() or None
        source = ENV_VAR if spec is not None else "default"
    text = (spec or "embedded").strip()
    lowered = text.lower()
    if lowered == "embedded":
        return EmbeddedBackend(owner=owner, timeout=timeout, seed=seed)
    if lowered.startswith(("http://", "https://")):
        if lowered.startswith("https://"):
            raise BackendError(
                f"{_source_text(source)}: {text!r}: the Toxiproxy API speaks plain HTTP; "
                "use http://host:port",
                spec=text,
                source=source,
            )
        return ExternalBackend(_check_url(text, source), owner=owner, timeout=timeout)
    if lowered == "docker":
        if "docker" not in _FACTORIES:
            importlib.import_module("chaos.docker.backend")  # registers itself; docker is lazy
        try:
            return _FACTORIES["docker"](
                owner=owner, timeout=timeout, seed=seed, env=os.environ if env is None else env
            )
        except BackendError as exc:
            exc.args = (f"{_source_text(source)}: {exc}",)
            exc.spec, exc.source = text, source
            raise
    raise BackendError(
        f"{_source_text(source)}: {text!r} is not a chaos backend; use 'embedded', "
        "'docker' or the URL of a running Toxiproxy (http://host:port)",
        spec=text,
        source=source,
    )


class ProxyMismatch(NotFound, BackendError):
    """:func:`get_or_create_proxy`: the proxy is missing, or exists with another upstream or
    listen address than asked. A :class:`NotFound` (missing) and a :class:`BackendError`."""

    def __init__(self, message: str) -> None:
        NotFound.__init__(self, message, status=None)
        self.spec = ""
        self.source = ""


def _same_listen(wanted: str, actual: str) -> bool:
    """True if a proxy listening on *actual* satisfies ``listen=wanted`` (port 0: any port)."""
    want_host, _, want_port = wanted.rpartition(":")
    host, _, port = actual.rpartition(":")
    aliases = {"localhost": "127.0.0.1", "[::1]": "::1", "": "0.0.0.0"}
    want_host = aliases.get(want_host, want_host).strip("[]")
    host = aliases.get(host, host).strip("[]")
    return want_host == host and want_port in ("0", port)


def get_or_create_proxy(
    backend: Backend,
    name: str,
    upstream: str | None,
    *,
    listen: str = "127.0.0.1:0",
    timeline: Timeline | None = None,
    remove_stale: bool = True,
    require_listen: bool = False,
) -> tuple[Proxy, bool]:
    """The proxy *name*: attached if it exists, else created; returns ``(proxy, created)``.

    An existing proxy must forward to *upstream* when one is given, and listen on *listen* if
    *require_listen* (port 0 matches any port). Without *upstream*, the proxy must already exist.
    :class:`ProxyMismatch` (a ``NotFound`` and a ``BackendError``) says what does not match.
    """
    try:
        existing = backend.client.proxy_info(name)
    except NotFound:
        if upstream is None:
            raise ProxyMismatch(
                f"no proxy named {name!r} on {backend.client.url}; give its upstream "
                f"(--proxy {name}=HOST:PORT) to create it"
            ) from None
        return backend.create_proxy(upstream, name=name, timeline=timeline, listen=listen), True
    if upstream is not None and existing.upstream != upstream:
        raise ProxyMismatch(
            f"proxy {name!r} on {backend.client.url} forwards to {existing.upstream}, not "
            f"{upstream}; use another name or delete that proxy first"
        )
    if require_listen and not _same_listen(listen, existing.listen):
        raise ProxyMismatch(
            f"proxy {name!r} on {backend.client.url} already exists listening on "
            f"{existing.listen}, not {listen}; drop --listen, use another name or delete that "
            "proxy first"
        )
    return backend.attach(name, timeline=timeline, remove_stale=remove_stale), False
