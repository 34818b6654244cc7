"""Timeline: fault spans and breaker events on one clock."""

from __future__ import annotations

import pytest

from synapse_core import CircuitBreaker, Timeline, VirtualClock


def test_faults_and_breaker_events_share_the_timelines_clock() -> None:
    clock = VirtualClock(50.0)
    breaker_clock = VirtualClock(7.0)
    timeline = Timeline(clock)
    breaker = CircuitBreaker("db", clock=breaker_clock)
    timeline.watch(breaker)
    span = timeline.fault_started("latency", "db", ms=800)
    clock.advance(1.5)
    breaker.force_open("test")
    clock.advance(2.0)
    ended = timeline.fault_ended(span)
    assert timeline.fault_ended(span) == ended  # idempotent
    clock.advance(0.5)
    breaker.force_close()
    timeline.close()
    breaker.force_open()  # no longer watched

    assert ended.start == 50.0
    assert ended.end == 53.5
    assert ended.duration() == 3.5
    assert ended.params == {"ms": 800}
    assert not ended.active
    records = timeline.breaker_events
    assert [(r.kind, r.state, r.at, r.breaker_time) for r in records] == [
        ("opened", "open", 51.5, 7.0),
        ("closed", "closed", 54.0, 7.0),
    ]
    assert records[0].detail["reason"] == "test"
    assert timeline.events_of("db", ["closed"]) == [records[1]]
    data = timeline.to_dict()
    assert data["faults"][0]["fault"] == "latency"
    assert data["breaker_events"][1]["kind"] == "closed"
    text = timeline.render()
    assert "1.500s  breaker db: opened -> open" in text
    assert "3.500s  fault latency on db healed" in text


def test_active_span_duration_needs_now() -> None:
    clock = VirtualClock()
    timeline = Timeline(clock)
    span_id = timeline.fault_started("blackhole", "api")
    (span,) = timeline.faults
    assert span.active
    assert span.duration() is None
    assert span.duration(now=4.0) == 4.0
    with pytest.raises(KeyError):
        timeline.fault_ended(span_id + 100)
