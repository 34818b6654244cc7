"""The trip rule applied to the fleet's window: the local breaker's own rule, on shared counts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from synapse_core.breaker.config import CircuitBreakerConfig
from synapse_core.breaker.rule import TripRule
from synapse_core.breaker.window import SlidingWindow


@dataclass(frozen=True, slots=True)
class Trip:
    """The fleet's window trips: *reason*, *failures* in it, and when (``at_index``: the
    bucket index at which ageing tripped it, ``None``: now)."""

    reason: str
    failures: int
    at_index: float | None


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a flush made of the fleet's window: a trip or not, and whether it is *armed*
    (one more success could trip it, so successes must be sent at once)."""

    trip: Trip | None
    armed: bool


def parse_buckets(flat: Sequence[bytes | str]) -> list[tuple[float, int, int, int]]:
    """The script's window (``index, "successes failures slow"`` pairs), oldest first."""
    buckets = []
    for i in range(0, len(flat) - 1, 2):
        successes, failures, slow = (int(x) for x in _text(flat[i + 1]).split())
        buckets.append((float(int(_text(flat[i]))), successes, failures, slow))
    buckets.sort()
    return buckets


def judge(
    config: CircuitBreakerConfig,
    stored: list[tuple[float, int, int, int]],
    index: float,
    batch: tuple[int, int, int],
) -> Verdict:
    """Judge a flush as a local breaker judges its window whenever it changes.

    *stored* is the fleet's window as it stood after its last change, *index* the bucket
    index now, *batch* the ``(successes, failures, slow)`` just added to it. First the time
    in between: if ageing alone tripped the stored window (``TripRule.assess``'s ``due``), it
    tripped then, dated at that bucket. A stored window that already trips is a decision its
    replica did not live to commit, and trips now. Then the window with the batch added, as
    one change.
    """
    rule = TripRule(config)  # a fresh one: its cache is keyed on one window's generations
    window = SlidingWindow.restore(config.failure_window, stored)
    if stored:
        reason, due, _ = rule.assess(window)
        if reason is not None:
            return Verdict(Trip(reason, window.failures, None), False)
        if due is not None and due[0] <= index:
            _, outcomes, failures, slow = due
            reason = rule.reason(outcomes, failures, slow)
            assert reason is not None
            return Verdict(
                Trip(f"{reason} (as older calls left the window)", failures, due[0]), False
            )
    window.add_counts(index, *batch)
    reason, _, armed = rule.assess(window)
    if reason is not None:
        return Verdict(Trip(reason, window.failures, None), False)
    return Verdict(None, armed)


def judge_totals(config: CircuitBreakerConfig, totals: tuple[int, int, int]) -> Verdict:
    """:func:`judge` for a config without rate rules, from the window's totals after the
    flush ``(outcomes, failures, slow)``: only counts matter, and ageing never trips it."""
    outcomes, failures, slow = totals
    window = SlidingWindow.restore(
        config.failure_window, [(0.0, outcomes - failures, failures, slow)]
    )
    reason, _, armed = TripRule(config).assess(window)
    if reason is not None:
        return Verdict(Trip(reason, failures, None), False)
    return Verdict(None, armed)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
