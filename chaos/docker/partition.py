"""Jepsen-style partitions of containers: :func:`partition` between groups, :func:`isolate` one."""

from __future__ import annotations

from collections.abc import Sequence

from chaos.docker.container import Container
from chaos.docker.faults import ContainerFault, PartitionFault
from chaos.errors import InvalidFault
from synapse_core.timeline import Timeline


def partition(
    groups: Sequence[Sequence[object]], *, timeline: Timeline | None = None
) -> PartitionFault:
    """A network partition between *groups* of containers (Jepsen's nemesis partition).

    No container of one group reaches any container of another group, in either direction;
    each group still reaches everything else (containers in no group, the host). Members may
    be :class:`Container` handles, docker SDK or testcontainers containers, or names. The span
    goes to *timeline* (default: the first member's).

    ::

        with partition([[a], [b]]):      # a and b cannot see each other; both still reach c
            ...
    """
    if len(groups) < 2 or any(len(group) == 0 for group in groups):
        raise InvalidFault(
            "partition needs at least two non-empty groups, like [[a], [b, c]]", fault="partition"
        )
    handles = [[Container.of(member) for member in group] for group in groups]
    seen: set[str] = set()
    for group in handles:
        for member in group:
            if member.id in seen:
                raise InvalidFault(
                    f"container {member.name} is in two groups of the partition", fault="partition"
                )
            seen.add(member.id)
    return PartitionFault(handles, timeline=timeline)


def isolate(container: object) -> ContainerFault:
    """Cut *container* off from everything (one-against-all): see :meth:`Container.isolate`."""
    return Container.of(container).isolate()
