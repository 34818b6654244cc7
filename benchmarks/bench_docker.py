"""Benchmark the Docker support: time to a ready chaos container, time per container fault/heal.

Usage:
    .venv/bin/python benchmarks/bench_docker.py [--rounds N]

Prints, in one run (medians of N rounds; the machine is noisy, so compare side by side):
  * time until a chaos server answers: the docker backend (container start, port publishing,
    API up) next to the embedded backend (a thread in this process), with the ratio;
  * for each container fault, the time to apply it and to heal it, next to the bare docker SDK
    call it wraps where there is one (pause/unpause, kill/start, disconnect/connect), so the
    ratio is what Synapse adds (bookkeeping, timeline, readiness checks); iptables faults
    (partition, isolate, flaky) next to a proxy toxic on the same chaos container.

Images come from docker/images.py (built on first use, cached). Without a Docker engine it says
why and exits 0. Everything it starts carries the run label and is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chaos import EmbeddedBackend  # noqa: E402
from chaos.docker import DockerBackend, engine_problem, partition, start_container  # noqa: E402

ECHO = [
    "python3",
    "-c",
    "import socket;s=socket.socket();s.bind(('0.0.0.0',7000));s.listen();"
    "import time;time.sleep(3600)",
]


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def row(name: str, ours: list[float], other: list[float] | None, other_name: str = "") -> None:
    text = f"  {name:<34} {median_ms(ours):9.1f} ms"
    if other:
        ratio = statistics.median(ours) / statistics.median(other)
        text += f"   {other_name:<22} {median_ms(other):9.1f} ms   x{ratio:5.2f}"
    print(text, flush=True)


def images() -> dict[str, str]:
    out = subprocess.run(
        [sys.executable, str(ROOT / "docker" / "images.py"), "chaos", "base", "--json"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    tags: dict[str, str] = json.loads(out)
    return tags


def bench_startup(tags: dict[str, str], rounds: int) -> None:
    docker_ready: list[float] = []
    embedded_ready: list[float] = []
    for _ in range(rounds):
        backend = DockerBackend(image=tags["chaos"])
        docker_ready.append(timed(backend.start))
        backend.stop()
        embedded = EmbeddedBackend()
        embedded_ready.append(timed(embedded.start))
        embedded.stop()
    print("time to a ready chaos server (API answering)")
    row("docker backend (container)", docker_ready, embedded_ready, "embedded (thread)")


def pair(
    fault: Callable[[], object], heal: Callable[[], object], rounds: int
) -> tuple[list[float], list[float]]:
    applied: list[float] = []
    healed: list[float] = []
    for _ in range(rounds):
        applied.append(timed(fault))
        healed.append(timed(heal))
    return applied, healed


def start_stop(make: Callable[[], object], rounds: int) -> tuple[list[float], list[float]]:
    """Apply/heal times of the fault *make* builds (a new one each round)."""
    current: dict[str, object] = {}

    def apply() -> None:
        current["f"] = make().start()  # type: ignore[attr-defined]

    def heal() -> None:
        current["f"].stop()  # type: ignore[attr-defined]

    return pair(apply, heal, rounds)


def bench_faults(tags: dict[str, str], rounds: int) -> None:
    with DockerBackend(image=tags["chaos"]) as backend:
        net = backend.network
        a = start_container(tags["base"], command=ECHO, network=net, ports=[7000])
        b = start_container(tags["base"], command=ECHO, network=net, ports=[7000])
        try:
            print(f"container faults: apply / heal (median of {rounds})")
            proxy = backend.create_proxy((a, 7000))
            toxic = {"f": None}

            def toxic_on() -> None:
                toxic["f"] = proxy.latency(10).start()

            def toxic_off() -> None:
                toxic["f"].stop()  # type: ignore[attr-defined]

            ref_apply, ref_heal = pair(toxic_on, toxic_off, rounds)
            cases: list[tuple[str, Callable[[], object]]] = [
                ("pause", lambda: a.pause()),
                ("kill (then start)", lambda: a.kill()),
                ("restart", lambda: a.restart(timeout=0)),
                ("disconnect", lambda: a.disconnect(net)),
                ("partition [[a],[b]]", lambda: partition([[a], [b]])),
                ("isolate", lambda: a.isolate()),
                ("flaky(0.3)", lambda: a.flaky(0.3)),
            ]
            sdk_net = backend.network.sdk
            raw = {
                "pause": (pair(a.sdk.pause, a.sdk.unpause, rounds), ("pause", "unpause")),
                "disconnect": (
                    pair(lambda: sdk_net.disconnect(a.sdk), lambda: sdk_net.connect(a.sdk), rounds),
                    ("disconnect", "connect"),
                ),
            }
            for name, make in cases:
                applied, healed = start_stop(make, rounds)
                if name in raw:
                    (raw_apply, raw_heal), (on, off) = raw[name]
                    row(f"{name}: apply", applied, raw_apply, f"docker SDK {on}")
                    row(f"{name}: heal", healed, raw_heal, f"docker SDK {off}")
                elif name in ("partition [[a],[b]]", "isolate", "flaky(0.3)"):
                    row(f"{name}: apply", applied, ref_apply, "proxy latency toxic")
                    row(f"{name}: heal", healed, ref_heal, "remove the toxic")
                else:
                    row(f"{name}: apply", applied, None)
                    row(f"{name}: heal", healed, None)
            a.wait_ready(7000)
        finally:
            a.remove()
            b.remove()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    problem = engine_problem()
    if problem is not None:
        print(f"bench_docker: skipped: {problem}")
        return 0
    tags = images()
    bench_startup(tags, args.rounds)
    bench_faults(tags, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
