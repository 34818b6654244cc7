"""The orders demo on containers: the suite with --synapse-toxiproxy=docker, make docker-demo's
compose stack, and container faults on a compose stack tripping the service's breaker."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from chaos.docker import RUN_LABEL, engine

ROOT = Path(__file__).resolve().parents[2]
# make demo's gates but max_rejected_call_ms, a wall-clock figure that a loaded machine can
# break (the suite's own assert_rejects_fast checks rejections stay under the 0.3 s timeout).
GATES = [
    "--synapse-gate",
    "all_recovered",
    "--synapse-gate",
    "max_trip_seconds<=5",
    "--synapse-gate",
    "max_recovery_seconds<=3",
]


def _check_report(report: Path) -> None:
    data = json.loads(report.read_text())
    assert data["metrics"]["all_recovered"] is True
    assert data["metrics"]["trips"] >= 3  # one per fault test (test_orders_remote adds one)
    faults = {f["fault"] for t in data["tests"] for f in t["faults"]}
    assert faults == {"latency", "partition", "down"}


def test_the_orders_suite_passes_on_containers_with_the_docker_backend(
    images: dict[str, str], tmp_path: Path
) -> None:
    report = tmp_path / "resilience.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "examples/orders",
            "--synapse-chaos",
            "--synapse-toxiproxy=docker",
            "-p",
            "no:cacheprovider",
            f"--synapse-report={report}",
            *GATES,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "SYNAPSE_DOCKER_IMAGE": images["chaos"]},
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert re.search(r"= \d+ passed in ", result.stdout), result.stdout[-2000:]  # none skipped
    _check_report(report)


def test_docker_demo_runs_the_suite_against_the_compose_stack_and_takes_it_down(
    images: dict[str, str], tmp_path: Path
) -> None:
    report = tmp_path / "resilience.json"  # the last --synapse-report given wins
    result = subprocess.run(
        [str(ROOT / "scripts" / "docker-demo.sh"), *GATES, f"--synapse-report={report}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "SYNAPSE_IMAGE": images["chaos"], "PY": sys.executable},
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert re.search(r"= \d+ passed in ", result.stdout), result.stdout[-2000:]  # none skipped
    assert "gate PASS: all_recovered" in result.stdout
    _check_report(report)
    project = f"synapse-demo-{result.stdout.split('(project synapse-demo-')[1].split(')')[0]}"
    left = engine().containers.list(
        all=True, filters={"label": f"com.docker.compose.project={project}"}
    )
    assert left == []


def _get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.mark.parametrize("fault", ["pause", "kill"])
def test_container_faults_on_a_compose_stack_trip_the_breaker_and_heal(
    compose_stack: Callable[..., Any],
    images: dict[str, str],
    breaker_timeline: Any,
    fault: str,
) -> None:
    stack = compose_stack("docker/compose.yaml", env={"SYNAPSE_IMAGE": images["chaos"]})
    assert set(stack.services) == {"chaos", "inventory", "orders"}
    assert stack["orders"].labels[RUN_LABEL]  # labelled for reaping
    url = f"http://{stack['orders'].address(8080)}"
    remote = breaker_timeline.watch_remote(url)
    assert _get(f"{url}/orders/apple")[0] == 200
    inventory = stack["inventory"]
    with getattr(inventory, fault)():
        assert [_get(f"{url}/orders/apple")[0] for _ in range(3)] == [502, 502, 502]
        assert _get(f"{url}/orders/apple")[0] == 503
        breaker_timeline.assert_trips_within("inventory", failures=3, seconds=5)
        if fault == "pause":  # failures wait for the 0.3 s timeout; rejections must not
            breaker_timeline.assert_rejects_fast(
                "inventory", lambda: _get(f"{url}/orders/x"), max_ms=250, expect=None
            )
    inventory.wait_ready(7000)
    deadline = time.monotonic() + 10
    while remote.poll().get("inventory") != "closed":
        assert time.monotonic() < deadline, "the breaker did not close"
        _get(f"{url}/orders/apple")
        time.sleep(0.05)
    breaker_timeline.assert_closes_within("inventory", seconds=5)
    (span,) = breaker_timeline.timeline.faults
    assert (span.fault, span.proxy) == (fault, inventory.name)
