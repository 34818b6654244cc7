"""Reaping: removing what dead runs of this machine left in Docker.

Containers and networks with a dead run's ``io.synapse.run`` label, and its iptables rules in the
containers still running. Runs of other machines sharing an engine, and live runs, are never
touched; neither is anything without the label (see :mod:`chaos.docker.labels`).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from typing import Any

from chaos.docker import netfilter
from chaos.docker.errors import ContainerFaultError
from chaos.docker.labels import RUN_LABEL, is_alive


def reap(client: Any) -> list[str]:
    """Remove what dead runs of this machine left; returns what was removed (for logs).

    Containers and networks labelled by a dead run are removed (containers first); rules of
    dead runs are deleted from running containers, ours or not.
    """
    removed: list[str] = []
    dead: dict[str, bool] = {}

    def is_dead(run: str) -> bool:
        if run not in dead:
            dead[run] = is_alive(run) is False
        return dead[run]

    # ignore_removed: another run reaping the same engine may remove a container between the
    # list and the SDK's inspect of each one (docker.errors.NotFound failed the whole start).
    labelled = client.containers.list(all=True, filters={"label": RUN_LABEL}, ignore_removed=True)
    for container in labelled:
        if is_dead(container.labels.get(RUN_LABEL, "")):
            with contextlib.suppress(Exception):  # gone meanwhile, or being removed
                container.remove(force=True, v=True)
                removed.append(f"container {container.name}")
    for network in client.networks.list(filters={"label": RUN_LABEL}):
        if is_dead(network.attrs.get("Labels", {}).get(RUN_LABEL, "")):
            with contextlib.suppress(Exception):
                network.remove()
                removed.append(f"network {network.name}")
    for container in client.containers.list(filters={"status": "running"}, ignore_removed=True):
        pid = int(container.attrs.get("State", {}).get("Pid") or 0)
        if pid <= 0:
            continue
        try:
            runs = [run for run in netfilter.runs_with_rules(pid) if is_dead(run)]
            for run in runs:
                count = netfilter.delete_run_rules(pid, run)
                removed.append(f"{count} rule(s) of run {run} in {container.name}")
        except (OSError, subprocess.SubprocessError):
            continue
        except ContainerFaultError:
            # It stopped since it was listed (another run, on a shared engine, removed it):
            # its rules went with it.
            if not os.path.exists(f"/proc/{pid}/ns/net"):
                continue
            raise
    return removed
