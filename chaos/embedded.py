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

from chaos.control.client import ToxiproxyClient
from chaos.errors import EmbeddedServerError
from chaos.lifecycle import StartStop
from chaos.server import ChaosServer, ServerLimits
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
        limits: the server's time and resource bounds (:class:`~chaos.server.ServerLimits`);
            in subprocess mode they are passed as ``synapse-chaos serve`` options.

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
        limits: ServerLimits | None = None,
    ) -> None:
        if mode not in ("thread", "subprocess"):
            raise ValueError(f"mode must be 'thread' or 'subprocess', got {mode!r}")
        if limits is not None and not isinstance(limits, ServerLimits):
            raise TypeError(f"limits must be a chaos.server.ServerLimits, got {limits!r}")
        self.limits = limits if limits is not None else ServerLimits()
        self._host = host
        self._port = port
        self.mode: Mode = mode
        self._seed = seed
        self._start_timeout = start_timeout
        self._bound: tuple[str, int] | None = None
        # start() and stop() hold it: concurrent calls run one after the other.
        self._lifecycle = threading.Lock()
        # thread mode: the server thread of the current start, and its state
        self._thread: threading.Thread | None = None
        self._run: _ThreadRun | None = None
        # subprocess mode
        self._process: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        state = self.url if self._bound else "stopped"
        return f"<EmbeddedToxiproxy {self.mode} {state}>"

    @property
    def running(self) -> bool:
        """True between a successful start() and stop(), while the server is alive.

        False once the server subprocess (or thread) has ended on its own: killed, crashed.
        """
        return self._bound is not None and self._alive()

    @property
    def pid(self) -> int | None:
        """Process id of the server in subprocess mode (``None`` in thread mode or when stopped)."""
        process = self._process
        return process.pid if process is not None else None

    def _alive(self) -> bool:
        # Local copies: stop() may clear the attributes from another thread meanwhile.
        process, thread = self._process, self._thread
        if process is not None:
            return process.poll() is None
        if thread is not None:
            return thread.is_alive()
        return True

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
        """Start the server and wait until its API accepts requests; return self.

        Thread-safe: concurrent calls start one server. If it does not start within
        ``start_timeout``, nothing is left running. If the server died since the last start
        (its subprocess was killed), a new one is started: on a new port when ``port=0``.
        """
        with self._lifecycle:
            if self._bound is not None:
                if self._alive():
                    return self
                self._shutdown()  # reap the dead one before starting anew
            if self.mode == "thread":
                self._start_thread()
            else:
                self._start_subprocess()
            return self

    def stop(self) -> None:
        """Stop the server: API, proxies and connections closed. Safe to call twice, and from
        several threads."""
        with self._lifecycle:
            self._shutdown()

    def _shutdown(self) -> None:
        self._bound = None
        if self._thread is not None:
            self._stop_thread()
        if self._process is not None:
            self._stop_subprocess()

    # -- thread mode -----------------------------------------------------------------------------

    def _start_thread(self) -> None:
        run = _ThreadRun()
        thread = threading.Thread(
            target=self._thread_main, args=(run,), name="synapse-chaos-server", daemon=True
        )
        self._thread, self._run = thread, run
        thread.start()
        if not run.ready.wait(self._start_timeout):
            # Whenever the server comes up now, it sees the cancellation and stops at once.
            with contextlib.suppress(EmbeddedServerError):
                self._stop_thread()
            raise EmbeddedServerError(
                f"the embedded server did not start within {self._start_timeout} s"
            )
        if run.error is not None:
            thread.join(self._start_timeout)
            self._thread = self._run = None
            raise EmbeddedServerError(
                f"the embedded server could not start on {join_address(self._host, self._port)}: "
                f"{run.error}; use port=0 for a free port"
            ) from run.error
        self._bound = run.bound

    def _thread_main(self, run: _ThreadRun) -> None:
        # Always asyncio's own selector loop, whatever loop policy the host process set (e.g.
        # uvloop): the data plane relies on its transport semantics (see chaos/server/splice.py).
        with asyncio.Runner(loop_factory=asyncio.SelectorEventLoop) as runner:
            runner.run(self._serve(run))

    async def _serve(self, run: _ThreadRun) -> None:
        stop_event = asyncio.Event()
        if not run.begin(asyncio.get_running_loop(), stop_event):
            return
        server = ChaosServer(self._host, self._port, seed=self._seed, limits=self.limits)
        try:
            await server.start()
        except Exception as exc:
            run.error = exc
            run.ready.set()
            return
        try:
            if not run.serving((server.host, server.port)):
                return  # stop() or a start timeout came first
            run.ready.set()
            await stop_event.wait()
        finally:
            await server.stop()

    def _stop_thread(self) -> None:
        thread, run = self._thread, self._run
        self._thread = self._run = None
        if run is not None:
            with run.lock:
                run.cancelled = True
                loop, event = run.loop, run.stop_event
            if loop is not None and event is not None and not loop.is_closed():
                # RuntimeError: the loop already finished, so there is nothing left to stop.
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(event.set)
        if thread is not None and thread is not threading.current_thread():
            thread.join(self._start_timeout)
            if thread.is_alive():
                raise EmbeddedServerError(
                    f"the embedded server thread did not stop within {self._start_timeout} s"
                )

    # -- subprocess mode -------------------------------------------------------------------------

    def _start_subprocess(self) -> None:
        command = [sys.executable, "-m", "chaos", "serve", "--host", self._host]
        command += ["--port", str(self._port)]
        if self._seed is not None:
            command += ["--seed", str(self._seed)]
        command += self.limits.as_options()
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


class _ThreadRun:
    """State of one thread-mode start, shared by start(), stop() and the server thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.cancelled = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stop_event: asyncio.Event | None = None
        self.bound: tuple[str, int] | None = None
        self.error: BaseException | None = None

    def begin(self, loop: asyncio.AbstractEventLoop, stop_event: asyncio.Event) -> bool:
        """The server thread's loop runs; False if already cancelled (start nothing)."""
        with self.lock:
            if self.cancelled:
                return False
            self.loop, self.stop_event = loop, stop_event
            return True

    def serving(self, bound: tuple[str, int]) -> bool:
        """The server listens on *bound*; False if cancelled meanwhile (stop it)."""
        with self.lock:
            if self.cancelled:
                return False
            self.bound = bound
            return True


def _read_line(stream: object, timeout: float) -> bytes | None:
    """Read one line from a pipe, giving up after *timeout* seconds."""
    result: list[bytes] = []

    def reader() -> None:
        result.append(stream.readline())  # type: ignore[attr-defined]

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    thread.join(timeout)
    return result[0] if result else None
