"""Run a ``socketserver`` server in a background thread for the length of a ``with`` block."""

from __future__ import annotations

import socketserver
import threading
from typing import Any, Self


class ServesInBackground(socketserver.BaseServer):
    """Mixin for socketserver servers: ``with server:`` serves in a thread, then shuts down."""

    _thread: threading.Thread | None = None

    def __enter__(self) -> Self:
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
