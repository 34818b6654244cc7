"""Breakers shared through Redis next to local ones, in one run, on a redis-server it starts.

* closed-state overhead: a guarded call of a function returning a constant (``call`` and the
  decorator), and a recorded failure, through a local breaker and through a shared one (a
  store on a real Redis, its threads running), minus the bare call; rounds interleaved, the
  best kept, ratio shared / local (goal: within 2x);
* trip propagation: three replica processes on loopback; two failures on two replicas, then
  the tripping failure on a third: the time from that failure to each other replica
  rejecting (its breaker open, read from its own event), p50 / p99 / max; and the same when
  one replica trips the fleet alone;
* Redis commands per 1,000 calls per replica: three replica processes calling at a steady
  rate, Redis's own count of commands (``INFO stats``) over the run, healthy and with 10%
  failures, with the count rule only and with a rate rule.

Run with ``make bench`` or ``python benchmarks/bench_shared_breaker.py [--quick]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from typing import Any

import redis

from synapse_core import CircuitBreaker, CircuitBreakerConfig
from synapse_core.breaker import CircuitEvent
from synapse_core.breaker.shared import SharedBreakerStore


def work() -> int:
    return 1


class Down(Exception):
    pass


def failing() -> None:
    raise Down()


# ---------------------------------------------------------------- a redis-server of our own

# What a store sends: its script, loading it, PING on the pub/sub connection, subscribing.
SENT = {"evalsha", "eval", "script", "ping", "psubscribe", "punsubscribe", "hello", "client"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Redis:
    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            sys.exit("redis-server is not installed (make test installs it)")
        self.folder = tempfile.mkdtemp(prefix="bench-redis-")
        self.port = free_port()
        self.process = subprocess.Popen(
            [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "no", "--dir", self.folder],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def commands(self) -> int:
        """Commands clients sent (a script's own calls inside Redis are not round trips)."""
        stats = self.client.info("commandstats")
        return sum(
            int(entry["calls"])
            for name, entry in stats.items()
            if name.removeprefix("cmdstat_").split("|")[0] in SENT
        )

    def close(self) -> None:
        self.client.close()
        self.process.terminate()
        self.process.wait(10)
        shutil.rmtree(self.folder, ignore_errors=True)


# ---------------------------------------------------------------- 1. closed-state overhead


def overhead(server: Redis, rounds: int, number: int) -> None:
    store = SharedBreakerStore(server.url, replica="bench", prefix="bench-overhead")
    huge = 10**9
    local = CircuitBreaker("local", CircuitBreakerConfig())
    shared = CircuitBreaker("shared", CircuitBreakerConfig(), store=store)
    local_fail = CircuitBreaker("local-fail", CircuitBreakerConfig(failure_threshold=huge))
    shared_fail = CircuitBreaker(
        "shared-fail", CircuitBreakerConfig(failure_threshold=huge), store=store
    )
    ns: dict[str, Any] = {
        "work": work,
        "failing": failing,
        "Down": Down,
        "local": local,
        "shared": shared,
        "local_dec": local(work),
        "shared_dec": shared(work),
        "local_fail": local_fail,
        "shared_fail": shared_fail,
    }
    fail = "try:\n    {}.call(failing)\nexcept Down:\n    pass"
    lines = {
        "call(fn)": ("local.call(work)", "shared.call(work)", "work()"),
        "@breaker": ("local_dec()", "shared_dec()", "work()"),
        "failure": (
            fail.format("local_fail"),
            fail.format("shared_fail"),
            "try:\n    failing()\nexcept Down:\n    pass",
        ),
    }
    best: dict[tuple[str, str], float] = {}
    for _ in range(rounds):
        for line, (local_stmt, shared_stmt, bare) in lines.items():
            n = number // 10 if line == "failure" else number
            for key, stmt in (("local", local_stmt), ("shared", shared_stmt), ("bare", bare)):
                took = timeit.Timer(stmt, globals=ns).timeit(n) / n
                best[(line, key)] = min(best.get((line, key), float("inf")), took)
    print("closed-state overhead per call (best of rounds, bare call subtracted)")
    print(f"  {'':10} {'local':>10} {'shared':>10} {'shared/local':>13}")
    for line in lines:
        bare = best[(line, "bare")]
        loc = (best[(line, "local")] - bare) * 1e9
        sha = (best[(line, "shared")] - bare) * 1e9
        print(f"  {line:10} {loc:8.0f}ns {sha:8.0f}ns {sha / loc:12.2f}x")
    store.flush()
    sent = shared_fail.stats().fleet
    assert sent is not None
    recorded = shared_fail.stats().failure_count
    print(
        f"  (failures recorded by the shared breaker: {recorded:,}; in the fleet: "
        f"{sent.failure_count:,})"
    )
    store.close()


# ---------------------------------------------------------------- replicas in processes


class Replica:
    def __init__(self, url: str, prefix: str, name: str, config: dict[str, Any]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--replica", name, url, prefix, json.dumps(config)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.read() == "ready"

    def send(self, **command: Any) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()

    def read(self) -> Any:
        assert self.process.stdout is not None
        return json.loads(self.process.stdout.readline())

    def ask(self, **command: Any) -> Any:
        self.send(**command)
        return self.read()

    def close(self) -> None:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.close()
        self.process.wait(10)
        self.process.stdout.close()


def replica_main(name: str, url: str, prefix: str, config: str) -> None:
    """A replica: its breaker on a store, driven by JSON lines on stdin."""
    store = SharedBreakerStore(url, replica=name, prefix=prefix)
    breaker = CircuitBreaker("dep", CircuitBreakerConfig(**json.loads(config)), store=store)
    opened: list[float] = []

    def heard(event: CircuitEvent) -> None:
        if event.kind == "opened":
            opened.append(time.monotonic())

    breaker.subscribe(heard)
    print(json.dumps("ready"), flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        op = command["op"]
        answer: Any = None
        if op == "fail":
            for _ in range(command["n"]):
                with contextlib.suppress(Exception):
                    breaker.call(failing)
            answer = time.monotonic()
        elif op == "opened":
            deadline = time.monotonic() + 5
            while not opened and time.monotonic() < deadline:
                time.sleep(0.0005)
            answer = opened[-1] if opened else None
            opened.clear()
        elif op == "reset":
            breaker.reset()
            store.flush()
        elif op == "closed":
            deadline = time.monotonic() + 5
            while breaker.state.value != "closed" and time.monotonic() < deadline:
                time.sleep(0.001)
            store.flush()
            opened.clear()
        elif op == "calls":
            answer = steady_calls(breaker, command["rate"], command["seconds"], command["fail"])
        print(json.dumps(answer), flush=True)
    store.close()


def steady_calls(breaker: CircuitBreaker, rate: float, seconds: float, fail_every: int) -> int:
    """Call at *rate* per second for *seconds*; every *fail_every*-th call fails (0: none)."""
    calls = int(rate * seconds)
    start = time.monotonic()
    for i in range(calls):
        wait = start + i / rate - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        with contextlib.suppress(Exception):
            breaker.call(failing if fail_every and i % fail_every == 0 else work)
    return calls


# ---------------------------------------------------------------- 2. trip propagation


def propagation(server: Redis, iterations: int) -> None:
    config = {"failure_threshold": 3, "minimum_requests": 1, "recovery_timeout": 60}
    print("time from the tripping failure to every other replica rejecting (3 processes)")
    for label, spread in (("failures spread over 3 replicas", True), ("one replica alone", False)):
        replicas = [Replica(server.url, f"bench-trip-{spread}", f"r{i}", config) for i in range(3)]
        lags: list[float] = []
        try:
            for _ in range(iterations):
                if spread:
                    replicas[1].ask(op="fail", n=1)
                    replicas[2].ask(op="fail", n=1)
                    time.sleep(0.06)  # as in life, the tripping failure comes a moment later
                    failed_at = replicas[0].ask(op="fail", n=1)
                else:
                    failed_at = replicas[0].ask(op="fail", n=3)
                seen = [r.ask(op="opened") for r in replicas[1:]]
                if None in seen:
                    print("  a replica did not open within 5 s")
                    break
                lags.append(max(seen) - failed_at)
                replicas[0].ask(op="reset")
                for replica in replicas:
                    replica.ask(op="closed")
                time.sleep(0.06)
        finally:
            for replica in replicas:
                replica.close()
        lags.sort()
        print(
            f"  {label:34} p50 {statistics.median(lags) * 1e3:6.2f} ms  "
            f"p99 {rank(lags, 0.99) * 1e3:6.2f} ms  max {lags[-1] * 1e3:6.2f} ms  "
            f"({len(lags)} trips)"
        )


def rank(ordered: list[float], q: float) -> float:
    """The nearest-rank percentile *q* of *ordered* (p99 of 100 values is the 99th, not the
    largest)."""
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


# ---------------------------------------------------------------- 3. Redis commands per call


# The rate rule alone (the count rule out of the way): 10% failures never trip it.
RATE = {"failure_rate_threshold": 0.5, "minimum_requests": 20, "failure_threshold": 10**6}


def commands(server: Redis, seconds: float) -> None:
    print("Redis commands sent per 1,000 calls per replica (3 replica processes, steady rate)")
    print(f"  {'rule':12} {'calls/s':>8} {'failures':>9} {'per 1,000 calls':>16} {'per s':>7}")
    cases = [
        ("count only", {}, 1000, 0),
        ("count only", {}, 100, 0),
        ("count only", {"failure_threshold": 10**6}, 1000, 10),
        ("rate 50%", RATE, 1000, 0),
        ("rate 50%", RATE, 100, 0),
        ("rate 50%", RATE, 1000, 10),
    ]
    for n, (rule, config, rate, fail_every) in enumerate(cases):
        replicas = [Replica(server.url, f"bench-cmd-{n}", f"r{i}", config) for i in range(3)]
        try:
            time.sleep(0.3)  # past start-up: joining the fleet is not a per-call cost
            before = server.commands()
            for replica in replicas:
                replica.send(op="calls", rate=rate, seconds=seconds, fail=fail_every)
            calls = sum(replica.read() for replica in replicas)
            used = server.commands() - before
        finally:
            for replica in replicas:
                replica.close()
        failures = f"{100 // fail_every}%" if fail_every else "0%"
        per_thousand = used / calls * 1000
        per_second = used / 3 / seconds
        print(f"  {rule:12} {rate:8} {failures:>9} {per_thousand:16.1f} {per_second:7.1f}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--replica":
        replica_main(*sys.argv[2:6])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, shorter runs")
    args = parser.parse_args()
    server = Redis()
    try:
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        print(
            f"Python {sys.version.split()[0]}, {os.cpu_count()} cores (load average {load}), "
            "redis-server on loopback"
        )
        # Many short rounds, the best kept: on a shared machine some of them run undisturbed.
        overhead(server, rounds=3 if args.quick else 20, number=100_000)
        propagation(server, iterations=20 if args.quick else 100)
        commands(server, seconds=1.0 if args.quick else 3.0)
    finally:
        server.close()


if __name__ == "__main__":
    main()
