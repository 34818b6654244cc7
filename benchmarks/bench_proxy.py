"""Benchmark the chaos server's data plane: direct loopback vs through our proxy (no toxics).

Usage:
    .venv/bin/python benchmarks/bench_proxy.py [--quick] [--embedded]
    TOXIPROXY_SERVER=/path/to/toxiproxy-server .venv/bin/python benchmarks/bench_proxy.py

Measures, in one run and against the same upstream (a separate process with blocking sockets):
  * round-trip time of 64-byte messages on one connection (p50/p99, microseconds),
  * one-way bulk throughput on one connection (MB/s, 1 MB = 10^6 bytes),
  * the proxy process's CPU time (user + system) per GB moved, which the machine's noise
    disturbs much less than throughput does,
for: direct loopback, our server (``python -m chaos serve`` in its own process, as the real
Toxiproxy would run), and the real Toxiproxy binary when ``TOXIPROXY_SERVER`` names one.

Throughput runs are interleaved (direct, proxy, direct, proxy, ...) and each proxy run is compared
with the direct run just before it, so a burst of load from other processes hits both sides of a
ratio alike; min and median of those ratios are printed. Every target moves the same bytes the
same way. ``SYNAPSE_CHAOS_SPLICE=0`` runs our server without its splice fast path.

``--embedded`` also measures EmbeddedToxiproxy's thread and subprocess modes: how far a 20 ms
latency toxic drifts while the calling process keeps the GIL busy.

Everything listens on 127.0.0.1; every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_support import free_port, port_printing_process

from chaos import EmbeddedToxiproxy, ToxiproxyClient

UPSTREAM_SCRIPT = r"""
import socket, sys, threading
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", 0))
listener.listen(128)
print(listener.getsockname()[1], flush=True)

def handle(conn):
    with conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        mode = conn.recv(1)
        buf = bytearray(1 << 20)
        if mode == b"E":  # echo
            while True:
                n = conn.recv_into(buf)
                if not n:
                    return
                conn.sendall(memoryview(buf)[:n])
        elif mode == b"S":  # sink: an 8-byte length, then that many bytes; answer the count
            header = b""
            while len(header) < 8:
                chunk = conn.recv(8 - len(header))
                if not chunk:
                    return
                header += chunk
            expected, total = int.from_bytes(header, "big"), 0
            while total < expected:
                n = conn.recv_into(buf, min(len(buf), expected - total))
                if not n:
                    break
                total += n
            conn.sendall(total.to_bytes(8, "big"))

while True:
    conn, _ = listener.accept()
    threading.Thread(target=handle, args=(conn,), daemon=True).start()
"""


@contextmanager
def server_process(command: list[str], port: int) -> Iterator[tuple[ToxiproxyClient, int]]:
    """Run a Toxiproxy-compatible server *command* whose API listens on *port*.

    Yields a client and the process id (for its CPU time). Ours and the real binary are started
    the same way, so they are measured the same way.
    """
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, stdout=log, stderr=log)
        try:
            client = ToxiproxyClient(f"http://127.0.0.1:{port}", timeout=5)
            deadline = time.monotonic() + 10
            while not client.is_running():
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(f"{command[0]} did not start on port {port}")
                time.sleep(0.05)
            yield client, process.pid
        finally:
            process.terminate()
            process.wait(10)


def our_server() -> AbstractContextManager[tuple[ToxiproxyClient, int]]:
    port = free_port()
    return server_process([sys.executable, "-m", "chaos", "serve", "--port", str(port)], port)


def real_toxiproxy(binary: str) -> AbstractContextManager[tuple[ToxiproxyClient, int]]:
    port = free_port()
    return server_process([binary, "-host", "127.0.0.1", "-port", str(port)], port)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process *pid* so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def connect(port: int, mode: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(mode)
    return sock


def round_trips(port: int, count: int) -> list[float]:
    """Seconds per 64-byte echo round trip, after a warm-up."""
    message = b"m" * 64
    samples = []
    with connect(port, b"E") as sock:
        for i in range(count + count // 10):
            start = time.perf_counter()
            sock.sendall(message)
            got = 0
            while got < len(message):
                chunk = sock.recv(4096)
                if not chunk:
                    raise RuntimeError("connection closed during the latency test")
                got += len(chunk)
            if i >= count // 10:
                samples.append(time.perf_counter() - start)
    return samples


def throughput(port: int, total: int) -> float:
    """Bytes per second sending *total* bytes one way and waiting for the sink's count.

    The length goes first, so the sink knows when everything arrived without a half-close:
    Toxiproxy 2.12 closes both directions on a client's FIN (docs/server.md), and the count
    would never come back through it.
    """
    block = memoryview(b"t" * (1 << 20))
    if total % len(block):
        raise ValueError("total must be a whole number of 1 MiB blocks")
    with connect(port, b"S") as sock:
        start = time.perf_counter()
        sock.sendall(total.to_bytes(8, "big"))
        sent = 0
        while sent < total:
            sock.sendall(block)
            sent += len(block)
        answer = b""
        while len(answer) < 8:
            chunk = sock.recv(8 - len(answer))
            if not chunk:
                raise RuntimeError("sink closed before answering")
            answer += chunk
        elapsed = time.perf_counter() - start
    if int.from_bytes(answer, "big") != sent:
        raise RuntimeError("the sink counted a different number of bytes")
    return sent / elapsed


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Target:
    """One way to reach the upstream, and what was measured through it."""

    def __init__(self, name: str, port: int, pid: int | None) -> None:
        self.name = name
        self.port = port
        self.pid = pid  # the proxy process, None for direct
        self.rtts: list[float] = []
        self.rates: list[float] = []
        self.ratios: list[float] = []  # rate / the direct rate measured just before
        self.cpu = 0.0  # proxy CPU seconds over all throughput runs


def bench_proxies(quick: bool, runs: int | None) -> None:
    count = 2_000 if quick else 20_000
    total = (256 if quick else 1024) * 1024 * 1024
    runs = runs or (3 if quick else 5)
    with port_printing_process(UPSTREAM_SCRIPT) as upstream, ExitStack() as stack:
        targets = [Target("direct", upstream, None)]
        client, pid = stack.enter_context(our_server())
        info = client.create_proxy("bench", upstream=f"127.0.0.1:{upstream}")
        targets.append(Target("synapse proxy", info.listen_port, pid))
        binary = os.environ.get("TOXIPROXY_SERVER")
        if binary:
            client, pid = stack.enter_context(real_toxiproxy(binary))
            info = client.create_proxy("bench", upstream=f"127.0.0.1:{upstream}")
            targets.append(Target("toxiproxy (Go)", info.listen_port, pid))
        else:
            print("(set TOXIPROXY_SERVER=/path/to/toxiproxy-server to compare the real one)")
        for target in targets:
            target.rtts = round_trips(target.port, count)
        for _ in range(runs):
            direct_rate = 0.0
            for target in targets:
                before = cpu_seconds(target.pid) if target.pid else 0.0
                rate = throughput(target.port, total)
                if target.pid:
                    target.cpu += cpu_seconds(target.pid) - before
                target.rates.append(rate)
                direct_rate = direct_rate or rate  # direct comes first in every round
                target.ratios.append(rate / direct_rate)
    print(f"{count} round trips of 64 B; {total // 2**20} MiB one way x {runs} interleaved runs")
    print_table(targets, total * runs)


def print_table(targets: list[Target], moved: int) -> None:
    direct = targets[0]
    direct_p50 = percentile(direct.rtts, 0.50) * 1e6
    print()
    header = (
        f"{'target':<16}{'p50 us':>8}{'p99 us':>8}{'p50 +us':>8}{'MB/s':>7}"
        f"{'vs direct min':>15}{'median':>8}{'CPU s/GB':>10}"
    )
    print(header)
    print("-" * len(header))
    for t in targets:
        p50, p99 = percentile(t.rtts, 0.50) * 1e6, percentile(t.rtts, 0.99) * 1e6
        cpu = f"{t.cpu / (moved / 1e9):>10.3f}" if t.pid else f"{'-':>10}"
        print(
            f"{t.name:<16}{p50:>8.1f}{p99:>8.1f}{p50 - direct_p50:>8.1f}"
            f"{statistics.median(t.rates) / 1e6:>7.0f}{min(t.ratios):>15.0%}"
            f"{statistics.median(t.ratios):>8.0%}{cpu}"
        )
    print()
    ours = targets[1]
    ok_tp = statistics.median(ours.ratios) >= 0.5
    ok_lat = percentile(ours.rtts, 0.50) * 1e6 - direct_p50 <= 100
    print(f"target throughput >= 50% of direct (median): {'met' if ok_tp else 'NOT met'}")
    print(f"target p50 overhead <= 100 us:               {'met' if ok_lat else 'NOT met'}")
    if len(targets) > 2:
        print_versus(ours, targets[2], direct_p50, moved)


def print_versus(ours: Target, peer: Target, direct_p50: float, moved: int) -> None:
    """Our server next to the real Toxiproxy: ratios of the same run, same rounds."""
    per_round = [a / b for a, b in zip(ours.rates, peer.rates, strict=True)]
    ours_added = percentile(ours.rtts, 0.50) * 1e6 - direct_p50
    peer_added = percentile(peer.rtts, 0.50) * 1e6 - direct_p50
    print()
    print(f"synapse vs {peer.name}, same run:")
    print(
        f"  throughput   x{statistics.median(per_round):.2f} (median of the per-round ratios; "
        f"min x{min(per_round):.2f}, max x{max(per_round):.2f})"
    )
    print(
        f"  p50 added    {ours_added:.1f} us vs {peer_added:.1f} us "
        f"(p99 {percentile(ours.rtts, 0.99) * 1e6:.1f} vs {percentile(peer.rtts, 0.99) * 1e6:.1f} us)"
    )
    print(
        f"  CPU per GB   {ours.cpu / (moved / 1e9):.3f} s vs {peer.cpu / (moved / 1e9):.3f} s "
        f"(x{ours.cpu / peer.cpu:.2f})"
    )


PEER_SCRIPT = r"""
import socket, sys, time
port, count = int(sys.argv[1]), int(sys.argv[2])
sock = socket.create_connection(("127.0.0.1", port))
sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
sock.sendall(b"E")
for _ in range(count):
    t0 = time.perf_counter()
    sock.sendall(b"x")
    sock.recv(16)
    print((time.perf_counter() - t0) * 1e3, flush=True)
"""


def busy_python(seconds: float) -> None:
    """Hold the GIL with pure-Python work for up to *seconds*, as a CPU-heavy test would."""
    deadline = time.perf_counter() + seconds
    x = 0
    while time.perf_counter() < deadline:
        for i in range(10_000):
            x += i * i


def latency_accuracy(mode: str, upstream: int, count: int, busy: bool) -> tuple[float, list[float]]:
    """Start time (s) and round trips (ms) through a 20 ms latency toxic.

    The round trips are timed by a separate process, so only the server's own accuracy is
    measured; meanwhile this (the "test") process is idle or keeps its main thread busy.
    """
    start = time.perf_counter()
    with EmbeddedToxiproxy(mode=mode) as server:  # type: ignore[arg-type]
        started = time.perf_counter() - start
        client = server.client()
        info = client.create_proxy("acc", upstream=f"127.0.0.1:{upstream}")
        client.add_toxic("acc", "latency", attributes={"latency": 20})
        peer = subprocess.Popen(
            [sys.executable, "-c", PEER_SCRIPT, str(info.listen_port), str(count)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            if busy:
                busy_python(count * 0.021)  # about as long as the peer's round trips take
            out, _ = peer.communicate(timeout=120)
        finally:
            if peer.poll() is None:
                peer.kill()
                peer.wait()
    return started, [float(line) for line in out.split()]


def bench_embedded(quick: bool) -> None:
    count = 100 if quick else 300
    print("\nEmbeddedToxiproxy: 20 ms latency toxic, round trips timed by another process")
    header = f"{'mode':<12}{'caller':<10}{'start ms':>9}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}"
    print(header)
    print("-" * len(header))
    with port_printing_process(UPSTREAM_SCRIPT) as upstream:
        for mode in ("thread", "subprocess"):
            for busy in (False, True):
                started, samples = latency_accuracy(mode, upstream, count, busy)
                print(
                    f"{mode:<12}{'busy' if busy else 'idle':<10}{started * 1e3:>9.1f}"
                    f"{percentile(samples, 0.5):>9.2f}{percentile(samples, 0.99):>9.2f}"
                    f"{max(samples):>9.2f}"
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples (~10 s)")
    parser.add_argument("--runs", type=int, help="throughput runs per target (3 quick, 5 full)")
    parser.add_argument(
        "--embedded", action="store_true", help="also compare EmbeddedToxiproxy modes"
    )
    args = parser.parse_args()
    bench_proxies(args.quick, args.runs)
    if args.embedded:
        bench_embedded(args.quick)


if __name__ == "__main__":
    main()
