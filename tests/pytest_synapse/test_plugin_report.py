"""JSON and HTML reports, JUnit properties, CI gates, and the xdist path."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from pytest_synapse.report import SCHEMA_VERSION

SUITE = """
import pytest

def fail():
    raise ConnectionError("down")

def test_trips_and_recovers(circuit_breaker, virtual_clock, breaker_timeline):
    db = circuit_breaker("db")
    span = breaker_timeline.timeline.fault_started("blackhole", "db-proxy")
    virtual_clock.advance(1.0)
    for _ in range(3):
        with pytest.raises(ConnectionError):
            db.call(fail)
    breaker_timeline.assert_rejects_fast(db, max_ms=50, calls=5)
    virtual_clock.advance(2.0)
    breaker_timeline.timeline.fault_ended(span)
    virtual_clock.advance(8.0)
    db.call(lambda: 1)
    db.call(lambda: 1)

def test_left_open(circuit_breaker, virtual_clock):
    circuit_breaker("cache").force_open("kept open")

def test_unrelated():
    pass
"""

REPORT_KEYS = {
    "schema_version",
    "generator",
    "created",
    "python",
    "session",
    "metrics",
    "metric_notes",
    "metric_sources",
    "gates",
    "tests",
}
SESSION_KEYS = {
    "duration_seconds",
    "toxiproxy",
    "seed",
    "workers",
    "tests",
    "interrupted",
    "crashed",
    "cleanup",
}
TEST_KEYS = {
    "nodeid",
    "outcome",
    "duration",
    "clock",
    "started_at",
    "ended_at",
    "faults",
    "breakers",
    "assertions",
    "worker",
}
BREAKER_KEYS = {
    "library",
    "trips",
    "key",
    "name",
    "origin",
    "initial_state",
    "final_state",
    "left_closed",
    "events",
    "trip_seconds",
    "recovery_seconds",
    "unrecovered",
    "open_seconds",
    "rejections",
    "events_omitted",
    "rejected_call_ms",
    "rejected_calls_timed",
    "rejected_call_ms_max",
}


def test_json_report_follows_the_documented_schema(synapse_pytester: pytest.Pytester) -> None:
    synapse_pytester.makepyfile(SUITE)
    result = synapse_pytester.runpytest(
        "--synapse-report=report.json",
        "--synapse-html=report.html",
        "--junitxml=junit.xml",
        "-o",
        "junit_family=xunit1",  # testcase properties: the xunit2 schema has no room for them
    )
    result.assert_outcomes(passed=3)
    report = json.loads((synapse_pytester.path / "report.json").read_text())
    assert set(report) == REPORT_KEYS
    assert report["schema_version"] == SCHEMA_VERSION
    assert {t["nodeid"].split("::")[1] for t in report["tests"]} == {
        "test_trips_and_recovers",
        "test_left_open",
    }
    for test in report["tests"]:
        assert set(test) == TEST_KEYS
        for breaker in test["breakers"]:
            assert set(breaker) == BREAKER_KEYS
    first = next(t for t in report["tests"] if t["nodeid"].endswith("recovers"))
    (db,) = first["breakers"]
    assert db["trip_seconds"] == [1.0]
    assert db["recovery_seconds"] == [8.0]
    assert db["open_seconds"] == 10.0
    assert db["rejections"] == 5
    assert first["faults"][0]["fault"] == "blackhole"
    metrics = report["metrics"]
    assert metrics["all_recovered"] is False  # the cache breaker was left open
    assert "cache" in report["metric_notes"]["all_recovered"]
    # Virtual-clock tests: simulated seconds, kept apart from real ones.
    assert metrics["max_trip_virtual_seconds"] == 1.0
    assert metrics["max_recovery_virtual_seconds"] == 8.0
    assert metrics["max_trip_seconds"] is None
    assert report["metric_sources"]["max_recovery_virtual_seconds"] == first["nodeid"]
    assert 0 < metrics["max_rejected_call_ms"] < 50
    # The documentation lists every key.
    doc = (Path(__file__).parents[2] / "docs" / "report-schema.md").read_text()
    assert set(report["session"]) == SESSION_KEYS
    for key in REPORT_KEYS | SESSION_KEYS | TEST_KEYS | BREAKER_KEYS | set(metrics):
        assert f"`{key}`" in doc, key

    html = (synapse_pytester.path / "report.html").read_text()
    assert "<svg" in html
    assert "test_trips_and_recovers" in html
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "")

    junit = ET.parse(synapse_pytester.path / "junit.xml")
    props = {
        p.get("name"): p.get("value")
        for case in junit.iter("testcase")
        if case.get("name") == "test_trips_and_recovers"
        for p in case.iter("property")
    }
    assert props["synapse_breaker_db_final_state"] == "closed"
    assert props["synapse_breaker_db_trips"] == "1"
    assert props["synapse_breaker_db_max_recovery_seconds"] == "8.0"


def test_a_chatty_test_lists_only_the_first_rejections(synapse_pytester: pytest.Pytester) -> None:
    synapse_pytester.makepyfile(
        """
        import pytest
        from synapse_core import CircuitOpenError

        def test_chatty(circuit_breaker):
            db = circuit_breaker("db")
            db.force_open()
            for _ in range(1000):
                with pytest.raises(CircuitOpenError):
                    db.call(lambda: 1)
            db.force_close()
        """
    )
    result = synapse_pytester.runpytest("--synapse-report=report.json", "--synapse-html=r.html")
    result.assert_outcomes(passed=1)
    report = json.loads((synapse_pytester.path / "report.json").read_text())
    (db,) = report["tests"][0]["breakers"]
    kinds = [e["kind"] for e in db["events"]]
    assert kinds.count("request_rejected") == 200
    assert (kinds[0], kinds[-1]) == ("opened", "closed")  # transitions are never cut
    # Forced open has no end: retry_after is infinite, which strict JSON writes as null.
    assert db["events"][1]["detail"]["retry_after"] is None
    assert (db["rejections"], db["events_omitted"]) == (1000, 800)
    assert (len(db["rejected_call_ms"]), db["rejected_calls_timed"]) == (200, 1000)
    assert db["rejected_call_ms_max"] >= max(db["rejected_call_ms"])
    assert report["metrics"]["max_rejected_call_ms"] == db["rejected_call_ms_max"]
    assert "(first 200 drawn)" in (synapse_pytester.path / "r.html").read_text()


def test_violated_gates_exit_1_with_a_summary(synapse_pytester: pytest.Pytester) -> None:
    synapse_pytester.makepyfile(SUITE)
    result = synapse_pytester.runpytest(
        "--synapse-gate=max_recovery_virtual_seconds<=5",
        "--synapse-gate=all_recovered",
        "--synapse-gate=max_trip_virtual_seconds<=2",
    )
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        [
            "*synapse resilience*",
            "gate FAIL: max_recovery_virtual_seconds <= 5  -> 8s violates <= 5s "
            "(in test_violated_gates_exit_1_with_a_summary.py::test_trips_and_recovers)",
            "gate FAIL: all_recovered  -> false: not closed: cache*",
            "gate PASS: max_trip_virtual_seconds <= 2  -> 1s meets <= 2s*",
            # The closing line a person reads says why the run failed.
            "*= 3 passed, 2 resilience gates failed in *",
        ]
    )


def test_gates_that_hold_exit_0(synapse_pytester: pytest.Pytester) -> None:
    synapse_pytester.makepyfile(
        SUITE.replace(
            '.force_open("kept open")', '.force_open()\n    circuit_breaker("cache").force_close()'
        )
    )
    synapse_pytester.makeini(
        "[pytest]\nasyncio_default_fixture_loop_scope = function\n"
        "synapse_gates =\n    all_recovered\n    max_recovery_virtual_seconds <= 8\n"
    )
    result = synapse_pytester.runpytest()
    assert result.ret == 0
    result.stdout.fnmatch_lines(
        [
            "gate PASS: all_recovered*",
            "gate PASS: max_recovery_virtual_seconds*",
            "*= 3 passed in *",
        ]
    )


def test_gate_without_data_fails_and_says_so(synapse_pytester: pytest.Pytester) -> None:
    synapse_pytester.makepyfile("def test_x(): pass")
    result = synapse_pytester.runpytest("--synapse-gate=max_trip_seconds<=1")
    assert result.ret == 1
    result.stdout.fnmatch_lines(["gate FAIL: max_trip_seconds <= 1  -> no data*"])


@pytest.mark.parametrize(
    ("gate", "message"),
    [
        ("max_speed<=3", "unknown metric 'max_speed' in gate 'max_speed<=3'; known metrics:"),
        ("max_trip_seconds<=", "malformed gate 'max_trip_seconds<='"),
        ("max_trip_seconds", "gate 'max_trip_seconds': max_trip_seconds is a number"),
        ("all_recovered ~ 1", "malformed gate 'all_recovered ~ 1'"),
    ],
)
def test_bad_gates_are_usage_errors(
    synapse_pytester: pytest.Pytester, gate: str, message: str
) -> None:
    synapse_pytester.makepyfile("def test_x(): pass")
    result = synapse_pytester.runpytest(f"--synapse-gate={gate}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*synapse: command line --synapse-gate: {message}*"])
    assert "Traceback" not in result.stderr.str()


def test_xdist_workers_produce_one_merged_report(synapse_pytester: pytest.Pytester) -> None:
    synapse_pytester.makepyfile(
        test_a=SUITE,
        test_b=SUITE.replace("test_trips_and_recovers", "test_other").replace('"db"', '"db2"'),
    )
    result = synapse_pytester.runpytest_subprocess(
        "-n", "2", "--synapse-report=merged.json", "--synapse-gate=max_trip_virtual_seconds<=2"
    )
    result.assert_outcomes(passed=6)
    report = json.loads((synapse_pytester.path / "merged.json").read_text())
    assert report["session"]["workers"] == 2
    assert len(report["tests"]) == 4
    assert {t["worker"] for t in report["tests"]} == {"gw0", "gw1"}
    assert report["metrics"]["trips"] == 4
    assert report["gates"][0]["passed"] is True


OUTCOMES = """
import pytest

def trip(circuit_breaker, name):
    circuit_breaker(name).force_open()   # left open: all_recovered is false if this counts

def test_passes(circuit_breaker):
    circuit_breaker("fine").force_open()
    circuit_breaker("fine").force_close()

@pytest.mark.xfail(reason="known broken", strict=True)
def test_xfails(circuit_breaker):
    trip(circuit_breaker, "known")
    assert False

@pytest.mark.xfail(reason="flaky", strict=False)
def test_xpasses(circuit_breaker):
    trip(circuit_breaker, "flaky")

def test_skips_midway(circuit_breaker):
    trip(circuit_breaker, "skipped")
    pytest.skip("the dependency is not there")

@pytest.fixture
def broken_teardown():
    yield
    raise RuntimeError("teardown failed")

def test_teardown_error(circuit_breaker, broken_teardown):
    circuit_breaker("td").force_open()
    circuit_breaker("td").force_close()

@pytest.fixture
def broken_setup(circuit_breaker):
    circuit_breaker("su")
    raise RuntimeError("setup failed")

def test_setup_error(circuit_breaker, broken_setup):
    pass
"""


@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_outcomes_xfail_and_errors_are_reported_and_only_real_runs_are_gated(
    synapse_pytester: pytest.Pytester, xdist: list[str]
) -> None:
    """An xfailed test was reported as skipped yet its breakers counted against
    all_recovered; a teardown error was reported as passed. A test that skips after tripping a
    breaker is reported, not gated, like an xfailed one."""
    synapse_pytester.makepyfile(OUTCOMES)
    result = synapse_pytester.runpytest(
        "--synapse-report=r.json", "--synapse-gate=all_recovered", *xdist
    )
    result.assert_outcomes(passed=2, skipped=1, xfailed=1, xpassed=1, errors=2)
    report = json.loads((synapse_pytester.path / "r.json").read_text())
    outcomes = {t["nodeid"].split("::")[1]: t["outcome"] for t in report["tests"]}
    assert outcomes == {
        "test_passes": "passed",
        "test_xfails": "xfailed",
        "test_xpasses": "xpassed",
        "test_skips_midway": "skipped",
        "test_teardown_error": "error",
        "test_setup_error": "error",
    }
    assert report["metrics"]["all_recovered"] is True  # the xfail-marked breakers left open
    assert report["gates"][0]["passed"] is True
    assert report["metrics"]["breakers"] == 3  # fine, td, su: xfail-marked and skipped tests
    # are not counted, but their breakers are in the report
    skipped = next(t for t in report["tests"] if t["outcome"] == "skipped")
    assert [(b["name"], b["final_state"]) for b in skipped["breakers"]] == [("skipped", "open")]


def test_a_breaker_closing_at_the_last_instant_shows_green_and_a_zero_length_axis_reads_0s(
    synapse_pytester: pytest.Pytester,
) -> None:
    """The closing segment at the test's end was 0.5 px wide (no green to see), and a test
    whose events all happened at one instant got a "1.000s" axis."""
    synapse_pytester.makepyfile(
        """
        def test_closes_last(circuit_breaker, virtual_clock):
            b = circuit_breaker("late")
            b.force_open()
            virtual_clock.advance(5)
            b.force_close()

        def test_instant(circuit_breaker):
            circuit_breaker("now").force_open()
            circuit_breaker("now").force_close()
        """
    )
    synapse_pytester.runpytest("--synapse-html=r.html").assert_outcomes(passed=2)
    page = (synapse_pytester.path / "r.html").read_text()
    late, instant = (
        page.split(f"test_{n}")[-1].split("</svg>")[0] for n in ("closes_last", "instant")
    )
    segments = re.findall(r"width='([0-9.]+)' height='14' fill='([^']+)'><title>(\w+)<", late)
    width, _, state = segments[-1]
    assert state == "closed"
    assert float(width) >= 10
    assert ">5.000s</text>" in late
    assert ">0.000s</text>" in instant
    assert "1.000s" not in instant


JUNIT_SUITE = """
def test_odd_names(circuit_breaker):
    circuit_breaker("bell\\x07name").force_open()
    first = circuit_breaker("twin")
    first.force_open()

def test_twins(breaker_timeline):
    from synapse_core import CircuitBreaker
    a, b = CircuitBreaker("twin"), CircuitBreaker("twin")
    a.force_open()
    b.force_open()
    b.force_close()
"""


@pytest.mark.parametrize("family", ["xunit1", "legacy", "xunit2"])
def test_junit_xml_stays_parseable_and_within_its_schema(
    synapse_pytester: pytest.Pytester, family: str
) -> None:
    """A breaker name with a control character made the whole XML file unparseable, two
    breakers of one name gave duplicate property names, and testcase properties broke
    pytest's default xunit2 schema."""
    synapse_pytester.makepyfile(JUNIT_SUITE)
    result = synapse_pytester.runpytest(
        "--junitxml=junit.xml", "-o", f"junit_family={family}", "--synapse-gate=trips>=1"
    )
    result.assert_outcomes(passed=2)
    tree = ET.parse(synapse_pytester.path / "junit.xml")  # parses: no raw control character
    suite = tree.getroot().find("testsuite")
    assert suite is not None
    suite_props = {p.get("name"): p.get("value") for p in suite.findall("properties/property")}
    assert suite_props["synapse_trips"] == "4"
    assert suite_props["synapse_gate_1"] == "PASS trips >= 1: 4 meets >= 1"
    cases = {case.get("name"): case for case in tree.iter("testcase")}
    if family == "xunit2":
        assert all(case.find("properties") is None for case in cases.values())
        return
    odd = [p.get("name") for p in cases["test_odd_names"].iter("property")]
    assert "synapse_breaker_bell\\x07name_trips" in odd
    twins = [p.get("name") for p in cases["test_twins"].iter("property")]
    assert len(twins) == len(set(twins))
    assert {"synapse_breaker_twin_trips", "synapse_breaker_twin#2_trips"} <= set(twins)


def test_real_and_virtual_seconds_are_kept_apart(synapse_pytester: pytest.Pytester) -> None:
    """A virtual test's simulated 8 s recovery used to land in max_recovery_seconds next to
    the real seconds of other tests; a gate then blamed no test in particular."""
    synapse_pytester.makepyfile(
        SUITE
        + """
import time
from synapse_core import CircuitBreaker, CircuitBreakerConfig

def test_real_recovery(breaker_timeline):
    svc = CircuitBreaker("svc", CircuitBreakerConfig(recovery_timeout=0.05))
    breaker_timeline.watch(svc)
    span = breaker_timeline.timeline.fault_started("partition", "svc-proxy")
    for _ in range(3):
        with pytest.raises(ConnectionError):
            svc.call(fail)
    breaker_timeline.timeline.fault_ended(span)
    time.sleep(0.06)
    svc.call(lambda: 1)
    svc.call(lambda: 1)
"""
    )
    result = synapse_pytester.runpytest(
        "--synapse-report=r.json",
        "--synapse-gate=max_recovery_seconds<=1",
        "--synapse-gate=max_recovery_virtual_seconds<=5",
    )
    result.assert_outcomes(passed=4)
    metrics = json.loads((synapse_pytester.path / "r.json").read_text())["metrics"]
    assert 0.05 <= metrics["max_recovery_seconds"] < 1
    assert metrics["max_recovery_virtual_seconds"] == 8.0
    result.stdout.fnmatch_lines(
        [
            "gate PASS: max_recovery_seconds <= 1  -> *s meets <= 1s (in *::test_real_recovery)",
            "gate FAIL: max_recovery_virtual_seconds <= 5  -> 8s violates <= 5s "
            "(in *::test_trips_and_recovers)",
            "*= 4 passed, 1 resilience gate failed in *",
        ]
    )


def test_the_skipped_chaos_hint_only_shows_without_synapse_chaos(
    synapse_pytester: pytest.Pytester,
) -> None:
    synapse_pytester.makepyfile("def test_x(): pass")
    hint = (
        "*no breaker was seen in this session (chaos tests were skipped: run with --synapse-chaos)*"
    )
    result = synapse_pytester.runpytest("--synapse-gate=all_recovered")
    result.stdout.fnmatch_lines([hint])
    result = synapse_pytester.runpytest("--synapse-gate=all_recovered", "--synapse-chaos")
    assert "chaos tests were skipped" not in result.stdout.str()
    result.stdout.fnmatch_lines(["gate FAIL: all_recovered  -> no data (no breaker was seen*"])


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


KEYED = """
import pytest
from synapse_core import CircuitBreaker

def test_keys(circuit_breaker, breaker_timeline):
    circuit_breaker("db").force_open()
    CircuitBreaker("made").force_open()      # made during the test, not by the fixture
    states = {"svc": "closed"}
    poller = breaker_timeline.poll(lambda: states, interval=0.01)
    poller.poll_once()
    states["svc"] = "open"
    poller.poll_once()
    poller.stop()
"""


def documented_key_templates() -> dict[str, str]:
    """The key templates docs/report-schema.md gives, by origin (``others`` for the rest)."""
    doc = (Path(__file__).parents[2] / "docs" / "report-schema.md").read_text()
    (row,) = [line for line in doc.splitlines() if line.startswith("| `key` |")]
    found = re.findall(r"`(<[^`]+)` for (fixture|polled|others)", row)
    return {origin: template for template, origin in found}


def test_breaker_keys_follow_the_documented_format(synapse_pytester: pytest.Pytester) -> None:
    """Polled breakers were keyed ``main:svc@polled`` while docs/report-schema.md listed only
    ``<nodeid>::<name>`` and ``<worker>:<name>#<n>``: a CI script parsing keys by the schema
    could not read them. Every key must match the template the schema gives for its origin."""
    synapse_pytester.makepyfile(KEYED)
    result = synapse_pytester.runpytest("--synapse-report=r.json")
    result.assert_outcomes(passed=1)
    (test,) = json.loads((synapse_pytester.path / "r.json").read_text())["tests"]
    templates = documented_key_templates()
    origins = {}
    for breaker in test["breakers"]:
        origins[breaker["name"]] = breaker["origin"]
        template = templates.get(breaker["origin"], templates["others"])
        pattern = re.escape(template)
        for field, value in (
            ("nodeid", re.escape(test["nodeid"])),
            ("worker", re.escape(test["worker"])),
            ("name", re.escape(breaker["name"])),
            ("n", r"\d+"),
        ):
            pattern = pattern.replace(re.escape(f"<{field}>"), value)
        assert re.fullmatch(pattern, breaker["key"]), (breaker["key"], template)
    assert origins == {"db": "fixture", "made": "created", "svc": "polled"}


def test_gates_are_not_evaluated_when_only_collecting(synapse_pytester: pytest.Pytester) -> None:
    synapse_pytester.makepyfile("def test_x(): pass")
    result = synapse_pytester.runpytest("--collect-only", "--synapse-gate=max_trip_seconds<=5")
    assert result.ret == 0


def test_junit_trips_count_every_trip_not_only_those_under_a_fault(
    synapse_pytester: pytest.Pytester,
) -> None:
    synapse_pytester.makepyfile(
        """
        def test_trips_without_a_fault(circuit_breaker):
            b = circuit_breaker("db")
            b.force_open()
            b.force_close()
        """
    )
    synapse_pytester.runpytest("--junitxml=junit.xml", "-o", "junit_family=xunit1").assert_outcomes(
        passed=1
    )
    props = {
        p.get("name"): p.get("value")
        for p in ET.parse(synapse_pytester.path / "junit.xml").iter("property")
    }
    assert props["synapse_breaker_db_trips"] == "1"


def test_a_polled_breaker_already_open_when_polling_starts_is_not_a_trip(
    synapse_pytester: pytest.Pytester,
) -> None:
    synapse_pytester.makepyfile(
        """
        def test_already_open(breaker_timeline):
            states = {"svc": "open", "other": "closed"}
            poller = breaker_timeline.poll(lambda: dict(states), interval=60)
            assert poller.initial_states == {"svc": "open", "other": "closed"}
            states["other"] = "open"   # this one does trip during the test
            poller.poll_once()
            poller.stop()
        """
    )
    result = synapse_pytester.runpytest("--synapse-report=r.json")
    result.assert_outcomes(passed=1)
    report = json.loads((synapse_pytester.path / "r.json").read_text())
    by_name = {b["name"]: b for b in report["tests"][0]["breakers"]}
    svc, other = by_name["svc"], by_name["other"]
    assert (svc["initial_state"], svc["left_closed"], svc["trips"]) == ("open", False, 0)
    assert (other["initial_state"], other["left_closed"], other["trips"]) == ("closed", True, 1)


def test_gates_on_breaker_health_fail_when_no_breaker_was_seen(
    synapse_pytester: pytest.Pytester,
) -> None:
    synapse_pytester.makepyfile(
        """
        import pytest

        @pytest.mark.chaos
        def test_skipped_without_the_flag(circuit_breaker):
            circuit_breaker("db")
        """
    )
    result = synapse_pytester.runpytest(
        "--synapse-gate=all_recovered", "--synapse-gate=unrecovered==0"
    )
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        ["gate FAIL: all_recovered  -> no data*no breaker was seen*", "gate FAIL: unrecovered*"]
    )


def test_collect_only_prints_no_resilience_summary(synapse_pytester: pytest.Pytester) -> None:
    synapse_pytester.makepyfile("def test_x(): pass")
    result = synapse_pytester.runpytest("--co", "--synapse-report=out/co.json")
    assert result.ret == 0
    assert "synapse resilience" not in result.stdout.str()
    assert not (synapse_pytester.path / "out" / "co.json").exists()
