"""Reused HTTP/1.1 connections to one API server (keep-alive), safe across threads.

A chaos test makes a handful of control-API requests (create a proxy, add and remove a toxic,
delete the proxy). A new TCP connection for each costs a connect on this side and an accept and
a new protocol on the server's, several times the request itself when the embedded server shares
this process. Connections are kept and reused instead: each request takes an idle one (or opens
one), and gives it back once the answer has been read in full.

A server may close an idle connection at any time (a keep-alive timeout, a restart); the request
then fails before any answer arrives, and is sent again once on a new connection: the server had
not read it (it only closes connections between requests).
"""

from __future__ import annotations

import http.client
import threading
import weakref
from typing import Final

MAX_IDLE: Final = 4
"""Idle connections kept per pool (more concurrent requests open and then close their own)."""


class ConnectionPool:
    """Keep-alive connections to ``host:port``; :meth:`close` (or garbage collection) ends them."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        # Closes the idle sockets when the owner is collected: a socket left to the garbage
        # collector is a ResourceWarning (an error under -W error).
        self._finalizer = weakref.finalize(self, _close_all, self._idle, self._lock)

    def request(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[int, bytes, str | None]:
        """Send one request; return status, body and Content-Type.

        Raises ``TimeoutError`` or another ``OSError`` (``http.client`` errors included) when no
        answer arrives.
        """
        conn, reused = self._take()
        try:
            try:
                return self._exchange(conn, method, path, body, headers)
            except (ConnectionResetError, BrokenPipeError, http.client.BadStatusLine):
                if not reused:
                    raise
                conn.close()  # the server closed it while idle: it never read this request
                conn, reused = self._new(), False
                return self._exchange(conn, method, path, body, headers)
        except BaseException:
            conn.close()
            raise

    def _exchange(
        self,
        conn: http.client.HTTPConnection,
        method: str,
        path: str,
        body: bytes | None,
        headers: dict[str, str],
    ) -> tuple[int, bytes, str | None]:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        raw = response.read()
        answer = (response.status, raw, response.getheader("Content-Type"))
        if response.will_close:
            conn.close()
        else:
            self._give(conn)
        return answer

    def _take(self) -> tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            if self._idle:
                return self._idle.pop(), True
        return self._new(), False

    def _new(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

    def _give(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if len(self._idle) < MAX_IDLE and self._finalizer.alive:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        """Close every idle connection (requests still under way close theirs when done)."""
        self._finalizer()


def _close_all(idle: list[http.client.HTTPConnection], lock: threading.Lock) -> None:
    with lock:
        conns, idle[:] = list(idle), []
    for conn in conns:
        conn.close()
