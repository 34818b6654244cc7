"""side_by_side: a test's faults and breaker events in two columns, as assertion messages show."""

from __future__ import annotations

from pytest_synapse import side_by_side
from synapse_core import CircuitBreaker, Timeline, VirtualClock


def test_side_by_side_keeps_record_order_within_an_instant() -> None:
    """Regression: rows of one instant were sorted faults, heals, breaker events, upstream calls;
    a call that reached the upstream before the breaker opened was listed after it (an
    assertion's message then told a story that did not happen)."""
    clock = VirtualClock()
    timeline = Timeline(clock)
    breaker = CircuitBreaker("db", clock=clock)
    timeline.watch(breaker)
    timeline.upstream_call("db")
    breaker.force_open("first")
    span = timeline.fault_started("latency", "db", ms=5)
    timeline.fault_ended(span)
    rows = [line.strip() for line in side_by_side(timeline).splitlines()[1:]]
    assert [row.split(None, 1)[1] for row in rows] == [
        "(a call reached the upstream)",
        "db: opened -> open (first)",
        "+ latency(ms=5) on db",
        "- healed latency on db",
    ]


def test_times_still_come_first() -> None:
    clock = VirtualClock()
    timeline = Timeline(clock)
    clock.advance(2.0)
    timeline.upstream_call("db")
    timeline.fault_started("down", "db", at=1.0)
    rows = side_by_side(timeline).splitlines()[1:]
    assert rows[0].split()[0:2] == ["1.000", "+"]
    assert rows[1].split()[0] == "2.000"
