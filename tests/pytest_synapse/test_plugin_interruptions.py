"""Runs that do not finish: SIGTERM (CI cancellation, ``docker stop``), crashed xdist workers,
pytest-timeout. Each runs pytest in a subprocess against an external ``synapse-chaos serve``
started here, then checks the server is left with no proxy and the report says what happened.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

SERVE = Path(sys.executable).with_name("synapse-chaos")
WAIT = 60.0  # upper bound of every wait below; the normal case takes a second or two

# A chaos test that trips a breaker under a live latency fault on a named proxy, says it is
# ready through a file, then waits to be stopped (bounded, so nothing can hang forever).
HANGING = """
import os, time
from pathlib import Path
import pytest

@pytest.mark.chaos
def test_hangs(chaos_proxy, circuit_breaker):
    breaker = circuit_breaker("db")
    breaker.force_open()
    proxy = chaos_proxy("127.0.0.1:9", name="db")
    proxy.latency(500).start()
    Path(os.environ["SYNAPSE_TEST_READY"]).write_text(proxy.name)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(0.05)
"""

CRASHING = """
import os
import pytest

@pytest.mark.chaos
def test_crashes(chaos_proxy, circuit_breaker):
    circuit_breaker("db").force_open()  # a trip the report cannot know about
    proxy = chaos_proxy("127.0.0.1:9", name="db")
    proxy.latency(500).start()
    os._exit(1)

def test_fine():
    pass
"""


@pytest.fixture
def server() -> Iterator[str]:
    """An external ``synapse-chaos serve`` on a free port; its URL. Stopped at teardown."""
    process = subprocess.Popen(
        [str(SERVE), "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        line = process.stdout.readline() if process.stdout else ""
        match = re.search(r"http://\S+", line)
        assert match, f"synapse-chaos serve did not start: {line!r}"
        yield match.group(0)
    finally:
        process.terminate()
        try:
            process.communicate(timeout=WAIT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()


def proxies_on(url: str) -> dict[str, Any]:
    from chaos import ToxiproxyClient

    return ToxiproxyClient(url, timeout=10).proxies()


def start_pytest(where: Path, url: str, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNAPSE_")}
    env.update(SYNAPSE_TOXIPROXY=url, SYNAPSE_TEST_READY=str(where / "ready"))
    env.pop("PYTEST_XDIST_WORKER", None)
    env.pop("PYTEST_ADDOPTS", None)
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--synapse-chaos", *args],
        cwd=where,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for(path: Path, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + WAIT
    while not path.exists():
        if process.poll() is not None:
            out, _ = process.communicate()
            pytest.fail(f"pytest ended before the test was ready:\n{out}")
        assert time.monotonic() < deadline, "the test never got ready"
        time.sleep(0.05)


def finish(process: subprocess.Popen[str]) -> str:
    try:
        out, _ = process.communicate(timeout=WAIT)
    except subprocess.TimeoutExpired:
        process.kill()
        out, _ = process.communicate()
        pytest.fail(f"pytest did not stop within {WAIT}s:\n{out}")
    return out


@pytest.fixture
def suite(pytester: pytest.Pytester) -> Path:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    return pytester.path


@pytest.mark.slow
@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_sigterm_removes_the_runs_faults_and_proxies_and_reports_the_interruption(
    suite: Path, server: str, xdist: list[str]
) -> None:
    """SIGTERM used to kill pytest on the spot: latency fault and proxy left on the shared
    server (the next run failed with ProxyExists), no report, exit status 143."""
    (suite / "test_hang.py").write_text(HANGING)
    process = start_pytest(
        suite, server, "--synapse-report=r.json", "--synapse-gate=trips<=5", *xdist
    )
    wait_for(suite / "ready", process)
    assert proxies_on(server)  # the fault is live
    process.send_signal(signal.SIGTERM)
    out = finish(process)
    assert process.returncode == pytest.ExitCode.INTERRUPTED, out
    assert proxies_on(server) == {}, out
    assert "session interrupted (SIGTERM)" in out
    report = json.loads((suite / "r.json").read_text())
    assert report["session"]["interrupted"] == "SIGTERM"
    (test,) = report["tests"]
    assert test["outcome"] == "interrupted"
    assert test["breakers"][0]["trips"] == 1  # the figures up to the interruption
    (gate,) = report["gates"]
    assert gate["passed"] is False
    assert "the session was interrupted (SIGTERM)" in gate["message"]


@pytest.mark.slow
def test_a_crashed_worker_is_reported_fails_the_gates_and_its_proxies_are_removed(
    suite: Path, server: str
) -> None:
    """A worker killed by os._exit: its chaos test was missing from the report although it
    tripped a breaker (so ``trips<=0`` passed), ``workers`` counted the replacement worker,
    and its proxy with a live fault stayed on the shared server."""
    (suite / "test_crash.py").write_text(CRASHING)
    process = start_pytest(
        suite, server, "-n", "2", "--synapse-report=r.json", "--synapse-gate=trips<=0"
    )
    out = finish(process)
    assert process.returncode == pytest.ExitCode.TESTS_FAILED, out
    assert proxies_on(server) == {}, out
    report = json.loads((suite / "r.json").read_text())
    session = report["session"]
    assert session["workers"] == 2
    ((crash),) = session["crashed"]
    assert crash["test"] == "test_crash.py::test_crashes"
    ((cleanup),) = session["cleanup"]
    assert cleanup["proxy"] == f"db-{crash['worker']}"
    assert cleanup["removed"] is True
    crashed = [t for t in report["tests"] if t["outcome"] == "crashed"]
    assert [t["nodeid"] for t in crashed] == ["test_crash.py::test_crashes"]
    (gate,) = report["gates"]
    assert gate["passed"] is False
    assert "test_crash.py::test_crashes crashed" in gate["message"]
    assert f"removed proxy db-{crash['worker']}" in out


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "outcome"),
    [
        (["--timeout-method=signal"], "failed"),  # pytest-timeout fails the test; teardown runs
        (["--timeout-method=thread", "-n", "1"], "crashed"),  # os._exit: the controller cleans
    ],
    ids=["signal", "thread-xdist"],
)
def test_a_timed_out_test_leaves_no_fault(
    suite: Path, server: str, args: list[str], outcome: str
) -> None:
    """pytest-timeout's thread method ends the process with os._exit: nothing in it can clean
    up. With the signal method the test fails and its fixtures clean up; under xdist a
    thread-method timeout is a worker crash, and the controller removes the worker's proxies."""
    (suite / "test_hang.py").write_text(HANGING)
    process = start_pytest(suite, server, "--timeout=3", "--synapse-report=r.json", *args)
    out = finish(process)
    assert process.returncode == pytest.ExitCode.TESTS_FAILED, out
    assert proxies_on(server) == {}, out
    report = json.loads((suite / "r.json").read_text())
    assert [t["outcome"] for t in report["tests"]] == [outcome]


@pytest.mark.parametrize(("method", "warned"), [("thread", True), ("signal", False)])
def test_the_header_warns_about_the_thread_timeout_method_on_a_shared_server(
    synapse_pytester: pytest.Pytester, method: str, warned: bool
) -> None:
    synapse_pytester.makepyfile("def test_ok(): pass")
    result = synapse_pytester.runpytest(
        "--synapse-toxiproxy=http://127.0.0.1:9", "--timeout=5", f"--timeout-method={method}"
    )
    result.assert_outcomes(passed=1)
    assert ("pytest-timeout's thread method" in result.stdout.str()) is warned
