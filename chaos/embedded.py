"""Run the chaos server from synchronous code (tests, scripts) on an ephemeral port.

Two modes, measured with ``benchmarks/bench_proxy.py --embedded`` on a 2-core box (a 20 ms
latency toxic; round trips timed by a separate process while the caller's main thread is idle or
runs a pure-Python CPU loop):

==========  ========  ========  ======  ======  ======
mode        caller    start     p50     p99     max
==========  ========  ========  ======  ======  ======
thread      idle        4 ms    21.2    23.3    23.9 ms
thread      busy        3 ms    21.1    63.6   120.1 ms
subprocess  idle      440 ms    21.0    24.3    28.0 ms
subprocess  busy      591 ms    20.9    28.2    31.0 ms
==========  ========  ========  ======  ======  ======

* ``"thread"`` (default): a background thread with its own event loop; starts in milliseconds.
  While the caller holds the GIL with Python work the proxy only runs at the interpreter's switch
  interval, so latency toxics keep their median but get a long tail (p99 +40 ms above).
* ``"subprocess"``: ``python -m chaos serve`` in a child process; accurate however busy the
  caller is, at ~0.5 s per start.

The thread is the default because a test suite creates many short-lived servers and most tests
wait on I/O rather than compute; choose ``mode="subprocess"`` for tests that load the CPU in
Python while asserting on latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
from typing import Literal

from chaos.client import ToxiproxyClient
from chaos.errors import EmbeddedServerError
from chaos.lifecycle import StartStop
from chaos.server import ChaosServer
from chaos.server.config import LOOPBACK, join_address

Mode = Literal["thread", "subprocess"]
_READY_LINE = re.compile(rb"(http://\S+)")


class EmbeddedToxiproxy(StartStop):
    """A Toxiproxy-compatible server for the duration of a ``with`` block (or start()/stop()).

    In the default thread mode it starts in ~4 ms; use ``mode="subprocess"`` (~0.5 s to start)
    when the calling process keeps the GIL busy and latency toxics must stay accurate: with a
    busy caller a 20 ms latency toxic measured p99 64 ms in a thread, 28 ms in a subprocess (see
    the module documentation and docs/server.md).

    Args:
        host: control API address (loopback by default).
        port: control API port; 0 picks a free one (read :attr:`port` / :attr:`url`).
        mode: ``"thread"`` or ``"subprocess"``.
        seed: seed for toxicity rolls, jitter and slice sizes.
        start_timeout: seconds to wait for the server to be ready.

    >>> with EmbeddedToxiproxy() as toxiproxy:
    ...     client = toxiproxy.client()
    ...     print(client.version())
    2.12.0
    """

    def __init__(
        self,
        host: str = LOOPBACK,
        port: int = 0,
        *,
        mode: Mode = "thread",
        seed: int | None = None,
        start_timeout: float = 15.0,
    ) -> None:
        if mode not in ("thread", "subprocess"):
            raise ValueError(f"mode must be 'thread' or 'subprocess', got {mode!r}")
        self._host = host
        self._port = port
        self.mode: Mode = mode
        self._seed = seed
        self._start_timeout = start_timeout
        self._bound: tuple[str, int] | None = None
        # thread mode
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        # subprocess mode
        self._process: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        state = self.url if self._bound else "stopped"
        return f"<EmbeddedToxiproxy {self.mode} {state}>"

    @property
    def running(self) -> bool:
        """True between a successful start() and stop()."""
        return self._bound is not None

    @property
    def host(self) -> str:
        """Address of the control API."""
        return self._require()[0]

    @property
    def port(self) -> int:
        """Port of the control API."""
        return self._require()[1]

    @property
    def url(self) -> str:
        """Base URL of the control API, for any Toxiproxy client."""
        host, port = self._require()
        return f"http://{join_address(host, port)}"

    def client(self, timeout: float = 10.0) -> ToxiproxyClient:
        """A :class:`~chaos.ToxiproxyClient` for this server."""
        return ToxiproxyClient(self.url, timeout=timeout)

    def _require(self) -> tuple[str, int]:
        if self._bound is None:
            raise EmbeddedServerError("the embedded server is not running; call start() first")
        return self._bound

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> EmbeddedToxiproxy:
        """Start the server and wait until its API accepts requests; return self."""
        if self._bound is not None:
            return self
        if self.mode == "thread":
            self._start_thread()
        else:
            self._start_subprocess()
        return self

    def stop(self) -> None:
        """Stop the server: API, proxies and connections closed. Safe to call twice."""
        self._bound = None
        if self._thread is not None:
            self._stop_thread()
        if self._process is not None:
            self._stop_subprocess()

    # -- thread mode -----------------------------------------------------------------------------

    def _start_thread(self) -> None:
        self._ready.clear()
        self._error = None
        thread = threading.Thread(
            target=self._thread_main, name="synapse-chaos-server", daemon=True
        )
        self._thread = thread
        thread.start()
        if not self._ready.wait(self._start_timeout):
            self._stop_thread()
            raise EmbeddedServerError(
                f"the embedded server did not start within {self._start_timeout} s"
            )
        error = self._startup_error()
        if error is not None:
            self._thread.join(self._start_timeout)
            self._thread = None
            raise EmbeddedServerError(
                f"the embedded server could not start on {join_address(self._host, self._port)}: "
                f"{error}; use port=0 for a free port"
            ) from error

    def _startup_error(self) -> BaseException | None:
        return self._error

    def _thread_main(self) -> None:
        # Always asyncio's own selector loop, whatever loop policy the host process set (e.g.
        # uvloop): the data plane relies on its transport semantics (see chaos/server/splice.py).
        with asyncio.Runner(loop_factory=asyncio.SelectorEventLoop) as runner:
            runner.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        server = ChaosServer(self._host, self._port, seed=self._seed)
        try:
            await server.start()
        except Exception as exc:
            self._error = exc
            self._ready.set()
            return
        try:
            self._bound = (server.host, server.port)
            self._ready.set()
            await self._stop_event.wait()
        finally:
            await server.stop()

    def _stop_thread(self) -> None:
        thread, loop, event = self._thread, self._loop, self._stop_event
        self._thread = None
        if loop is not None and event is not None and not loop.is_closed():
            # RuntimeError: the loop already finished, so there is nothing left to stop.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(event.set)
        if thread is not None:
            thread.join(self._start_timeout)
            if thread.is_alive():
                raise EmbeddedServerError(
                    f"the embedded server thread did not stop within {self._start_timeout} s"
                )
        self._loop = None
        self._stop_event = None

    # -- subprocess mode -------------------------------------------------------------------------

    def _start_subprocess(self) -> None:
        command = [sys.executable, "-m", "chaos", "serve", "--host", self._host]
        command += ["--port", str(self._port)]
        if self._seed is not None:
            command += ["--seed", str(self._seed)]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        process = subprocess.Popen(command, stdout=subprocess.PIPE, env=env)
        self._process = process
        assert process.stdout is not None
        line = _read_line(process.stdout, self._start_timeout)
        match = _READY_LINE.search(line or b"")
        if match is None:
            self._stop_subprocess()
            raise EmbeddedServerError(
                f"the server subprocess did not report its address within "
                f"{self._start_timeout} s (it printed {line!r}); run `{' '.join(command)}` "
                "by hand to see why"
            )
        host, _, port = match.group(1).decode()[len("http://") :].rpartition(":")
        self._bound = (host.strip("[]"), int(port))

    def _stop_subprocess(self) -> None:
        process = self._process
        self._process = None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(self._start_timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()


def _read_line(stream: object, timeout: float) -> bytes | None:
    """Read one line from a pipe, giving up after *timeout* seconds."""
    result: list[bytes] = []

    def reader() -> None:
        result.append(stream.readline())  # type: ignore[attr-defined]

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    thread.join(timeout)
    return result[0] if result else None
