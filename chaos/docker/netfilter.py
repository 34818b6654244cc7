"""iptables rules inside one container's network namespace (``nsenter -t PID -n``).

The host's ``iptables-restore --noflush`` applies a batch of rules to the container's own
tables in one atomic step, so a fault is in place on a container all at once or not at all.
Every rule carries the comment ``io.synapse.run=<run id>/<fault token>``; a fault is healed by
deleting exactly the rules with its comment (whatever addresses they name), and a dead run's
rules by their run id. Needs root and ``nsenter`` + ``iptables`` on the host; nothing is
installed in the container.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from collections.abc import Sequence

from chaos.docker.errors import ContainerFaultError
from chaos.docker.labels import RUN_LABEL, runs_in_rules

_TIMEOUT = 20.0


def _nsenter(pid: int, command: Sequence[str], stdin: str | None = None) -> str:
    for tool in ("nsenter", command[0]):
        if shutil.which(tool) is None:
            raise ContainerFaultError(
                f"network faults need {tool} on the host (util-linux / iptables) and root"
            )
    argv = ["nsenter", "-t", str(pid), "-n", "--", *command]
    try:
        result = subprocess.run(
            argv, input=stdin, text=True, capture_output=True, timeout=_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        raise ContainerFaultError(f"{shlex.join(argv)} did not finish in {_TIMEOUT:g}s") from None
    if result.returncode != 0:
        why = (result.stderr or result.stdout).strip() or f"exit status {result.returncode}"
        raise ContainerFaultError(f"{shlex.join(argv)} failed: {why}")
    return result.stdout


def restore(pid: int, lines: Sequence[str]) -> None:
    """Apply iptables-restore *lines* (``-I ...`` / ``-D ...``) to the filter table at once."""
    if lines:
        _nsenter(
            pid,
            ["iptables-restore", "--noflush", "-w", "5"],
            "*filter\n" + "\n".join(lines) + "\nCOMMIT\n",
        )


def saved_rules(pid: int) -> list[str]:
    """The filter table's rules in the namespace of *pid*, as ``-A CHAIN ...`` lines."""
    out = _nsenter(pid, ["iptables-save", "-t", "filter"])
    return [line for line in out.splitlines() if line.startswith("-A ")]


def drop_rule(chain: str, match: str, comment: str, *, probability: float | None = None) -> str:
    """An ``-I`` line putting a DROP rule with *match* first in *chain*."""
    random = ""
    if probability is not None:
        random = f" -m statistic --mode random --probability {probability:.6f}"
    return f'-I {chain} 1 {match}{random} -m comment --comment "{comment}" -j DROP'


def delete_marked(pid: int, pattern: str) -> int:
    """Delete every rule whose comment matches the regex *pattern*; returns how many."""
    marked = re.compile(pattern)
    lines = [
        "-D " + line[3:]
        for line in saved_rules(pid)
        if (m := re.search(r'--comment "?([^"\s]+)', line)) and marked.fullmatch(m.group(1))
    ]
    restore(pid, lines)
    return len(lines)


def runs_with_rules(pid: int) -> set[str]:
    """The run ids that have rules in the namespace of *pid*."""
    return runs_in_rules("\n".join(saved_rules(pid)))


def delete_run_rules(pid: int, run: str) -> int:
    """Delete every rule of run *run* in the namespace of *pid*."""
    return delete_marked(pid, re.escape(f"{RUN_LABEL}={run}") + r"(/.*)?")
