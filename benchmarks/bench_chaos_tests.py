"""Benchmark the bookkeeping a chaos test pays: proxy, one latency fault, one round trip.

Usage:
    .venv/bin/python benchmarks/bench_chaos_tests.py [--tests 200] [--runs 3]
    TOXIPROXY_SERVER=/path/to/toxiproxy-server .venv/bin/python benchmarks/bench_chaos_tests.py

Generates a suite of N parametrised tests and runs it with pytest in a child process, three ways,
interleaved ``--runs`` times (the machine is noisy; medians are printed):

* ``plain``: the same round trip to the upstream directly, no Synapse fixture (the floor);
* ``embedded``: ``chaos_proxy(upstream)``, ``with proxy.latency(LATENCY_MS):``, the round trip
  through the proxy, on the embedded server (``--synapse-toxiproxy=embedded``);
* ``toxiproxy``: the same suite against the real Toxiproxy binary (``TOXIPROXY_SERVER``, or
  ``/work/toxiproxy/toxiproxy-server`` when present); the column is skipped otherwise.

Per test: wall time of the whole run divided by N (interpreter start and collection included);
the test's own time (setup + call + teardown as pytest reports it) without the round trip
itself, which the fault slows down on purpose; the overhead, that time over ``plain``'s: what
Synapse's fixtures, faults and hooks cost; and the control-API requests the test made (counted by
a conftest that wraps ``ToxiproxyClient.request``). Everything listens on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench_support import free_port, toxiproxy_binary

ROOT = Path(__file__).resolve().parent.parent
LATENCY_MS = 1

CONFTEST = """
import socket, socketserver, threading, time
import pytest

class _Echo(socketserver.BaseRequestHandler):
    def handle(self):
        while data := self.request.recv(4096):
            self.request.sendall(data)

@pytest.fixture(scope="session")
def echo():
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield "127.0.0.1:%d" % server.server_address[1]
    server.shutdown()
    server.server_close()

WORK = [0.0]

def round_trip(host, port):
    started = time.perf_counter()
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(b"ping")
        assert sock.recv(4) == b"ping"
    WORK[0] += time.perf_counter() - started

REQUESTS = [0]
PHASES = [0.0]

def pytest_runtest_logreport(report):
    PHASES[0] += report.duration  # setup + call + teardown of every test

def pytest_configure(config):
    from chaos.control.client import ToxiproxyClient
    original = ToxiproxyClient.request
    def counted(self, *args, **kwargs):
        REQUESTS[0] += 1
        return original(self, *args, **kwargs)
    ToxiproxyClient.request = counted

def pytest_unconfigure(config):
    print("\\nREQUESTS=%d" % REQUESTS[0])
    print("PHASES=%f" % PHASES[0])
    print("WORK=%f" % WORK[0])
"""

CHAOS = f"""
import pytest
from conftest import round_trip

pytestmark = pytest.mark.chaos

@pytest.mark.parametrize("i", range(N))
def test_chaos(i, chaos_proxy, echo):
    proxy = chaos_proxy(echo)
    with proxy.latency({LATENCY_MS}):
        round_trip(proxy.host, proxy.port)
"""

PLAIN = """
import pytest
from conftest import round_trip

@pytest.mark.parametrize("i", range(N))
def test_plain(i, echo):
    host, port = echo.rsplit(":", 1)
    round_trip(host, int(port))
"""


def run_suite(folder: Path, module: str, *extra: str) -> tuple[float, float, int]:
    """Wall seconds of one pytest run of *module*; the seconds its tests took (setup, call and
    teardown, as pytest reports them: no interpreter start or collection) without their round
    trip itself (the work, which the fault slows down on purpose); the API requests counted."""
    started = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            module,
            "-q",
            "-p",
            "no:cacheprovider",
            "-s",
            *extra,
        ],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=600,
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{module} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    figures = dict(
        line.split("=", 1)
        for line in done.stdout.splitlines()
        if line.startswith(("REQ", "PHA", "WORK"))
    )
    return elapsed, float(figures["PHASES"]) - float(figures["WORK"]), int(figures["REQUESTS"])


@contextmanager
def real_toxiproxy(binary: str) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [binary, "-host", "127.0.0.1", "-port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=200, help="tests per suite (default 200)")
    parser.add_argument("--runs", type=int, default=3, help="interleaved runs (default 3)")
    args = parser.parse_args()
    n = args.tests
    binary = toxiproxy_binary()
    with tempfile.TemporaryDirectory(prefix="synapse-bench-") as tmp, _maybe(binary) as url:
        folder = Path(tmp)
        (folder / "conftest.py").write_text(CONFTEST)
        (folder / "test_chaos.py").write_text(CHAOS.replace("N", str(n)))
        (folder / "test_plain.py").write_text(PLAIN.replace("N", str(n)))
        (folder / "pytest.ini").write_text("[pytest]\n")
        columns: dict[str, list[str]] = {
            "plain": ["test_plain.py"],
            "embedded": ["test_chaos.py", "--synapse-chaos", "--synapse-toxiproxy=embedded"],
        }
        if url is not None:
            columns["toxiproxy"] = [
                "test_chaos.py",
                "--synapse-chaos",
                f"--synapse-toxiproxy={url}",
            ]
        else:
            print("(no real Toxiproxy: set TOXIPROXY_SERVER=/path/to/toxiproxy-server to compare)")
        walls: dict[str, list[float]] = {name: [] for name in columns}
        phases: dict[str, list[float]] = {name: [] for name in columns}
        requests: dict[str, int] = {}
        for _ in range(args.runs):
            for name, argv in columns.items():
                wall, tests, count = run_suite(folder, *argv)
                walls[name].append(wall)
                phases[name].append(tests)
                requests[name] = count
    print(
        f"{n} tests per suite, {args.runs} interleaved runs (medians), latency fault "
        f"{LATENCY_MS} ms. 'test ms': setup + call + teardown without the round trip itself "
        "(which the fault slows on purpose); overhead: that, over plain's\n"
    )
    header = (
        f"{'suite':<11}{'wall ms/test':>13}{'test ms':>9}{'overhead ms':>13}{'API req/test':>14}"
        f"{'vs embedded':>13}"
    )
    print(header)
    print("-" * len(header))
    wall = {name: statistics.median(t) / n for name, t in walls.items()}
    test = {name: statistics.median(t) / n for name, t in phases.items()}
    for name in columns:
        cells = [f"{name:<11}", f"{wall[name] * 1000:>13.2f}", f"{test[name] * 1000:>9.2f}"]
        if name == "plain":
            cells += [f"{'-':>13}", f"{'-':>14}", f"{'-':>13}"]
        else:
            cells += [
                f"{overhead_ms(test, name):>13.2f}",
                f"{requests[name] / n:>14.1f}",
                f"{test[name] / test['embedded']:>12.2f}x",
            ]
        print("".join(cells))
    verdict = "met" if overhead_ms(test, "embedded") <= 5 else "NOT met"
    print(f"\ntarget: <= 5 ms overhead per chaos test on the embedded server: {verdict}")


def overhead_ms(test: dict[str, float], name: str) -> float:
    """Per-test time besides the round trip, over plain's: the bookkeeping of a chaos test."""
    return (test[name] - test["plain"]) * 1000


@contextmanager
def _maybe(binary: str | None) -> Iterator[str | None]:
    if binary is None:
        yield None
        return
    with real_toxiproxy(binary) as url:
        yield url


if __name__ == "__main__":
    main()
