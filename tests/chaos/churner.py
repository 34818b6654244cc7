"""Toxic churn against one proxy, as fast as the API answers; prints a JSON report.

``python churner.py URL PROXY SECONDS SEED``: adds, updates and removes toxics of every type on
both directions of *PROXY* (and reads ``/proxies`` and ``/metrics``) for *SECONDS*, timing every
request. Run as a process of its own by tests/chaos/test_churn.py (and usable by hand), so the
request times are the server's, not those of a busy test process.
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections.abc import Callable
from typing import Any

from chaos import ToxiproxyClient
from chaos.errors import ToxiproxyError

# (type, attributes, toxicity range): bounded so that every stream keeps making progress
TOXICS: list[tuple[str, dict[str, tuple[int, int]], tuple[float, float]]] = [
    ("latency", {"latency": (0, 40), "jitter": (0, 20)}, (0.5, 1.0)),
    ("bandwidth", {"rate": (0, 4000)}, (0.5, 1.0)),
    (
        "slicer",
        {"average_size": (0, 2048), "size_variation": (0, 512), "delay": (0, 500)},
        (0.5, 1.0),
    ),
    ("slow_close", {"delay": (0, 100)}, (0.5, 1.0)),
    ("noop", {}, (0.5, 1.0)),
    ("timeout", {"timeout": (0, 200)}, (0.02, 0.1)),
    ("reset_peer", {"timeout": (0, 200)}, (0.02, 0.1)),
    ("limit_data", {"bytes": (1_000, 200_000)}, (0.02, 0.1)),
]

MAX_TOXICS = 12


class Churner:
    """Adds, updates and removes toxics as fast as the API answers, timing every request."""

    def __init__(self, client: ToxiproxyClient, proxy: str, seed: int) -> None:
        self.client = client
        self.proxy = proxy
        self.rng = random.Random(seed)
        self.latencies: list[float] = []
        self.operations = 0
        self.errors: list[str] = []
        self._names: dict[str, str] = {}  # toxic name -> type
        self._serial = 0

    def run(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._step()

    def _timed(self, call: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        try:
            return call()
        finally:
            self.latencies.append(time.perf_counter() - start)
            self.operations += 1

    def _attributes(self, kind: str) -> dict[str, int]:
        spec = next(t for t in TOXICS if t[0] == kind)
        return {name: self.rng.randint(*bounds) for name, bounds in spec[1].items()}

    def _toxicity(self, kind: str) -> float:
        low, high = next(t for t in TOXICS if t[0] == kind)[2]
        return round(self.rng.uniform(low, high), 3)

    def _step(self) -> None:
        roll = self.rng.random()
        try:
            if roll < 0.05:
                self._timed(self.client.proxies)
            elif roll < 0.1:
                self._timed(self.client.metrics)
            elif roll < 0.45 or not self._names:
                if len(self._names) < MAX_TOXICS:
                    kind = self.rng.choice(TOXICS)[0]
                    self._serial += 1
                    name = f"{kind}-{self._serial}"
                    stream = self.rng.choice(["upstream", "downstream"])
                    self._timed(
                        lambda: self.client.add_toxic(
                            self.proxy,
                            kind,
                            name=name,
                            stream=stream,  # type: ignore[arg-type]
                            toxicity=self._toxicity(kind),
                            attributes=self._attributes(kind),
                        )
                    )
                    self._names[name] = kind
            elif roll < 0.75:
                name, kind = self.rng.choice(list(self._names.items()))
                self._timed(
                    lambda: self.client.update_toxic(
                        self.proxy,
                        name,
                        toxicity=self._toxicity(kind),
                        attributes=self._attributes(kind),
                    )
                )
            else:
                name = self.rng.choice(list(self._names))
                self._timed(lambda: self.client.remove_toxic(self.proxy, name))
                del self._names[name]
        except ToxiproxyError as exc:
            self.errors.append(str(exc))

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[int(len(ordered) * fraction)] if ordered else 0.0


def main(argv: list[str]) -> int:
    url, proxy, seconds, seed = argv
    churner = Churner(ToxiproxyClient(url, timeout=10), proxy, int(seed))
    churner.run(float(seconds))
    report = {
        "operations": churner.operations,
        "p50": churner.percentile(0.5),
        "p99": churner.percentile(0.99),
        "errors": churner.errors,
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
