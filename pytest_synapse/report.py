"""The session's resilience report: a versioned JSON document and a self-contained HTML page.

The JSON schema is documented in ``docs/report-schema.md``; bump :data:`SCHEMA_VERSION` on any
incompatible change.
"""

from __future__ import annotations

import html
import json
import math
import platform
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pytest_synapse.gates import GateResult
from pytest_synapse.metrics import METRICS, MetricValue, as_json
from pytest_synapse.records import TestRecord

SCHEMA_VERSION = 1


def build_report(
    records: Sequence[TestRecord],
    metrics: dict[str, MetricValue],
    gates: Sequence[GateResult],
    *,
    toxiproxy: str,
    seed: int | None,
    duration: float,
    workers: int,
    interrupted: str | None = None,
    crashed: Sequence[dict[str, Any]] = (),
    cleanup: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """The JSON-ready report document.

    *interrupted*: why the session stopped early (``SIGTERM``, ``KeyboardInterrupt``...);
    *crashed*: xdist workers that died (``worker``, ``test``, ``error``); *cleanup*: proxies
    the controller removed for workers that could not (``worker``, ``server``, ``proxy``,
    ``removed``, ``error``).
    """
    from synapse_core import __version__

    return {
        "schema_version": SCHEMA_VERSION,
        "generator": f"synapse-chaos {__version__}",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "session": {
            "duration_seconds": round(duration, 3),
            "toxiproxy": toxiproxy,
            "seed": seed,
            "workers": workers,
            "tests": len(records),
            "interrupted": interrupted,
            "crashed": [dict(c) for c in crashed],
            "cleanup": [dict(c) for c in cleanup],
        },
        "metrics": as_json(metrics),
        "metric_notes": {name: mv.note for name, mv in metrics.items() if mv.note},
        "metric_sources": {name: mv.source for name, mv in metrics.items() if mv.source},
        "gates": [g.to_dict() for g in gates],
        "tests": [r.to_dict() for r in records],
    }


def write_json(report: dict[str, Any], path: Path) -> None:
    """Write *report* to *path* (parents created); non-finite numbers become ``null``.

    JSON has no infinity: a rejection by a forced-open breaker carries ``retry_after`` = inf
    (open until someone closes it), and strict JSON readers refuse ``Infinity``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_finite(report), indent=2, allow_nan=False)
    path.write_text(text + "\n", encoding="utf-8")


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


# ---------------------------------------------------------------------------- HTML

_COLORS = {"closed": "#2e9d4a", "open": "#d33", "half_open": "#e8a317"}
_FAULT = "#7b61c9"
_NEXT = {"opened": "open", "half_opened": "half_open", "closed": "closed"}
_WIDTH, _LABEL, _ROW = 900, 230, 22
_TAIL = 14  # pixels past the test's end, where the states at the end are drawn


def render_html(report: dict[str, Any]) -> str:
    """A single HTML page: metrics, gates, and per test a timeline picture (inline SVG)."""
    e = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        "<title>Synapse resilience report</title><style>",
        "body{font:14px system-ui,sans-serif;margin:2em;color:#222}",
        "table{border-collapse:collapse;margin:.5em 0 1.5em}",
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}",
        ".pass{color:#2e7d32}.fail{color:#c62828;font-weight:bold}",
        "h2{margin-top:2em}h3{margin-bottom:.2em}svg{display:block;margin-bottom:1em}",
        ".legend span{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px}",
        "</style></head><body>",
        "<h1>Synapse resilience report</h1>",
        f"<p>{e(report['generator'])}, {e(report['created'])}, "
        f"{report['session']['tests']} tests, toxiproxy: {e(str(report['session']['toxiproxy']))}"
        "</p>",
        "<h2>Metrics</h2><table><tr><th>metric</th><th>value</th><th>meaning</th></tr>",
    ]
    for name, value in report["metrics"].items():
        note = report["metric_notes"].get(name, "")
        source = report.get("metric_sources", {}).get(name, "")
        meaning = METRICS[name].help if name in METRICS else ""
        shown = "no data" if value is None else _fmt(value)
        where = f" (in {source})" if source else ""
        parts.append(
            f"<tr><td>{e(name)}</td><td>{e(shown + where)}{(' — ' + e(note)) if note else ''}"
            f"</td><td>{e(meaning)}</td></tr>"
        )
    parts.append("</table>")
    if report["gates"]:
        parts.append("<h2>Gates</h2><table><tr><th>gate</th><th>result</th></tr>")
        for gate in report["gates"]:
            cls = "pass" if gate["passed"] else "fail"
            verdict = "PASS" if gate["passed"] else "FAIL"
            parts.append(
                f"<tr><td>{e(gate['expr'])}</td><td class='{cls}'>{verdict}: "
                f"{e(gate['message'])}</td></tr>"
            )
        parts.append("</table>")
    parts.append(
        "<h2>Tests</h2><p class='legend'>"
        f"<span style='background:{_FAULT}'></span>fault"
        f"<span style='background:{_COLORS['closed']}'></span>closed"
        f"<span style='background:{_COLORS['half_open']}'></span>half-open"
        f"<span style='background:{_COLORS['open']}'></span>open"
        "<span style='background:#000;width:2px'></span>rejected call</p>"
    )
    for test in report["tests"]:
        clock = " — virtual clock (simulated seconds)" if test.get("clock") == "virtual" else ""
        parts.append(f"<h3>{e(test['nodeid'])} — {e(test['outcome'])}{clock}</h3>")
        parts.append(_svg(test))
        if test["breakers"]:
            parts.append(
                "<table><tr><th>breaker</th><th>final</th><th>trip s</th><th>recovery s</th>"
                "<th>open s</th><th>rejections</th></tr>"
            )
            for b in test["breakers"]:
                parts.append(
                    f"<tr><td>{e(b['name'])}{_library(b)}</td><td>{e(b['final_state'])}</td>"
                    f"<td>{e(_list(b['trip_seconds']))}</td>"
                    f"<td>{e(_list(b['recovery_seconds']))}</td>"
                    f"<td>{b['open_seconds']:.3f}</td><td>{b['rejections']}"
                    f"{_omitted(b)}</td></tr>"
                )
            parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _library(breaker: dict[str, Any]) -> str:
    """`` (pybreaker)`` after the name of another library's breaker."""
    library = breaker.get("library")
    return f" ({html.escape(str(library))})" if library else ""


def write_html(report: dict[str, Any], path: Path) -> None:
    """Write the HTML page for *report* to *path*."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(report), encoding="utf-8")


def _omitted(breaker: dict[str, Any]) -> str:
    omitted = int(breaker.get("events_omitted", 0))
    return f" (first {breaker['rejections'] - omitted} drawn)" if omitted else ""


def _svg(test: dict[str, Any]) -> str:
    e = html.escape
    start, end = test["started_at"], test["ended_at"]
    times = [start, end]
    for f in test["faults"]:
        times += [f["start"]] + ([f["end"]] if f["end"] is not None else [])
    for b in test["breakers"]:
        times += [ev["at"] for ev in b["events"]]
    lo, hi = float(min(times)), float(max(times))
    span = hi - lo
    scale = span or 1.0  # a zero-length test still gets an axis, labelled 0s
    plot = _WIDTH - _LABEL - 10 - _TAIL
    end_x = _LABEL + plot + _TAIL  # what holds at the end is drawn on past it

    def x(t: float) -> float:
        return _LABEL + (t - lo) / scale * plot

    rows: list[str] = []
    y = 4
    for f in test["faults"]:
        f_end = f["end"] if f["end"] is not None else hi
        label = f"{f['fault']} on {f['proxy']}"
        rows.append(f"<text x='4' y='{y + 14}'>{e(label)}</text>")
        right = end_x if f["end"] is None else x(f_end)
        x0, width = x(f["start"]), max(1.0, right - x(f["start"]))
        title = f"{label}: {f_end - f['start']:.3f}s"
        rows.append(
            f"<rect x='{x0:.1f}' y='{y + 3}' width='{width:.1f}' height='14' fill='{_FAULT}'>"
            f"<title>{e(title)}</title></rect>"
        )
        y += _ROW
    for b in test["breakers"]:
        rows.append(f"<text x='4' y='{y + 14}'>breaker {e(b['name'])}</text>")
        state, since = b["initial_state"], lo
        for ev in b["events"]:
            if ev["kind"] in _NEXT:
                rows.append(_segment(x(since), x(ev["at"]), y, state))
                state, since = _NEXT[ev["kind"]], ev["at"]
        # The final state runs on into the tail: a breaker that closes at the last instant
        # still shows its green.
        rows.append(_segment(x(since), end_x, y, state))
        for ev in b["events"]:
            if ev["kind"] == "request_rejected":
                rows.append(
                    f"<line x1='{x(ev['at']):.1f}' x2='{x(ev['at']):.1f}' y1='{y + 1}' "
                    f"y2='{y + 19}' stroke='#000' stroke-width='1'/>"
                )
        y += _ROW
    axis_y = y + 12
    rows.append(
        f"<text x='{_LABEL}' y='{axis_y}'>0s</text>"
        f"<text x='{_LABEL + plot}' y='{axis_y}' text-anchor='end'>{span:.3f}s</text>"
    )
    height = axis_y + 6
    body = "".join(rows)
    return (
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{_WIDTH}' height='{height}' "
        f"font-size='12' role='img'>{body}</svg>"
    )


def _segment(x0: float, x1: float, y: int, state: str) -> str:
    color = _COLORS.get(state, "#999")
    return (
        f"<rect x='{x0:.1f}' y='{y + 3}' width='{max(0.5, x1 - x0):.1f}' height='14' "
        f"fill='{color}'><title>{html.escape(state)}</title></rect>"
    )


def _fmt(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _list(values: list[float]) -> str:
    return ", ".join(f"{v:.3f}" for v in values) or "-"
