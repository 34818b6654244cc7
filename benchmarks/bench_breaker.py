"""Per-call overhead of Synapse's circuit breaker next to pybreaker, circuitbreaker, aiobreaker, purgatory.

Three lines, each measured for every library in the same run, interleaved round by round so
machine noise hits everyone alike; the best (minimum) round is kept:

* sync success: a guarded call of a function returning a constant, minus the bare call;
* async success: the same for a coroutine, awaited in one event loop, minus the bare await;
* open rejection: a call refused by an open breaker, caught, minus raising and catching a new
  exception of our own;
* closed failure: a guarded call that raises, recorded as a failure by a breaker that stays
  closed, minus the bare call raising and being caught (no target: it is not a hot path, but
  it is where the trip rule is judged).

Synapse also runs "sync success" with the rate rules on (``failure_rate_threshold``), whose
verdict is judged as the window ages too.

Run with ``make bench`` or ``python benchmarks/bench_breaker.py [--quick] [--rounds N]``.
Ratios are the fastest peer's overhead divided by ours (2.0x = half the overhead).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import platform
import sys
import timeit
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import aiobreaker
import circuitbreaker
import purgatory
import pybreaker

from synapse_core import CircuitBreaker, CircuitBreakerConfig, CircuitOpenError

TARGETS_NS: dict[str, int | None] = {
    "sync success": 500,
    "async success": 700,
    "open rejection": 600,
    "closed failure": None,
}


def work() -> int:
    return 1


async def awork() -> int:
    return 1


class Down(Exception):
    """The failure used to trip every breaker."""


def failing() -> None:
    raise Down()


class BareError(Exception):
    pass


def bare_raise() -> None:
    raise BareError()


@dataclass
class Candidate:
    line: str
    library: str
    form: str
    run: Callable[[int], float]  # runs n calls, returns seconds
    best: float = float("inf")
    samples: list[float] = field(default_factory=list)


def sync_timer(stmt: str, namespace: dict[str, Any]) -> Callable[[int], float]:
    timer = timeit.Timer(stmt, globals=namespace)
    return timer.timeit


def async_timer(
    body: str, namespace: dict[str, Any], loop: asyncio.AbstractEventLoop
) -> Callable[[int], float]:
    source = (
        "async def _bench(n):\n"
        "    import time\n"
        "    t0 = time.perf_counter()\n"
        "    for _ in range(n):\n"
        f"        {body}\n"
        "    return time.perf_counter() - t0\n"
    )
    scope = dict(namespace)
    exec(source, scope)
    bench = scope["_bench"]
    return lambda n: loop.run_until_complete(bench(n))


def trip(fn: Callable[[], object]) -> None:
    for _ in range(10):
        with contextlib.suppress(Exception):
            fn()


def build(loop: asyncio.AbstractEventLoop) -> tuple[list[Candidate], dict[str, Candidate]]:
    ns: dict[str, Any] = {
        "work": work,
        "awork": awork,
        "bare_raise": bare_raise,
        "BareError": BareError,
        "CircuitOpenError": CircuitOpenError,
    }
    huge = 10**9

    # Synapse, default config (rules as in production, nothing disabled).
    syn = CircuitBreaker("bench")
    ns["syn"] = syn
    ns["syn_dec"] = syn(work)
    ns["syn_adec"] = syn(awork)
    syn_open = CircuitBreaker("bench-open", CircuitBreakerConfig(recovery_timeout=huge))
    trip(lambda: syn_open.call(failing))
    ns["syn_open"] = syn_open
    rates = CircuitBreakerConfig(failure_rate_threshold=0.5, minimum_requests=10)
    ns["syn_rate"] = CircuitBreaker("bench-rate", rates)
    ns["syn_fail"] = CircuitBreaker("bench-fail", CircuitBreakerConfig(failure_threshold=huge))
    ns["failing"] = failing
    ns["Down"] = Down

    pb = pybreaker.CircuitBreaker(fail_max=huge)
    ns["pb"] = pb
    ns["pb_dec"] = pb(work)
    pb_open = pybreaker.CircuitBreaker(fail_max=1, reset_timeout=huge)
    trip(lambda: pb_open.call(failing))
    ns["pb_open"] = pb_open
    ns["PbError"] = pybreaker.CircuitBreakerError
    ns["pb_fail"] = pybreaker.CircuitBreaker(fail_max=huge)

    cb = circuitbreaker.CircuitBreaker(failure_threshold=huge)
    ns["cb_dec"] = cb(work)
    ns["cb_adec"] = circuitbreaker.CircuitBreaker(failure_threshold=huge)(awork)
    cb_open_breaker = circuitbreaker.CircuitBreaker(failure_threshold=1, recovery_timeout=huge)
    cb_open = cb_open_breaker(failing)
    trip(cb_open)
    ns["cb_open"] = cb_open
    ns["CbError"] = circuitbreaker.CircuitBreakerError
    ns["cb_fail"] = circuitbreaker.CircuitBreaker(failure_threshold=huge)(failing)

    ab = aiobreaker.CircuitBreaker(fail_max=huge)
    ns["ab"] = ab
    ab_open = aiobreaker.CircuitBreaker(fail_max=1, timeout_duration=timedelta(days=1000))
    trip(lambda: ab_open.call(failing))
    ns["ab_open"] = ab_open
    ns["AbError"] = aiobreaker.CircuitBreakerError
    ns["ab_fail"] = aiobreaker.CircuitBreaker(fail_max=huge)

    pf = purgatory.SyncCircuitBreakerFactory(default_threshold=huge)
    ns["pg"] = pf.get_breaker("bench")
    ns["pg_dec"] = pf("bench")(work)
    pf_open = purgatory.SyncCircuitBreakerFactory(default_threshold=1, default_ttl=huge)
    pg_open = pf_open.get_breaker("open")

    def pg_fail() -> None:
        with pg_open:
            failing()

    trip(pg_fail)
    ns["pg_open"] = pg_open
    ns["pg_fail"] = purgatory.SyncCircuitBreakerFactory(default_threshold=huge).get_breaker("fail")
    apf = purgatory.AsyncCircuitBreakerFactory(default_threshold=huge)
    ns["apg"] = loop.run_until_complete(apf.get_breaker("bench"))
    from purgatory.domain.model import OpenedState

    ns["PgError"] = OpenedState  # purgatory raises its OpenedState exception while open

    s = lambda stmt: sync_timer(stmt, ns)  # noqa: E731
    a = lambda body: async_timer(body, ns, loop)  # noqa: E731
    rej = lambda call, exc: s(f"try:\n    {call}\nexcept {exc}:\n    pass")  # noqa: E731

    candidates = [
        Candidate("sync success", "synapse", "breaker.call(fn)", s("syn.call(work)")),
        Candidate("sync success", "synapse", "@breaker", s("syn_dec()")),
        Candidate("sync success", "synapse", "with breaker:", s("with syn:\n    work()")),
        Candidate("sync success", "synapse", "call(fn), rate rules", s("syn_rate.call(work)")),
        Candidate("sync success", "pybreaker", "breaker.call(fn)", s("pb.call(work)")),
        Candidate("sync success", "pybreaker", "@breaker", s("pb_dec()")),
        Candidate("sync success", "circuitbreaker", "@circuit", s("cb_dec()")),
        Candidate("sync success", "aiobreaker", "breaker.call(fn)", s("ab.call(work)")),
        Candidate("sync success", "purgatory", "with breaker:", s("with pg:\n    work()")),
        Candidate("sync success", "purgatory", "@factory(name)", s("pg_dec()")),
        Candidate(
            "async success", "synapse", "await call_async(fn)", a("await syn.call_async(awork)")
        ),
        Candidate("async success", "synapse", "@breaker (async)", a("await syn_adec()")),
        Candidate(
            "async success",
            "synapse",
            "async with breaker:",
            a("async with syn:\n            await awork()"),
        ),
        Candidate("async success", "circuitbreaker", "@circuit (async)", a("await cb_adec()")),
        Candidate(
            "async success", "aiobreaker", "await call_async(fn)", a("await ab.call_async(awork)")
        ),
        Candidate(
            "async success",
            "purgatory",
            "async with breaker:",
            a("async with apg:\n            await awork()"),
        ),
        Candidate(
            "open rejection",
            "synapse",
            "breaker.call(fn)",
            rej("syn_open.call(work)", "CircuitOpenError"),
        ),
        Candidate(
            "open rejection", "pybreaker", "breaker.call(fn)", rej("pb_open.call(work)", "PbError")
        ),
        Candidate("open rejection", "circuitbreaker", "@circuit", rej("cb_open()", "CbError")),
        Candidate(
            "open rejection", "aiobreaker", "breaker.call(fn)", rej("ab_open.call(work)", "AbError")
        ),
        Candidate(
            "open rejection",
            "purgatory",
            "with breaker:",
            rej("with pg_open:\n        work()", "PgError"),
        ),
    ]
    candidates += [
        Candidate(
            "closed failure", "synapse", "breaker.call(fn)", rej("syn_fail.call(failing)", "Down")
        ),
        Candidate(
            "closed failure", "pybreaker", "breaker.call(fn)", rej("pb_fail.call(failing)", "Down")
        ),
        Candidate("closed failure", "circuitbreaker", "@circuit", rej("cb_fail()", "Down")),
        Candidate(
            "closed failure", "aiobreaker", "breaker.call(fn)", rej("ab_fail.call(failing)", "Down")
        ),
        Candidate(
            "closed failure",
            "purgatory",
            "with breaker:",
            rej("with pg_fail:\n        failing()", "Down"),
        ),
    ]
    baselines = {
        "sync success": Candidate("sync success", "baseline", "fn()", s("work()")),
        "async success": Candidate("async success", "baseline", "await fn()", a("await awork()")),
        "open rejection": Candidate(
            "open rejection", "baseline", "raise+catch", rej("bare_raise()", "BareError")
        ),
        "closed failure": Candidate(
            "closed failure", "baseline", "fn() raises, caught", rej("failing()", "Down")
        ),
    }
    return candidates, baselines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--calls", type=int, default=None, help="calls per round")
    args = parser.parse_args(argv)
    rounds = args.rounds or (5 if args.quick else 15)
    calls = args.calls or (20_000 if args.quick else 100_000)

    loop = asyncio.new_event_loop()
    try:
        candidates, baselines = build(loop)
        everything = [*baselines.values(), *candidates]
        for _ in range(rounds):
            for cand in everything:
                seconds = cand.run(calls)
                cand.samples.append(seconds)
                cand.best = min(cand.best, seconds)
    finally:
        loop.close()

    print(
        f"Python {platform.python_version()} ({platform.python_implementation()}, "
        f"{sys.executable}), {rounds} interleaved rounds x {calls} calls, best round kept"
    )
    print(
        f"{'line':<15} {'library':<15} {'form':<22} {'ns/call':>8} {'overhead':>9}  vs fastest peer"
    )
    verdicts = []
    for line in TARGETS_NS:
        base = baselines[line].best / calls * 1e9
        rows = [c for c in candidates if c.line == line]
        overhead = {id(c): c.best / calls * 1e9 - base for c in rows}
        peers = [c for c in rows if c.library != "synapse"]
        fastest_peer = min(peers, key=lambda c: overhead[id(c)])
        peer_ns = overhead[id(fastest_peer)]
        print(f"{line:<15} {'(baseline)':<15} {baselines[line].form:<22} {base:8.0f} {'':>9}")
        for cand in sorted(rows, key=lambda c: overhead[id(c)]):
            ns = overhead[id(cand)]
            ratio = peer_ns / ns if ns > 0 else float("inf")
            mark = f"{ratio:5.2f}x" if cand.library == "synapse" else ""
            print(
                f"{'':<15} {cand.library:<15} {cand.form:<22} {cand.best / calls * 1e9:8.0f} {ns:9.0f}  {mark}"
            )
        ours = [c for c in rows if c.library == "synapse"]
        best_ours = min(ours, key=lambda c: overhead[id(c)])
        ns = overhead[id(best_ours)]
        ratio = peer_ns / ns if ns > 0 else float("inf")
        target = TARGETS_NS[line]
        verdict = (
            f"{line}: synapse {ns:.0f} ns ({best_ours.form}) vs fastest peer "
            f"{fastest_peer.library} {peer_ns:.0f} ns = {ratio:.2f}x"
        )
        if target is not None:
            verdict += (
                f"; target <= {target} ns: {'met' if ns <= target else 'MISSED'}, "
                f">= 1.5x: {'met' if ratio >= 1.5 else 'MISSED'}"
            )
        verdicts.append(verdict)
    print()
    for verdict in verdicts:
        print(verdict)
    return 0


if __name__ == "__main__":
    sys.exit(main())
