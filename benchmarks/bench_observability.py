"""What observability costs: scrapes of 1,000 breakers, and breaker calls while observed.

* scrape: ``/metrics`` text for 1,000 breakers (``BreakerCollector``, built at scrape time), the
  ``/breakers`` document, and both over real HTTP from ``serve_health``; next to the usual
  alternative, a ``prometheus_client`` counter incremented on every call, whose cost is per
  call instead;
* calls: ``make bench``'s Synapse lines (sync success, async success, open rejection, closed
  failure), measured in the same run, interleaved round by round, on plain breakers and on
  breakers that a registered collector and a connected dashboard (``/events`` read by a client,
  its stats ticker running) observe; the ratio should be 1.00x;
* a transition's way to a connected dashboard client: from the breaker opening to the event
  read from the socket.

Run with ``make bench`` or ``python benchmarks/bench_observability.py [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import platform
import statistics
import sys
import threading
import time
import timeit
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, generate_latest

sys.path.insert(0, str(Path(__file__).parent))
from bench_breaker import (
    BareError,
    Candidate,
    Down,
    async_timer,
    awork,
    bare_raise,
    failing,
    sync_timer,
    trip,
    work,
)

from synapse_core import (
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitBreakerManager,
    CircuitOpenError,
)
from synapse_core.health import serve_health
from synapse_core.metrics import metrics_registry

HUGE = 10**9


def best_ms(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    """(best, median) milliseconds of *repeat* runs of *fn*."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return min(times), statistics.median(times)


def populated_manager(count: int) -> CircuitBreakerManager:
    """*count* breakers with some history each (calls, failures, a few open)."""
    manager = CircuitBreakerManager()
    for i in range(count):
        breaker = manager.get_or_create(f"dependency-{i:04d}")
        for _ in range(5):
            breaker.call(work)
        if i % 10 == 0:
            trip(lambda b=breaker: b.call(failing))  # type: ignore[misc]
    return manager


def get(host: str, port: int, path: str) -> bytes:
    connection = http.client.HTTPConnection(host, port, timeout=30)
    try:
        connection.request("GET", path)
        return connection.getresponse().read()
    finally:
        connection.close()


def scrape_section(repeat: int) -> None:
    manager = populated_manager(1000)
    registry = metrics_registry(manager)
    text = generate_latest(registry)
    print(
        f"scrape of 1,000 breakers ({len(text) / 1024:.0f} KiB of text), best / median of {repeat}:"
    )
    best, median = best_ms(lambda: generate_latest(registry), repeat)
    print(f"  /metrics text, in process        {best:7.2f} ms  {median:7.2f} ms")
    with serve_health(manager) as server:
        best, median = best_ms(server.endpoints.breakers, repeat)
        print(f"  /breakers document, in process   {best:7.2f} ms  {median:7.2f} ms")
        best, median = best_ms(lambda: get(server.host, server.port, "/metrics"), repeat)
        print(f"  GET /metrics over HTTP           {best:7.2f} ms  {median:7.2f} ms")
        best, median = best_ms(lambda: get(server.host, server.port, "/breakers"), repeat)
        print(f"  GET /breakers over HTTP          {best:7.2f} ms  {median:7.2f} ms")

    # The usual alternative: count in a listener on every call instead of at scrape time.
    calls = 200_000
    plain = CircuitBreaker("plain")
    counted = CircuitBreaker("counted")
    per_call = Counter("bench_calls", "calls", ["breaker"], registry=CollectorRegistry())
    child = per_call.labels("counted")

    def counted_call() -> int:
        result = counted.call(work)
        child.inc()
        return result

    rounds = {"ours (nothing per call)": [], "prometheus Counter.inc() per call": []}
    for _ in range(5):
        rounds["ours (nothing per call)"].append(
            timeit.timeit(lambda: plain.call(work), number=calls)
        )
        rounds["prometheus Counter.inc() per call"].append(
            timeit.timeit(counted_call, number=calls)
        )
    base = min(rounds["ours (nothing per call)"]) / calls * 1e9
    print("cost per call of counting calls for Prometheus:")
    for name, samples in rounds.items():
        ns = min(samples) / calls * 1e9
        print(f"  {name:<36} {ns:7.0f} ns/call  (+{ns - base:.0f} ns)")


def stream_reader(host: str, port: int, stop: threading.Event, seen: list[float]) -> None:
    """A dashboard client: reads /events, notes when each transition event arrives."""
    connection = http.client.HTTPConnection(host, port, timeout=60)
    connection.request("GET", "/events")
    response = connection.getresponse()
    try:
        while not stop.is_set():
            line = response.fp.readline()
            if not line:
                return
            if line.startswith(b"event: transition"):
                seen.append(time.perf_counter())
    finally:
        response.close()
        connection.close()


def calls_section(rounds: int, calls: int) -> None:
    loop = asyncio.new_event_loop()
    manager = CircuitBreakerManager()
    server = serve_health(manager)  # a collector registered, the dashboard's feed
    stop = threading.Event()
    seen: list[float] = []
    reader = threading.Thread(
        target=stream_reader, args=(server.host, server.port, stop, seen), daemon=True
    )
    reader.start()
    deadline = time.monotonic() + 10
    while server.endpoints.feed.subscribers < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        candidates: list[Candidate] = []
        for variant, where in (("plain", None), ("observed", manager)):
            ns: dict[str, object] = {
                "work": work,
                "awork": awork,
                "failing": failing,
                "Down": Down,
                "CircuitOpenError": CircuitOpenError,
            }

            def make(
                name: str,
                config: CircuitBreakerConfig | None = None,
                variant: str = variant,
                where: CircuitBreakerManager | None = where,
            ) -> CircuitBreaker:
                breaker = CircuitBreaker(f"{variant}-{name}", config)
                if where is not None:
                    where.add_breaker(breaker.name, breaker)
                return breaker

            syn = make("bench")
            ns["syn"], ns["syn_dec"], ns["syn_adec"] = syn, syn(work), syn(awork)
            syn_open = make("open", CircuitBreakerConfig(recovery_timeout=HUGE))
            trip(lambda b=syn_open: b.call(failing))  # type: ignore[misc]
            ns["syn_open"] = syn_open
            ns["syn_fail"] = make("fail", CircuitBreakerConfig(failure_threshold=HUGE))
            s = lambda stmt, ns=ns: sync_timer(stmt, ns)  # noqa: E731
            a = lambda body, ns=ns: async_timer(body, ns, loop)  # noqa: E731
            rej = lambda call, exc, s=s: s(f"try:\n    {call}\nexcept {exc}:\n    pass")  # noqa: E731
            candidates += [
                Candidate("sync success", variant, "breaker.call(fn)", s("syn.call(work)")),
                Candidate("sync success", variant, "@breaker", s("syn_dec()")),
                Candidate("sync success", variant, "with breaker:", s("with syn:\n    work()")),
                Candidate(
                    "async success",
                    variant,
                    "await call_async(fn)",
                    a("await syn.call_async(awork)"),
                ),
                Candidate("async success", variant, "@breaker (async)", a("await syn_adec()")),
                Candidate(
                    "open rejection",
                    variant,
                    "breaker.call(fn)",
                    rej("syn_open.call(work)", "CircuitOpenError"),
                ),
                Candidate(
                    "closed failure",
                    variant,
                    "breaker.call(fn)",
                    rej("syn_fail.call(failing)", "Down"),
                ),
            ]
        bns = {
            "work": work,
            "awork": awork,
            "bare_raise": bare_raise,
            "BareError": BareError,
            "failing": failing,
            "Down": Down,
        }
        baselines = {
            "sync success": sync_timer("work()", bns),
            "async success": async_timer("await awork()", bns, loop),
            "open rejection": sync_timer(
                "try:\n    bare_raise()\nexcept BareError:\n    pass", bns
            ),
            "closed failure": sync_timer("try:\n    failing()\nexcept Down:\n    pass", bns),
        }
        base_best = dict.fromkeys(baselines, float("inf"))
        for round_ in range(rounds):
            for line, run in baselines.items():
                base_best[line] = min(base_best[line], run(calls))
            # Plain first in even rounds, observed first in odd ones: order is no advantage.
            for cand in candidates if round_ % 2 == 0 else reversed(candidates):
                cand.best = min(cand.best, cand.run(calls))
        subscribers = server.endpoints.feed.subscribers
    finally:
        stop.set()
        server.close()
        loop.close()
    print(
        f"breaker calls, plain vs observed (a collector registered, {subscribers} dashboard "
        f"client connected), {rounds} interleaved rounds x {calls} calls, best round, overhead ns:"
    )
    print(f"  {'line':<15} {'form':<22} {'plain':>7} {'observed':>9}  observed/plain")
    by_key = {(c.line, c.library, c.form): c for c in candidates}
    for cand in candidates:
        if cand.library != "plain":
            continue
        base = base_best[cand.line] / calls * 1e9
        plain = cand.best / calls * 1e9 - base
        other = by_key[(cand.line, "observed", cand.form)].best / calls * 1e9 - base
        ratio = other / plain if plain > 0 else float("nan")
        print(f"  {cand.line:<15} {cand.form:<22} {plain:7.0f} {other:9.0f}  {ratio:5.2f}x")


def latency_section(trips: int) -> None:
    manager = CircuitBreakerManager()
    breaker = manager.get_or_create("inventory", CircuitBreakerConfig(recovery_timeout=HUGE))
    with serve_health(manager) as server:
        connection = http.client.HTTPConnection(server.host, server.port, timeout=30)
        connection.request("GET", "/events")
        response = connection.getresponse()
        try:
            # The stream starts with a snapshot: a change made before it is in the snapshot.
            while not response.fp.readline().startswith(b"event: snapshot"):
                pass
            delays = []
            for _ in range(trips):
                started = time.perf_counter()
                breaker.force_open()
                while not response.fp.readline().startswith(b"event: transition"):
                    pass
                delays.append((time.perf_counter() - started) * 1000)
                breaker.force_close()
                while not response.fp.readline().startswith(b"event: transition"):
                    pass
        finally:
            response.close()
            connection.close()
    delays.sort()
    print(
        f"a transition to a connected /events client ({trips} trips): median "
        f"{statistics.median(delays):.2f} ms, p99 {delays[int(len(delays) * 0.99) - 1]:.2f} ms, "
        f"max {delays[-1]:.2f} ms"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds")
    args = parser.parse_args(argv)
    print(f"Python {platform.python_version()} ({platform.python_implementation()})")
    scrape_section(repeat=10 if args.quick else 30)
    calls_section(rounds=3 if args.quick else 9, calls=20_000 if args.quick else 100_000)
    latency_section(trips=50 if args.quick else 300)
    return 0


if __name__ == "__main__":
    sys.exit(main())
