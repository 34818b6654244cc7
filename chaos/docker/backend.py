"""The ``docker`` backend: the session's Toxiproxy-compatible server runs as a container.

::

    with DockerBackend() as backend:                  # or resolve_backend("docker")
        redis = backend.create_proxy((redis_container, 6379), name="redis")
        redis.listen             # 127.0.0.1:<port>: where the host reaches the proxy
        redis.network_address    # <chaos container>:<port>: where other containers reach it
        with redis.latency(200):
            ...

The server container (``synapse-chaos:<version>`` by default; any image that speaks the
Toxiproxy API on 8474, the official one included) joins a user-defined network (a new labelled
one unless ``network=`` names one) and publishes its API and a range of proxy ports on
127.0.0.1 when it starts: Docker publishes ports only then. Each proxy takes a free port of that
range; when all are taken, :class:`~chaos.errors.BackendError` says how to widen it.

Settings from the environment (``resolve_backend("docker")``, ``--synapse-toxiproxy=docker``):
``SYNAPSE_DOCKER_IMAGE``, ``SYNAPSE_DOCKER_NETWORK``, ``SYNAPSE_DOCKER_PROXY_PORTS``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from importlib import metadata
from typing import Final, Self

from chaos.backends import Backend, register_backend
from chaos.control.client import ToxiproxyClient
from chaos.control.livefaults import DEFAULT_OWNER
from chaos.control.proxy import Proxy
from chaos.control.types import ProxyInfo
from chaos.docker.container import Container
from chaos.docker.launch import image_missing_message, prepare, start_container
from chaos.docker.network import Network, unique_name
from chaos.docker.upstream import network_upstream
from chaos.errors import BackendError, ToxiproxyError
from synapse_core.timeline import Timeline

API_PORT: Final = 8474
FIRST_PROXY_PORT: Final = 20000
"""Container port of the first proxy; proxies take ``FIRST_PROXY_PORT + i``."""
DEFAULT_PROXY_PORTS: Final = 16
MAX_PROXY_PORTS: Final = 1000
IMAGE_LABEL: Final = "io.synapse.image"


def default_image() -> str:
    """``synapse-chaos:<installed version>`` (what ``make image`` builds)."""
    try:
        version = metadata.version("synapse-chaos")
    except metadata.PackageNotFoundError:
        version = "latest"
    return f"synapse-chaos:{version}"


class DockerProxy(Proxy):
    """A proxy of a chaos server container.

    Attributes:
        listen, host, port: the host-published address (``127.0.0.1:<port>``).
        network_address: ``<chaos container>:<port>``, for containers on its networks.
        container_port: the port it listens on inside the chaos container.
    """

    def __init__(
        self,
        client: ToxiproxyClient,
        info: ProxyInfo,
        *,
        published: str,
        network_address: str,
        timeline: Timeline | None = None,
        owner: str = DEFAULT_OWNER,
    ) -> None:
        super().__init__(client, info, timeline=timeline, owner=owner)
        self.container_port = info.listen_port
        self.listen = published
        host, _, port = published.rpartition(":")
        self.host, self.port = host, int(port)
        self.network_address = network_address

    def __repr__(self) -> str:
        where = f"{self.listen} ({self.network_address})"
        return f"<chaos.DockerProxy {self.name!r} {where} -> {self.upstream}>"


def _proxy_ports(value: object, source: str) -> int:
    try:
        count = int(str(value))
    except ValueError:
        count = 0
    if not 1 <= count <= MAX_PROXY_PORTS:
        raise BackendError(
            f"{source} must be a number of proxy ports from 1 to {MAX_PROXY_PORTS}, got {value!r}"
        )
    return count


class DockerBackend(Backend):
    """A Toxiproxy-compatible server in a container, for the life of the backend.

    Args:
        image: the server image (default ``synapse-chaos:<version>``, built by ``make image``).
        network: a network to join (name or handle); default: a new labelled network, removed
            at stop.
        proxy_ports: how many proxy ports to publish (proxies at once).
        seed: the server's random seed (our image only).
        start_timeout: seconds allowed for the server to answer.

    Attributes:
        container: the server's :class:`Container` (after start; faults work on it too).
        network: the :class:`Network` it is on.
    """

    kind = "docker"

    def __init__(
        self,
        *,
        image: str | None = None,
        network: object = None,
        proxy_ports: int = DEFAULT_PROXY_PORTS,
        seed: int | None = None,
        owner: str = DEFAULT_OWNER,
        timeout: float = 10.0,
        start_timeout: float = 60.0,
    ) -> None:
        super().__init__(owner=owner, timeout=timeout)
        self.image = image or default_image()
        self.proxy_ports = _proxy_ports(proxy_ports, "proxy_ports")
        self.seed = seed
        self.start_timeout = start_timeout
        self._network_arg = network
        self._container: Container | None = None
        self._network: Network | None = None

    @property
    def container(self) -> Container:
        """The chaos server's container."""
        if self._container is None:
            raise BackendError("the docker backend is not started; call start() first")
        return self._container

    @property
    def network(self) -> Network:
        """The network the chaos server is on."""
        if self._network is None:
            raise BackendError("the docker backend is not started; call start() first")
        return self._network

    def start(self) -> Self:
        """Start the server container and wait for its API (idempotent)."""
        if self._client is not None:
            return self
        from docker.errors import ImageNotFound

        client = prepare()
        try:
            labels = client.images.get(self.image).labels or {}
        except ImageNotFound:
            raise BackendError(image_missing_message(self.image), spec="docker") from None
        command = None
        if labels.get(IMAGE_LABEL) == "chaos" and self.seed is not None:
            command = ["--seed", str(self.seed)]
        try:
            self._network = (
                Network.create() if self._network_arg is None else Network.of(self._network_arg)
            )
            ports = [API_PORT, *range(FIRST_PROXY_PORT, FIRST_PROXY_PORT + self.proxy_ports)]
            self._container = start_container(
                self.image,
                name=unique_name("synapse-chaos"),
                command=command,
                ports=ports,
                network=self._network,
                role="chaos",
                wait=API_PORT,
                timeout=self.start_timeout,
            )
            api = ToxiproxyClient(
                f"http://{self._container.address(API_PORT)}", timeout=self.timeout
            )
            try:
                self._wait_api(api)
            except BaseException:
                api.close()
                raise
        except BaseException:
            self._teardown()
            raise
        self._client = api
        return self

    def _wait_api(self, api: ToxiproxyClient) -> None:
        # The published port accepts before the server does (docker-proxy), so ask the API.
        deadline = time.monotonic() + self.start_timeout
        while True:
            try:
                api.version()
                return
            except ToxiproxyError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        """Heal and delete the proxies, then remove the container and the network it made."""
        client = self._client
        try:
            super().stop()
        finally:
            if client is not None:
                client.close()
            self._teardown()

    def _teardown(self) -> None:
        container, self._container = self._container, None
        network, self._network = self._network, None
        try:
            if container is not None:
                container.remove()
        finally:
            if network is not None:
                network.remove()

    # -- proxies -----------------------------------------------------------------------------

    def _upstream(self, upstream: object) -> str:
        if isinstance(upstream, str):
            return upstream
        return network_upstream(upstream, self.container)

    def _listen(self, listen: str) -> str:
        host, _, text = listen.rpartition(":")
        port = int(text) if text.isdigit() else -1
        last = FIRST_PROXY_PORT + self.proxy_ports - 1
        if port == 0:
            used = {info.listen_port for info in self.client.proxies().values()}
            free = [p for p in range(FIRST_PROXY_PORT, last + 1) if p not in used]
            if not free:
                raise BackendError(
                    f"all {self.proxy_ports} proxy ports the chaos container published are in "
                    "use; publish more with DockerBackend(proxy_ports=N) or "
                    "SYNAPSE_DOCKER_PROXY_PORTS=N",
                    spec="docker",
                )
            port = free[0]
        elif not FIRST_PROXY_PORT <= port <= last:
            raise BackendError(
                f"listen={listen!r}: only the published container ports {FIRST_PROXY_PORT}-"
                f"{last} are reachable; use port 0 (any of them)",
                spec="docker",
            )
        del host  # the proxy listens on every interface of the container
        return f"0.0.0.0:{port}"

    def _handle(self, proxy: Proxy) -> Proxy:
        inner = proxy.info.listen_port
        return DockerProxy(
            proxy.client,
            proxy.info,
            published=self.container.address(inner),
            network_address=f"{self.container.name}:{inner}",
            timeline=proxy.timeline,
            owner=proxy.owner,
        )


def from_environment(
    *,
    owner: str = DEFAULT_OWNER,
    timeout: float = 10.0,
    seed: int | None = None,
    env: Mapping[str, str],
) -> DockerBackend:
    """The backend ``resolve_backend("docker")`` builds, with ``SYNAPSE_DOCKER_*`` settings."""
    ports = env.get("SYNAPSE_DOCKER_PROXY_PORTS", "").strip()
    return DockerBackend(
        image=env.get("SYNAPSE_DOCKER_IMAGE", "").strip() or None,
        network=env.get("SYNAPSE_DOCKER_NETWORK", "").strip() or None,
        proxy_ports=(
            _proxy_ports(ports, "SYNAPSE_DOCKER_PROXY_PORTS") if ports else DEFAULT_PROXY_PORTS
        ),
        seed=seed,
        owner=owner,
        timeout=timeout,
    )


register_backend("docker", from_environment)
