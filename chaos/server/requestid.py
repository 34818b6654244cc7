"""Request ids in the form Toxiproxy sends them (``X-Toxiproxy-Request-Id``): xids.

An xid (github.com/rs/xid, used by Toxiproxy's zerolog ``hlog.RequestIDHandler``) is 12 bytes,
a 4-byte Unix time, 3 bytes of machine id, 2 bytes of process id and a 3-byte counter that starts
at a random value, written as 20 characters of lowercase base32hex (``dc7urstqmd2phc9i4ajg``).
Ids are unique per process and sort by time, as Toxiproxy's do.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import os
import secrets
import socket
import time
from collections.abc import Callable
from typing import Final

HEADER: Final = "X-Toxiproxy-Request-Id"


def _machine_id() -> bytes:
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            with open(path, "rb") as f:
                return hashlib.md5(f.read().strip(), usedforsecurity=False).digest()[:3]
        except OSError:
            continue
    return hashlib.md5(socket.gethostname().encode(), usedforsecurity=False).digest()[:3]


class RequestIds:
    """A source of xids for one server (*clock*: Unix seconds)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._prefix = _machine_id() + (os.getpid() & 0xFFFF).to_bytes(2, "big")
        self._counter = itertools.count(secrets.randbelow(1 << 24))

    def next(self) -> str:
        """A new id: 20 characters from ``0-9a-v``."""
        raw = (
            (int(self._clock()) & 0xFFFFFFFF).to_bytes(4, "big")
            + self._prefix
            + (next(self._counter) & 0xFFFFFF).to_bytes(3, "big")
        )
        return base64.b32hexencode(raw).decode()[:20].lower()
