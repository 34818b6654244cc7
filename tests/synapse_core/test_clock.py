"""VirtualClock and clock validation."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from synapse_core import VirtualClock
from synapse_core.clock import check_clock, monotonic_clock


def test_virtual_clock_moves_only_when_told() -> None:
    clock = VirtualClock()
    assert clock() == 0.0
    assert clock.advance(1.5) == 1.5
    assert clock.advance(timedelta(milliseconds=500)) == 2.0
    assert clock.now == clock() == 2.0
    assert clock.advance_to(10) == 10.0
    assert "10.0" in repr(clock)


def test_virtual_clock_refuses_to_go_back() -> None:
    clock = VirtualClock(5)
    with pytest.raises(ValueError, match="forward"):
        clock.advance(-1)
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="finite"):
            clock.advance(bad)
    assert clock() == 5
    with pytest.raises(ValueError, match="forward"):
        clock.advance_to(4)
    with pytest.raises(TypeError, match="seconds"):
        clock.advance("1")  # type: ignore[arg-type]


def test_virtual_sleep_advances_without_waiting() -> None:
    clock = VirtualClock()
    asyncio.run(clock.sleep(3600))
    assert clock() == 3600


def test_check_clock() -> None:
    assert check_clock(monotonic_clock) is monotonic_clock
    with pytest.raises(TypeError, match="zero-argument callable"):
        check_clock(1.0)
