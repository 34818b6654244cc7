"""A compose file brought up as a labelled project, its services as :class:`Container` handles.

Works with ``docker compose`` (v2) and ``docker-compose`` (v1), whichever is installed. The
project gets a unique name, and an override file adds ``io.synapse.run=<run id>`` to every
service and to the project's networks, so an interrupted run's stack is reaped like any other
container (see :mod:`chaos.docker.labels`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Self

import yaml

from chaos.docker.container import Container, Ready
from chaos.docker.engine import engine
from chaos.docker.errors import ContainerNotReady
from chaos.docker.labels import run_labels
from chaos.docker.launch import prepare
from chaos.docker.network import unique_name
from chaos.errors import BackendError
from chaos.lifecycle import StartStop
from synapse_core.timeline import Timeline


def compose_command() -> list[str]:
    """``["docker", "compose"]`` if the v2 plugin works, else ``["docker-compose"]``."""
    if shutil.which("docker"):
        probe = subprocess.run(
            ["docker", "compose", "version"], capture_output=True, text=True, check=False
        )
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise BackendError(
        "compose stacks need `docker compose` (the v2 plugin) or `docker-compose` (v1); "
        "install one of them"
    )


class ComposeStack(StartStop):
    """The services of a compose file, up for the life of the stack.

    Args:
        path: the compose file.
        env: extra environment for variable substitution in the file.
        wait: what "ready" means for every service (see :data:`chaos.docker.Ready`; default:
            running, and listening on the ports it publishes); ``services_wait`` per service.
        timeout: seconds allowed for ``up`` and for each service to get ready.
        timeline: where faults of its services record.

    Attributes:
        project: the unique compose project name.
        services: service name -> :class:`Container` (after start).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        env: Mapping[str, str] | None = None,
        wait: Ready = None,
        services_wait: Mapping[str, Ready] | None = None,
        timeout: float = 120.0,
        timeline: Timeline | None = None,
    ) -> None:
        self.path = Path(path).resolve()
        if not self.path.is_file():
            raise BackendError(f"no compose file at {self.path}")
        self.env = dict(env or {})
        self.wait = wait
        self.services_wait = dict(services_wait or {})
        self.timeout = timeout
        self.timeline = timeline
        self.project = unique_name("synapse").replace(".", "-")
        self.services: dict[str, Container] = {}
        self._override: Path | None = None
        self._up = False

    def __repr__(self) -> str:
        return f"<chaos.docker.ComposeStack {self.project} {self.path}>"

    def __getitem__(self, service: str) -> Container:
        try:
            return self.services[service]
        except KeyError:
            raise KeyError(
                f"no service {service!r} in {self.path.name} (it has {', '.join(self.services)})"
            ) from None

    def _compose(self, *args: str, timeout: float | None = None) -> str:
        files = ["-f", str(self.path)]
        if self._override is not None:
            files += ["-f", str(self._override)]
        argv = [*compose_command(), "-p", self.project, *files, *args]
        try:
            result = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                check=False,
                timeout=timeout or self.timeout,
                env={**os.environ, **self.env},
                cwd=self.path.parent,
            )
        except subprocess.TimeoutExpired:
            raise ContainerNotReady(
                f"{shlex.join(argv)} did not finish in {timeout or self.timeout:g}s"
            ) from None
        if result.returncode != 0:
            tail = " | ".join((result.stderr or result.stdout).strip().splitlines()[-8:])
            raise BackendError(f"{shlex.join(argv[: len(argv) - len(args) + 1])} failed: {tail}")
        return result.stdout

    def start(self) -> Self:
        """``up -d`` the project (labelled), then wait until every service is ready."""
        if self._up:
            return self
        prepare()  # reap dead runs; arm the exit backstop
        config = yaml.safe_load(self._compose("config"))
        labels = run_labels("compose", **{"io.synapse.compose": self.project})
        override: dict[str, object] = {
            "services": {name: {"labels": labels} for name in config.get("services") or {}},
            "networks": {
                name: {"labels": labels}
                for name, spec in (config.get("networks") or {"default": {}}).items()
                if not (spec or {}).get("external")
            },
        }
        if "version" in config:  # docker-compose v1 merges only files of one version
            override["version"] = config["version"]
        handle, name = tempfile.mkstemp(prefix="synapse-compose-", suffix=".yaml")
        with os.fdopen(handle, "w") as out:
            json.dump(override, out)  # JSON is YAML
        self._override = Path(name)
        self._up = True
        try:
            self._compose("up", "-d", "--no-build", "--quiet-pull")
            found = engine().containers.list(
                all=True, filters={"label": f"com.docker.compose.project={self.project}"}
            )
            for sdk in found:
                service = sdk.labels.get("com.docker.compose.service", sdk.name)
                self.services[service] = Container(sdk, timeline=self.timeline)
            for service, container in self.services.items():
                ready = self.services_wait.get(service, self.wait)
                container.wait_ready(ready, ports=self._published(container), timeout=self.timeout)
        except BaseException:
            self.stop()
            raise
        return self

    @staticmethod
    def _published(container: Container) -> Sequence[int]:
        ports = container.reload().sdk.attrs.get("NetworkSettings", {}).get("Ports") or {}
        return [int(key.split("/")[0]) for key, bound in ports.items() if bound]

    def stop(self) -> None:
        """``down`` the project: containers, its networks and anonymous volumes go (idempotent)."""
        if not self._up:
            return
        self._up = False
        try:
            for container in self.services.values():
                with contextlib.suppress(Exception):
                    container.heal()
            self._compose("down", "-v", "--remove-orphans", "--timeout", "1")
        finally:
            self.services = {}
            if self._override is not None:
                self._override.unlink(missing_ok=True)
                self._override = None
