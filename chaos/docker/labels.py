"""Labels on everything Synapse creates in Docker, and run ids that tell a dead run's leftovers.

Every container and network carries ``io.synapse.run=<run id>``; every iptables rule carries the
same text as its comment. A run id names this process and when it started
(``<machine>.<pid>.<start ticks>.<random>``), so a later run can tell that a run is over (the
process is gone, or its pid now belongs to a newer process) and remove what it left
(:mod:`chaos.docker.reaping`).
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import secrets
from pathlib import Path
from typing import Final

RUN_LABEL: Final = "io.synapse.run"
"""The label key on every container and network Synapse creates (value: the run id)."""
ROLE_LABEL: Final = "io.synapse.role"
"""What a labelled container is for: ``chaos`` (a backend's server), ``container``, ``network``."""
_RUN_ID = re.compile(r"(?P<machine>[0-9a-z]{1,16})\.(?P<pid>\d+)\.(?P<start>\d+)\.[0-9a-f]+")
_COMMENT = re.compile(re.escape(RUN_LABEL) + r"=(\S+?)(?:/\S*)?\"?(?:\s|$)")


def _machine() -> str:
    with contextlib.suppress(OSError):
        text = Path("/etc/machine-id").read_text().strip()
        if text:
            return text[:12].lower()
    return re.sub(r"[^0-9a-z]", "", os.uname().nodename.lower())[:12] or "host"


def _start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, or ``None`` if it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22; the command name (field 2) may contain spaces and parentheses.
    return int(stat.rpartition(")")[2].split()[19])


@functools.cache
def run_id() -> str:
    """This process's run id (the value of ``io.synapse.run`` on what it creates)."""
    pid = os.getpid()
    return f"{_machine()}.{pid}.{_start_ticks(pid) or 0}.{secrets.token_hex(2)}"


def run_labels(role: str, **extra: str) -> dict[str, str]:
    """The labels of a resource this run creates."""
    return {RUN_LABEL: run_id(), ROLE_LABEL: role, **extra}


def is_alive(run: str) -> bool | None:
    """Whether the run *run* is still going: ``None`` if it cannot be told from here.

    (Another machine's run, or a value that is not a run id.)
    """
    match = _RUN_ID.fullmatch(run)
    if match is None or match["machine"] != _machine():
        return None
    ticks = _start_ticks(int(match["pid"]))
    return ticks is not None and ticks == int(match["start"])


def rule_comment(token: str) -> str:
    """The iptables comment of a rule this run adds (for fault *token*)."""
    return f"{RUN_LABEL}={run_id()}/{token}"


def runs_in_rules(rules: str) -> set[str]:
    """The run ids named in the comments of ``iptables-save`` output."""
    return {m.group(1) for m in _COMMENT.finditer(rules)}
