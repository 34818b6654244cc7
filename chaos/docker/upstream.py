"""Proxy upstreams given as containers: ``(container, port)``, or a container with one port."""

from __future__ import annotations

from chaos.docker.container import Container
from chaos.errors import BackendError

_LOCAL_ONLY = ("bridge", "host", "none")


def split_upstream(upstream: object) -> tuple[Container, int]:
    """The container and port an upstream names: ``(container, port)`` or a container exposing
    exactly one TCP port. The container may be any form :meth:`Container.of` takes."""
    if isinstance(upstream, tuple) and len(upstream) == 2:
        obj, port = upstream
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise BackendError(f"upstream port must be 1..65535, got {port!r}")
        return Container.of(obj), port
    try:
        container = Container.of(upstream)
    except TypeError:
        raise BackendError(
            f"upstream must be 'host:port' or a container (with its port: (container, 6379)), "
            f"got {upstream!r}"
        ) from None
    exposed = container.sdk.attrs.get("Config", {}).get("ExposedPorts") or {}
    tcp = sorted(int(key.split("/")[0]) for key in exposed if key.endswith("/tcp"))
    if len(tcp) != 1:
        raise BackendError(
            f"container {container.name} exposes {len(tcp) or 'no'} TCP ports "
            f"({', '.join(map(str, tcp)) or 'none'}); name the one to proxy: "
            f"({container.name!r}, PORT)"
        )
    return container, tcp[0]


def host_upstream(upstream: object) -> str:
    """``127.0.0.1:<published port>``: the upstream as a server on the host reaches it."""
    container, port = split_upstream(upstream)
    try:
        return container.address(port)
    except LookupError as exc:
        raise BackendError(
            f"{exc}: a proxy outside Docker reaches a container only there"
        ) from None


def network_upstream(upstream: object, server: Container) -> str:
    """The upstream as a chaos server in container *server* reaches it, by name on a shared
    network. *server* is attached to one of the upstream's networks first if needed."""
    from chaos.docker.network import Network

    container, port = split_upstream(upstream)
    theirs = container.networks
    ours = server.networks
    shared = [name for name in theirs if name in ours]
    named = [name for name in shared if name not in _LOCAL_ONLY]
    if named:
        return container.network_address(port)
    if shared:  # only the default bridge: no name resolution there
        return f"{container.ip(shared[0])}:{port}"
    user_defined = [name for name in theirs if name not in _LOCAL_ONLY]
    if user_defined:
        Network.of(user_defined[0]).connect(server)
        return container.network_address(port)
    if "bridge" in theirs:
        Network.of("bridge").connect(server)
        return f"{container.ip('bridge')}:{port}"
    raise BackendError(
        f"container {container.name} is on no network a chaos server can join "
        f"({', '.join(theirs) or 'none'}); attach it to a user-defined network"
    )
