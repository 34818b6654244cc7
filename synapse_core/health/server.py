"""``serve_health``: the health endpoints on a port of their own, in a background thread.

Built on the standard library's ``wsgiref`` (one thread per connection, a bounded number of
connections): no web framework is needed.
"""

from __future__ import annotations

import contextlib
import io
import logging
import socket
import socketserver
import threading
from collections.abc import Callable, Iterable
from typing import Any, Self
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client import CollectorRegistry

from synapse_core.breaker import CircuitBreakerManager
from synapse_core.health.endpoints import HealthEndpoints

logger = logging.getLogger("synapse.health")

DEFAULT_MAX_CONNECTIONS = 64
# Per-connection kernel send buffer: caps what a stalled dashboard holds in the kernel too
# (autotuning would let it grow to megabytes); the feed's own buffer bounds the rest.
SEND_BUFFER_BYTES = 128 * 1024


class _Handler(WSGIRequestHandler):
    # A client that stops reading (or never sends its request) is dropped after this long.
    timeout = 30.0

    def setup(self) -> None:
        self.request.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s " + format, self.address_string(), *args)

    def get_stderr(self) -> io.StringIO:
        return _NullStderr()  # wsgiref's error pages and tracebacks: see handle_error


class _NullStderr(io.StringIO):
    def write(self, text: str) -> int:
        logger.debug("wsgiref: %s", text.rstrip())
        return len(text)


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], max_connections: int) -> None:
        self._active: set[socket.socket] = set()
        self._active_lock = threading.Lock()
        self._max_connections = max_connections
        self._threads_done = threading.Condition(self._active_lock)
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks the host's name up (socket.getfqdn); not needed here.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)
        self.setup_environ()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._active_lock:
            full = len(self._active) >= self._max_connections
            if not full:
                self._active.add(request)
        if full:
            logger.warning("health server: %d connections open, refusing one", len(self._active))
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._active_lock:
            self._active.discard(request)
            self._threads_done.notify_all()
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.debug("health server: request from %s failed", client_address, exc_info=True)

    def end_connections(self, timeout: float) -> None:
        """Cut every open connection and wait (up to *timeout*) for their threads to finish."""
        with self._active_lock:
            active = list(self._active)
        for sock in active:
            with contextlib.suppress(OSError):  # already gone
                sock.shutdown(socket.SHUT_RDWR)
        with self._active_lock:
            self._threads_done.wait_for(lambda: not self._active, timeout)


class HealthServer:
    """The endpoints served in a background thread; stop it with :meth:`close` (or ``with``).

    Attributes: :attr:`url` (``http://host:port``), :attr:`host`, :attr:`port`,
    :attr:`endpoints` (the :class:`HealthEndpoints`).
    """

    def __init__(
        self,
        endpoints: HealthEndpoints,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        owns_endpoints: bool = True,
    ) -> None:
        if max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {max_connections!r}")
        self.endpoints = endpoints
        self._owns_endpoints = owns_endpoints
        self._server = _Server((host, port), max_connections)
        self._server.set_app(endpoints.wsgi)
        bound_host, bound_port = self._server.server_address[:2]
        self.host: str = str(bound_host)
        self.port: int = int(bound_port)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"synapse-health:{self.port}",
            daemon=True,
        )
        self._thread.start()
        self._closed = False

    @property
    def url(self) -> str:
        """``http://host:port`` (IPv6 hosts in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def close(self) -> None:
        """Stop serving: end the event streams, cut open connections, close the socket."""
        if self._closed:
            return
        self._closed = True
        if self._owns_endpoints:
            self.endpoints.close()
        else:
            self.endpoints.feed.close()
        self._server.shutdown()
        self._thread.join(timeout=5)
        self._server.end_connections(timeout=5)
        self._server.server_close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<HealthServer {self.url}{' closed' if self._closed else ''}>"


def serve_health(
    manager: CircuitBreakerManager | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    critical: Iterable[str] | Callable[[str], bool] | None = None,
    registry: CollectorRegistry | None = None,
    title: str = "Synapse circuit breakers",
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    **options: Any,
) -> HealthServer:
    """Serve ``/health``, ``/breakers``, ``/metrics``, ``/dashboard`` and ``/events``.

    Listens on *host*:*port* (loopback and a free port by default) in a daemon thread and
    returns at once. Keyword options are :class:`HealthEndpoints`' (``critical``, ``registry``,
    ``title``, ``event_interval``, ``buffer_bytes``, ``keep_transitions``). At most
    *max_connections* connections are served at once; more are closed at once.
    """
    endpoints = HealthEndpoints(
        manager, critical=critical, registry=registry, title=title, **options
    )
    try:
        return HealthServer(endpoints, host, port, max_connections=max_connections)
    except BaseException:
        endpoints.close()
        raise
