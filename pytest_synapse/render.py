"""Plain-text rendering of a test's fault timeline next to a breaker's timeline."""

from __future__ import annotations

from synapse_core import Timeline


def side_by_side(timeline: Timeline, breaker: str | None = None, width: int = 44) -> str:
    """Two columns, faults left and breaker events right, merged in time order.

    Times are seconds since the test's timeline started; what was recorded at the same instant
    keeps the order it was recorded in.
    """
    base = timeline.started_at
    rows: list[tuple[float, int, str, str]] = []
    for span in timeline.faults:
        params = ", ".join(f"{k}={v}" for k, v in span.params.items())
        label = (
            f"{span.fault}({params}) on {span.proxy}" if params else f"{span.fault} on {span.proxy}"
        )
        rows.append((span.start, span.seq, f"+ {label}", ""))
        if span.end is not None:
            rows.append((span.end, span.end_seq or 0, f"- healed {span.fault} on {span.proxy}", ""))
    rejected: dict[str, int] = {}
    for rec in timeline.breaker_events:
        if breaker is not None and rec.breaker != breaker:
            continue
        if rec.kind == "request_rejected":
            rejected[rec.breaker] = rejected.get(rec.breaker, 0) + 1
            if rejected[rec.breaker] > 3:
                continue  # the first few show the pattern; the count is in the summary
        reason = rec.detail.get("reason", "")
        text = f"{rec.breaker}: {rec.kind} -> {rec.state}"
        if reason:
            text += f" ({reason})"
        rows.append((rec.at, rec.seq, "", text))
    for upstream_at, seq in timeline.upstream_call_marks():
        rows.append((upstream_at, seq, "", "  (a call reached the upstream)"))
    if not rows:
        return "  (nothing recorded: no faults and no breaker events)"
    rows.sort(key=lambda r: (r[0], r[1]))
    lines = [f"  {'t (s)':>9}  {'faults':<{width}}  breaker"]
    for at, _, left, right in rows:
        lines.append(f"  {at - base:9.3f}  {left:<{width}}  {right}")
    extra = {name: n - 3 for name, n in rejected.items() if n > 3}
    for name, n in extra.items():
        lines.append(f"  ({n} more rejections of {name} not shown)")
    return "\n".join(lines)
