"""examples/shipping: a pybreaker service and an httpx-transport client, under chaos, gated."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_shipping_examples_pass_their_gates(tmp_path: Path) -> None:
    report = tmp_path / "shipping.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "examples/shipping",
            "--synapse-chaos",
            "-p",
            "no:cacheprovider",
            f"--synapse-report={report}",
            "--synapse-gate",
            "all_recovered",
            "--synapse-gate",
            "max_trip_seconds<=5",
            "--synapse-gate",
            "max_recovery_seconds<=3",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    data = json.loads(report.read_text())
    breakers = {(b["name"], b["library"]) for t in data["tests"] for b in t["breakers"]}
    assert ("rates", "pybreaker") in breakers
    assert any(library is None and ":" in name for name, library in breakers)  # httpx's host
    assert data["metrics"]["trips"] == 2
