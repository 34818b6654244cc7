"""The breaker demo runs end to end and ends closed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

DEMO = Path(__file__).parents[2] / "examples" / "circuit_breaker_demo.py"


def test_breaker_demo_trips_rejects_and_closes_again() -> None:
    result = subprocess.run(
        [sys.executable, str(DEMO)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "event: opened" in out
    assert "dependency calls while open: 0" in out
    assert "event: half_opened" in out
    assert "event: closed" in out
    assert "state=closed" in out
