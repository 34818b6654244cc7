"""Per-test resilience records: what each breaker did next to the faults, and the figures."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from synapse_core import FaultSpan, Timeline


@dataclass
class BreakerSummary:
    """One breaker in one test.

    ``trip_seconds``: for each time it opened while a fault was active, seconds since the onset
    of the earliest fault active then. ``recovery_seconds``: for each heal (the end of a fault
    after which no other fault is active) that found it not closed or that it opened under,
    seconds until it closed again. ``unrecovered``: heals after which it never closed
    before the test ended. ``open_seconds``: time spent open or half-open during the test.
    """

    key: str
    name: str
    origin: str  # "fixture" | "default_manager" | "created"
    initial_state: str
    final_state: str
    left_closed: bool
    events: list[dict[str, Any]] = field(default_factory=list)
    trip_seconds: list[float] = field(default_factory=list)
    recovery_seconds: list[float] = field(default_factory=list)
    unrecovered: int = 0
    open_seconds: float = 0.0
    rejections: int = 0
    rejected_call_ms: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


@dataclass
class TestRecord:
    """Everything Synapse saw during one test."""

    nodeid: str
    outcome: str = "passed"
    duration: float = 0.0
    clock: str = "monotonic"
    started_at: float = 0.0
    ended_at: float = 0.0
    faults: list[dict[str, Any]] = field(default_factory=list)
    breakers: list[BreakerSummary] = field(default_factory=list)
    assertions: list[dict[str, Any]] = field(default_factory=list)
    worker: str = "main"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        data = asdict(self)
        data["breakers"] = [b.to_dict() for b in self.breakers]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TestRecord:
        """Inverse of :meth:`to_dict` (used to merge xdist workers' records)."""
        fields = dict(data)
        fields["breakers"] = [BreakerSummary(**b) for b in data.get("breakers", [])]
        return cls(**fields)


_NEXT_STATE = {"opened": "open", "half_opened": "half_open", "closed": "closed"}


def summarize_breaker(
    timeline: Timeline,
    *,
    key: str,
    name: str,
    origin: str,
    initial_state: str,
    final_state: str,
    end: float,
    rejected_call_ms: list[float] | None = None,
) -> BreakerSummary:
    """Compute one breaker's figures from the timeline up to time *end*."""
    records = [r for r in timeline.breaker_events if r.breaker == name and r.at <= end]
    faults = timeline.faults
    summary = BreakerSummary(
        key=key,
        name=name,
        origin=origin,
        initial_state=initial_state,
        final_state=final_state,
        left_closed=any(r.kind == "opened" for r in records),
        events=[r.to_dict() for r in records],
        rejections=sum(r.kind == "request_rejected" for r in records),
        rejected_call_ms=list(rejected_call_ms or ()),
    )
    transitions = [r for r in records if r.kind in _NEXT_STATE]
    # Time not closed.
    state, since = initial_state, timeline.started_at
    for rec in transitions:
        if state != "closed":
            summary.open_seconds += max(0.0, rec.at - since)
        state, since = _NEXT_STATE[rec.kind], rec.at
    if state != "closed":
        summary.open_seconds += max(0.0, end - since)
    # Trip times.
    for rec in transitions:
        if rec.kind == "opened":
            onset = _earliest_active_onset(faults, rec.at)
            if onset is not None:
                summary.trip_seconds.append(rec.at - onset)
    # Recovery after each heal that found the breaker not closed (or that it opened under).
    for span in faults:
        if span.end is None or _still_faulted(faults, span):
            continue  # not a heal: something else is still broken
        state_at_heal = _state_at(initial_state, transitions, span.end)
        opened_during = any(
            r.kind == "opened" and span.start <= r.at <= span.end for r in transitions
        )
        if state_at_heal == "closed" and not opened_during:
            continue
        closed_after = next(
            (r.at for r in transitions if r.kind == "closed" and r.at >= span.end), None
        )
        if closed_after is None:
            summary.unrecovered += 1
        else:
            summary.recovery_seconds.append(closed_after - span.end)
    return summary


def _earliest_active_onset(faults: list[FaultSpan], at: float) -> float | None:
    active = [s.start for s in faults if s.start <= at and (s.end is None or s.end >= at)]
    return min(active) if active else None


def _still_faulted(faults: list[FaultSpan], healed: FaultSpan) -> bool:
    assert healed.end is not None
    return any(
        s is not healed and s.start <= healed.end and (s.end is None or s.end > healed.end)
        for s in faults
    )


def _state_at(initial: str, transitions: list[Any], at: float) -> str:
    state = initial
    for rec in transitions:
        if rec.at > at:
            break
        state = _NEXT_STATE[rec.kind]
    return state
