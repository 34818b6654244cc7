"""User-defined Docker networks that Synapse creates (labelled), and handles on others'."""

from __future__ import annotations

import itertools
import os
from typing import Any

from chaos.docker.container import Container, network_name
from chaos.docker.engine import engine
from chaos.docker.labels import run_id, run_labels

_NAMES = itertools.count(1)


def unique_name(prefix: str) -> str:
    """``<prefix>-<pid>-<n>-<random>``: unique across runs and processes sharing the engine."""
    return f"{prefix}-{os.getpid()}-{next(_NAMES)}-{run_id().rsplit('.', 1)[1]}"


class Network:
    """A Docker network: containers on it reach each other by name.

    Attributes:
        sdk: the docker SDK ``Network`` object.
        owned: True if this handle created it (and :meth:`remove` may delete it).
    """

    def __init__(self, sdk: Any, *, owned: bool = False) -> None:
        self.sdk = sdk
        self.owned = owned

    @classmethod
    def create(cls, name: str | None = None) -> Network:
        """A new bridge network labelled with this run (see :mod:`chaos.docker.labels`)."""
        sdk = engine().networks.create(
            name or unique_name("synapse-net"), driver="bridge", labels=run_labels("network")
        )
        return cls(sdk, owned=True)

    @classmethod
    def of(cls, network: object) -> Network:
        """A handle on an existing network (a name, a handle, an SDK or testcontainers one)."""
        if isinstance(network, Network):
            return network
        return cls(engine().networks.get(network_name(network)))

    def __repr__(self) -> str:
        return f"<chaos.docker.Network {self.name}>"

    @property
    def name(self) -> str:
        """The network's name."""
        return str(self.sdk.name)

    @property
    def id(self) -> str:
        """The network's id."""
        return str(self.sdk.id)

    def containers(self) -> list[Container]:
        """The containers attached to it now."""
        self.sdk.reload()
        return [Container(c) for c in self.sdk.containers]

    def connect(self, container: object, *, aliases: list[str] | None = None) -> None:
        """Attach *container* (if it is not attached yet)."""
        handle = Container.of(container)
        if self.name not in handle.networks:
            self.sdk.connect(handle.sdk, aliases=aliases)

    def remove(self) -> None:
        """Delete the network if this handle created it (containers still on it are detached)."""
        from docker.errors import NotFound

        if not self.owned:
            return
        try:
            self.sdk.reload()
            for container in self.sdk.containers:
                self.sdk.disconnect(container, force=True)
            self.sdk.remove()
        except NotFound:
            pass
