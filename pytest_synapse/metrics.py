"""Session-wide resilience metrics computed from the per-test records."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pytest_synapse.records import TestRecord


@dataclass(frozen=True)
class MetricDef:
    """A metric a gate can name."""

    name: str
    kind: str  # "bool" | "number"
    unit: str
    help: str


METRICS: dict[str, MetricDef] = {
    m.name: m
    for m in (
        MetricDef(
            "all_recovered",
            "bool",
            "",
            "every breaker that left closed was closed at the end of the test in which it "
            "last left closed (force_open counts)",
        ),
        MetricDef(
            "max_recovery_seconds",
            "number",
            "s",
            "longest time from a heal to the breaker closing again",
        ),
        MetricDef(
            "max_trip_seconds",
            "number",
            "s",
            "longest time from fault onset to the breaker opening",
        ),
        MetricDef(
            "max_rejected_call_ms",
            "number",
            "ms",
            "slowest call rejected by an open breaker (fixture breakers and "
            "assert_rejects_fast measurements)",
        ),
        MetricDef(
            "total_open_seconds", "number", "s", "time all breakers spent open or half-open, summed"
        ),
        MetricDef("breakers", "number", "", "breakers seen in the session"),
        MetricDef("trips", "number", "", "times a breaker left closed"),
        MetricDef(
            "unrecovered",
            "number",
            "",
            "heals after which a breaker never closed before its test ended",
        ),
        MetricDef("faults", "number", "", "faults applied"),
    )
}


@dataclass(frozen=True)
class MetricValue:
    """A metric's value, or ``None`` with the reason there is no data."""

    name: str
    value: float | bool | None
    note: str = ""


def compute(records: Iterable[TestRecord]) -> dict[str, MetricValue]:
    """Every metric in :data:`METRICS` over *records* (in the order the tests ran)."""
    tests = list(records)
    summaries = [b for t in tests for b in t.breakers]
    # For each breaker: its state at the end of the test in which it last left CLOSED.
    last_left: dict[str, tuple[str, str, str]] = {}
    for test in tests:
        for b in test.breakers:
            if b.left_closed:
                last_left[b.key] = (b.final_state, b.name, test.nodeid)
    not_recovered = [
        f"{name} ({nodeid})" for state, name, nodeid in last_left.values() if state != "closed"
    ]
    unrecovered = sum(b.unrecovered for b in summaries)

    def maximum(values: list[float], what: str) -> MetricValue:
        return MetricValue(what, max(values) if values else None)

    recovery = [v for b in summaries for v in b.recovery_seconds]
    result = {
        "all_recovered": MetricValue(
            "all_recovered",
            not not_recovered,
            f"not closed: {', '.join(sorted(not_recovered))}" if not_recovered else "",
        ),
        "max_recovery_seconds": maximum(recovery, "max_recovery_seconds"),
        "max_trip_seconds": maximum(
            [v for b in summaries for v in b.trip_seconds], "max_trip_seconds"
        ),
        "max_rejected_call_ms": maximum(
            [b.rejected_call_ms_max for b in summaries if b.rejected_call_ms_max is not None]
            + [float(a["max_ms"]) for t in tests for a in t.assertions if "max_ms" in a],
            "max_rejected_call_ms",
        ),
        "total_open_seconds": MetricValue(
            "total_open_seconds", float(sum(b.open_seconds for b in summaries))
        ),
        "breakers": MetricValue("breakers", len({b.key for b in summaries})),
        "trips": MetricValue("trips", sum(b.trips for b in summaries)),
        "unrecovered": MetricValue("unrecovered", unrecovered),
        "faults": MetricValue("faults", sum(len(t.faults) for t in tests)),
    }
    if not result["breakers"].value:
        # Nothing to judge: a gate on these must fail rather than pass vacuously (a CI job
        # that forgot --synapse-chaos skips every chaos test and would otherwise go green).
        why = "no breaker was seen in this session (chaos tests skipped? see --synapse-chaos)"
        for name in ("all_recovered", "unrecovered", "total_open_seconds"):
            result[name] = MetricValue(name, None, why)
        return result
    if unrecovered and result["max_recovery_seconds"].value is not None:
        result["max_recovery_seconds"] = MetricValue(
            "max_recovery_seconds",
            result["max_recovery_seconds"].value,
            f"{unrecovered} heal(s) never followed by recovery",
        )
    elif unrecovered:
        result["max_recovery_seconds"] = MetricValue(
            "max_recovery_seconds", None, f"{unrecovered} heal(s) never followed by recovery"
        )
    return result


def as_json(values: dict[str, MetricValue]) -> dict[str, Any]:
    """``{name: value}`` for the JSON report (``None`` stays ``null``)."""
    return {name: mv.value for name, mv in values.items()}
