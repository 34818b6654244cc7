"""Helpers the test directories share: a ``socketserver`` served from a thread, a tripped breaker.

(Importable from every test module: pytest puts this folder on ``sys.path`` for the
``conftest.py`` beside it.)
"""

from __future__ import annotations

import contextlib
import socketserver
import threading
from collections.abc import Iterator

import pytest

from synapse_core import CircuitBreaker


@contextlib.contextmanager
def serving(server: socketserver.BaseServer) -> Iterator[str]:
    """Serve *server* from a thread until the block ends; yields its ``host:port``.

    Its request threads are daemons, and shutdown polls every 20 ms (the default 0.5 s would
    add half a second to every test that uses it).
    """
    if isinstance(server, socketserver.ThreadingMixIn):
        server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield f"{host}:{port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def trip(breaker: CircuitBreaker, failures: int = 3) -> None:
    """Open *breaker* with *failures* calls that raise ``ConnectionError``."""
    for _ in range(failures):
        with pytest.raises(ConnectionError):
            breaker.call(_dependency_down)


def _dependency_down() -> None:
    raise ConnectionError("dependency down")
