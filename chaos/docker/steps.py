"""Scenario steps on containers: what a step may say, and the fault it becomes.

A scenario file names containers beside proxies and mixes both on one timeline::

    proxies: [api]
    containers: [db, cache]
    steps:
      - {at: 0, proxy: api, fault: latency, ms: 100, duration: 10}
      - {at: 2, container: db, fault: pause, duration: 3}
      - {at: 6, container: cache, fault: kill, signal: SIGKILL, duration: 1}
      - {at: 8, container: db, fault: partition, from: [cache], duration: 2}
      - {at: 11, container: db, fault: flaky, loss: 0.3, duration: 2}

``partition`` cuts the step's container off from the containers listed in ``from`` (two
groups; every other container still reaches both); ``flaky`` takes ``towards`` the same way.
Validation here is pure (no engine): a bad step fails when the scenario is loaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from chaos.docker.faults import CONTAINER_FAULT_KINDS, validate
from chaos.errors import InvalidFault

STEP_FAULTS: Final = CONTAINER_FAULT_KINDS
"""The container faults a scenario step may use: every container fault kind."""

_PARAMS: Final[dict[str, frozenset[str]]] = {
    "pause": frozenset(),
    "stop": frozenset({"timeout"}),
    "kill": frozenset({"signal"}),
    "restart": frozenset({"timeout"}),
    "disconnect": frozenset({"network"}),
    "isolate": frozenset(),
    "partition": frozenset({"from"}),
    "flaky": frozenset({"loss", "towards"}),
}
_NAMES: Final = {"partition": "from", "flaky": "towards"}


def check_step(kind: str, params: Mapping[str, Any]) -> tuple[str, ...]:
    """Validate a container step's *kind* and *params*; returns the container names it refers
    to besides its own (``from`` / ``towards``). Raises :class:`InvalidFault`."""
    if kind not in _PARAMS:
        raise InvalidFault(
            f"unknown container fault {kind!r}; use one of {', '.join(STEP_FAULTS)} or 'heal'",
            fault=kind,
        )
    unknown = sorted(set(params) - _PARAMS[kind])
    if unknown:
        takes = ", ".join(sorted(_PARAMS[kind])) or "none"
        raise InvalidFault(
            f"{kind} takes no parameter {unknown[0]!r} (it takes {takes})",
            fault=kind,
            param=unknown[0],
        )
    if kind == "disconnect" and not isinstance(params.get("network"), str):
        raise InvalidFault("disconnect needs network: NAME", fault=kind, param="network")
    key = _NAMES.get(kind)
    if key is None:
        validate(kind, params)
        return ()
    names = params.get(key)
    if names is None and kind == "flaky":
        names = []
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise InvalidFault(
            f"{kind}: {key} must be a list of container names, got {names!r}", fault=kind, param=key
        )
    if kind == "partition" and not names:
        raise InvalidFault("partition needs from: [containers]", fault=kind, param=key)
    if kind == "flaky":
        validate(kind, {k: v for k, v in params.items() if k != "towards"})
    return tuple(names)


def resources(kind: str, params: Mapping[str, Any]) -> set[tuple[str, str]]:
    """What a container step takes over, for the scenario's overlap check."""
    if kind in ("stop", "kill", "restart"):
        return {("container", "running")}
    if kind == "disconnect":
        return {("network", str(params["network"]))}
    return {("container", kind)}


def step_fault(
    containers: Mapping[str, Any], name: str, kind: str, params: Mapping[str, Any]
) -> Any:
    """The (not started) fault of a container step; *containers* maps names to handles."""
    from chaos.docker.partition import partition

    target = containers[name]
    key = _NAMES.get(kind)
    if key is None:
        return target.fault(kind, **params)
    others = [containers[other] for other in params.get(key) or ()]
    if kind == "partition":
        return partition([[target], others], timeline=target.timeline)
    rest = {k: v for k, v in params.items() if k != "towards"}
    return target.flaky(towards=others if "towards" in params else None, **rest)
