"""examples/shipping: a pybreaker service and an httpx-transport client, under chaos, gated."""

from __future__ import annotations

import json
from pathlib import Path

from example_runs import run_gated


def test_shipping_examples_pass_their_gates(tmp_path: Path) -> None:
    report = tmp_path / "shipping.json"
    run_gated("shipping", f"--synapse-report={report}")
    data = json.loads(report.read_text())
    breakers = {(b["name"], b["library"]) for t in data["tests"] for b in t["breakers"]}
    assert ("rates", "pybreaker") in breakers
    assert any(library is None and ":" in name for name, library in breakers)  # httpx's host
    assert data["metrics"]["trips"] == 2
