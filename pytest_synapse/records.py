"""Per-test resilience records: what each breaker did next to the faults, and the figures."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from synapse_core import FaultSpan, Timeline

KEPT_REJECTIONS = 200
"""Per breaker and test, the report keeps this many ``request_rejected`` events and rejected-call
timings (the first ones). A chatty test rejects thousands of calls; every figure (``rejections``,
``rejected_call_ms_max``, the metrics) is still computed from all of them, only the listing is cut,
and ``events_omitted`` / ``rejected_calls_timed`` say by how much."""


@dataclass
class BreakerSummary:
    """One breaker in one test.

    ``trips``: times it left CLOSED (a re-open from half-open is not a trip).
    ``trip_seconds``: for each trip while a fault was active, seconds since the onset of the
    earliest fault active then. ``recovery_seconds``: for each heal (an instant at which
    faults end and none is left active) that finds it not closed after it opened under those
    faults, seconds until it closed again. ``unrecovered``: such heals after which it never
    closed before the test ended. ``open_seconds``: time spent open or half-open during the
    test. ``left_closed``: it tripped during this test. ``events`` and ``rejected_call_ms`` list
    at most :data:`KEPT_REJECTIONS` rejections; the counts and the maximum cover all of them.
    """

    key: str
    name: str
    # "fixture" | "default_manager" | "existing" | "created" | "polled" | "watched" | "auto"
    origin: str
    initial_state: str
    final_state: str
    left_closed: bool
    trips: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)
    trip_seconds: list[float] = field(default_factory=list)
    recovery_seconds: list[float] = field(default_factory=list)
    unrecovered: int = 0
    open_seconds: float = 0.0
    rejections: int = 0
    events_omitted: int = 0
    rejected_call_ms: list[float] = field(default_factory=list)
    rejected_calls_timed: int = 0
    rejected_call_ms_max: float | None = None
    library: str | None = None
    """The breaker's library when it is not Synapse's (``pybreaker``, ``aiobreaker``,
    ``purgatory``, ``circuitbreaker``)."""

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
    source: str | None = None,
    rejected_call_ms: list[float] | None = None,
) -> BreakerSummary:
    """Compute one breaker's figures from the timeline up to time *end*.

    *source* selects this breaker's records when several breakers share a name.
    """
    records = [
        r
        for r in timeline.breaker_events
        if r.breaker == name and r.at <= end and (source is None or r.source == source)
    ]
    transitions = [r for r in records if r.kind in _NEXT_STATE]
    # Replay the states: which openings left CLOSED (trips), and time spent not closed.
    state, since = initial_state, timeline.started_at
    open_seconds = 0.0
    leaving_closed = []
    for rec in transitions:
        if state != "closed":
            open_seconds += max(0.0, rec.at - since)
        if rec.kind == "opened" and state == "closed":
            leaving_closed.append(rec)
        state, since = _NEXT_STATE[rec.kind], rec.at
    if state != "closed":
        open_seconds += max(0.0, end - since)
    events, omitted = _cap_rejections([r.to_dict() for r in records])
    timings = list(rejected_call_ms or ())
    summary = BreakerSummary(
        key=key,
        name=name,
        origin=origin,
        initial_state=initial_state,
        final_state=final_state,
        left_closed=bool(leaving_closed),
        trips=len(leaving_closed),
        events=events,
        events_omitted=omitted,
        open_seconds=open_seconds,
        rejections=sum(r.kind == "request_rejected" for r in records),
        rejected_call_ms=timings[:KEPT_REJECTIONS],
        rejected_calls_timed=len(timings),
        rejected_call_ms_max=max(timings) if timings else None,
    )
    faults = timeline.faults
    for rec in leaving_closed:
        onset = earliest_active_onset(faults, rec.at)
        if onset is not None:
            summary.trip_seconds.append(rec.at - onset)
    # Recovery after each heal: an instant at which faults ended and none is left active.
    heals = sorted({s.end for s in faults if s.end is not None and s.end <= end})
    for heal in heals:
        if _faulted_after(faults, heal) or _state_at(initial_state, transitions, heal) == "closed":
            continue
        since = min(s.start for s in faults if s.end == heal)
        if not any(r.kind == "opened" and since <= r.at <= heal for r in transitions):
            continue  # not opened by this fault (e.g. open since an earlier test): not ours
        closed_after = next(
            (r.at for r in transitions if r.kind == "closed" and r.at >= heal), None
        )
        if closed_after is None:
            summary.unrecovered += 1
        else:
            summary.recovery_seconds.append(closed_after - heal)
    return summary


def _cap_rejections(events: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """Keep every transition and the first :data:`KEPT_REJECTIONS` rejections, in order."""
    kept: list[dict[str, Any]] = []
    rejections = omitted = 0
    for event in events:
        if event["kind"] == "request_rejected":
            rejections += 1
            if rejections > KEPT_REJECTIONS:
                omitted += 1
                continue
        kept.append(event)
    return kept, omitted


def earliest_active_onset(faults: list[FaultSpan], at: float) -> float | None:
    """The start of the earliest fault active at time *at*, if any."""
    active = [s.start for s in faults if s.start <= at and (s.end is None or s.end >= at)]
    return min(active) if active else None


def _faulted_after(faults: list[FaultSpan], heal: float) -> bool:
    return any(s.start <= heal and (s.end is None or s.end > heal) for s in faults)


def _state_at(initial: str, transitions: list[Any], at: float) -> str:
    state = initial
    for rec in transitions:
        if rec.at > at:
            break
        state = _NEXT_STATE[rec.kind]
    return state
