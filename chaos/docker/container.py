"""The :class:`Container` handle: a container (ours, or one started by the SDK or testcontainers)
with its addresses and its faults.

::

    redis = Container.of(testcontainers_redis)        # or a docker SDK container, or a name
    with redis.pause():                                # frozen: connections hang
        ...
    with redis.kill():                                 # SIGKILL; started again on exit
        ...
    with redis.disconnect("backend"):                  # cut off one network; reconnected on exit
        ...

Each fault is a context manager (or ``start()``/``stop()``) recorded as a span on the handle's
timeline, exactly like the proxy faults (see :mod:`chaos.docker.faults`).
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Self

from chaos.docker.engine import engine
from chaos.docker.errors import ContainerNotReady
from chaos.docker.faults import (
    ContainerFault,
    DisconnectFault,
    FlakyFault,
    IsolateFault,
    KillFault,
    PauseFault,
    RestartFault,
    StopFault,
    validate,
)
from chaos.lifecycle import call_all
from synapse_core.clock import Clock, monotonic_clock
from synapse_core.timeline import Timeline

Ready = str | int | re.Pattern[str] | Callable[["Container"], bool] | None
"""What :meth:`Container.wait_ready` waits for: ``"running"``, ``"healthy"``, a container port
(``6379``: something listens on it inside the container), a compiled regex (a log line), or a
callable ``(container) -> bool``; ``None``: running, and listening on every port given."""


def _sdk_container(obj: object) -> Any:
    """The docker SDK container behind *obj* (ours, the SDK's, testcontainers', or a name)."""
    if isinstance(obj, Container):
        return obj.sdk
    wrapped = getattr(obj, "get_wrapped_container", None)
    if callable(wrapped):  # testcontainers' DockerContainer
        sdk = wrapped()
        if sdk is None:
            raise ValueError(f"{obj!r} is not started yet; start it before using it")
        return sdk
    if isinstance(obj, str):
        return engine().containers.get(obj)
    if hasattr(obj, "attrs") and hasattr(obj, "pause") and hasattr(obj, "reload"):
        return obj  # a docker SDK Container
    raise TypeError(
        f"expected a Container, a docker SDK container, a testcontainers container or a "
        f"container name, got {type(obj).__name__}"
    )


# Faults on one container whose parameters need no conversion.
_SINGLE_FAULTS: dict[str, type[ContainerFault]] = {
    "pause": PauseFault,
    "isolate": IsolateFault,
    "stop": StopFault,
    "restart": RestartFault,
    "kill": KillFault,
}


def network_name(network: object) -> str:
    """The name of *network*: a name, a :class:`Network`, an SDK or a testcontainers network."""
    if isinstance(network, str) and network:
        return network
    name = getattr(network, "name", None)
    if isinstance(name, str) and name:
        return name
    raise TypeError(
        f"expected a network name, a docker SDK network or a testcontainers Network, got "
        f"{network!r}"
    )


def _listening_ports(pid: int) -> set[int]:
    """Ports with a listening TCP socket in the network namespace of *pid* (read from /proc)."""
    ports: set[int] = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 3 and fields[3] == "0A":  # TCP_LISTEN
                ports.add(int(fields[1].rpartition(":")[2], 16))
    return ports


class Container:
    """A handle on one Docker container, with its addresses and faults.

    Make one with :meth:`of` (from anything that names a container) or get one from the
    ``container`` / ``compose_stack`` fixtures. The handle never removes a container it did not
    start (:meth:`remove` is explicit).

    Attributes:
        sdk: the docker SDK ``Container`` object.
        timeline: where its faults record their spans.
    """

    def __init__(self, sdk: Any, *, timeline: Timeline | None = None) -> None:
        self.sdk = sdk
        self.timeline = Timeline() if timeline is None else timeline
        self._faults: list[ContainerFault] = []

    @classmethod
    def of(cls, obj: object, *, timeline: Timeline | None = None) -> Container:
        """A handle on *obj*: a :class:`Container`, a docker SDK container, a testcontainers
        container or a container name/id. A given *timeline* replaces the handle's."""
        if isinstance(obj, Container) and (timeline is None or timeline is obj.timeline):
            return obj
        return cls(_sdk_container(obj), timeline=timeline)

    def __repr__(self) -> str:
        return f"<chaos.docker.Container {self.name} ({self.image})>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Container) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    # -- what it is --------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The container's name (how other containers on its networks reach it)."""
        return str(self.sdk.name)

    @property
    def id(self) -> str:
        """The full container id."""
        return str(self.sdk.id)

    @property
    def image(self) -> str:
        """The image it runs, as given when it was created."""
        return str(self.sdk.attrs.get("Config", {}).get("Image") or self.sdk.image.id)

    @property
    def labels(self) -> dict[str, str]:
        """Its labels."""
        return dict(self.sdk.attrs.get("Config", {}).get("Labels") or {})

    def reload(self) -> Self:
        """Read the container's current state from the engine."""
        self.sdk.reload()
        return self

    @property
    def status(self) -> str:
        """``running``, ``paused``, ``exited``... (fresh from the engine)."""
        self.reload()
        return str(self.sdk.status)

    @property
    def pid(self) -> int:
        """The host pid of its main process (0 when it is not running)."""
        return int(self.reload().sdk.attrs.get("State", {}).get("Pid") or 0)

    @property
    def networks(self) -> dict[str, dict[str, Any]]:
        """The networks it is attached to: name -> ``{"ip": ..., "aliases": [...]}``."""
        attached = self.reload().sdk.attrs.get("NetworkSettings", {}).get("Networks") or {}
        return {
            name: {"ip": info.get("IPAddress") or "", "aliases": list(info.get("Aliases") or ())}
            for name, info in attached.items()
        }

    def ips(self) -> list[str]:
        """Its addresses on every network it is attached to."""
        return [info["ip"] for info in self.networks.values() if info["ip"]]

    def ip(self, network: object = None) -> str:
        """Its address on *network* (default: its only, or first user-defined, network)."""
        networks = self.networks
        if network is not None:
            name = network_name(network)
            if name not in networks or not networks[name]["ip"]:
                raise LookupError(f"container {self.name} has no address on network {name}")
            return str(networks[name]["ip"])
        for _, info in sorted(networks.items(), key=lambda item: item[0] == "bridge"):
            if info["ip"]:
                return str(info["ip"])
        raise LookupError(f"container {self.name} has no network address (is it running?)")

    def host_port(self, port: int, protocol: str = "tcp") -> int:
        """The host port that container port *port* is published on (127.0.0.1 only)."""
        bindings = (self.reload().sdk.attrs.get("NetworkSettings", {}).get("Ports") or {}).get(
            f"{port}/{protocol}"
        )
        for binding in bindings or ():
            if binding.get("HostIp") in ("127.0.0.1", "0.0.0.0", ""):
                return int(binding["HostPort"])
        raise LookupError(
            f"port {port}/{protocol} of container {self.name} is not published on 127.0.0.1; "
            "publish it when the container is created (ports=...)"
        )

    def address(self, port: int) -> str:
        """``127.0.0.1:<host port>``: where the host reaches container port *port*."""
        return f"127.0.0.1:{self.host_port(port)}"

    def network_address(self, port: int) -> str:
        """``<name>:<port>``: where containers on its networks reach container port *port*."""
        return f"{self.name}:{port}"

    # -- running -----------------------------------------------------------------------------

    def exec(
        self, command: str | Sequence[str], *, timeout: float | None = None
    ) -> tuple[int, str]:
        """Run *command* inside the container; returns ``(exit code, output)``."""
        argv = command if isinstance(command, str) else list(command)
        if timeout is not None:
            argv = [
                "timeout",
                f"{timeout:g}",
                *(["sh", "-c", argv] if isinstance(argv, str) else argv),
            ]
        result = self.sdk.exec_run(argv, demux=False)
        return int(result.exit_code), (result.output or b"").decode("utf-8", "replace")

    def logs(self) -> str:
        """Everything it printed so far."""
        return bytes(self.sdk.logs()).decode("utf-8", "replace")

    def listening(self) -> set[int]:
        """Container ports something listens on (TCP), read from its network namespace."""
        pid = self.pid
        return _listening_ports(pid) if pid else set()

    def is_ready(self, ready: Ready = "running", ports: Iterable[int] = ()) -> bool:
        """One check of *ready* (see :data:`Ready`)."""
        status = self.status
        if status != "running":
            return False
        if ready is None:
            wanted = set(ports)
            return not wanted or wanted <= self.listening()
        if ready == "running":
            return True
        if ready == "healthy":
            health = self.sdk.attrs.get("State", {}).get("Health") or {}
            return health.get("Status") == "healthy"
        if isinstance(ready, int):
            return ready in self.listening()
        if isinstance(ready, re.Pattern):
            return ready.search(self.logs()) is not None
        if callable(ready):
            return bool(ready(self))
        raise ValueError(
            f"wait={ready!r}: use 'running', 'healthy', a port number, re.compile(log line) or "
            "a callable(container) -> bool"
        )

    def wait_ready(
        self,
        ready: Ready = "running",
        *,
        ports: Iterable[int] = (),
        timeout: float = 30.0,
        clock: Clock = monotonic_clock,
        sleep: Callable[[float], None] = time.sleep,
    ) -> Self:
        """Wait until :meth:`is_ready`; :class:`ContainerNotReady` with its logs on timeout."""
        wanted = tuple(ports)
        deadline = clock() + timeout
        while not self.is_ready(ready, wanted):
            if self.sdk.status in ("exited", "dead"):
                raise ContainerNotReady(
                    f"container {self.name} exited while waiting for {ready or 'its ports'}: "
                    f"{self._log_tail()}"
                )
            if clock() >= deadline:
                raise ContainerNotReady(
                    f"container {self.name} not ready ({ready or f'listening on {list(wanted)}'}) "
                    f"after {timeout:g}s; status {self.sdk.status}: {self._log_tail()}"
                )
            sleep(0.05)
        return self

    def _log_tail(self, lines: int = 8) -> str:
        try:
            tail = self.logs().strip().splitlines()[-lines:]
        except Exception as exc:
            return f"(no logs: {exc})"
        return "logs: " + (" | ".join(tail) if tail else "(empty)")

    def remove(self) -> None:
        """Stop and remove the container (and its anonymous volumes); gone already is fine."""
        from docker.errors import NotFound

        self.heal()
        with contextlib.suppress(NotFound):
            self.sdk.remove(force=True, v=True)

    # -- faults ------------------------------------------------------------------------------

    @property
    def faults(self) -> list[ContainerFault]:
        """The faults started on this handle that are still active, oldest first."""
        return list(self._faults)

    def fault(self, kind: str, **params: Any) -> ContainerFault:
        """Build the fault *kind* (``pause``, ``stop``, ``kill``, ``restart``, ``disconnect``,
        ``isolate``, ``flaky``) with *params*, validated, not started (scenario steps use this)."""
        checked = validate(kind, params)
        if kind == "disconnect":
            return DisconnectFault([self], {"network": network_name(checked["network"])})
        if kind == "flaky":
            towards = checked.get("towards")
            targets = None if towards is None else [Container.of(c) for c in towards]
            return FlakyFault(self, checked["loss"], targets)
        return _SINGLE_FAULTS[kind]([self], checked)

    def pause(self) -> ContainerFault:
        """Freeze every process of the container (cgroup freezer); unpaused on heal.

        Connections to it stay open and hang: nothing answers, nothing is refused.
        """
        return self.fault("pause")

    def stop(self, timeout: float = 1.0) -> ContainerFault:
        """Stop it (SIGTERM, SIGKILL after *timeout* s); started again on heal."""
        return self.fault("stop", timeout=timeout)

    def kill(self, signal: str | int = "SIGKILL") -> ContainerFault:
        """Send *signal* to its main process; started again on heal if it is no longer running."""
        return self.fault("kill", signal=signal)

    def restart(self, timeout: float = 1.0) -> ContainerFault:
        """Restart it now (stop, then start); the span lasts until the heal checks it runs."""
        return self.fault("restart", timeout=timeout)

    def disconnect(self, network: object) -> ContainerFault:
        """Disconnect it from *network*; reconnected (same aliases) on heal."""
        return self.fault("disconnect", network=network_name(network))

    def isolate(self) -> ContainerFault:
        """Cut it off from everything but itself: every packet in or out is dropped (iptables
        in its namespace), the host's published ports included."""
        return self.fault("isolate")

    def flaky(self, loss: float = 0.3, towards: Iterable[object] | None = None) -> ContainerFault:
        """Drop each packet it sends with probability *loss* (iptables ``statistic`` match).

        *towards*: only packets to these containers (default: to anyone but itself). A TCP
        connect to it then fails about *loss* of the time, retried by TCP after 1 s.
        """
        targets = None if towards is None else [Container.of(c) for c in towards]
        return self.fault("flaky", loss=loss, towards=targets)

    def heal(self) -> None:
        """Stop every fault started on this handle (newest first); raise the first error after."""
        call_all([fault.stop for fault in reversed(self.faults)])

    def note_started(self, fault: ContainerFault) -> None:
        """Count *fault* among :attr:`faults` (what :meth:`heal` stops); the fault calls it."""
        self._faults = [*self._faults, fault]

    def note_stopped(self, fault: ContainerFault) -> None:
        """Take *fault* off :attr:`faults`; the fault calls it when it stops."""
        self._faults = [f for f in self._faults if f is not fault]
