"""One replica of a service, in its own process: a breaker shared through a Redis store.

``python shared_replica.py NAME OPTIONS_JSON CONFIG_JSON`` prints ``{"ready": true}`` once its
breaker joined the fleet, then answers one JSON line per command line on stdin:

* ``{"op": "fail", "n": 2}`` / ``{"op": "succeed", "n": 2}``: that many guarded calls that
  raise / return; answers ``{"ran": k, "rejected": r}``. Anything else raised is reported as
  an error (nothing from the store may reach the caller).
* ``{"op": "wait", "state": "open", "within": 2.0}``: until the breaker shows that state;
  answers ``{"state": ..., "ok": bool}``.
* ``{"op": "probes", "threads": 4, "hold": 0.3}``: that many threads call at once, each call
  taking *hold* seconds; answers ``{"admitted": a, "rejected": r}``.
* ``{"op": "hold"}``: acquire a permit and keep it, never reporting (a probe that never
  ends); answers ``{"admitted": bool}``.
* ``{"op": "flush"}``, ``{"op": "stats"}``, ``{"op": "events"}`` (transitions seen, with the
  replica that caused each), ``{"op": "force_close"}``.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any

from synapse_core import CallPermit, CircuitBreaker, CircuitBreakerConfig, CircuitOpenError
from synapse_core.breaker import CircuitEvent
from synapse_core.breaker.shared import SharedBreakerStore


class Down(Exception):
    """The dependency failed."""


HELD: list[CallPermit] = []  # permits kept by "hold", until the process dies


def main() -> None:
    name = sys.argv[1]
    options = json.loads(sys.argv[2])
    config = CircuitBreakerConfig(**json.loads(sys.argv[3]))
    store = SharedBreakerStore(
        options["url"],
        replica=name,
        prefix=options["prefix"],
        cluster=options["cluster"],
        timeout=0.25,
        sync_interval=0.5,
        reconnect_interval=0.2,
    )
    breaker = CircuitBreaker("inventory", config, store=store)
    transitions: list[dict[str, Any]] = []

    def heard(event: CircuitEvent) -> None:
        if event.kind in ("opened", "half_opened", "closed"):
            transitions.append({"kind": event.kind, "replica": getattr(event, "replica", None)})

    breaker.subscribe(heard)
    say({"ready": True})
    try:
        for line in sys.stdin:
            command = json.loads(line)
            try:
                say(run(breaker, store, transitions, command))
            except Exception as exc:
                say({"error": f"{type(exc).__name__}: {exc}"})
    finally:
        store.close()


def run(
    breaker: CircuitBreaker,
    store: SharedBreakerStore,
    transitions: list[dict[str, Any]],
    command: dict[str, Any],
) -> Any:
    op = command["op"]
    if op in ("fail", "succeed"):
        ran = rejected = 0
        for _ in range(command["n"]):
            try:
                breaker.call(_fail if op == "fail" else _succeed)
                ran += 1
            except Down:
                ran += 1
            except CircuitOpenError:
                rejected += 1
        return {"ran": ran, "rejected": rejected}
    if op == "wait":
        deadline = time.monotonic() + command["within"]
        while breaker.state.value != command["state"] and time.monotonic() < deadline:
            time.sleep(0.002)
        return {"state": breaker.state.value, "ok": breaker.state.value == command["state"]}
    if op == "probes":
        return probes(breaker, command["threads"], command["hold"])
    if op == "hold":
        permit = breaker.try_acquire()
        if permit is not None:
            HELD.append(permit)
        return {"admitted": permit is not None}
    if op == "flush":
        return {"flushed": store.flush()}
    if op == "stats":
        return breaker.stats().to_dict()
    if op == "events":
        return transitions
    if op == "force_close":
        breaker.force_close()
        return {"state": breaker.state.value}
    raise ValueError(f"unknown op {op!r}")


def probes(breaker: CircuitBreaker, threads: int, hold: float) -> dict[str, int]:
    counts = {"admitted": 0, "rejected": 0}
    lock = threading.Lock()
    start = threading.Barrier(threads)

    def attempt() -> None:
        start.wait()
        try:
            breaker.call(time.sleep, hold)
            key = "admitted"
        except CircuitOpenError:
            key = "rejected"
        with lock:
            counts[key] += 1

    workers = [threading.Thread(target=attempt) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return counts


def _fail() -> None:
    raise Down("the dependency failed")


def _succeed() -> int:
    return 1


def say(answer: Any) -> None:
    sys.stdout.write(json.dumps(answer) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
