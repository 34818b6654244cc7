"""Docker support: the ``docker`` backend, container faults and Jepsen-style partitions.

Needs the ``docker`` package (``pip install 'synapse-chaos[docker]'``), imported only when an
engine is first used; importing this package is cheap.

::

    from chaos.docker import Container, DockerBackend, partition

    with DockerBackend() as backend:                         # chaos server in a container
        db = backend.create_proxy((postgres, 5432), name="db")
    with Container.of(redis).pause():                        # frozen
        ...
    with partition([[a], [b]]):                              # a and b cut apart; c sees both
        ...

See :mod:`chaos.docker.faults` for how each fault is made and healed, and
:mod:`chaos.docker.labels` and :mod:`chaos.docker.reaping` for labels and reaping.
"""

from chaos.docker.backend import DockerBackend, DockerProxy, default_image
from chaos.docker.container import Container, Ready
from chaos.docker.engine import DockerUnavailable, engine, engine_problem
from chaos.docker.errors import ContainerFaultError, ContainerNotReady
from chaos.docker.faults import CONTAINER_FAULT_KINDS, ContainerFault
from chaos.docker.labels import RUN_LABEL, run_id
from chaos.docker.launch import start_container
from chaos.docker.network import Network
from chaos.docker.partition import isolate, partition
from chaos.docker.reaping import reap

__all__ = [
    "CONTAINER_FAULT_KINDS",
    "RUN_LABEL",
    "Container",
    "ContainerFault",
    "ContainerFaultError",
    "ContainerNotReady",
    "DockerBackend",
    "DockerProxy",
    "DockerUnavailable",
    "Network",
    "Ready",
    "default_image",
    "engine",
    "engine_problem",
    "isolate",
    "partition",
    "reap",
    "run_id",
    "start_container",
]
