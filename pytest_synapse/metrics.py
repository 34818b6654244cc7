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


_VIRTUAL_NOTE = (
    " Virtual-clock tests (those using virtual_clock or circuit_breaker) count in the "
    "*_virtual_seconds metric instead: their seconds are simulated, not waited."
)

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
            "longest time from a heal to the breaker closing again, real seconds." + _VIRTUAL_NOTE,
        ),
        MetricDef(
            "max_trip_seconds",
            "number",
            "s",
            "longest time from fault onset to the breaker opening, real seconds." + _VIRTUAL_NOTE,
        ),
        MetricDef(
            "max_rejected_call_ms",
            "number",
            "ms",
            "slowest call rejected by an open breaker, real milliseconds (fixture breakers and "
            "assert_rejects_fast measurements)",
        ),
        MetricDef(
            "total_open_seconds",
            "number",
            "s",
            "time all breakers spent open or half-open, summed, real seconds." + _VIRTUAL_NOTE,
        ),
        MetricDef(
            "max_recovery_virtual_seconds",
            "number",
            "s",
            "max_recovery_seconds of the virtual-clock tests, in simulated seconds",
        ),
        MetricDef(
            "max_trip_virtual_seconds",
            "number",
            "s",
            "max_trip_seconds of the virtual-clock tests, in simulated seconds",
        ),
        MetricDef(
            "total_open_virtual_seconds",
            "number",
            "s",
            "total_open_seconds of the virtual-clock tests, in simulated seconds",
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

# The metrics measured on a test's clock: (real-clock name, virtual-clock name).
CLOCKED = (
    ("max_recovery_seconds", "max_recovery_virtual_seconds"),
    ("max_trip_seconds", "max_trip_virtual_seconds"),
    ("total_open_seconds", "total_open_virtual_seconds"),
)


@dataclass(frozen=True)
class MetricValue:
    """A metric's value, or ``None`` with the reason there is no data.

    ``source``: the test that produced the figure (for a maximum), so a gate can name it.
    """

    name: str
    value: float | bool | None
    note: str = ""
    source: str = ""


def compute(
    records: Iterable[TestRecord], *, chaos_enabled: bool | None = None
) -> dict[str, MetricValue]:
    """Every metric in :data:`METRICS` over *records* (in the order the tests ran).

    *chaos_enabled* ``False`` says chaos tests were skipped (no ``--synapse-chaos``): the note
    on the metrics that then have no data says so.
    """
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
    result = {
        "all_recovered": MetricValue(
            "all_recovered",
            not not_recovered,
            f"not closed: {', '.join(sorted(not_recovered))}" if not_recovered else "",
        ),
        "max_rejected_call_ms": _maximum(
            "max_rejected_call_ms",
            [
                (b.rejected_call_ms_max, t.nodeid)
                for t in tests
                for b in t.breakers
                if b.rejected_call_ms_max is not None
            ]
            + [
                (float(a["max_ms"]), t.nodeid) for t in tests for a in t.assertions if "max_ms" in a
            ],
        ),
        "breakers": MetricValue("breakers", len({b.key for b in summaries})),
        "trips": MetricValue("trips", sum(b.trips for b in summaries)),
        "unrecovered": MetricValue("unrecovered", unrecovered),
        "faults": MetricValue("faults", sum(len(t.faults) for t in tests)),
    }
    for real_name, virtual_name in CLOCKED:
        real = _clocked(real_name, [t for t in tests if t.clock != "virtual"])
        virtual = _clocked(virtual_name, [t for t in tests if t.clock == "virtual"])
        for mine, other, what in ((real, virtual, "real"), (virtual, real, "virtual")):
            if mine.value is None and not mine.note and other.value is not None:
                mine = MetricValue(
                    mine.name, None, f"no {what}-clock test has data; see {other.name}"
                )
            result[mine.name] = mine
    if not result["breakers"].value:
        # Nothing to judge: a gate on these must fail rather than pass vacuously (a CI job
        # that forgot --synapse-chaos skips every chaos test and would otherwise go green).
        why = "no breaker was seen in this session"
        if chaos_enabled is False:
            why += " (chaos tests were skipped: run with --synapse-chaos)"
        for name in ("all_recovered", "unrecovered", "total_open_seconds"):
            result[name] = MetricValue(name, None, why)
    return dict(sorted(result.items(), key=lambda item: list(METRICS).index(item[0])))


def _maximum(name: str, figures: list[tuple[float, str]]) -> MetricValue:
    """The largest figure, naming the test it came from."""
    if not figures:
        return MetricValue(name, None)
    value, source = max(figures, key=lambda figure: figure[0])
    return MetricValue(name, value, source=source)


def _clocked(name: str, tests: list[TestRecord]) -> MetricValue:
    """One of the :data:`CLOCKED` metrics over the tests of one clock."""
    if name.startswith("total_open"):
        if not any(t.breakers for t in tests):
            return MetricValue(name, None)
        return MetricValue(name, float(sum(b.open_seconds for t in tests for b in t.breakers)))
    field = "trip_seconds" if "trip" in name else "recovery_seconds"
    value = _maximum(
        name, [(v, t.nodeid) for t in tests for b in t.breakers for v in getattr(b, field)]
    )
    if field == "trip_seconds":
        return value
    never = [(b.unrecovered, t.nodeid) for t in tests for b in t.breakers if b.unrecovered]
    if not never:
        return value
    heals = sum(n for n, _ in never)
    where = ", ".join(sorted({nodeid for _, nodeid in never}))
    return MetricValue(
        name, value.value, f"{heals} heal(s) never followed by recovery ({where})", value.source
    )


def as_json(values: dict[str, MetricValue]) -> dict[str, Any]:
    """``{name: value}`` for the JSON report (``None`` stays ``null``)."""
    return {name: mv.value for name, mv in values.items()}
