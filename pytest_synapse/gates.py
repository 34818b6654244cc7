"""CI gates: ``metric`` or ``metric OP number`` checked against the session's metrics."""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from pytest_synapse.metrics import METRICS, MetricValue

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "==": operator.eq,
    "<": operator.lt,
    ">": operator.gt,
}
_GATE = re.compile(
    r"^\s*(?P<metric>[A-Za-z_][A-Za-z0-9_]*)\s*"
    r"(?:(?P<op><=|>=|==|<|>)\s*(?P<limit>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*)?$",
    # ASCII: \d would take Arabic-Indic or full-width digits, which float() then reads as 5.
    re.ASCII,
)


class GateError(ValueError):
    """A gate expression that cannot be evaluated; the message names the gate."""


@dataclass(frozen=True)
class Gate:
    """A parsed gate."""

    expr: str
    metric: str
    op: str | None
    limit: float | None

    def describe(self) -> str:
        """The gate as it reads: ``max_trip_seconds <= 5``."""
        if self.op is None:
            return self.metric
        return f"{self.metric} {self.op} {self.limit:g}"


@dataclass(frozen=True)
class GateResult:
    """A gate, the value it saw, and whether it held."""

    gate: Gate
    value: float | bool | None
    passed: bool
    message: str

    def to_dict(self) -> dict[str, object]:
        """JSON-ready."""
        return {
            "expr": self.gate.expr,
            "metric": self.gate.metric,
            "op": self.gate.op,
            "limit": self.gate.limit,
            "value": self.value,
            "passed": self.passed,
            "message": self.message,
        }


def parse_gate(expr: str) -> Gate:
    """Parse one gate; ``GateError`` names the gate and what is wrong."""
    match = _GATE.match(expr)
    if match is None:
        ascii_hint = (
            "; write numbers with the ASCII digits 0-9"
            if any(c.isdigit() and not c.isascii() for c in expr)
            else ""
        )
        raise GateError(
            f"malformed gate {expr!r}: expected 'metric' or 'metric OP number' "
            f"with OP one of {', '.join(_OPS)} (e.g. 'max_recovery_seconds<=15'){ascii_hint}"
        )
    metric = match["metric"]
    if metric not in METRICS:
        raise GateError(
            f"unknown metric {metric!r} in gate {expr!r}; known metrics: {', '.join(METRICS)}"
        )
    op = match["op"]
    kind = METRICS[metric].kind
    if op is None and kind != "bool":
        raise GateError(f"gate {expr!r}: {metric} is a number; compare it, e.g. '{metric}<=10'")
    limit = float(match["limit"]) if match["limit"] is not None else None
    if limit is not None and not math.isfinite(limit):
        raise GateError(f"gate {expr!r}: the limit must be a finite number")
    return Gate(expr.strip(), metric, op, limit)


def parse_gates(exprs: Iterable[str]) -> list[Gate]:
    """Parse every gate (the first bad one raises)."""
    return [parse_gate(e) for e in exprs]


def evaluate(
    gates: Iterable[Gate], metrics: dict[str, MetricValue], *, incomplete: Sequence[str] = ()
) -> list[GateResult]:
    """Check each gate; a metric without data fails its gate, saying so.

    *incomplete* lists why the figures may be missing data (an interrupted session, a test
    that crashed with its worker): every gate then fails, naming the reasons, because a
    figure computed without the missing data can pass when the whole would not.
    """
    results = [_evaluate(gate, metrics) for gate in gates]
    if not incomplete:
        return results
    why = "; ".join(incomplete)
    return [
        GateResult(r.gate, r.value, False, f"{r.message}; but the figures are incomplete: {why}")
        for r in results
    ]


def _evaluate(gate: Gate, metrics: dict[str, MetricValue]) -> GateResult:
    mv = metrics[gate.metric]
    value = mv.value
    if value is None:
        why = f" ({mv.note})" if mv.note else ""
        return GateResult(gate, None, False, f"no data{why}")
    if gate.op is None:
        passed = bool(value)
        message = "true" if passed else f"false{': ' + mv.note if mv.note else ''}"
        return GateResult(gate, value, passed, message)
    assert gate.limit is not None
    passed = _OPS[gate.op](float(value), gate.limit)
    unit = METRICS[gate.metric].unit
    verdict = "meets" if passed else "violates"
    message = f"{_fmt(value)}{unit} {verdict} {gate.op} {gate.limit:g}{unit}"
    if mv.source:
        message += f" (in {mv.source})"
    if mv.note:
        message += f" ({mv.note})"
        if "never followed by recovery" in mv.note:
            passed = False
    return GateResult(gate, value, passed, message)


def _fmt(value: float | bool) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:.3f}".rstrip("0").rstrip(".") if isinstance(value, float) else str(value)
