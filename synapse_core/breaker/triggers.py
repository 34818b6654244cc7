"""External triggers: trip a breaker on measured latency, reliability or packet loss."""

from __future__ import annotations

from collections import deque
from datetime import timedelta
from typing import Protocol, runtime_checkable

from synapse_core.breaker.metrics import TransportMetrics
from synapse_core.breaker.state import CircuitState
from synapse_core.clock import to_seconds


@runtime_checkable
class CircuitTrigger(Protocol):
    """Something outside the call outcomes that can trip a breaker.

    ``should_trip`` is asked each time ``breaker.check_external_triggers(metrics)`` runs (in
    every state, so averages stay current; only a closed breaker trips on it).
    ``should_recover`` is asked before an open breaker that this trigger tripped admits probes:
    while it says ``False`` the breaker stays open, so keep feeding metrics (for example from
    connectivity probes). Both run under the breaker's lock or on its hot path: keep them
    quick, and never call the breaker from them.
    """

    @property
    def description(self) -> str:
        """A short human-readable name, used in events and open reasons."""
        ...

    def should_trip(self, metrics: TransportMetrics, state: CircuitState) -> bool:
        """Whether these metrics should open the breaker."""
        ...

    def should_recover(self, state: CircuitState) -> bool:
        """Whether the condition that tripped the breaker has cleared."""
        ...


class LatencyTrigger:
    """Trips when the moving average of the last ``samples_required`` latencies exceeds a limit.

    It recovers once that average is back at or below ``max_latency``. Metrics whose
    ``latency_measured`` is false (estimates, e.g. after a failed send) add no sample.
    """

    def __init__(self, max_latency: float | timedelta, samples_required: int = 5) -> None:
        self.max_latency = to_seconds(max_latency, "max_latency")
        if self.max_latency <= 0:
            raise ValueError(f"max_latency must be > 0 seconds, got {self.max_latency!r}")
        if isinstance(samples_required, bool) or not isinstance(samples_required, int):
            raise TypeError(f"samples_required must be an int, got {samples_required!r}")
        if samples_required < 1:
            raise ValueError(f"samples_required must be >= 1, got {samples_required!r}")
        self.samples_required = samples_required
        self._samples: deque[float] = deque(maxlen=samples_required)

    @property
    def description(self) -> str:
        return f"latency > {self.max_latency * 1000:g}ms (avg of {self.samples_required})"

    @property
    def average(self) -> float | None:
        """The current moving average in seconds, or ``None`` before enough samples."""
        if len(self._samples) < self.samples_required:
            return None
        return sum(self._samples) / len(self._samples)

    def should_trip(self, metrics: TransportMetrics, state: CircuitState) -> bool:
        # An estimate is no evidence: after a failed send it would echo old figures (or the
        # 50 ms default) and could trip, or recover, on a peer that answered nothing.
        if metrics.latency_measured:
            self._samples.append(metrics.latency)
        average = self.average
        return average is not None and average > self.max_latency

    def should_recover(self, state: CircuitState) -> bool:
        average = self.average
        return average is None or average <= self.max_latency


class ReliabilityTrigger:
    """Trips when the reported reliability score falls below ``min_reliability``.

    It recovers once the latest reported score is back at or above it.
    """

    def __init__(self, min_reliability: float) -> None:
        if not 0.0 <= min_reliability <= 1.0:
            raise ValueError(f"min_reliability must be between 0 and 1, got {min_reliability!r}")
        self.min_reliability = float(min_reliability)
        self.last: float | None = None

    @property
    def description(self) -> str:
        return f"reliability < {self.min_reliability:g}"

    def should_trip(self, metrics: TransportMetrics, state: CircuitState) -> bool:
        self.last = metrics.reliability_score
        return self.last < self.min_reliability

    def should_recover(self, state: CircuitState) -> bool:
        return self.last is None or self.last >= self.min_reliability


class PacketLossTrigger:
    """Trips when the reported packet loss exceeds ``max_packet_loss`` (a fraction, 0 to 1).

    It recovers once the latest reported loss is back at or below it.
    """

    def __init__(self, max_packet_loss: float) -> None:
        if not 0.0 <= max_packet_loss <= 1.0:
            raise ValueError(f"max_packet_loss must be between 0 and 1, got {max_packet_loss!r}")
        self.max_packet_loss = float(max_packet_loss)
        self.last: float | None = None

    @property
    def description(self) -> str:
        return f"packet loss > {self.max_packet_loss:.0%}"

    def should_trip(self, metrics: TransportMetrics, state: CircuitState) -> bool:
        self.last = metrics.packet_loss
        return self.last > self.max_packet_loss

    def should_recover(self, state: CircuitState) -> bool:
        return self.last is None or self.last <= self.max_packet_loss
