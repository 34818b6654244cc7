"""Kernel-side forwarding for a direction with no active toxic: ``splice(2)`` through a pipe.

Through a plain user-space proxy every byte is copied four times (socket -> proxy -> socket, on
both ends); with ``os.splice`` the proxy moves page references socket -> pipe -> socket and never
copies the payload, which cut the proxy's CPU time per byte by about 40% (0.48 -> 0.30 s/GB,
benchmarks/bench_proxy.py, docs/server.md). Linux only.

A :class:`SplicePump` owns one direction while it is active: the *reading* half of the source
socket and the *writing* half of the destination socket. Each socket is also held by an asyncio
transport; the pump registers its callbacks on the same descriptors with the selector loop's
``_add_reader``/``_add_writer`` (the public ``add_reader`` refuses a descriptor a transport owns;
an earlier version ``dup()``-ed both sockets to get around that, two descriptors more per
direction). That is safe because each registration slot has one owner at a time: the owning
:class:`~chaos.server.link.Flow` pauses the source transport's reading before starting the pump
(so the pump has the source's read slot), starts it only when the destination transport's
write buffer is empty and writes nothing through that transport while it runs (so the pump has
the destination's write slot), and stops the pump before either transport is closed.

The pump alternates between two states: reading (source registered, pipe empty) and writing
(destination registered, pipe not empty). It never reads while the pipe holds data, which is the
flow control: at most one pipe (:data:`PIPE_SIZE`) is held per direction, as the transport's
write buffer would hold otherwise. A pump holds a pipe only while bytes are in it: an emptied
pipe goes back to the server's :class:`PipePool`, so an idle connection costs its two sockets
and nothing more, whatever it carried before.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import sys
from typing import Any, Final, Protocol

from chaos.server.fds import FdReserve

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
# (asyncio made them so).
_FLAGS: Final = (os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK) if _AVAILABLE else 0


# The selector loop's registration methods without the "owned by a transport" check.
_SLOT_METHODS: Final = ("_add_reader", "_remove_reader", "_add_writer", "_remove_writer")


def usable(loop: asyncio.AbstractEventLoop) -> bool:
    """True if splice forwarding may run on *loop*.

    Only asyncio's own selector loops: their socket transports stop touching a descriptor once
    paused or idle, which the hand-over relies on. Other loops (uvloop, ...) keep the plain path.
    """
    return (
        ENABLED
        and isinstance(loop, asyncio.selector_events.BaseSelectorEventLoop)
        and all(hasattr(loop, name) for name in _SLOT_METHODS)
    )


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

    def splice_unavailable(self) -> None:
        """No pipe could be had (out of descriptors): go back to the transport path."""
        ...


Pipe = tuple[int, int, int]
"""``(read end, write end, capacity)``."""


class PipePool:
    """Pipes for the pumps of one server: made on demand, kept for reuse when emptied.

    A pipe is only made while the :class:`~chaos.server.fds.FdReserve` is full, so pumps never
    take the descriptors kept for the control API.
    """

    __slots__ = ("_fds", "_free", "keep")

    def __init__(self, fds: FdReserve, keep: int = 8) -> None:
        self._fds = fds
        self._free: list[Pipe] = []
        self.keep = keep

    @property
    def kept(self) -> int:
        """Empty pipes held for reuse (two descriptors each)."""
        return len(self._free)

    def acquire(self) -> Pipe | None:
        """An empty pipe, or None if none can be had now."""
        if self._free:
            return self._free.pop()
        if not self._fds.full:
            return None
        try:
            pipe_r, pipe_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            capacity = fcntl.fcntl(pipe_w, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:
            # Over pipe-max-size or the per-user pipe quota: the default size still works.
            try:
                capacity = fcntl.fcntl(pipe_w, fcntl.F_GETPIPE_SZ)
            except OSError:
                _close_all([pipe_r, pipe_w])
                return None
        return pipe_r, pipe_w, capacity

    def release(self, pipe: Pipe) -> None:
        """Take back an *empty* pipe."""
        if len(self._free) < self.keep:
            self._free.append(pipe)
        else:
            _close_all(list(pipe[:2]))

    def close(self) -> None:
        """Close every pipe kept for reuse."""
        free, self._free = self._free, []
        for pipe in free:
            _close_all(list(pipe[:2]))


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


class SplicePump:
    """Forwards one direction source -> pipe -> destination inside the kernel.

    Create it, then :meth:`start`; :meth:`stop` unregisters it and gives its pipe back (or
    closes a pipe it could not empty), whatever state it is in. The two socket descriptors
    belong to their transports and are never closed here.
    """

    __slots__ = (
        "_dst",
        "_loop",
        "_owner",
        "_pending",
        "_pipe",
        "_pipes",
        "_reading",
        "_src",
        "_writing",
        "eof",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        owner: SpliceOwner,
        source_fd: int,
        dest_fd: int,
        pipes: PipePool,
    ) -> None:
        self._loop = loop
        self._owner = owner
        self._src, self._dst = source_fd, dest_fd
        self._pipes = pipes
        self._pipe: Pipe | None = None
        self._pending = 0  # bytes in the pipe: read from the source, not yet written
        self._reading = False
        self._writing = False
        self.eof = False  # the source sent FIN (the owner is told once the pipe is empty)

    def start(self) -> None:
        """Begin reading the source."""
        self._set_reading(True)

    def stop(self, salvage: bool) -> bytes:
        """Unregister and give the pipe back; return the bytes still in the pipe if *salvage*.

        Those bytes were read from the source but not yet written: the owner writes them through
        the destination's transport, so they keep their place ahead of anything read later.
        """
        if self._src < 0:
            return b""
        self._set_reading(False)
        self._set_writing(False)
        data = self._drain_pipe() if salvage and self._pending else b""
        pipe, self._pipe = self._pipe, None
        if pipe is not None:
            if self._pending:
                _close_all(list(pipe[:2]))  # could not be emptied: not reusable
            else:
                self._pipes.release(pipe)
        self._src = self._dst = -1
        self._pending = 0
        return data

    # -- event loop callbacks --------------------------------------------------------------------

    def _on_readable(self) -> None:
        pipe = self._pipe
        if pipe is None:
            pipe = self._pipe = self._pipes.acquire()
            if pipe is None:
                self._owner.splice_unavailable()
                return
        try:
            n = os.splice(self._src, pipe[1], pipe[2], flags=_FLAGS)
        except BlockingIOError:
            # A spurious wake-up (another reader of the same socket cannot exist here).
            if not self._pending:
                self._pipe = None
                self._pipes.release(pipe)
            return
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
        pipe = self._pipe
        assert pipe is not None
        # Bounded: each pass either empties the pipe, or raises BlockingIOError on a full socket.
        while written < pending:
            try:
                m = os.splice(pipe[0], self._dst, pending - written, flags=_FLAGS)
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
        self._pipe = None
        self._pipes.release(pipe)  # empty: an idle pump holds no pipe
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
            loop: Any = self._loop  # the selector loop's slot methods (see usable())
            if on:
                loop._add_reader(self._src, self._on_readable)
            else:
                loop._remove_reader(self._src)

    def _set_writing(self, on: bool) -> None:
        if on != self._writing and self._dst >= 0:
            self._writing = on
            loop: Any = self._loop
            if on:
                loop._add_writer(self._dst, self._flush)
            else:
                loop._remove_writer(self._dst)

    def _drain_pipe(self) -> bytes:
        chunks: list[bytes] = []
        left = self._pending
        # Bounded by the pipe's content: each read returns at least one byte or stops the loop.
        pipe = self._pipe
        assert pipe is not None
        while left > 0:
            try:
                chunk = os.read(pipe[0], left)
            except OSError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        self._pending = left
        return b"".join(chunks)
