"""Starting labelled containers, and removing what this run made when the process exits."""

from __future__ import annotations

import atexit
import contextlib
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from chaos.docker.container import Container, Ready, network_name
from chaos.docker.engine import engine
from chaos.docker.errors import ContainerNotReady
from chaos.docker.labels import RUN_LABEL, run_id, run_labels
from chaos.docker.network import unique_name
from chaos.docker.reaping import reap
from chaos.errors import BackendError
from synapse_core.timeline import Timeline

_exit_lock = threading.Lock()
_exit_registered = False


def remove_own() -> None:
    """Remove every container and network this run labelled (the exit backstop).

    Owners remove what they start as they go; this catches what an interrupted run skipped.
    """
    with contextlib.suppress(Exception):
        client = engine()
        label = f"{RUN_LABEL}={run_id()}"
        for container in client.containers.list(all=True, filters={"label": label}):
            with contextlib.suppress(Exception):
                container.remove(force=True, v=True)
        for network in client.networks.list(filters={"label": label}):
            with contextlib.suppress(Exception):
                network.remove()


def prepare() -> Any:
    """The engine, after reaping dead runs once and arming the exit backstop."""
    global _exit_registered
    client = engine()
    with _exit_lock:
        if not _exit_registered:
            _exit_registered = True
            reap(client)
            atexit.register(remove_own)
    return client


def image_missing_message(image: str) -> str:
    return (
        f"image {image} is not on this Docker engine, and nothing is pulled here: build it "
        "(make image builds synapse-chaos offline; python docker/images.py base|redis builds "
        "Debian bases), or name another image"
    )


def start_container(
    image: str,
    *,
    name: str | None = None,
    command: str | Sequence[str] | None = None,
    entrypoint: str | Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    ports: Iterable[int] = (),
    network: object = None,
    aliases: Sequence[str] | None = None,
    volumes: Mapping[str, Mapping[str, str]] | None = None,
    working_dir: str | None = None,
    role: str = "container",
    wait: Ready = None,
    timeout: float = 30.0,
    timeline: Timeline | None = None,
    **options: Any,
) -> Container:
    """Run *image* detached, labelled with this run, and wait until it is ready.

    *ports* are container ports published on 127.0.0.1 (any free host port: see
    :meth:`Container.address`). *network* attaches it (with *aliases*). *wait* is what
    "ready" means (:data:`chaos.docker.container.Ready`; default: running, and listening on
    every port in *ports*). If it does not get ready, it is removed and
    :class:`~chaos.docker.errors.ContainerNotReady` says why, with its last log lines.
    """
    from docker.errors import APIError, ImageNotFound
    from docker.types import EndpointConfig

    client = prepare()
    published = tuple(ports)
    attach: dict[str, Any] = {}
    if network is not None:
        net = network_name(network)
        attach = {
            "network": net,
            "networking_config": {
                net: EndpointConfig(client.api._version, aliases=list(aliases or ()))
            },
        }
    try:
        sdk = client.containers.create(
            image,
            command=command,
            entrypoint=entrypoint,
            name=name or unique_name("synapse"),
            environment=dict(env or {}),
            labels=run_labels(role),
            ports={f"{p}/tcp": ("127.0.0.1", None) for p in published},
            volumes=dict(volumes or {}),
            working_dir=working_dir,
            detach=True,
            **attach,
            **options,
        )
    except ImageNotFound:
        raise BackendError(image_missing_message(image), spec=image) from None
    handle = Container(sdk, timeline=timeline)
    try:
        sdk.start()
        handle.wait_ready(wait, ports=published, timeout=timeout)
    except BaseException as exc:
        with contextlib.suppress(Exception):
            sdk.remove(force=True, v=True)
        if isinstance(exc, APIError):
            raise ContainerNotReady(f"container of {image} did not start: {exc}") from None
        raise
    return handle
