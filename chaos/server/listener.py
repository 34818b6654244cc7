"""A listening socket with its own accept loop, which behaves when descriptors run out.

``loop.create_server`` (CPython 3.11-3.13) handles a failed ``accept`` (EMFILE) by logging a
traceback and scheduling a retry, and then tries the next accept of the same batch anyway: one
readable event under a full descriptor table logged up to *backlog* tracebacks, and the
connections stayed in the listen queue until their clients gave up. Here:

* a *data-plane* listener (a proxy) accepts only while the :class:`~chaos.server.fds.FdReserve`
  is full. Otherwise, and when ``accept`` itself finds no descriptor, it spends one reserved
  descriptor to accept the connection and reset it at once: the client gets an immediate,
  clear refusal, and the reserve is refilled by the same close;
* a *control* listener (the API) serves on a reserved descriptor when ``accept`` finds none;
* either logs such failures once per interval (:class:`~chaos.server.throttle.ThrottledLog`);
  when it cannot even refuse, it stops accepting for :data:`RETRY_DELAY` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Callable
from typing import Final

from chaos.server.fds import RESOURCE_ERRNOS, FdReserve
from chaos.server.throttle import ThrottledLog

ACCEPTS_PER_EVENT: Final = 64
"""Connections accepted per readable event, so a burst cannot starve the rest of the loop."""

RETRY_DELAY: Final = 0.1
"""Seconds a listener that could neither accept nor refuse waits before trying again."""

_LINGER_RST: Final = struct.pack("ii", 1, 0)

ProtocolFactory = Callable[[], asyncio.BaseProtocol]


def reset_and_close(sock: socket.socket) -> None:
    """Close *sock* with a TCP RST (SO_LINGER 0)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
    sock.close()


Address = tuple[str, int] | tuple[str, int, int, int]


def bind_socket(family: int, address: Address, backlog: int) -> socket.socket:
    """A non-blocking listening TCP socket on *address* (SO_REUSEADDR; IPv6 only for AF_INET6)."""
    sock = socket.create_server(address, family=family, backlog=backlog, reuse_port=False)
    sock.setblocking(False)
    return sock


def bind_holdable(family: int, address: Address, backlog: int) -> socket.socket:
    """As :func:`bind_socket`, but always bound to an explicit port, so that
    :meth:`Listener.pause` can keep it.

    Linux releases the port of a socket that stops listening unless the port was named in
    ``bind``; for port 0 a probe socket finds a free port first, and the listener binds that
    port while the probe still holds it (both SO_REUSEADDR and not listening: allowed), so the
    port is never free in between.
    """
    if address[1] != 0:
        return bind_socket(family, address, backlog)
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        probe.bind(address)
        port = int(probe.getsockname()[1])
        return bind_socket(family, (address[0], port, *address[2:]), backlog)


class Listener:
    """Accepts connections on *sock* and hands each to a transport made with *factory*.

    Args:
        loop: the server's event loop.
        sock: a bound, listening, non-blocking socket (the listener owns it from now on).
        factory: protocol factory, as for ``loop.create_server``.
        fds: the server's descriptor reserve.
        log: where failures are reported (throttled).
        control: True for the control API (may serve on the reserve), False for a proxy.
        name: how log lines name this listener.
    """

    __slots__ = (
        "_adopting",
        "_control",
        "_factory",
        "_fds",
        "_log",
        "_loop",
        "_name",
        "_retry",
        "_sock",
        "refused",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        factory: ProtocolFactory,
        fds: FdReserve,
        log: ThrottledLog,
        *,
        control: bool,
        name: str,
    ) -> None:
        self._loop = loop
        self._sock: socket.socket | None = sock
        self._factory = factory
        self._fds = fds
        self._log = log
        self._control = control
        self._name = name
        self._retry: asyncio.TimerHandle | None = None
        self._adopting: set[asyncio.Task[None]] = set()
        self.refused = 0  # connections accepted only to be reset (out of descriptors)

    @property
    def sockname(self) -> tuple[str, int]:
        """The bound address: ``(host, port)``."""
        assert self._sock is not None
        name = self._sock.getsockname()
        return str(name[0]), int(name[1])

    def start(self) -> None:
        """Start accepting."""
        if self._sock is not None:
            self._loop.add_reader(self._sock.fileno(), self._on_readable)

    def pause(self) -> None:
        """Stop accepting and refuse connections as a closed port does, but keep the port.

        ``shutdown(SHUT_RD)`` on a listening socket makes Linux stop listening (connections
        still queued are reset) while the socket stays bound: a connect gets a RST
        (ECONNREFUSED), and no automatic port choice (a ``connect``'s source port, a listener
        on port 0) can take the port meanwhile, so :meth:`resume` finds it free. The socket
        must have been bound to an explicit port (:func:`bind_holdable`).
        """
        sock = self._sock
        if sock is None:
            return
        self._stop_reading(sock)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RD)

    def resume(self, backlog: int) -> None:
        """Listen and accept again after :meth:`pause`; ``OSError`` if the port was taken
        (something bound it explicitly, with SO_REUSEADDR, and listens on it)."""
        sock = self._sock
        if sock is None:
            return
        sock.listen(backlog)
        self.start()

    def _stop_reading(self, sock: socket.socket) -> None:
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        self._loop.remove_reader(sock.fileno())

    def close(self) -> None:
        """Stop accepting and close the socket (connections already accepted are not touched)."""
        sock, self._sock = self._sock, None
        if sock is not None:
            self._stop_reading(sock)
            sock.close()

    # -- accepting --------------------------------------------------------------------------------

    def _on_readable(self) -> None:
        for _ in range(ACCEPTS_PER_EVENT):
            if self._sock is None or not self._accept_one():
                return

    def _accept_one(self) -> bool:
        """Accept (or refuse) one pending connection; False when there is none or we must wait."""
        sock = self._sock
        assert sock is not None
        if not self._control and not self._fds.full:
            return self._refuse("no descriptor to spare")
        try:
            conn, _ = sock.accept()
        except (BlockingIOError, InterruptedError):
            return False
        except ConnectionAbortedError:
            return True  # the client gave up while queued
        except OSError as exc:
            if exc.errno not in RESOURCE_ERRNOS:
                self._log.warning("accept", f"{self._name}: accept failed: {exc}")
                self._pause()
                return False
            if self._control and self._fds.release():
                return True  # try again, on a reserved descriptor
            if not self._control:
                return self._refuse(exc.strerror or str(exc))
            self._log.warning(
                "accept", f"{self._name}: cannot accept ({exc.strerror}); retrying shortly"
            )
            self._pause()
            return False
        self._adopt(conn)
        return True

    def _refuse(self, reason: str) -> bool:
        """Accept one pending connection on a reserved descriptor and reset it at once."""
        sock = self._sock
        assert sock is not None
        if not self._fds.release():
            self._log.warning(
                "refuse", f"{self._name}: out of descriptors ({reason}); not accepting for now"
            )
            self._pause()
            return False
        try:
            conn, _ = sock.accept()
        except (BlockingIOError, InterruptedError):
            self._fds.fill()
            return False
        except OSError:
            self._fds.fill()
            self._pause()
            return False
        reset_and_close(conn)
        self._fds.fill()
        self.refused += 1
        self._log.warning(
            "refuse",
            f"{self._name}: refusing new connections: out of descriptors ({reason}); "
            "raise the open-file limit (ulimit -n) or close connections",
        )
        return True

    def _pause(self) -> None:
        sock = self._sock
        if sock is None or self._retry is not None:
            return
        self._loop.remove_reader(sock.fileno())
        self._retry = self._loop.call_later(RETRY_DELAY, self._resume)

    def _resume(self) -> None:
        self._retry = None
        if self._sock is not None:
            self._loop.add_reader(self._sock.fileno(), self._on_readable)

    def _adopt(self, conn: socket.socket) -> None:
        conn.setblocking(False)
        task = self._loop.create_task(self._make_transport(conn))
        self._adopting.add(task)
        task.add_done_callback(self._adopting.discard)

    async def _make_transport(self, conn: socket.socket) -> None:
        try:
            await self._loop.connect_accepted_socket(self._factory, conn)
        except Exception as exc:  # the loop closing, the socket already dead: drop this one
            conn.close()
            self._log.warning("adopt", f"{self._name}: could not set up a connection: {exc!r}")
