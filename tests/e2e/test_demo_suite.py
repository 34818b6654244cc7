"""The main job (`make demo`): the orders suite under chaos, with reports and gates."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from example_runs import ROOT, run_gated


def test_demo_suite_passes_its_gates_and_writes_reports(tmp_path: Path) -> None:
    report, html = tmp_path / "resilience.json", tmp_path / "resilience.html"
    result = run_gated("orders", f"--synapse-report={report}", f"--synapse-html={html}")
    assert "gate PASS: all_recovered" in result.stdout
    data = json.loads(report.read_text())
    assert data["metrics"]["all_recovered"] is True
    assert data["metrics"]["trips"] == 4  # one of them in the service's own process
    assert {f["fault"] for t in data["tests"] for f in t["faults"]} == {
        "latency",
        "partition",
        "down",
    }
    assert "<svg" in html.read_text()


def test_demo_suite_is_skipped_without_the_flag() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "examples/orders", "-p", "no:cacheprovider", "-rs"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert "5 skipped" in result.stdout
    assert "--synapse-chaos" in result.stdout
