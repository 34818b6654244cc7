"""External triggers on latency, reliability and packet loss."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from breaker_support import ok

from synapse_core import (
    CircuitBreaker,
    CircuitEvent,
    CircuitOpenError,
    CircuitState,
    CircuitTrigger,
    ExternalTriggerActivated,
    LatencyTrigger,
    PacketLossTrigger,
    ReliabilityTrigger,
    TransportMetrics,
    VirtualClock,
)

MakeBreaker = Callable[..., CircuitBreaker]


def test_transport_metrics_defaults_are_the_originals() -> None:
    metrics = TransportMetrics()
    assert metrics.latency == 0.050
    assert metrics.latency_ms == 50.0
    assert metrics.throughput_bps == 1_000_000
    assert metrics.packet_loss == 0.0
    assert metrics.jitter_ms == 10.0
    assert metrics.reliability_score == 0.95
    assert metrics.last_updated.tzinfo is not None
    with pytest.raises(ValueError, match="packet_loss"):
        TransportMetrics(packet_loss=1.5)
    with pytest.raises(ValueError, match="reliability_score"):
        TransportMetrics(reliability_score=-0.1)


def test_latency_trigger_uses_a_moving_average_and_recovers() -> None:
    trigger = LatencyTrigger(max_latency=0.1, samples_required=3)
    closed = CircuitState.CLOSED
    assert not trigger.should_trip(TransportMetrics(latency=0.5), closed)  # 1 sample only
    assert not trigger.should_trip(TransportMetrics(latency=0.5), closed)
    assert trigger.should_trip(TransportMetrics(latency=0.01), closed)  # avg 0.337
    assert not trigger.should_recover(CircuitState.OPEN)
    for _ in range(3):
        trigger.should_trip(TransportMetrics(latency=0.02), CircuitState.OPEN)
    assert trigger.average == pytest.approx(0.02)
    assert trigger.should_recover(CircuitState.OPEN)
    assert "100ms" in trigger.description
    with pytest.raises(ValueError, match="samples_required"):
        LatencyTrigger(0.1, samples_required=0)
    with pytest.raises(ValueError, match="max_latency"):
        LatencyTrigger(0)


def test_latency_trigger_takes_no_sample_from_an_estimate() -> None:
    trigger = LatencyTrigger(max_latency=0.1, samples_required=2)
    closed = CircuitState.CLOSED
    estimate = TransportMetrics(latency=5.0, latency_measured=False)
    assert not trigger.should_trip(estimate, closed)
    assert not trigger.should_trip(estimate, closed)
    assert trigger.average is None
    trigger.should_trip(TransportMetrics(latency=0.5), closed)
    assert trigger.should_trip(TransportMetrics(latency=0.5), closed)
    assert trigger.should_trip(TransportMetrics(latency=0.0, latency_measured=False), closed)
    assert trigger.average == pytest.approx(0.5)  # the estimate changed nothing


def test_reliability_and_packet_loss_triggers() -> None:
    reliability = ReliabilityTrigger(min_reliability=0.8)
    assert reliability.should_trip(TransportMetrics(reliability_score=0.5), CircuitState.CLOSED)
    assert not reliability.should_trip(TransportMetrics(), CircuitState.CLOSED)
    loss = PacketLossTrigger(max_packet_loss=0.1)
    assert loss.should_trip(TransportMetrics(packet_loss=0.2), CircuitState.CLOSED)
    assert not loss.should_trip(TransportMetrics(packet_loss=0.1), CircuitState.CLOSED)
    assert isinstance(loss, CircuitTrigger)
    with pytest.raises(ValueError, match="max_packet_loss"):
        PacketLossTrigger(2)
    with pytest.raises(ValueError, match="min_reliability"):
        ReliabilityTrigger(-1)


def test_check_external_triggers_opens_with_both_events(make_breaker: MakeBreaker) -> None:
    breaker = make_breaker()
    events: list[CircuitEvent] = []
    breaker.subscribe(events.append)
    assert not breaker.check_external_triggers(TransportMetrics(packet_loss=0.5))  # no triggers
    breaker.add_trigger(PacketLossTrigger(0.2))  # added at any time
    assert not breaker.check_external_triggers(TransportMetrics(packet_loss=0.1))
    assert breaker.check_external_triggers(TransportMetrics(packet_loss=0.5))
    assert breaker.state is CircuitState.OPEN
    assert [e.kind for e in events] == ["external_trigger_activated", "opened"]
    activated = events[0]
    assert isinstance(activated, ExternalTriggerActivated)
    assert activated.trigger_name == "packet loss > 20%"
    assert "external trigger" in events[1].reason  # type: ignore[attr-defined]
    assert not breaker.check_external_triggers(TransportMetrics(packet_loss=0.5))  # already open


def test_latency_tripped_breaker_waits_for_latency_to_recover(
    make_breaker: MakeBreaker, clock: VirtualClock
) -> None:
    breaker = make_breaker()
    trigger = LatencyTrigger(0.1, samples_required=2)
    breaker.add_trigger(trigger)
    breaker.check_external_triggers(TransportMetrics(latency=0.3))
    assert breaker.check_external_triggers(TransportMetrics(latency=0.3))
    clock.advance(10)
    assert not breaker.would_admit()
    with pytest.raises(CircuitOpenError):
        breaker.call(ok)  # recovery timeout passed, but latency is still high
    breaker.check_external_triggers(TransportMetrics(latency=0.01))
    breaker.check_external_triggers(TransportMetrics(latency=0.01))
    breaker.call(ok)
    assert breaker.state is CircuitState.HALF_OPEN
    breaker.remove_trigger(trigger)
    assert breaker.triggers == ()


def test_a_breaker_held_open_by_a_trigger_has_no_retry_time(
    make_breaker: MakeBreaker, clock: VirtualClock
) -> None:
    """Past its recovery timeout, a breaker whose trigger has not recovered said
    ``retry_after == 0.0`` while rejecting every call; it now says when it will next look, then
    ``None``, with the trigger named in ``stats().waiting_for``."""
    breaker = make_breaker()
    trigger = LatencyTrigger(0.1, samples_required=1)
    breaker.add_trigger(trigger)
    assert breaker.check_external_triggers(TransportMetrics(latency=0.3))
    assert breaker.held_by == (trigger,)
    clock.advance(4)
    assert breaker.retry_after == 6.0  # when it will next look
    clock.advance(6)
    assert breaker.retry_after is None
    assert not breaker.would_admit()
    stats = breaker.stats()
    assert stats.retry_after is None
    assert stats.waiting_for == f"external trigger {trigger.description!r} to recover"
    with pytest.raises(CircuitOpenError) as info:
        breaker.call(ok)
    assert info.value.retry_after is None
    assert "external trigger" in str(info.value)
    breaker.check_external_triggers(TransportMetrics(latency=0.01))
    assert breaker.held_by == ()
    assert breaker.retry_after == 0.0
    assert breaker.stats().waiting_for is None
    breaker.call(ok)
    assert breaker.state is CircuitState.HALF_OPEN


def test_add_trigger_rejects_non_triggers(make_breaker: MakeBreaker) -> None:
    with pytest.raises(TypeError, match="should_trip"):
        make_breaker().add_trigger(object())  # type: ignore[arg-type]


def test_a_failing_trigger_is_logged_and_skipped(
    make_breaker: MakeBreaker, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken:
        description = "broken"

        def should_trip(self, metrics: TransportMetrics, state: CircuitState) -> bool:
            raise RuntimeError("trigger bug")

        def should_recover(self, state: CircuitState) -> bool:
            return True

    breaker = make_breaker()
    breaker.add_trigger(Broken())
    assert not breaker.check_external_triggers(TransportMetrics())
    assert "trigger bug" in caplog.text


@pytest.mark.parametrize(
    ("trigger", "bad", "good"),
    [
        (ReliabilityTrigger(0.9), TransportMetrics(reliability_score=0.5), TransportMetrics()),
        (PacketLossTrigger(0.2), TransportMetrics(packet_loss=0.5), TransportMetrics()),
    ],
)
def test_metric_triggers_wait_for_good_figures_then_close_in_one_round(
    make_breaker: MakeBreaker,
    clock: VirtualClock,
    trigger: CircuitTrigger,
    bad: TransportMetrics,
    good: TransportMetrics,
) -> None:
    breaker = make_breaker()
    breaker.add_trigger(trigger)
    assert breaker.check_external_triggers(bad)
    clock.advance(10)
    assert not breaker.would_admit()  # the figures are still bad
    breaker.check_external_triggers(good)
    breaker.call(ok)
    # While half-open the probes decide, whatever the (smoothed) figures say.
    assert not breaker.check_external_triggers(bad)
    breaker.check_external_triggers(good)
    breaker.call(ok)
    assert breaker.state is CircuitState.CLOSED
    assert breaker.stats().consecutive_opens == 0
