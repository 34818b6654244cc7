"""VirtualClock at its edges: overflow to infinity, non-finite start times, timedelta targets."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest

from synapse_core import VirtualClock


def test_advance_refuses_steps_that_add_up_to_infinity() -> None:
    clock = VirtualClock()
    assert clock.advance(1e308) == 1e308
    with pytest.raises(ValueError, match=r"would make the time inf"):
        clock.advance(1e308)
    assert clock() == 1e308  # the refused step left the time alone
    assert clock.advance(1.0) == 1e308  # still usable


@pytest.mark.parametrize("start", [math.nan, math.inf, -math.inf])
def test_start_time_must_be_finite(start: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        VirtualClock(start)


def test_start_time_accepts_a_timedelta() -> None:
    assert VirtualClock(timedelta(seconds=3))() == 3.0


def test_advance_to_accepts_a_timedelta_like_advance() -> None:
    clock = VirtualClock()
    assert clock.advance_to(timedelta(seconds=5)) == 5.0
    assert clock.advance(timedelta(seconds=1)) == 6.0
    with pytest.raises(ValueError, match="forward"):
        clock.advance_to(timedelta(seconds=2))
    assert clock() == 6.0


@pytest.mark.parametrize("bad", ["7", True, None, [1]])
def test_advance_to_refuses_non_durations_with_a_clear_type_error(bad: object) -> None:
    clock = VirtualClock()
    message = r"when must be a number of seconds or a datetime\.timedelta"
    with pytest.raises(TypeError, match=message):
        clock.advance_to(bad)  # type: ignore[arg-type]
    assert clock() == 0.0
