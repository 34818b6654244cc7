"""Run an example suite the way its README (and `make demo`) does: under chaos, gated."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]

GATES = ("all_recovered", "max_trip_seconds<=5", "max_recovery_seconds<=3")
"""The gates every example run must pass (those of `make demo`, but the rejection time)."""


def run_gated(example: str, *options: str) -> subprocess.CompletedProcess[str]:
    """``pytest examples/<example> --synapse-chaos`` with *options* and :data:`GATES`; asserts
    it exited 0, showing the end of its output otherwise."""
    gates = [arg for gate in GATES for arg in ("--synapse-gate", gate)]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            f"examples/{example}",
            "--synapse-chaos",
            "-p",
            "no:cacheprovider",
            *options,
            *gates,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    return result
