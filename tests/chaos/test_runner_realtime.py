"""ScenarioRunner.run() in real time: short scenarios, progress display, interruption, cancel."""

from __future__ import annotations

import io
import threading
import time

import pytest
from chaos_helpers import connect_state, echoes

from chaos import Proxy, RunnerEvent, ScenarioRunner, parse_scenario
from chaos.scenarios.runner import ConsoleProgress

SHORT = """
name: short
proxies: [svc]
steps:
  - {at: 0.1, fault: latency, ms: 30, duration: 0.3}
  - {at: 0.2, fault: down, duration: 0.2}
  - {at: 0.45, fault: flapping, period: 0.2, down_fraction: 0.5, duration: 0.3}
"""

LONG = """
name: long
proxies: [svc]
duration: 30
steps:
  - {at: 0, fault: latency, ms: 10}
  - {at: 0.1, fault: down}
"""


def test_run_plays_in_real_time_and_cleans_up(echo_handle: Proxy) -> None:
    seen: list[tuple[str, bool]] = []

    def observe(event: RunnerEvent) -> None:
        if event.action == "apply" and event.fault == "down":
            seen.append(("down", connect_state(echo_handle.address) == "refused"))

    out = io.StringIO()
    runner = ScenarioRunner(parse_scenario(SHORT), {"svc": echo_handle}, on_event=observe)
    started = time.monotonic()
    timeline = runner.run(progress=ConsoleProgress(out, live=True))
    elapsed = time.monotonic() - started

    assert 0.75 <= elapsed <= 3.0, elapsed
    assert seen == [("down", True)]
    assert echo_handle.toxics() == []
    assert echoes(echo_handle.address)
    origin = runner.started_at
    assert origin is not None
    spans = {(s.fault, s.params.get("via", "")): s for s in timeline.faults}
    latency = spans[("latency", "")]
    assert latency.end is not None
    assert latency.start - origin == pytest.approx(0.1, abs=0.15)
    assert latency.end - latency.start == pytest.approx(0.3, abs=0.15)
    phases = [s for s in timeline.faults if s.params.get("via") == "flapping"]
    assert len(phases) == 2  # down at 0.45 and 0.65
    text = out.getvalue()
    assert "apply    latency(ms=30" in text
    assert "\r\x1b[K[" in text  # the live bar was drawn...
    assert text.endswith("scenario short complete\n")  # ...and cleared at the end
    assert [e.action for e in runner.log][-1] == "end"


def test_plain_progress_prints_events_only(echo_handle: Proxy) -> None:
    out = io.StringIO()
    ScenarioRunner(parse_scenario(SHORT), {"svc": echo_handle}).run(
        progress=ConsoleProgress(out)  # StringIO is no terminal: no bar
    )
    lines = out.getvalue().splitlines()
    assert "\x1b" not in out.getvalue()
    assert lines[0].endswith("begin    scenario short")
    assert any("expire   flapping on svc [step 3]" in line for line in lines)


def test_keyboard_interrupt_removes_the_faults(echo_handle: Proxy) -> None:
    def interrupt_on_down(event: RunnerEvent) -> None:
        if event.action == "apply" and event.fault == "down":
            raise KeyboardInterrupt  # as if Ctrl-C landed right after the step

    runner = ScenarioRunner(parse_scenario(LONG), {"svc": echo_handle}, on_event=interrupt_on_down)
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        runner.run()
    assert time.monotonic() - started < 5
    assert echo_handle.toxics() == []
    assert echo_handle.refresh().enabled
    assert [e.action for e in runner.log] == [
        "begin",
        "apply",
        "apply",
        "interrupted",
        "cleanup",
        "cleanup",
        "end",
    ]
    assert all(s.end is not None for s in runner.timeline.faults)


def test_cancel_from_another_thread_ends_the_run_early(echo_handle: Proxy) -> None:
    runner = ScenarioRunner(parse_scenario(LONG), {"svc": echo_handle})
    timer = threading.Timer(0.3, runner.cancel)
    timer.start()
    try:
        started = time.monotonic()
        runner.run()
        elapsed = time.monotonic() - started
    finally:
        timer.cancel()
        timer.join()
    assert elapsed < 2.0
    assert runner.finished
    assert runner.log[-1].message == "stopped early"
    assert echo_handle.toxics() == []
    assert echoes(echo_handle.address)


def test_cancel_before_run_applies_nothing(echo_handle: Proxy) -> None:
    runner = ScenarioRunner(parse_scenario(LONG), {"svc": echo_handle})
    runner.cancel()
    runner.run()
    assert runner.timeline.faults == []
    assert runner.finished


def test_cancel_stops_processing_between_due_actions(echo_handle: Proxy) -> None:
    scenario = parse_scenario(
        "name: many\nproxies: [svc]\nduration: 5\nsteps:\n"
        "  - {at: 0, fault: latency, ms: 1}\n"
        "  - {at: 0, fault: bandwidth, rate: 100}\n"
        "  - {at: 0, fault: slow_close, ms: 1}\n"
        "  - {at: 0, fault: limit_data, bytes: 100000}\n"
    )
    runner = ScenarioRunner(scenario, {"svc": echo_handle})
    runner.cancel()  # e.g. from a signal handler, while the runner works through due actions
    with runner:
        runner.start()
        assert [e.action for e in runner.log] == ["begin"]
    runner2 = ScenarioRunner(
        scenario,
        {"svc": echo_handle},
        on_event=lambda e: runner2.cancel() if e.action == "apply" else None,
    )
    with runner2:
        runner2.start()
        assert [e.action for e in runner2.log].count("apply") == 1
    assert echo_handle.toxics() == []
