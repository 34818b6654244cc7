"""Kernel-side forwarding for a direction with no active toxic: ``splice(2)`` through a pipe.

Through a plain user-space proxy every byte is copied four times (socket -> proxy -> socket, on
both ends); with ``os.splice`` the proxy moves page references socket -> pipe -> socket and never
copies the payload, which cut the proxy's CPU time per byte by about 40% (0.48 -> 0.30 s/GB,
benchmarks/bench_proxy.py, docs/server.md). Linux only.

A :class:`SplicePump` owns one direction while it is active: the *reading* half of the source
socket and the *writing* half of the destination socket. Each socket is also held by an asyncio
transport; the pump works on ``dup()`` copies of the descriptors, because the event loop refuses
``add_reader`` on a descriptor a transport owns. The owning :class:`~chaos.server.link.Flow`
pauses the source transport's reading before starting the pump and only starts it when the
destination transport's write buffer is empty, so the two never interleave bytes.

The pump alternates between two states: reading (source registered, pipe empty) and writing
(destination registered, pipe not empty). It never reads while the pipe holds data, which is the
flow control: at most one pipe (:data:`PIPE_SIZE`) is held per direction, as the transport's
write buffer would hold otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import sys
from typing import Final, Protocol

PIPE_SIZE: Final = 1024 * 1024
"""Requested pipe capacity: as much as one read of the user-space path (fewer syscalls per byte);
/proc/sys/fs/pipe-max-size is 1 MiB by default, so unprivileged servers get it too."""

SPLICE_MIN_READ: Final = 64 * 1024
"""A direction switches to splice once a single read returns this much: a bulk transfer. Small
request/response traffic stays on the transport path (no extra descriptors, same latency)."""

_AVAILABLE: Final = (
    sys.platform == "linux" and hasattr(os, "splice") and hasattr(fcntl, "F_SETPIPE_SZ")
)
# SYNAPSE_CHAOS_SPLICE=0 turns the fast path off (to compare, or to rule it out when debugging).
ENABLED: bool = _AVAILABLE and os.environ.get("SYNAPSE_CHAOS_SPLICE", "1") != "0"

# SPLICE_F_NONBLOCK keeps the pipe end from blocking; the sockets are non-blocking already
# (asyncio set O_NONBLOCK on the shared file description, which dup() copies share).
_FLAGS: Final = (os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK) if _AVAILABLE else 0


def usable(loop: asyncio.AbstractEventLoop) -> bool:
    """True if splice forwarding may run on *loop*.

    Only asyncio's own selector loops: their socket transports stop touching a descriptor once
    paused or idle, which the hand-over relies on. Other loops (uvloop, ...) keep the plain path.
    """
    return ENABLED and isinstance(loop, asyncio.selector_events.BaseSelectorEventLoop)


class SpliceOwner(Protocol):
    """What a pump reports to the direction it forwards."""

    counters: list[int]
    spliced: int

    def splice_received(self, nbytes: int) -> None:
        """*nbytes* were read from the source into the pipe (counters, traffic log)."""
        ...

    def splice_eof(self) -> None:
        """The source sent FIN and every byte before it was passed on."""
        ...

    def splice_failed(self, on_write: bool) -> None:
        """A splice failed (connection reset, broken pipe...); *on_write*: on the destination."""
        ...


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


class SplicePump:
    """Forwards one direction source -> pipe -> destination inside the kernel.

    Create with :meth:`open`, then :meth:`start`; :meth:`stop` always releases the four
    descriptors it holds (two duplicates, two pipe ends), whatever state it is in.
    """

    __slots__ = (
        "_capacity",
        "_dst",
        "_loop",
        "_owner",
        "_pending",
        "_pipe_r",
        "_pipe_w",
        "_reading",
        "_src",
        "_writing",
        "eof",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        owner: SpliceOwner,
        fds: tuple[int, int, int, int],
        capacity: int,
    ) -> None:
        self._loop = loop
        self._owner = owner
        self._src, self._dst, self._pipe_r, self._pipe_w = fds
        self._capacity = capacity
        self._pending = 0  # bytes in the pipe: read from the source, not yet written
        self._reading = False
        self._writing = False
        self.eof = False  # the source sent FIN (the owner is told once the pipe is empty)

    @classmethod
    def open(
        cls, loop: asyncio.AbstractEventLoop, owner: SpliceOwner, source_fd: int, dest_fd: int
    ) -> SplicePump | None:
        """Make the pipe and descriptor copies; None if the system refuses (e.g. EMFILE)."""
        fds: list[int] = []
        try:
            pipe_r, pipe_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            fds += (pipe_r, pipe_w)
            try:
                capacity = fcntl.fcntl(pipe_w, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
            except OSError:
                # Over pipe-max-size or the per-user pipe quota: the default size still works.
                capacity = fcntl.fcntl(pipe_w, fcntl.F_GETPIPE_SZ)
            src = os.dup(source_fd)
            fds.append(src)
            dst = os.dup(dest_fd)
            fds.append(dst)
        except OSError:
            _close_all(fds)
            return None
        return cls(loop, owner, (src, dst, pipe_r, pipe_w), capacity)

    def start(self) -> None:
        """Begin reading the source."""
        self._loop.add_reader(self._src, self._on_readable)
        self._reading = True

    def stop(self, salvage: bool) -> bytes:
        """Unregister and close everything; return the bytes still in the pipe if *salvage*.

        Those bytes were read from the source but not yet written: the owner writes them through
        the destination's transport, so they keep their place ahead of anything read later.
        """
        if self._src < 0:
            return b""
        self._set_reading(False)
        self._set_writing(False)
        data = self._drain_pipe() if salvage and self._pending else b""
        # Every fd is closed, even on error: a leaked duplicate would keep the socket open (no FIN
        # for the peer) after the transport closed its own descriptor.
        _close_all([self._src, self._dst, self._pipe_r, self._pipe_w])
        self._src = self._dst = self._pipe_r = self._pipe_w = -1
        self._pending = 0
        return data

    # -- event loop callbacks --------------------------------------------------------------------

    def _on_readable(self) -> None:
        try:
            n = os.splice(self._src, self._pipe_w, self._capacity, flags=_FLAGS)
        except BlockingIOError:
            return  # spurious wake-up (another reader of the same socket cannot exist here)
        except OSError:
            self._owner.splice_failed(on_write=False)
            return
        if n == 0:
            self.eof = True
            self._set_reading(False)
            if not self._pending:
                self._owner.splice_eof()
            return
        self._owner.splice_received(n)
        self._pending += n
        self._flush()

    def _flush(self) -> None:
        """Write what the pipe holds; wait for the destination if it cannot take it all."""
        pending = self._pending
        written = 0
        # Bounded: each pass either empties the pipe, or raises BlockingIOError on a full socket.
        while written < pending:
            try:
                m = os.splice(self._pipe_r, self._dst, pending - written, flags=_FLAGS)
            except BlockingIOError:
                break
            except OSError:
                self._account(written)
                self._owner.splice_failed(on_write=True)
                return
            if m == 0:  # not expected from a pipe holding data; do not spin
                break
            written += m
        self._account(written)
        if self._pending:
            self._set_reading(False)
            self._set_writing(True)
            return
        self._set_writing(False)
        if self.eof:
            self._owner.splice_eof()
        else:
            self._set_reading(True)

    def _account(self, written: int) -> None:
        self._pending -= written
        owner = self._owner
        owner.counters[1] += written
        owner.spliced += written

    # -- helpers ---------------------------------------------------------------------------------

    def _set_reading(self, on: bool) -> None:
        if on != self._reading and self._src >= 0:
            self._reading = on
            if on:
                self._loop.add_reader(self._src, self._on_readable)
            else:
                self._loop.remove_reader(self._src)

    def _set_writing(self, on: bool) -> None:
        if on != self._writing and self._dst >= 0:
            self._writing = on
            if on:
                self._loop.add_writer(self._dst, self._flush)
            else:
                self._loop.remove_writer(self._dst)

    def _drain_pipe(self) -> bytes:
        chunks: list[bytes] = []
        left = self._pending
        # Bounded by the pipe's content: each read returns at least one byte or stops the loop.
        while left > 0:
            try:
                chunk = os.read(self._pipe_r, left)
            except OSError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
