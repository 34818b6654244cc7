"""Container faults: frozen, stopped, killed, restarted, disconnected, cut off, partitioned, lossy.

Every fault is a context manager (or ``start()``/``stop()``), recorded as a span on a
:class:`synapse_core.Timeline` like the proxy faults, so breaker assertions, reports and gates
see them the same way. The span's target (the ``proxy`` field of the report) is the container's
name; for a partition it is the groups, ``"a,b | c"``.

A fault on several containers (a partition) is applied and healed as one step: if applying it
to one member fails, the members already done are undone and the error raised (nothing stays
applied). A heal that fails is retried (three tries); if it still fails, the fault stays listed
with what is left, :meth:`ContainerFault.stop` raises :class:`ContainerFaultError` saying so,
and calling ``stop()`` again retries.

==============  =================================================================================
fault           how
==============  =================================================================================
pause           ``docker pause`` (cgroup freezer); heal: ``unpause``
stop            ``docker stop`` (SIGTERM, then SIGKILL); heal: ``start``
kill            ``docker kill --signal``; heal: ``start`` if it is no longer running
restart         ``docker restart``; heal: waits until it runs
disconnect      ``docker network disconnect``; heal: ``connect`` with its aliases again
isolate         iptables DROP of every packet in and out but loopback, in its namespace
partition       iptables DROP between the groups' addresses, in each member's namespace
flaky           iptables ``statistic`` DROP of a share of the packets it sends
==============  =================================================================================
"""

from __future__ import annotations

import itertools
import math
import re
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Self

from chaos.docker import netfilter
from chaos.docker.errors import ContainerFaultError
from chaos.docker.labels import rule_comment
from chaos.errors import FaultError, InvalidFault
from chaos.lifecycle import StartStop
from synapse_core.timeline import Timeline

if TYPE_CHECKING:
    from chaos.docker.container import Container

CONTAINER_FAULT_KINDS: Final = (
    "pause",
    "stop",
    "kill",
    "restart",
    "disconnect",
    "isolate",
    "partition",
    "flaky",
)
"""Every container fault kind (scenario steps on containers use these names)."""

_TOKENS = itertools.count(1)
_SESSION: Final = secrets.token_hex(2)
HEAL_TRIES: Final = 3


class ContainerFault(StartStop):
    """One fault on one or more containers; inactive until started.

    Attributes:
        kind: the fault kind (``"pause"``, ``"partition"``...).
        containers: the containers it applies to.
        params: its parameters (JSON-ready: names, numbers).
        target: how the timeline names what it applies to.
    """

    kind = "fault"

    def __init__(
        self,
        containers: Sequence[Container],
        params: Mapping[str, Any],
        *,
        target: str | None = None,
        timeline: Timeline | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not containers:
            raise InvalidFault(f"{self.kind} needs at least one container", fault=self.kind)
        self.containers = list(containers)
        self.params = dict(params)
        self.target = target or ",".join(c.name for c in self.containers)
        self._sleep = sleep
        self._lock = threading.RLock()
        self._active = False
        self._default_timeline = timeline
        self._timeline: Timeline | None = None
        self._span: int | None = None
        self._pending: list[Container] = []  # applied and not yet healed
        self.token = ""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        state = "active" if self._active else "inactive"
        return f"<ContainerFault {self.kind}({args}) on {self.target} {state}>"

    @property
    def active(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._active

    @property
    def timeline(self) -> Timeline:
        """The timeline its spans go to (the first container's unless ``start`` was given one)."""
        return self._timeline or self._default_timeline or self.containers[0].timeline

    @property
    def span_id(self) -> int | None:
        """Id of the timeline span of the current (or last) activation."""
        return self._span

    @property
    def left_behind(self) -> list[str]:
        """Containers a failed heal left the fault on (``stop()`` again retries)."""
        return [c.name for c in self._pending]

    def start(self, *, timeline: Timeline | None = None) -> Self:
        """Apply the fault to every container now (all or none) and record its span."""
        with self._lock:
            if self._active:
                raise FaultError(f"{self!r} is already active; stop() it before starting again")
            if self._pending:
                raise FaultError(f"{self!r} is still on {self.left_behind}; stop() it first")
            self.token = f"{_SESSION}{next(_TOKENS)}"
            self._timeline = timeline or self._default_timeline or self.containers[0].timeline
            self._prepare()
            done: list[Container] = []
            try:
                for container in self.containers:
                    self._apply(container)
                    done.append(container)
            except BaseException:
                self._pending = done
                try:
                    self._heal_all()
                except Exception as undo_error:
                    raise ContainerFaultError(
                        f"{self.kind} failed part-way and could not be undone on "
                        f"{self.left_behind}: {undo_error}"
                    ) from undo_error
                raise
            self._pending = done
            self._active = True
            self._span = self._timeline.fault_started(self.kind, self.target, **self.params)
        for container in self.containers:
            container.note_started(self)
        return self

    def stop(self) -> None:
        """Heal (idempotent): retried; raises :class:`ContainerFaultError` if something is left."""
        with self._lock:
            was_active, self._active = self._active, False
            try:
                if self._pending:
                    self._heal_all()
            finally:
                if was_active and self._span is not None and self._timeline is not None:
                    self._timeline.fault_ended(self._span)
                if not self._pending:
                    for container in self.containers:
                        container.note_stopped(self)

    def _heal_all(self) -> None:
        errors: dict[str, str] = {}
        for attempt in range(HEAL_TRIES):
            errors = {}
            still: list[Container] = []
            for container in self._pending:
                try:
                    self._heal(container)
                except Exception as exc:
                    errors[container.name] = f"{type(exc).__name__}: {exc}"
                    still.append(container)
            self._pending = still
            if not still:
                return
            if attempt + 1 < HEAL_TRIES:
                self._sleep(0.2 * (attempt + 1))
        detail = "; ".join(f"{name}: {why}" for name, why in errors.items())
        raise ContainerFaultError(
            f"could not heal {self.kind} on {', '.join(errors)} after {HEAL_TRIES} tries "
            f"({detail}); it is still in place there: call stop() again to retry"
        )

    # -- subclass hooks ----------------------------------------------------------------------

    def _prepare(self) -> None:
        """Work done once before applying (e.g. reading the addresses a rule names)."""

    def _apply(self, container: Container) -> None:
        raise NotImplementedError

    def _heal(self, container: Container) -> None:
        raise NotImplementedError


# -- engine faults ---------------------------------------------------------------------------


def _wait_status(container: Container, wanted: set[str], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while container.status not in wanted:
        if time.monotonic() >= deadline:
            raise ContainerFaultError(
                f"container {container.name} is {container.sdk.status}, not "
                f"{' or '.join(sorted(wanted))}, after {timeout:g}s"
            )
        time.sleep(0.05)


class PauseFault(ContainerFault):
    kind = "pause"

    def _apply(self, container: Container) -> None:
        container.sdk.pause()

    def _heal(self, container: Container) -> None:
        if container.status == "paused":
            container.sdk.unpause()


class StopFault(ContainerFault):
    kind = "stop"

    def _apply(self, container: Container) -> None:
        container.sdk.stop(timeout=max(0, math.ceil(self.params["timeout"])))

    def _heal(self, container: Container) -> None:
        if container.status != "running":
            container.sdk.start()
        _wait_status(container, {"running"})


class KillFault(StopFault):
    kind = "kill"

    def _apply(self, container: Container) -> None:
        container.sdk.kill(signal=self.params["signal"])


class RestartFault(StopFault):
    kind = "restart"

    def _apply(self, container: Container) -> None:
        container.sdk.restart(timeout=max(0, math.ceil(self.params["timeout"])))


class DisconnectFault(ContainerFault):
    kind = "disconnect"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._aliases: dict[str, list[str]] = {}

    def _apply(self, container: Container) -> None:
        from chaos.docker.engine import engine

        name = self.params["network"]
        attached = container.networks
        if name not in attached:
            raise ContainerFaultError(
                f"container {container.name} is not on network {name} "
                f"(it is on {', '.join(attached) or 'none'})"
            )
        short = container.id[:12]
        self._aliases[container.id] = [a for a in attached[name]["aliases"] if a != short]
        engine().networks.get(name).disconnect(container.sdk)

    def _heal(self, container: Container) -> None:
        from chaos.docker.engine import engine

        name = self.params["network"]
        if name not in container.networks:
            aliases = self._aliases.get(container.id) or None
            engine().networks.get(name).connect(container.sdk, aliases=aliases)


# -- network faults (iptables in the container's namespace) ----------------------------------


class _RuleFault(ContainerFault):
    """A fault made of DROP rules in each member's namespace, healed by their comment."""

    def _rules(self, container: Container, comment: str) -> list[str]:
        raise NotImplementedError

    def _apply(self, container: Container) -> None:
        pid = container.pid
        if not pid:
            raise ContainerFaultError(f"container {container.name} is not running")
        netfilter.restore(pid, self._rules(container, rule_comment(self.token)))

    def _heal(self, container: Container) -> None:
        pid = container.pid
        if pid:  # a stopped container's namespace (and its rules) is gone
            netfilter.delete_marked(pid, re.escape(rule_comment(self.token)))


class IsolateFault(_RuleFault):
    kind = "isolate"

    def _rules(self, container: Container, comment: str) -> list[str]:
        return [
            netfilter.drop_rule("INPUT", "! -i lo", comment),
            netfilter.drop_rule("OUTPUT", "! -o lo", comment),
        ]


class PartitionFault(_RuleFault):
    """``groups``: no member of one group reaches a member of another; the rest is untouched."""

    kind = "partition"

    def __init__(self, groups: Sequence[Sequence[Container]], **kwargs: Any) -> None:
        self.groups = [list(group) for group in groups]
        members = [c for group in self.groups for c in group]
        names = [[c.name for c in group] for group in self.groups]
        super().__init__(
            members,
            {"groups": names},
            target=" | ".join(",".join(group) for group in names),
            **kwargs,
        )
        self._addresses: dict[str, list[str]] = {}

    def _prepare(self) -> None:
        self._addresses = {c.id: c.ips() for c in self.containers}

    def _rules(self, container: Container, comment: str) -> list[str]:
        own = next(i for i, group in enumerate(self.groups) if container in group)
        rules: list[str] = []
        for index, group in enumerate(self.groups):
            if index == own:
                continue
            for other in group:
                for ip in self._addresses[other.id]:
                    rules.append(netfilter.drop_rule("INPUT", f"-s {ip}/32", comment))
                    rules.append(netfilter.drop_rule("OUTPUT", f"-d {ip}/32", comment))
        return rules


class FlakyFault(_RuleFault):
    kind = "flaky"

    def __init__(
        self,
        container: Container,
        loss: float,
        towards: Sequence[Container] | None,
        **kwargs: Any,
    ) -> None:
        self.towards = None if towards is None else list(towards)
        params: dict[str, Any] = {"loss": loss}
        if self.towards is not None:
            params["towards"] = [c.name for c in self.towards]
        super().__init__([container], params, **kwargs)
        self._addresses: list[str] = []

    def _prepare(self) -> None:
        self._addresses = [ip for c in self.towards or () for ip in c.ips()]

    def _rules(self, container: Container, comment: str) -> list[str]:
        loss = float(self.params["loss"])
        if self.towards is None:
            return [netfilter.drop_rule("OUTPUT", "! -o lo", comment, probability=loss)]
        return [
            netfilter.drop_rule("OUTPUT", f"-d {ip}/32", comment, probability=loss)
            for ip in self._addresses
        ]


# -- construction ------------------------------------------------------------------------------


def _number(kind: str, name: str, value: object, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise InvalidFault(
            f"{kind}: {name} must be a number from {low:g} to {high:g}, got {value!r}",
            fault=kind,
            param=name,
        )
    return float(value)


def _signal(value: object) -> str | int:
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 65:
        return value
    if isinstance(value, str) and value.isupper() and value.isalnum():
        return value if value.startswith("SIG") else f"SIG{value}"
    raise InvalidFault(
        f"kill: signal must be a signal name like 'SIGKILL' or a number, got {value!r}",
        fault="kill",
        param="signal",
    )


_ALLOWED: Final = {
    "pause": set(),
    "stop": {"timeout"},
    "kill": {"signal"},
    "restart": {"timeout"},
    "disconnect": {"network"},
    "isolate": set(),
    "flaky": {"loss", "towards"},
}


def validate(kind: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters of the container fault *kind*, checked, defaults filled in.

    Pure (no engine): scenario files are checked with it when loaded. ``network`` and
    ``towards`` are passed through as given.
    """
    if kind == "partition":
        raise InvalidFault(
            "partition takes groups of containers: use chaos.docker.partition([[a], [b]])",
            fault=kind,
        )
    if kind not in _ALLOWED:
        raise InvalidFault(
            f"unknown container fault {kind!r}; use one of {', '.join(CONTAINER_FAULT_KINDS)}",
            fault=kind,
        )
    unknown = sorted(set(params) - _ALLOWED[kind])
    if unknown:
        raise InvalidFault(
            f"{kind} takes no parameter {unknown[0]!r}"
            + (f" (it takes {', '.join(sorted(_ALLOWED[kind]))})" if _ALLOWED[kind] else ""),
            fault=kind,
            param=unknown[0],
        )
    checked = dict(params)
    if kind in ("stop", "restart"):
        checked["timeout"] = _number(kind, "timeout", params.get("timeout", 1.0), 0, 3600)
    elif kind == "kill":
        checked["signal"] = _signal(params.get("signal", "SIGKILL"))
    elif kind == "disconnect" and "network" not in params:
        raise InvalidFault("disconnect needs network=", fault=kind, param="network")
    elif kind == "flaky":
        checked["loss"] = _number(kind, "loss", params.get("loss", 0.3), 0, 1)
    return checked


__all__ = [
    "CONTAINER_FAULT_KINDS",
    "ContainerFault",
    "DisconnectFault",
    "FlakyFault",
    "KillFault",
    "PartitionFault",
    "PauseFault",
    "RestartFault",
    "StopFault",
    "IsolateFault",
    "validate",
]
