"""Timeline: fault spans and breaker events on one clock."""

from __future__ import annotations

import pytest

from synapse_core import (
    CircuitBreaker,
    CircuitBreakerConfig,
    Timeline,
    VirtualClock,
    watch_breakers,
)


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


def _stalled_probe(clock: VirtualClock) -> CircuitBreaker:
    """Opens at 0 s, half-opens at 5 s with a probe that never reports; due to re-open at 7 s."""
    config = CircuitBreakerConfig(
        failure_threshold=1, minimum_requests=1, recovery_timeout=5.0, max_half_open_wait=2.0
    )
    breaker = CircuitBreaker("late", config, clock=clock)
    breaker.acquire().failure()
    clock.advance(5.0)
    breaker.acquire()  # the probe, never reported
    return breaker


def test_a_transition_applied_late_is_dated_when_it_happened() -> None:
    """Regression: records were stamped when delivered. A half-open breaker whose probe gave no
    verdict re-opens at 7 s, applied at the next admission (10 s); the timeline said 10 s."""
    clock = VirtualClock()
    timeline = Timeline(clock)
    with watch_breakers(timeline.watch):
        breaker = _stalled_probe(clock)
    clock.advance(5.0)
    assert breaker.try_acquire() is None
    assert [(r.kind, r.at) for r in timeline.breaker_events if r.kind != "request_rejected"] == [
        ("opened", 0.0),
        ("half_opened", 5.0),
        ("opened", 7.0),
    ]


def test_on_another_clock_an_event_keeps_its_age() -> None:
    breaker_clock = VirtualClock()
    timeline_clock = VirtualClock(100.0)
    timeline = Timeline(timeline_clock)
    breaker = _stalled_probe(breaker_clock)
    timeline.watch(breaker)
    breaker_clock.advance(5.0)
    timeline_clock.advance(10.0)
    assert breaker.try_acquire() is None
    assert [r.at for r in timeline.events_of("late", ["opened"])] == [107.0]


def _same_instant() -> Timeline:
    """On a virtual clock: a call reaches the upstream, the breaker opens, a fault starts and
    is healed, all at 0 s, in that order."""
    clock = VirtualClock()
    timeline = Timeline(clock)
    breaker = CircuitBreaker("db", clock=clock)
    timeline.watch(breaker)
    timeline.upstream_call("db")
    breaker.force_open("first")
    span = timeline.fault_started("latency", "db", ms=5)
    timeline.fault_ended(span)
    return timeline


def test_render_keeps_record_order_within_an_instant() -> None:
    """Regression: rows of one instant were sorted faults first, then breaker events."""
    lines = _same_instant().render().splitlines()
    assert [line.split("s  ", 1)[1].split(" ")[0:2] for line in lines] == [
        ["breaker", "db:"],
        ["fault", "latency"],
        ["fault", "latency"],
    ]
    assert lines[1].endswith("started {'ms': 5}")
    assert lines[2].endswith("healed")


def test_sequence_numbers_stay_out_of_the_report() -> None:
    (span,) = _same_instant().faults
    assert span.seq < (span.end_seq or 0)
    assert set(span.to_dict()) == {"id", "fault", "proxy", "start", "end", "params"}
