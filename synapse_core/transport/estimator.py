"""Running estimates of a link's health (latency, jitter, reliability, loss, throughput)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from synapse_core.breaker.metrics import TransportMetrics

_DEFAULTS = TransportMetrics()


@dataclass(frozen=True, slots=True)
class LinkStats:
    """Counters and estimates of one link, read by ``Transport.link_stats()`` (for metrics).

    ``successes``/``failures`` count round trips (sends and probes); ``messages_sent`` and
    ``messages_failed`` only sends (delivered; failed, timeouts included); ``latency_sum`` adds
    up the successful round trips' seconds (``latency_sum / successes`` is their mean);
    ``latency`` is the smoothed estimate the triggers judge.
    """

    successes: int
    failures: int
    messages_sent: int
    messages_failed: int
    latency_sum: float
    latency: float
    jitter_ms: float
    reliability: float
    packet_loss: float


class LinkEstimator:
    """Turns observed sends and probes into :class:`~synapse_core.TransportMetrics`.

    * latency: exponentially weighted moving average (weight ``smoothing``) of successful
      round trips, in seconds;
    * jitter: moving average of the change between consecutive round trips, in ms;
    * reliability: moves ``reliability_step`` of the way toward 1 on each success and toward 0
      on each failure, starting from ``initial_reliability``;
    * packet loss: the fraction of failures among the last ``loss_window`` outcomes;
    * throughput: moving average of bytes x 8 / round trip of successful sends.

    Before the first sample, each figure is ``TransportMetrics``' default.
    """

    __slots__ = (
        "_jitter_ms",
        "_last_latency",
        "_latency",
        "_outcomes",
        "_reliability",
        "_smoothing",
        "_step",
        "_throughput",
        "failures",
        "latency_sum",
        "messages_failed",
        "messages_sent",
        "successes",
    )

    def __init__(
        self,
        *,
        initial_reliability: float = _DEFAULTS.reliability_score,
        smoothing: float = 0.2,
        reliability_step: float = 0.1,
        loss_window: int = 100,
    ) -> None:
        if not 0.0 < smoothing <= 1.0 or not 0.0 < reliability_step <= 1.0:
            raise ValueError("smoothing and reliability_step must be in (0, 1]")
        if not 0.0 <= initial_reliability <= 1.0:
            raise ValueError("initial_reliability must be in [0, 1]")
        self._smoothing = smoothing
        self._step = reliability_step
        self._reliability = initial_reliability
        self._latency: float | None = None
        self._last_latency: float | None = None
        self._jitter_ms: float | None = None
        self._throughput: float | None = None
        self._outcomes: deque[bool] = deque(maxlen=loss_window)
        self.successes = 0
        self.failures = 0
        self.latency_sum = 0.0
        # Counted by the transport: only it knows a send from a probe.
        self.messages_sent = 0
        self.messages_failed = 0

    def record_success(self, latency: float, nbytes: int = 0) -> None:
        """A round trip that worked, taking *latency* seconds and carrying *nbytes*."""
        latency = max(0.0, latency)
        a = self._smoothing
        self.successes += 1
        self.latency_sum += latency
        self._outcomes.append(True)
        self._reliability += self._step * (1.0 - self._reliability)
        self._latency = (
            latency if self._latency is None else self._latency + a * (latency - self._latency)
        )
        if self._last_latency is not None:
            change_ms = abs(latency - self._last_latency) * 1000.0
            self._jitter_ms = (
                change_ms
                if self._jitter_ms is None
                else self._jitter_ms + a * (change_ms - self._jitter_ms)
            )
        self._last_latency = latency
        if nbytes > 0 and latency > 0:
            bps = nbytes * 8 / latency
            self._throughput = (
                bps if self._throughput is None else self._throughput + a * (bps - self._throughput)
            )

    def record_failure(self) -> None:
        """A round trip that failed (refused, reset, timed out)."""
        self.failures += 1
        self._outcomes.append(False)
        self._reliability -= self._step * self._reliability

    @property
    def latency(self) -> float:
        """Smoothed round-trip latency in seconds."""
        return _DEFAULTS.latency if self._latency is None else self._latency

    @property
    def reliability(self) -> float:
        """0.0 (every recent round trip failed) to 1.0."""
        return min(1.0, max(0.0, self._reliability))

    @property
    def packet_loss(self) -> float:
        """Fraction of failures among the recent outcomes (0.0 with none)."""
        outcomes = self._outcomes
        if not outcomes:
            return 0.0
        return (len(outcomes) - sum(outcomes)) / len(outcomes)

    def stats(self) -> LinkStats:
        """The counters and current estimates."""
        return LinkStats(
            successes=self.successes,
            failures=self.failures,
            messages_sent=self.messages_sent,
            messages_failed=self.messages_failed,
            latency_sum=self.latency_sum,
            latency=self.latency,
            jitter_ms=_DEFAULTS.jitter_ms if self._jitter_ms is None else self._jitter_ms,
            reliability=self.reliability,
            packet_loss=self.packet_loss,
        )

    def snapshot(self, latency: float | None = None) -> TransportMetrics:
        """The current estimates; *latency* overrides the smoothed latency (a fresh sample).

        Without *latency* the figure is an estimate, marked ``latency_measured=False``.
        """
        return TransportMetrics(
            latency=max(0.0, self.latency if latency is None else latency),
            latency_measured=latency is not None,
            throughput_bps=(
                _DEFAULTS.throughput_bps if self._throughput is None else int(self._throughput)
            ),
            packet_loss=self.packet_loss,
            jitter_ms=_DEFAULTS.jitter_ms if self._jitter_ms is None else self._jitter_ms,
            reliability_score=self.reliability,
        )
