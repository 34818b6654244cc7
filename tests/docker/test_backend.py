"""The docker backend: the chaos server in a container, proxies between containers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from docker_helpers import echo_command, probe, reaches

from chaos.backends import resolve_backend
from chaos.docker import Container, DockerBackend, DockerProxy, start_container
from chaos.errors import BackendError

ROOT = Path(__file__).resolve().parents[2]
NO_ENGINE = {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}


# -- without an engine: one clear error ----------------------------------------------------------


def test_docker_settings_are_checked_when_the_backend_is_built() -> None:
    backend = resolve_backend("docker", env={"SYNAPSE_DOCKER_IMAGE": "mine:1"})
    assert isinstance(backend, DockerBackend)
    assert backend.image == "mine:1"
    assert not backend.running  # nothing started, no engine asked
    with pytest.raises(BackendError, match="SYNAPSE_DOCKER_PROXY_PORTS must be a number"):
        resolve_backend("docker", env={"SYNAPSE_DOCKER_PROXY_PORTS": "zero"})
    with pytest.raises(BackendError, match="from 1 to 1000, got 0"):
        DockerBackend(proxy_ports=0)


def _python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **env},
    )


def test_no_engine_is_one_error_saying_what_was_tried_and_how_to_fix_it() -> None:
    result = _python(
        "from chaos import resolve_backend\n"
        "from chaos.docker import DockerUnavailable\n"
        "try:\n    resolve_backend('docker').start()\n"
        "except DockerUnavailable as exc:\n    print(exc)\n",
        NO_ENGINE,
    )
    assert result.returncode == 0, result.stderr
    assert "no Docker engine answered at DOCKER_HOST=unix:///nonexistent/docker.sock" in (
        result.stdout
    )
    assert "start the engine" in result.stdout


def test_no_docker_package_is_one_error_naming_the_extra() -> None:
    result = _python(
        "import sys; sys.modules['docker'] = None\n"
        "from chaos.docker import engine_problem\nprint(engine_problem())\n",
        {},
    )
    assert "pip install 'synapse-chaos[docker]'" in result.stdout, result.stderr


def test_importing_chaos_docker_does_not_import_the_sdk() -> None:
    """chaos.docker and every module in it import without the docker SDK: users who never ask
    for Docker do not pay for it (only the plugin's own import was checked before)."""
    result = _python(
        "import pkgutil, importlib, sys, chaos.docker\n"
        "for m in pkgutil.iter_modules(chaos.docker.__path__):\n"
        "    importlib.import_module('chaos.docker.' + m.name)\n"
        "import pytest_synapse.docker_fixtures\n"
        "print(sorted(n for n in sys.modules if n == 'docker' or n.startswith('docker.')))\n",
        {},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("form", "source"),
    [
        ("option", "command line --synapse-toxiproxy"),
        ("env", "env SYNAPSE_TOXIPROXY"),
        ("ini", "ini synapse_toxiproxy"),
    ],
)
def test_plugin_without_an_engine_fails_the_backend_and_skips_container_tests(
    pytester: pytest.Pytester, form: str, source: str
) -> None:
    """The docker backend is asked for in each of the option's forms; the error names it."""
    pytester.makepyfile(
        """
        def test_needs_backend(toxiproxy):
            pass

        def test_needs_container(container):
            pass
        """
    )
    args = ["-rs", "-p", "no:cacheprovider"]
    if form == "option":
        args.append("--synapse-toxiproxy=docker")
    elif form == "ini":
        pytester.makeini("[pytest]\nsynapse_toxiproxy = docker\n")
    with pytest.MonkeyPatch.context() as patch:
        for key, value in NO_ENGINE.items():
            patch.setenv(key, value)
        patch.delenv("SYNAPSE_TOXIPROXY", raising=False)
        if form == "env":
            patch.setenv("SYNAPSE_TOXIPROXY", "docker")
        result = pytester.runpytest_subprocess(*args)
    result.assert_outcomes(errors=1, skipped=1)
    result.stdout.fnmatch_lines(
        [
            f"*synapse: {source}: no Docker engine answered at "
            "DOCKER_HOST=unix:///nonexistent/docker.sock*",
            "SKIPPED*docker: no Docker engine answered*",
        ]
    )
    assert "Traceback" not in result.stdout.str()


# -- with the engine -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def backend(images: dict[str, str]) -> Iterator[DockerBackend]:
    with DockerBackend(image=images["chaos"], seed=7) as started:
        yield started


@pytest.fixture(scope="module")
def echo_pair(backend: DockerBackend, images: dict[str, str]) -> Iterator[tuple[Container, ...]]:
    server = start_container(
        images["base"], command=echo_command(), ports=[7000], network=backend.network
    )
    client = start_container(images["base"], command=["sleep", "infinity"], network=backend.network)
    try:
        yield server, client
    finally:
        server.remove()
        client.remove()


def test_the_server_image_speaks_the_api_to_toxiproxy_python(
    backend: DockerBackend,
    echo_pair: tuple[Container, ...],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from toxiproxy.api import APIConsumer
    from toxiproxy.exceptions import InvalidToxic, NotFound, ProxyExists
    from toxiproxy.server import Toxiproxy

    server, _ = echo_pair
    api = backend.container.address(8474)
    host, _, port = api.rpartition(":")
    monkeypatch.setattr(APIConsumer, "host", host)
    monkeypatch.setattr(APIConsumer, "port", int(port))
    toxiproxy = Toxiproxy()
    assert b"2.12.0" in toxiproxy.version()
    proxy = toxiproxy.create(
        upstream=server.network_address(7000), name="echo", listen="0.0.0.0:20000"
    )
    try:
        published = backend.container.address(20000)
        assert _best_round_trip(published) < 0.15
        proxy.add_toxic(type="latency", attributes={"latency": 200})
        assert _round_trip(published) >= 0.19
        assert set(proxy.toxics()) == {"latency_downstream"}
        with pytest.raises(ProxyExists):
            APIConsumer.post("/proxies", json={"name": "echo", "upstream": "x:1"})
        with pytest.raises(InvalidToxic):
            proxy.add_toxic(type="no_such_toxic")
        with proxy.down(), pytest.raises(OSError):
            _round_trip(published, timeout=0.5)
        assert toxiproxy.reset() is True
        assert proxy.toxics() == {}
        assert _best_round_trip(published) < 0.15
    finally:
        proxy.destroy()
    with pytest.raises(NotFound):
        proxy.toxics()


def _best_round_trip(address: str, tries: int = 3) -> float:
    """The fastest of a few round trips: no toxic slows them all, a loaded machine stalls one."""
    return min(_round_trip(address) for _ in range(tries))


def _round_trip(address: str, timeout: float = 3.0) -> float:
    import socket

    host, _, port = address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.settimeout(timeout)
        start = time.monotonic()
        sock.sendall(b"ping")
        got = b""
        while len(got) < 4:
            chunk = sock.recv(16)
            if not chunk:
                raise ConnectionError("closed")
            got += chunk
        return time.monotonic() - start


def test_latency_and_partition_between_two_containers_through_the_proxy_container(
    backend: DockerBackend, echo_pair: tuple[Container, ...]
) -> None:
    server, client = echo_pair
    proxy = backend.create_proxy((server, 7000), name="between")
    try:
        assert isinstance(proxy, DockerProxy)
        assert proxy.upstream == f"{server.name}:7000"
        assert proxy.network_address == f"{backend.container.name}:{proxy.container_port}"
        assert proxy.listen == backend.container.address(proxy.container_port)
        assert reaches(client, proxy.network_address)
        assert _best_round_trip(proxy.listen) < 0.15  # and from the host
        with proxy.latency(300):  # ~0.6 s round trip
            assert probe(client, proxy.network_address, timeout=0.3) == 1
            assert probe(client, proxy.network_address, timeout=3) == 0
        with proxy.partition():
            assert probe(client, proxy.network_address, timeout=0.5) == 1
        assert reaches(client, proxy.network_address)
        assert [span.fault for span in proxy.timeline.faults] == ["latency", "partition"]
    finally:
        proxy.delete()


def test_a_container_on_another_network_is_joined_by_the_chaos_server(
    backend: DockerBackend, images: dict[str, str]
) -> None:
    from chaos.docker import Network

    other = Network.create()
    server = start_container(images["base"], command=echo_command(), ports=[7000], network=other)
    try:
        proxy = backend.create_proxy((server, 7000))
        assert other.name in backend.container.networks
        assert _best_round_trip(proxy.listen) < 0.15
        proxy.delete()
    finally:
        server.remove()
        other.remove()


def test_a_container_alone_is_an_upstream_when_it_exposes_one_port(
    backend: DockerBackend, images: dict[str, str], echo_pair: tuple[Container, ...]
) -> None:
    server, _ = echo_pair
    assert backend.create_proxy(server).upstream == f"{server.name}:7000"  # publishes only 7000
    quiet = start_container(images["base"], command=["sleep", "infinity"], network=backend.network)
    try:
        with pytest.raises(BackendError, match=r"exposes no TCP ports .* name the one to proxy"):
            backend.create_proxy(quiet)
        proxy = backend.create_proxy((quiet.sdk, 6379))  # an SDK container works too
        assert proxy.upstream == f"{quiet.name}:6379"
    finally:
        quiet.remove()


def test_running_out_of_published_proxy_ports_names_the_option(images: dict[str, str]) -> None:
    with DockerBackend(image=images["chaos"], proxy_ports=1) as small:
        first = small.create_proxy("127.0.0.1:1", name="one")
        with pytest.raises(BackendError, match=r"proxy_ports=N.*SYNAPSE_DOCKER_PROXY_PORTS=N"):
            small.create_proxy("127.0.0.1:1", name="two")
        with pytest.raises(BackendError, match="only the published container ports 20000-20000"):
            small.create_proxy("127.0.0.1:1", name="three", listen="0.0.0.0:9999")
        first.delete()
        assert small.create_proxy("127.0.0.1:1", name="two").listen.startswith("127.0.0.1:")
        name, network = small.container.name, small.network.name
    from chaos.docker import engine

    assert not engine().containers.list(all=True, filters={"name": name})
    assert not engine().networks.list(names=[network])


def test_a_missing_image_is_explained(engine_ready: None) -> None:
    with pytest.raises(BackendError, match="make image builds synapse-chaos offline"):
        DockerBackend(image="synapse-no-such-image:0").start()


def test_embedded_backend_proxies_a_container_through_its_published_port(
    images: dict[str, str], echo_pair: tuple[Container, ...]
) -> None:
    from chaos import EmbeddedBackend

    server, _ = echo_pair
    with EmbeddedBackend() as embedded:
        proxy = embedded.create_proxy((server, 7000))
        assert proxy.upstream == server.address(7000)
        assert _best_round_trip(proxy.listen) < 0.15
