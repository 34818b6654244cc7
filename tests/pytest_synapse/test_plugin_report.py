"""JSON and HTML reports, JUnit properties, CI gates, and the xdist path."""

from __future__ import annotations

import json
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
    "gates",
    "tests",
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
    assert metrics["max_trip_seconds"] == 1.0
    assert metrics["max_recovery_seconds"] == 8.0
    assert 0 < metrics["max_rejected_call_ms"] < 50
    # The documentation lists every key.
    doc = (Path(__file__).parents[2] / "docs" / "report-schema.md").read_text()
    for key in REPORT_KEYS | TEST_KEYS | BREAKER_KEYS | set(metrics):
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
        "--synapse-gate=max_recovery_seconds<=5",
        "--synapse-gate=all_recovered",
        "--synapse-gate=max_trip_seconds<=2",
    )
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        [
            "*synapse resilience*",
            "gate FAIL: max_recovery_seconds <= 5  -> 8s violates <= 5s",
            "gate FAIL: all_recovered  -> false: not closed: cache*",
            "gate PASS: max_trip_seconds <= 2  -> 1s meets <= 2s",
            "*3 passed in *",
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
        "synapse_gates =\n    all_recovered\n    max_recovery_seconds <= 8\n"
    )
    result = synapse_pytester.runpytest()
    assert result.ret == 0
    result.stdout.fnmatch_lines(["gate PASS: all_recovered*", "gate PASS: max_recovery_seconds*"])


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
        "-n", "2", "--synapse-report=merged.json", "--synapse-gate=max_trip_seconds<=2"
    )
    result.assert_outcomes(passed=6)
    report = json.loads((synapse_pytester.path / "merged.json").read_text())
    assert report["session"]["workers"] == 2
    assert len(report["tests"]) == 4
    assert {t["worker"] for t in report["tests"]} == {"gw0", "gw1"}
    assert report["metrics"]["trips"] == 4
    assert report["gates"][0]["passed"] is True
