"""Edge cases of the report's figures and the plugin's plumbing (each found in review)."""

from __future__ import annotations

import json

import pytest

FIGURES = """
import pytest
from synapse_core import CircuitBreaker, CircuitBreakerConfig, default_manager

def fail():
    raise ConnectionError("down")

def trip(b, n=3):
    for _ in range(n):
        with pytest.raises(ConnectionError):
            b.call(fail)

def test_reopen_is_not_a_new_trip(circuit_breaker, virtual_clock, breaker_timeline):
    b = circuit_breaker("reopen")
    span = breaker_timeline.timeline.fault_started("blackhole", "p")
    virtual_clock.advance(1)
    trip(b)
    virtual_clock.advance(10)
    trip(b, 1)                      # failed probe: half_open -> open, not a trip
    breaker_timeline.timeline.fault_ended(span)
    virtual_clock.advance(10)
    b.call(lambda: 1); b.call(lambda: 1)

def test_recovered_before_heal(circuit_breaker, virtual_clock, breaker_timeline):
    b = circuit_breaker("early")
    span = breaker_timeline.timeline.fault_started("latency", "p")
    trip(b)
    virtual_clock.advance(10)
    b.call(lambda: 1); b.call(lambda: 1)
    virtual_clock.advance(5)
    breaker_timeline.timeline.fault_ended(span)

def test_two_faults_healed_together(circuit_breaker, virtual_clock, breaker_timeline):
    b = circuit_breaker("pair")
    s1 = breaker_timeline.timeline.fault_started("latency", "a")
    s2 = breaker_timeline.timeline.fault_started("latency", "b")
    trip(b)
    breaker_timeline.timeline.fault_ended(s1)
    breaker_timeline.timeline.fault_ended(s2)
    virtual_clock.advance(10)
    b.call(lambda: 1); b.call(lambda: 1)

def test_same_name_breakers_are_kept_apart(circuit_breaker, virtual_clock):
    idle = CircuitBreaker("dep", clock=virtual_clock)
    busy = circuit_breaker("dep")
    trip(busy)
    busy.force_close()
    assert idle.state.value == "closed"
"""


def test_figures_follow_the_breaker_state_machine(synapse_pytester: pytest.Pytester) -> None:
    synapse_pytester.makepyfile(FIGURES)
    result = synapse_pytester.runpytest("--synapse-report=r.json")
    result.assert_outcomes(passed=4)
    report = json.loads((synapse_pytester.path / "r.json").read_text())
    by_test = {t["nodeid"].split("::")[1]: t for t in report["tests"]}
    (reopen,) = by_test["test_reopen_is_not_a_new_trip"]["breakers"]
    assert reopen["trips"] == 1
    assert reopen["trip_seconds"] == [1.0]
    assert reopen["recovery_seconds"] == [10.0]
    (early,) = by_test["test_recovered_before_heal"]["breakers"]
    assert early["recovery_seconds"] == []
    assert early["unrecovered"] == 0
    (pair,) = by_test["test_two_faults_healed_together"]["breakers"]
    assert pair["recovery_seconds"] == [10.0]  # one heal instant, measured once
    same = by_test["test_same_name_breakers_are_kept_apart"]["breakers"]
    busy = [b for b in same if b["origin"] == "fixture"]
    assert len(busy) == 1
    assert busy[0]["trips"] == 1
    assert all(b["origin"] == "fixture" for b in same)  # the idle one had nothing to report
    assert report["metrics"]["trips"] == 4
    assert report["metrics"]["unrecovered"] == 0


ACROSS_TESTS = """
import pytest
from synapse_core import CircuitBreaker

shared = CircuitBreaker("shared")      # made at import time, before any test

def fail():
    raise ConnectionError("down")

def test_a_leaves_it_open():
    for _ in range(3):
        with pytest.raises(ConnectionError):
            shared.call(fail)

@pytest.mark.parametrize("probe_fails", [False, True])
def test_b_recovers_it(probe_fails):
    shared._open_until = 0.0           # let the next call probe now
    if probe_fails:
        with pytest.raises(ConnectionError):
            shared.call(fail)          # half_open -> open: it did not leave CLOSED here
        shared._open_until = 0.0
    shared.call(lambda: 1); shared.call(lambda: 1)
    assert shared.state.value == "closed"
"""


@pytest.mark.parametrize("probe_fails", ["False", "True"])
def test_all_recovered_looks_at_the_test_where_a_breaker_last_left_closed(
    synapse_pytester: pytest.Pytester, probe_fails: str
) -> None:
    module = synapse_pytester.makepyfile(ACROSS_TESTS).name
    result = synapse_pytester.runpytest(
        f"{module}::test_a_leaves_it_open",
        f"{module}::test_b_recovers_it[{probe_fails}]",
        "--synapse-gate=all_recovered",
    )
    result.assert_outcomes(passed=2)
    assert result.ret == 1  # test_a left it open; recovering later does not undo that
    result.stdout.fnmatch_lines(["gate FAIL: all_recovered*shared (*test_a_leaves_it_open)*"])


def test_leak_in_the_same_virtual_instant_is_caught(synapse_pytester: pytest.Pytester) -> None:
    synapse_pytester.makepyfile(
        """
        import pytest
        from synapse_core import CircuitOpenError

        def test_fallback_leak(circuit_breaker, breaker_timeline):
            b = circuit_breaker("dep")
            def upstream():
                breaker_timeline.upstream_call("dep")
                raise ConnectionError("down")
            for _ in range(4):
                try:
                    b.call(upstream)
                except CircuitOpenError:
                    breaker_timeline.upstream_call("dep")   # the bug: a fallback call
                except ConnectionError:
                    pass
            breaker_timeline.assert_no_calls_while_open(b, "dep")
        """
    )
    result = synapse_pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*1 call(s) reached dep while breaker 'dep' was open*"])
    assert "assertions.py" not in result.stdout.str()  # the plugin's frames are hidden


def test_trip_time_counts_from_the_fault_active_at_the_trip(
    synapse_pytester: pytest.Pytester,
) -> None:
    synapse_pytester.makepyfile(
        """
        import pytest

        def test_late_trip(circuit_breaker, virtual_clock, breaker_timeline):
            b = circuit_breaker("dep")
            old = breaker_timeline.timeline.fault_started("latency", "p")
            virtual_clock.advance(10)
            breaker_timeline.timeline.fault_ended(old)
            virtual_clock.advance(90)
            breaker_timeline.timeline.fault_started("blackhole", "p")
            virtual_clock.advance(1)
            for _ in range(3):
                with pytest.raises(ZeroDivisionError):
                    b.call(lambda: 1 / 0)
            assert breaker_timeline.assert_trips_within(b, seconds=2) == 1.0
        """
    )
    synapse_pytester.runpytest().assert_outcomes(passed=1)


def test_unwritable_reports_and_infinite_limits_are_reported_cleanly(
    synapse_pytester: pytest.Pytester,
) -> None:
    synapse_pytester.makepyfile("def test_x(circuit_breaker): circuit_breaker('x')")
    synapse_pytester.mkdir("adir")
    result = synapse_pytester.runpytest("--synapse-report=adir")
    assert result.ret == 1
    result.stdout.fnmatch_lines(["error: could not write the JSON report to *adir*", "*1 passed*"])
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
    result = synapse_pytester.runpytest("--synapse-gate=max_trip_seconds<=1e999")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*the limit must be a finite number*"])


def test_polled_breakers_reach_the_report(synapse_pytester: pytest.Pytester) -> None:
    synapse_pytester.makepyfile(
        """
        import pytest

        def test_polled(breaker_timeline):
            states = {"svc": "closed"}
            poller = breaker_timeline.poll(lambda: states, interval=0.01)
            poller.poll_once()
            span = breaker_timeline.timeline.fault_started("blackhole", "svc")
            states["svc"] = "open"
            poller.poll_once()
            with pytest.raises(TypeError, match="in-process breakers"):
                breaker_timeline.assert_trips_within("svc", failures=3)
            breaker_timeline.timeline.fault_ended(span)
            poller.stop()
        """
    )
    result = synapse_pytester.runpytest("--synapse-report=r.json", "--synapse-gate=all_recovered")
    result.assert_outcomes(passed=1)
    assert result.ret == 1  # the polled breaker was left open
    report = json.loads((synapse_pytester.path / "r.json").read_text())
    (svc,) = [b for b in report["tests"][0]["breakers"] if b["name"] == "svc"]
    assert (svc["origin"], svc["final_state"], svc["trips"]) == ("polled", "open", 1)


def test_chaos_marker_settings_merge_across_levels(synapse_pytester: pytest.Pytester) -> None:
    synapse_pytester.makepyfile(
        """
        import pytest

        pytestmark = pytest.mark.chaos(scenario="partition-heal")

        @pytest.mark.chaos(reason="slow network")
        def test_marked(chaos_scenario):
            with pytest.raises(Exception, match="no proxy given for 'service'"):
                chaos_scenario()   # the module's scenario reached the fixture
        """
    )
    result = synapse_pytester.runpytest("-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*slow network: chaos test: run with --synapse-chaos*"])
    synapse_pytester.runpytest("--synapse-chaos").assert_outcomes(passed=1)


def test_no_flag_beats_the_environment(
    synapse_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SYNAPSE_CHAOS", "1")
    monkeypatch.setenv("SYNAPSE_REPORT", "")  # empty counts as unset
    synapse_pytester.makepyfile("import pytest\n\n@pytest.mark.chaos\ndef test_x():\n    pass\n")
    synapse_pytester.runpytest("--no-synapse-chaos").assert_outcomes(skipped=1)
    synapse_pytester.runpytest().assert_outcomes(passed=1)
    monkeypatch.setenv("SYNAPSE_SEED", "nope")
    assert synapse_pytester.runpytest("--help").ret == 0  # help works despite a bad env var


def test_ini_booleans_are_validated_with_the_key(synapse_pytester: pytest.Pytester) -> None:
    synapse_pytester.makeini("[pytest]\nsynapse_chaos = maybe\n")
    synapse_pytester.makepyfile("def test_x(): pass")
    result = synapse_pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*ini synapse_chaos: expected a boolean*"])


def test_gates_are_not_evaluated_when_only_collecting(synapse_pytester: pytest.Pytester) -> None:
    synapse_pytester.makepyfile("def test_x(): pass")
    result = synapse_pytester.runpytest("--collect-only", "--synapse-gate=max_trip_seconds<=5")
    assert result.ret == 0


def test_a_nested_in_process_run_keeps_the_outer_tests_timeline(
    synapse_pytester: pytest.Pytester,
) -> None:
    synapse_pytester.makepyfile(
        """
        pytest_plugins = ["pytester"]

        def test_outer(circuit_breaker, pytester):
            b = circuit_breaker("outer")
            pytester.makepyfile("def test_inner(circuit_breaker): circuit_breaker('inner')")
            pytester.runpytest_inprocess().assert_outcomes(passed=1)
            b.force_open()
            from pytest_synapse.run import current_run
            assert current_run() is not None
            assert current_run().nodeid.endswith("test_outer")
        """
    )
    synapse_pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)
