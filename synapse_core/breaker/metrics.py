"""Transport measurements that external triggers judge."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime


@dataclass(frozen=True, slots=True)
class TransportMetrics:
    """Measured health of a link to a peer, fed to ``check_external_triggers``.

    Defaults are the original Synapse design's: 50 ms latency, 1,000,000 bit/s throughput,
    no packet loss, 10 ms jitter, reliability 0.95, updated now (UTC).

    Attributes:
        latency: round-trip latency in seconds.
        throughput_bps: throughput in bits per second.
        packet_loss: fraction of messages lost, 0.0 to 1.0.
        jitter_ms: latency variation in milliseconds.
        reliability_score: 0.0 (never works) to 1.0 (always works).
        last_updated: when these figures were measured (wall clock, UTC).
        latency_measured: ``latency`` is a fresh round-trip sample. ``False`` when it is only an
            estimate (say, after a failed send, which measured no round trip); a
            ``LatencyTrigger`` takes no sample from such metrics.
    """

    latency: float = 0.050
    throughput_bps: int = 1_000_000
    packet_loss: float = 0.0
    jitter_ms: float = 10.0
    reliability_score: float = 0.95
    last_updated: datetime = field(default_factory=lambda: datetime.now(UTC))
    latency_measured: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.packet_loss <= 1.0:
            raise ValueError(f"packet_loss must be between 0.0 and 1.0, got {self.packet_loss!r}")
        if not 0.0 <= self.reliability_score <= 1.0:
            raise ValueError(
                f"reliability_score must be between 0.0 and 1.0, got {self.reliability_score!r}"
            )
        if self.latency < 0:
            raise ValueError(f"latency must be >= 0 seconds, got {self.latency!r}")

    @property
    def latency_ms(self) -> float:
        """Latency in milliseconds."""
        return self.latency * 1000.0
