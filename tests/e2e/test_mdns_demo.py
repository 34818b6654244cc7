"""The mDNS breaker demo runs end to end: discovery, fault, opening, rejections, recovery."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DEMO = Path(__file__).parents[2] / "examples" / "mdns_demo.py"


@pytest.mark.usefixtures("loopback_multicast")
def test_mdns_demo_trips_rejects_and_recovers() -> None:
    result = subprocess.run(
        [sys.executable, "-W", "error", str(DEMO)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "alpha discovered beta via mDNS" in out
    assert "no ack within 0.3s" in out
    assert "event: opened" in out
    assert "rejections: 100 of 100 sends" in out
    median = re.search(r"median rejection ([\d.]+) us", out)
    assert median is not None
    assert float(median.group(1)) < 1000  # well under a millisecond
    assert "beta still in alpha's discovery cache: True" in out
    assert out.index("event: half_opened") < out.index("event: closed")
    assert "breaker state=closed" in out
    assert "events: opened, half_opened, closed" in out
    assert "beta received 5 messages" in out
