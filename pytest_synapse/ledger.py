"""What an xdist worker tells its controller through a file, readable after the worker dies.

Each worker appends JSON lines to its own ledger: its process id when it starts, each proxy it
creates on a shared server and each it deletes, and, when it is stopped in the middle of a test,
that test's record. Every line is one unbuffered append: it is in the kernel once the write
returns, so it survives ``os._exit``, a segfault or ``kill -9`` of the worker, and it needs no
channel to the controller (xdist's carries only test reports and the final output).

The controller reads a ledger (:func:`read_ledger`) when a worker crashes and when the session
ends, deletes the proxies still listed (:func:`remove_proxies`) and reports the records. A
worker that tears down normally leaves no proxy listed. Only servers shared between processes
need the proxy lines: an embedded server lives in the worker's own process and dies with it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class WorkerLedger:
    """The writing side, in the worker."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def started(self) -> None:
        """Note this process's id (the controller forwards SIGTERM to it)."""
        self._append({"pid": os.getpid()})

    def created(self, url: str, name: str) -> None:
        """Note that proxy *name* now exists on the server at *url*."""
        self._append({"created": name, "server": url})

    def deleted(self, url: str, name: str) -> None:
        """Note that proxy *name* is gone from the server at *url*."""
        self._append({"deleted": name, "server": url})

    def unfinished(self, record: dict[str, Any]) -> None:
        """Hand over the record of a test that was stopped before it finished."""
        self._append({"unfinished": record})

    def _append(self, entry: dict[str, Any]) -> None:
        line = json.dumps(entry, allow_nan=False, default=str) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)


@dataclass
class LedgerContent:
    """What a worker's ledger says."""

    pid: int | None = None
    proxies: list[tuple[str, str]] = field(default_factory=list)  # (server url, name), live
    unfinished: list[dict[str, Any]] = field(default_factory=list)


def read_ledger(path: Path) -> LedgerContent:
    """Read the ledger at *path* (empty if the worker never wrote one)."""
    content = LedgerContent()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return content
    live: dict[tuple[str, str], None] = {}
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a line cut short by a crash: what it was about was not confirmed
        if "pid" in entry:
            content.pid = int(entry["pid"])
        elif "created" in entry:
            live[(entry["server"], entry["created"])] = None
        elif "deleted" in entry:
            live.pop((entry["server"], entry["deleted"]), None)
        elif "unfinished" in entry:
            content.unfinished.append(entry["unfinished"])
    content.proxies = list(live)
    return content


def remove_proxies(proxies: Iterable[tuple[str, str]], *, timeout: float = 5.0) -> list[str]:
    """Delete each ``(server url, name)`` proxy (deleting a proxy removes its faults).

    Returns one line per proxy that could not be removed; one already gone is fine. Each
    request is bounded by *timeout* seconds.
    """
    from chaos.control.client import ToxiproxyClient
    from chaos.errors import ChaosError, NotFound

    problems = []
    for url, name in proxies:
        try:
            ToxiproxyClient(url, timeout=timeout).delete_proxy(name)
        except NotFound:
            continue
        except (ChaosError, OSError) as exc:
            problems.append(f"{name} on {url}: {exc}")
    return problems
