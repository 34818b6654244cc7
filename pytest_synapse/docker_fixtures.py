"""The Docker fixtures: a labelled network, containers, compose stacks, faults on others'.

``chaos.docker`` (and the ``docker`` SDK) are imported only when one of these fixtures runs.
Without a reachable engine (or without the ``docker`` package) the test is skipped with the
reason; every other error fails it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pytest

from pytest_synapse.session import run_of, settings_of

if TYPE_CHECKING:
    from chaos.docker import Container, Network
    from chaos.docker.compose import ComposeStack


def _engine_or_skip() -> None:
    from chaos.docker import engine_problem

    problem = engine_problem()
    if problem is not None:
        pytest.skip(f"docker: {problem}")


def _docker_session(config: pytest.Config) -> bool:
    """True when the session's chaos backend is the docker one."""
    value = settings_of(config).toxiproxy.value
    return isinstance(value, str) and value.strip().lower() == "docker"


@pytest.fixture(scope="session")
def docker_network(request: pytest.FixtureRequest) -> Iterator[Network]:
    """The session's Docker network (one per xdist worker), labelled; removed at the end.

    With ``--synapse-toxiproxy=docker`` it is the chaos server's network, so containers on it
    and the proxies reach each other by name.
    """
    _engine_or_skip()
    from chaos.docker import Network

    if _docker_session(request.config):
        backend = request.getfixturevalue("synapse_backend")
        yield backend.network
        return
    network = Network.create()
    try:
        yield network
    finally:
        network.remove()


ContainerFactory = Callable[..., "Container"]


@pytest.fixture
def container(request: pytest.FixtureRequest) -> Iterator[ContainerFactory]:
    """Factory: ``container(image, *, name=None, command=None, env=None, ports=(), network=None,
    wait=None, **docker_options) -> chaos.docker.Container``, started and ready.

    It joins ``docker_network`` unless *network* names another; *ports* are published on
    127.0.0.1 (``handle.address(port)``); *wait* is what "ready" means (default: running and
    listening on every port in *ports*; or ``"healthy"``, a port, ``re.compile(log line)``, a
    callable). Other keywords go to the docker SDK (``entrypoint``, ``volumes``,
    ``working_dir``...). Its faults record on the test's timeline; it is removed at teardown,
    also when the test fails.
    """
    _engine_or_skip()
    from chaos.docker import start_container

    run = run_of(request)
    started: list[Container] = []

    def make(
        image: str,
        *,
        name: str | None = None,
        command: str | Sequence[str] | None = None,
        env: Mapping[str, str] | None = None,
        ports: Iterable[int] = (),
        network: object = None,
        wait: Any = None,
        **options: Any,
    ) -> Container:
        chosen = network if network is not None else request.getfixturevalue("docker_network")
        handle = start_container(
            image,
            name=name,
            command=command,
            env=env,
            ports=ports,
            network=chosen,
            wait=wait,
            timeline=run.timeline,
            **options,
        )
        started.append(handle)
        return handle

    try:
        yield make
    finally:
        _remove_all(started)


def _remove_all(containers: list[Container]) -> None:
    errors = []
    for handle in reversed(containers):
        try:
            handle.remove()
        except Exception as exc:  # keep removing the others
            errors.append(f"{handle.name}: {exc}")
    if errors:
        raise RuntimeError("container cleanup failed: " + "; ".join(errors))


@pytest.fixture
def chaos_container(request: pytest.FixtureRequest) -> Iterator[Callable[[object], Container]]:
    """Factory: ``chaos_container(c) -> chaos.docker.Container`` for a container Synapse did not
    start (a testcontainers or docker SDK container, or a name), its faults on the test's
    timeline. The container itself is left alone at teardown; faults still active are healed."""
    _engine_or_skip()
    from chaos.docker import Container

    run = run_of(request)
    handles: list[Container] = []

    def wrap(obj: object) -> Container:
        handle = Container.of(obj, timeline=run.timeline)
        handles.append(handle)
        return handle

    try:
        yield wrap
    finally:
        for handle in handles:
            handle.heal()


ComposeFactory = Callable[..., "ComposeStack"]


@pytest.fixture
def compose_stack(request: pytest.FixtureRequest) -> Iterator[ComposeFactory]:
    """Factory: ``compose_stack(path, *, env=None, wait=None) -> chaos.docker.ComposeStack``.

    Brings the compose file up as a uniquely named, labelled project (a relative *path* is
    looked up next to the test file, then in the rootdir); ``stack["orders"]`` is the service's
    :class:`chaos.docker.Container`, its faults on the test's timeline. Taken down at teardown.
    """
    _engine_or_skip()
    from chaos.docker.compose import ComposeStack

    run = run_of(request)
    stacks: list[ComposeStack] = []

    def make(
        path: str | os.PathLike[str],
        *,
        env: Mapping[str, str] | None = None,
        wait: Any = None,
        **options: Any,
    ) -> ComposeStack:
        found = os.fspath(path)
        if not os.path.isabs(found):
            for base in (request.path.parent, request.config.rootpath):
                if (base / found).is_file():
                    found = str(base / found)
                    break
        stack = ComposeStack(found, env=env, wait=wait, timeline=run.timeline, **options)
        stacks.append(stack)
        return stack.start()

    try:
        yield make
    finally:
        errors = []
        for stack in reversed(stacks):
            try:
                stack.stop()
            except Exception as exc:
                errors.append(f"{stack.project}: {exc}")
        if errors:
            raise RuntimeError("compose_stack cleanup failed: " + "; ".join(errors))
