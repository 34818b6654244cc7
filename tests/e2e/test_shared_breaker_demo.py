"""The shared-breaker example runs end to end: three replica processes on a real Redis open
together on failures none of them saw enough of alone, never call the dependency while open,
let exactly two probes through between them, and close together."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DEMO = Path(__file__).parents[2] / "examples" / "shared_breaker" / "demo.py"


@pytest.mark.skipif(
    shutil.which("redis-server") is None,
    reason="redis-server is not installed (make test installs it with scripts/system-deps.sh)",
)
def test_three_replicas_share_one_breaker_through_redis() -> None:
    result = subprocess.run(
        [sys.executable, str(DEMO)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "every replica open: True" in out
    assert "pricing calls while open: 0" in out
    assert "probes that reached pricing: 2" in out
    assert "all replicas closed: True" in out
    assert "Traceback" not in result.stderr
