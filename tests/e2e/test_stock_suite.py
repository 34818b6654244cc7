"""The realistic suite (examples/stock: an aiohttp service on a real Redis) proves every breaker
assertion both ways: the correct service passes, and each planted bug fails the assertion that
must catch it, with a message naming the cause.

The correct service runs in this process (pytester), the planted bugs in child processes at
once; Redis, the chaos proxy and the service are real, and one test of the suite runs the
service in another process.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
SUITE = ROOT / "examples" / "stock"

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None,
    reason="redis-server is not installed (make test installs it with scripts/system-deps.sh)",
)


@pytest.fixture
def suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    for var in (
        "STOCK_BUG",
        "SYNAPSE_TOXIPROXY",
        "SYNAPSE_GATES",
        "SYNAPSE_REPORT",
        "SYNAPSE_HTML",
    ):
        monkeypatch.delenv(var, raising=False)
    return pytester


def run_suite(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_inprocess(
        str(SUITE), "--rootdir", str(ROOT), "--synapse-chaos", "-p", "no:cacheprovider", *args
    )


def test_the_correct_service_passes_every_assertion_and_the_gates(
    suite: pytest.Pytester,
) -> None:
    report = suite.path / "resilience.json"
    result = run_suite(
        suite,
        f"--synapse-report={report}",
        "--synapse-gate=all_recovered",
        "--synapse-gate=max_trip_seconds<=2",
        "--synapse-gate=max_recovery_seconds<=2",
        "--synapse-gate=max_rejected_call_ms<=100",
    )
    result.assert_outcomes(passed=4)
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["gate PASS: all_recovered*"])


CAUGHT = {
    # Bugs that show in different tests share a run: each test named must fail, and the line
    # pytest prints for its failure names the cause.
    "fallback_calls_redis": {
        "partition_trips_fast": "calls reached 127.0.0.1:* through proxy 'redis' while breaker "
        "'redis' was open: * new connection(s) and * byte(s) sent toward it*",
        "a_service_in_another_process": "calls reached 127.0.0.1:* through proxy 'redis' while "
        "breaker 'redis' was open*",
    },
    "slow_fallback,probe_flood": {
        "partition_trips_fast": "breaker 'redis': slowest rejected call took *ms; "
        "required <= 100ms*",
        "recovers_after_the_heal": "breaker 'redis' admitted * half-open probes at once; "
        "required <= 1*",
        "a_service_in_another_process": "breaker 'redis': slowest rejected call took *ms; "
        "required <= 100ms*",
    },
    "never_closes": {
        "recovers_after_the_heal": "breaker 'redis' did not close after the heal at t=*s "
        "(state now: open); its next probe is not due for *s (recovery_timeout 500s)*",
        "a_service_in_another_process": "breaker 'redis' did not close after the heal at t=*s "
        "(state now: open) (polled until the deadline)*",
    },
    "late_trip": {
        "partition_trips_fast": "breaker 'redis' opened after 10 failures; required within 3*",
    },
}


def test_planted_bugs_fail_the_assertions_that_must_catch_them(tmp_path: Path) -> None:
    """The service in this process and, where a bug shows from outside, the one in another
    process (polled through its /breakers endpoint): each named test fails, naming the cause.

    One pytest process per set of bugs, all at once: they spend their time waiting on
    timeouts, so together they take about as long as the slowest.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNAPSE_", "STOCK_"))}
    runs = {
        bugs: subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pytest",
                str(SUITE),
                "--synapse-chaos",
                "-p",
                "no:cacheprovider",
                "--tb=short",
                "-k",
                " or ".join(caught),
            ],
            cwd=ROOT,
            env={**env, "STOCK_BUG": bugs},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for bugs, caught in CAUGHT.items()
    }
    outputs = {bugs: run.communicate(timeout=240)[0] for bugs, run in runs.items()}
    for bugs, caught in CAUGHT.items():
        out = outputs[bugs]
        assert runs[bugs].returncode == pytest.ExitCode.TESTS_FAILED, out[-3000:]
        assert f"{len(caught)} failed" in out, out[-3000:]
        for test, message in caught.items():
            assert fnmatch.fnmatch(out, f"*{message}*"), f"{bugs}: {test}: {message}\n{out}"
            assert f"::test_{test}" in out.split("short test summary info")[-1], out[-3000:]
