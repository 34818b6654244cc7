"""File descriptors: the process's open-file limit, and the reserve kept for the control API.

Every proxied connection costs descriptors (two sockets; a pipe while the splice path moves
data), so a busy data plane can run the process out of them. Two measures keep the server
serving when that happens:

* at start the soft ``RLIMIT_NOFILE`` is raised to the hard limit, as the Go runtime does for
  every Go program (Toxiproxy included); the usual soft default of 1024 is far below what a
  proxy under load needs;
* an :class:`FdReserve` holds a few descriptors open (on ``/dev/null``). The data plane only
  accepts, connects and opens pipes while the reserve is full, so it can never take the last
  descriptors; the control API's listener spends one when its own accept finds none left, and
  a proxy listener spends one to accept and reset a connection it cannot serve (instead of
  leaving it to hang in the listen queue).
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
from typing import Final

RESOURCE_ERRNOS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
"""``accept``/``socket``/``pipe`` errors meaning "out of descriptors or memory", not a bad peer."""


def raise_open_file_limit() -> tuple[int, int]:
    """Raise this process's soft open-file limit to its hard limit; return ``(soft, hard)``.

    Harmless when it cannot (the limits stay as they are). Child processes inherit the raised
    soft limit.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


class FdReserve:
    """Up to *size* descriptors held open so they can be handed out when none are left.

    :meth:`fill` reopens what was handed out (it cannot while the process is at its limit);
    :attr:`full` is the data plane's permission to take more descriptors.
    """

    __slots__ = ("_held", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self._held: list[int] = []
        self.fill()

    @property
    def full(self) -> bool:
        """True if every reserved descriptor is held (after trying to reopen the missing ones)."""
        return len(self._held) >= self.size or self.fill()

    def fill(self) -> bool:
        """Reopen handed-out descriptors; True if the reserve is full again."""
        held = self._held
        while len(held) < self.size:
            try:
                held.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
            except OSError:
                return False
        return True

    def release(self) -> bool:
        """Close one reserved descriptor so the caller's next ``accept`` can have it.

        False if none is left.
        """
        if not self._held:
            return False
        os.close(self._held.pop())
        return True

    def close(self) -> None:
        """Close every held descriptor (server shutdown)."""
        held, self._held = self._held, []
        for fd in held:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.size = 0
