"""A service in a process of its own for the remote-breaker tests: ``remote_service.py MODE``.

One breaker, ``backend``, guards a dependency the test controls: ``GET /call?fail=1`` makes a
call through the breaker that fails (``fail=0``: succeeds); the answer is 200, 502 (the call
failed) or 503 (the breaker rejected it). The service's ``synapse_core.health`` endpoints are
mounted under ``/ops`` on the same port. It prints its URL on one line and serves until its
standard input closes.

MODE plants a bug in the breaker's configuration, seen only from outside:
``correct``, ``never_opens`` (thresholds it can never reach), ``never_closes`` (a recovery
timeout of an hour).
"""

from __future__ import annotations

import socketserver
import sys
import threading
import urllib.parse
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from synapse_core import CircuitBreakerConfig, CircuitOpenError, default_manager
from synapse_core.health import HealthEndpoints

CONFIGS = {
    "correct": CircuitBreakerConfig(
        failure_threshold=3, minimum_requests=3, recovery_timeout=0.3, half_open_max_calls=2
    ),
    "never_opens": CircuitBreakerConfig(
        failure_threshold=1000, minimum_requests=1000, recovery_timeout=0.3
    ),
    "never_closes": CircuitBreakerConfig(
        failure_threshold=3, minimum_requests=3, recovery_timeout=3600
    ),
}


class DependencyDown(ConnectionError):
    """The dependency failed."""


def main() -> None:
    breaker = default_manager.get_or_create("backend", CONFIGS[sys.argv[1]])
    endpoints = HealthEndpoints(event_interval=0.2)

    def fail(should: bool) -> str:
        if should:
            raise DependencyDown("backend down")
        return "ok"

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path.startswith("/ops/") or path == "/ops":
            environ["SCRIPT_NAME"] = "/ops"
            environ["PATH_INFO"] = path[len("/ops") :]
            return endpoints.wsgi(environ, start_response)
        query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
        try:
            body, status = breaker.call(fail, query.get("fail") == ["1"]), "200 OK"
        except CircuitOpenError:
            body, status = "rejected", "503 Service Unavailable"
        except DependencyDown:
            body, status = "failed", "502 Bad Gateway"
        start_response(status, [("Content-Type", "text/plain")])
        return [body.encode()]

    class Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return

    class Server(socketserver.ThreadingMixIn, WSGIServer):
        daemon_threads = True

    server = make_server("127.0.0.1", 0, app, server_class=Server, handler_class=Quiet)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    print(f"http://127.0.0.1:{server.server_port}", flush=True)
    sys.stdin.read()  # until the test closes our stdin
    endpoints.close()
    server.shutdown()
    server.server_close()


if __name__ == "__main__":
    main()
