"""Benchmark the chaos server under abuse: toxic churn on live streams, many connections, SIGTERM.

Usage:
    .venv/bin/python benchmarks/bench_abuse.py [--quick] [--churn-seconds 30] [--connections 5000]
    TOXIPROXY_SERVER=/path/to/toxiproxy-server .venv/bin/python benchmarks/bench_abuse.py

Runs each case on our server (``python -m chaos serve`` in its own process) and on the real
Toxiproxy binary (``TOXIPROXY_SERVER``, or ``/work/toxiproxy/toxiproxy-server`` when present),
one after the other in one run, and prints them side by side with ratios:

* churn: ``--streams`` live streams push random bytes through one proxy to an echo upstream and
  check every byte that comes back, while tests/chaos/churner.py (a process of its own) adds,
  updates and removes toxics of every type as fast as the API answers for ``--churn-seconds``;
  then ``POST /reset``. Reported: API operations and their p50/p99, failed API requests,
  streams handed a byte out of place, MB verified, whether the server still answers and every
  stream echoes once more afterwards, and the server's descriptors and memory (RSS) before and
  after (after a short settle);
* connections: ``--connections`` concurrent connections, each echoing one message and then
  staying open; the server's descriptors and RSS before and with them all open;
* SIGTERM: the time from SIGTERM to the server's exit with those connections still open.

The upstream is an asyncio echo server in its own process. Everything listens on 127.0.0.1;
every loop is bounded in count and time, and a server that stops answering is reported, not
waited for.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_support import free_port, port_printing_process, toxiproxy_binary  # noqa: E402

from chaos import ToxiproxyClient  # noqa: E402
from chaos.errors import ToxiproxyError  # noqa: E402

CHURNER = ROOT / "tests" / "chaos" / "churner.py"
WINDOW = 16 * 1024  # bytes a stream has in flight at most

ECHO_SCRIPT = r"""
import asyncio, resource, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

async def handle(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()

async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=4096)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()

asyncio.run(main())
"""


class Server:
    """A Toxiproxy-compatible server process, its API client and what it wrote to its log."""

    def __init__(self, name: str, command: list[str], port: int) -> None:
        self.name = name
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (closed by close())
        self.process = subprocess.Popen(command, stdout=self.log, stderr=self.log)
        self.url = f"http://127.0.0.1:{port}"
        self.client = ToxiproxyClient(self.url, timeout=5)
        deadline = time.monotonic() + 15
        while not self.client.is_running():
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"{command[0]} did not start on port {port}")
            time.sleep(0.05)

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.process.pid}/fd"))

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def alive(self) -> bool:
        return self.process.poll() is None

    def answers(self) -> bool:
        """The API answers a request within 5 s."""
        try:
            self.client.version()
            return True
        except (ToxiproxyError, OSError):
            return False

    def log_text(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def sigterm(self, timeout: float = 30.0) -> float | None:
        """Seconds from SIGTERM to exit (None: still running after *timeout*, then killed)."""
        if not self.alive():
            return None
        start = time.perf_counter()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return None
        return time.perf_counter() - start

    def close(self) -> None:
        if self.alive():
            self.process.kill()
            self.process.wait()
        self.log.close()


def our_server() -> Server:
    port = free_port()
    return Server("ours", [sys.executable, "-m", "chaos", "serve", "--port", str(port)], port)


def real_toxiproxy(binary: str) -> Server:
    port = free_port()
    return Server("toxiproxy", [binary, "-host", "127.0.0.1", "-port", str(port)], port)


# -- churn --------------------------------------------------------------------------------------


@dataclass
class Stream:
    """One client: connections one after the other, every echoed byte checked against the sent."""

    address: tuple[str, int]
    seed: int
    verified: int = 0
    connections: int = 0
    corrupt: list[str] = field(default_factory=list)

    async def run(self, stop: asyncio.Event) -> None:
        rng = random.Random(self.seed)
        while not stop.is_set():
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(*self.address), 5)
            except (TimeoutError, OSError):
                await asyncio.sleep(0.05)
                continue
            self.connections += 1
            try:
                await self._exchange(rng, reader, writer, stop)
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()

    async def _exchange(
        self,
        rng: random.Random,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        stop: asyncio.Event,
    ) -> None:
        pending = bytearray()
        room = asyncio.Event()
        room.set()

        async def send() -> None:
            with contextlib.suppress(OSError):
                while not stop.is_set():
                    if len(pending) >= WINDOW:
                        room.clear()
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(room.wait(), 1)
                        continue
                    chunk = rng.randbytes(rng.randint(1, 4096))
                    pending.extend(chunk)
                    writer.write(chunk)
                    await writer.drain()
                    await asyncio.sleep(rng.uniform(0, 0.04))  # ~100 KB/s: live traffic

        async def receive() -> None:
            with contextlib.suppress(OSError):
                while data := await reader.read(65536):
                    if pending[: len(data)] != data:
                        self.corrupt.append(f"{len(data)} bytes after {self.verified} verified")
                        return
                    del pending[: len(data)]
                    self.verified += len(data)
                    room.set()

        tasks = {asyncio.ensure_future(send()), asyncio.ensure_future(receive())}
        try:
            # Ends with the connection (closed or reset by a toxic) or with the churn.
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def echoes_once_more(self) -> bool:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(*self.address), 5)
        except (TimeoutError, OSError):
            return False
        try:
            message = random.Random(self.seed).randbytes(1024)
            writer.write(message)
            return await asyncio.wait_for(reader.readexactly(len(message)), 10) == message
        except (TimeoutError, OSError, asyncio.IncompleteReadError):
            return False
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def _churn(
    server: Server, address: tuple[str, int], streams: int, seconds: float
) -> dict[str, Any]:
    clients = [Stream(address, seed) for seed in range(streams)]
    stop = asyncio.Event()
    tasks = [asyncio.ensure_future(s.run(stop)) for s in clients]
    result: dict[str, Any] = {}
    try:
        churn = await asyncio.create_subprocess_exec(
            sys.executable, str(CHURNER), server.url, "churn", str(seconds), "16",
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            out, _ = await asyncio.wait_for(churn.communicate(), seconds + 60)
            report = json.loads(out)
        except (TimeoutError, ValueError):
            with contextlib.suppress(ProcessLookupError):
                churn.kill()
            await churn.wait()
            report = {"operations": 0, "p50": float("nan"), "p99": float("nan"), "errors": ["hung"]}
        result.update(report)
        start = time.perf_counter()
        try:
            await asyncio.to_thread(server.client.reset)
            result["reset"] = f"ok ({(time.perf_counter() - start) * 1000:.0f} ms)"
        except (ToxiproxyError, OSError) as exc:
            result["reset"] = f"failed: {type(exc).__name__}"
    finally:
        stop.set()
        _, hung = await asyncio.wait(tasks, timeout=30)
        for task in hung:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    result["stuck_streams"] = len(hung)
    checks = await asyncio.gather(*(s.echoes_once_more() for s in clients))
    result["echo_after"] = checks.count(True)
    result["corrupt"] = sum(1 for s in clients if s.corrupt)
    result["verified_mb"] = sum(s.verified for s in clients) / 1e6
    result["connections"] = sum(s.connections for s in clients)
    return result


def bench_churn(server: Server, upstream: int, streams: int, seconds: float) -> dict[str, Any]:
    info = server.client.create_proxy("churn", upstream=f"127.0.0.1:{upstream}")
    address = (info.listen_host, info.listen_port)
    fds0, rss0 = server.fds(), server.rss_mb()
    result = asyncio.run(_churn(server, address, streams, seconds))
    time.sleep(2)  # connections the streams closed are let go
    result["alive"] = server.alive()
    result["answers"] = server.alive() and server.answers()
    result["fds"] = (fds0, server.fds() if server.alive() else None)
    result["rss"] = (rss0, server.rss_mb() if server.alive() else None)
    log = server.log_text()
    result["log_kb"] = len(log.encode()) / 1024
    result["log_panics"] = log.count("panic:") + log.count("Traceback")
    result["errors"] = len(result["errors"])
    return result


# -- connections and SIGTERM --------------------------------------------------------------------


def open_connections(address: tuple[str, int], count: int) -> list[socket.socket]:
    """*count* connections, each echoing one message through the proxy, left open."""
    sockets = []
    deadline = time.monotonic() + 120
    for _ in range(count):
        if time.monotonic() > deadline:
            break
        sock = socket.create_connection(address, timeout=10)
        sockets.append(sock)
    # Echo on each only once all are connected (the server holds them all at once).
    for sock in sockets:
        sock.sendall(b"ping")
    for sock in sockets:
        got = b""
        while len(got) < 4:
            chunk = sock.recv(4 - len(got))
            if not chunk:
                raise RuntimeError("a connection closed before its echo")
            got += chunk
    return sockets


def bench_connections(server: Server, upstream: int, count: int) -> dict[str, Any]:
    info = server.client.create_proxy("many", upstream=f"127.0.0.1:{upstream}")
    address = (info.listen_host, info.listen_port)
    idle_fds, idle_rss = server.fds(), server.rss_mb()
    start = time.perf_counter()
    sockets = open_connections(address, count)
    seconds = time.perf_counter() - start
    try:
        time.sleep(1)
        result = {
            "opened": len(sockets),
            "open_seconds": seconds,
            "fds": (idle_fds, server.fds()),
            "rss": (idle_rss, server.rss_mb()),
            "answers": server.answers(),
        }
        result["sigterm_s"] = server.sigterm()
    finally:
        for sock in sockets:
            sock.close()
    return result


def bench_idle_sigterm(server: Server) -> float | None:
    return server.sigterm()


# -- printing -----------------------------------------------------------------------------------


def _pair(values: tuple[Any, Any] | None, unit: str = "") -> str:
    if values is None or values[1] is None:
        return "n/a"
    before, after = values
    return f"{before:.0f}->{after:.0f}{unit} ({after - before:+.1f})"


def _ratio(ours: float | None, theirs: float | None) -> str:
    if ours is None or theirs is None or ours == 0 or ours != ours or theirs != theirs:
        return ""
    return f"x{theirs / ours:.2f}"


def print_rows(title: str, rows: list[tuple[str, str, str, str]]) -> None:
    print(f"\n{title}")
    print(f"  {'':32} {'ours':>28} {'toxiproxy':>28} {'toxiproxy/ours':>14}")
    for label, ours, theirs, ratio in rows:
        print(f"  {label:32} {ours:>28} {theirs:>28} {ratio:>14}")


def _get(results: dict[str, dict[str, Any]], name: str, key: str) -> Any:
    return results.get(name, {}).get(key)


def report_churn(results: dict[str, dict[str, Any]], streams: int, seconds: float) -> None:
    def cell(name: str, key: str, fmt: str = "{}") -> str:
        value = _get(results, name, key)
        if name not in results:
            return "-"
        return fmt.format(value) if value is not None else "n/a"

    def ms(name: str, key: str) -> float | None:
        """Request times in ms; None when over a tenth of the requests failed (a dead server
        refuses fast, which is no answer time)."""
        value = _get(results, name, key)
        failed = _get(results, name, "errors") or 0
        if value is None or failed * 10 > (_get(results, name, "operations") or 0):
            return None
        return float(value) * 1000

    def ms_cell(name: str, key: str) -> str:
        if name not in results:
            return "-"
        value = ms(name, key)
        return "n/a (most failed)" if value is None else f"{value:.1f}"

    def rss_growth(name: str) -> float | None:
        pair = _get(results, name, "rss")
        return None if not pair or pair[1] is None else pair[1] - pair[0]

    rows = [
        ("API operations", cell("ours", "operations"), cell("toxiproxy", "operations"), ""),
        ("API p50 ms", ms_cell("ours", "p50"), ms_cell("toxiproxy", "p50"),
         _ratio(ms("ours", "p50"), ms("toxiproxy", "p50"))),
        ("API p99 ms", ms_cell("ours", "p99"), ms_cell("toxiproxy", "p99"),
         _ratio(ms("ours", "p99"), ms("toxiproxy", "p99"))),
        ("failed API requests", cell("ours", "errors"), cell("toxiproxy", "errors"), ""),
        ("POST /reset after churn", cell("ours", "reset"), cell("toxiproxy", "reset"), ""),
        ("streams handed a wrong byte", cell("ours", "corrupt"), cell("toxiproxy", "corrupt"), ""),
        ("streams stuck at the end", cell("ours", "stuck_streams"),
         cell("toxiproxy", "stuck_streams"), ""),
        ("MB verified", cell("ours", "verified_mb", "{:.1f}"),
         cell("toxiproxy", "verified_mb", "{:.1f}"), ""),
        ("connections made", cell("ours", "connections"), cell("toxiproxy", "connections"), ""),
        (f"streams echoing after (of {streams})", cell("ours", "echo_after"),
         cell("toxiproxy", "echo_after"), ""),
        ("server alive / API answers", f"{cell('ours', 'alive')} / {cell('ours', 'answers')}",
         f"{cell('toxiproxy', 'alive')} / {cell('toxiproxy', 'answers')}", ""),
        ("fds before->after", _pair(_get(results, "ours", "fds")),
         _pair(_get(results, "toxiproxy", "fds")) if "toxiproxy" in results else "-", ""),
        ("RSS MB before->after", _pair(_get(results, "ours", "rss")),
         _pair(_get(results, "toxiproxy", "rss")) if "toxiproxy" in results else "-",
         _ratio(rss_growth("ours"), rss_growth("toxiproxy"))),
        ("log KB / panics+tracebacks", f"{cell('ours', 'log_kb', '{:.0f}')} / "
         f"{cell('ours', 'log_panics')}", f"{cell('toxiproxy', 'log_kb', '{:.0f}')} / "
         f"{cell('toxiproxy', 'log_panics')}", ""),
    ]  # fmt: skip
    print_rows(
        f"churn: {streams} live streams, {seconds:g} s of toxic churn, then POST /reset", rows
    )


def report_connections(results: dict[str, dict[str, Any]], count: int) -> None:
    def growth(name: str, key: str) -> float | None:
        pair = _get(results, name, key)
        return None if not pair or pair[1] is None else pair[1] - pair[0]

    def sig(name: str, key: str) -> str:
        if name not in results:
            return "-"
        value = _get(results, name, key)
        return "did not exit in 30 s" if value is None else f"{value:.2f}"

    has_peer = "toxiproxy" in results
    rows = [
        ("connections held", str(_get(results, "ours", "opened")),
         str(_get(results, "toxiproxy", "opened")) if has_peer else "-", ""),
        ("fds idle->open", _pair(_get(results, "ours", "fds")),
         _pair(_get(results, "toxiproxy", "fds")) if has_peer else "-", ""),
        ("RSS MB idle->open", _pair(_get(results, "ours", "rss")),
         _pair(_get(results, "toxiproxy", "rss")) if has_peer else "-",
         _ratio(growth("ours", "rss"), growth("toxiproxy", "rss"))),
        ("API answers with them open", str(_get(results, "ours", "answers")),
         str(_get(results, "toxiproxy", "answers")) if has_peer else "-", ""),
        ("SIGTERM -> exit s (connections open)", sig("ours", "sigterm_s"),
         sig("toxiproxy", "sigterm_s"),
         _ratio(_get(results, "ours", "sigterm_s"), _get(results, "toxiproxy", "sigterm_s"))),
        ("SIGTERM -> exit s (idle server)", sig("ours", "idle_sigterm_s"),
         sig("toxiproxy", "idle_sigterm_s"),
         _ratio(_get(results, "ours", "idle_sigterm_s"),
                _get(results, "toxiproxy", "idle_sigterm_s"))),
    ]  # fmt: skip
    print_rows(f"connections: {count} concurrent, each echoed once and left open", rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="6 s of churn, 1,000 connections")
    parser.add_argument("--churn-seconds", type=float, help="seconds of toxic churn (30)")
    parser.add_argument("--streams", type=int, default=200, help="live streams under churn")
    parser.add_argument("--connections", type=int, help="concurrent connections held (5000)")
    parser.add_argument("--only", choices=["churn", "connections"], help="run one case")
    args = parser.parse_args()
    seconds = args.churn_seconds or (6.0 if args.quick else 30.0)
    count = args.connections or (1000 if args.quick else 5000)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the clients' own sockets
    if hard < count + 200:
        sys.exit(f"--connections {count} needs an open-file limit above {count + 200} ({hard})")
    binary = toxiproxy_binary()
    makers = {"ours": our_server}
    if binary:
        makers["toxiproxy"] = lambda: real_toxiproxy(binary)
    else:
        print("(no real Toxiproxy: set TOXIPROXY_SERVER=/path/to/toxiproxy-server to compare)")
    churn: dict[str, dict[str, Any]] = {}
    many: dict[str, dict[str, Any]] = {}
    with port_printing_process(ECHO_SCRIPT) as upstream:
        for name, make in makers.items():
            if args.only in (None, "churn"):
                server = make()
                try:
                    churn[name] = bench_churn(server, upstream, args.streams, seconds)
                finally:
                    server.close()
            if args.only in (None, "connections"):
                server = make()
                try:
                    many[name] = bench_connections(server, upstream, count)
                finally:
                    server.close()
                server = make()
                try:
                    many[name]["idle_sigterm_s"] = bench_idle_sigterm(server)
                finally:
                    server.close()
    if churn:
        report_churn(churn, args.streams, seconds)
    if many:
        report_connections(many, count)


if __name__ == "__main__":
    main()
