"""Nothing labelled outlives its run: failing tests clean up, and a run killed with SIGKILL is
reaped by the next one (by label, and only runs that are over). Container faults reach the
reports and gates like proxy faults."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from docker_helpers import echo_command

from chaos.docker import RUN_LABEL, Container, engine, netfilter, partition, reap, run_id

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def foreign(images: dict[str, str]) -> Iterator[Container]:
    """A container Synapse did not start (no label), as a user's own would be."""
    sdk = engine().containers.run(images["base"], ["sleep", "infinity"], detach=True)
    try:
        yield Container(sdk)
    finally:
        sdk.remove(force=True)


def _labelled(run: str) -> list[str]:
    label = f"{RUN_LABEL}={run}"
    client = engine()
    names = [
        f"container {c.name}" for c in client.containers.list(all=True, filters={"label": label})
    ]
    names += [f"network {n.name}" for n in client.networks.list(filters={"label": label})]
    return names


def _rules_of(target: Container, run: str) -> list[str]:
    return [r for r in netfilter.saved_rules(target.pid) if f"{RUN_LABEL}={run}/" in r]


def test_a_failing_test_leaves_no_container_network_rule_or_frozen_container(
    pytester: pytest.Pytester, images: dict[str, str], foreign: Container, tmp_path: Path
) -> None:
    runfile = tmp_path / "run"
    pytester.makepyfile(
        f"""
        from chaos.docker import partition, run_id

        def test_fails(container, chaos_container, docker_network):
            mine = container({images["base"]!r}, command=["sleep", "infinity"])
            theirs = chaos_container({foreign.name!r})
            partition([[mine], [theirs]]).start()  # never stopped by the test
            theirs.pause().start()
            open({str(runfile)!r}, "w").write(run_id())
            assert False, "planted failure"
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    run = runfile.read_text()
    assert _labelled(run) == []
    assert foreign.status == "running"  # unfrozen, not removed
    assert _rules_of(foreign, run) == []


def test_a_run_killed_with_sigkill_is_reaped_by_the_next_one(
    images: dict[str, str], foreign: Container, container: Any
) -> None:
    # This run is alive and holds a container and a partition too: the reaper must spare them.
    live = container(images["base"], command=echo_command())
    with partition([[live], [foreign]]):
        script = textwrap.dedent(
            f"""
            import time
            from chaos.docker import Container, Network, partition, run_id, start_container
            net = Network.create()
            mine = start_container({images["base"]!r}, command=["sleep", "infinity"], network=net)
            partition([[mine], [Container.of({foreign.name!r})]]).start()
            print(run_id(), flush=True)
            time.sleep(600)
            """
        )
        victim = subprocess.Popen(
            [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=ROOT
        )
        try:
            assert victim.stdout is not None
            dead_run = victim.stdout.readline().strip()
        finally:
            victim.send_signal(signal.SIGKILL)
            victim.wait(timeout=10)
            if victim.stdout is not None:
                victim.stdout.close()
        assert len(_labelled(dead_run)) == 2  # its container and its network
        assert len(_rules_of(foreign, dead_run)) == 2  # its partition rules in the user's container
        next_run = subprocess.run(
            [sys.executable, "-c", "from chaos.docker import engine, reap; print(reap(engine()))"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
            cwd=ROOT,
        )
        assert "rule(s) of run" in next_run.stdout
        assert _labelled(dead_run) == []
        assert _rules_of(foreign, dead_run) == []
        assert live.status == "running"
        assert len(_rules_of(foreign, run_id())) == 2
    assert _rules_of(foreign, run_id()) == []
    assert foreign.status == "running"


class _ListedBeforeItStopped:
    """The engine as another run's reaping saw it: a container listed running that stops next."""

    def __init__(self, client: Any, running: list[Any]) -> None:
        self._client = client
        self.networks = client.networks
        self.containers = self
        self._running = running

    def list(self, **kwargs: Any) -> list[Any]:
        if kwargs.get("filters") == {"status": "running"}:
            return self._running
        return list(self._client.containers.list(**kwargs))


def test_a_container_removed_while_being_listed_is_skipped(
    images: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two runs reaping one engine at once: the SDK lists ids, then inspects each; one removed
    in between raised docker.errors.NotFound out of reap() and failed the start of a run."""
    client = engine()
    sdk = client.containers.run(
        images["base"], ["sleep", "infinity"], detach=True, labels={RUN_LABEL: "gone.1.2.3"}
    )
    collection = type(client.containers)
    real_get = collection.get

    def removed_meanwhile(self: Any, container_id: str) -> Any:
        if container_id == sdk.id:
            with contextlib.suppress(Exception):
                sdk.remove(force=True)
        return real_get(self, container_id)

    monkeypatch.setattr(collection, "get", removed_meanwhile)
    try:
        reap(client)
    finally:
        monkeypatch.undo()
        with contextlib.suppress(Exception):
            sdk.remove(force=True)


def test_a_container_that_stops_while_being_reaped_is_skipped(images: dict[str, str]) -> None:
    """Two runs sharing an engine: one's reaping listed a container the other then removed, and
    nsenter into its gone namespace failed the whole start of a DockerBackend."""
    client = engine()
    sdk = client.containers.run(images["base"], ["sleep", "infinity"], detach=True)
    try:
        listed = [
            c for c in client.containers.list(filters={"status": "running"}) if c.id == sdk.id
        ]
        assert listed
        assert listed[0].attrs["State"]["Pid"] > 0
    finally:
        sdk.remove(force=True)
    assert reap(_ListedBeforeItStopped(client, listed)) == []


INTERRUPTED = """
import os, time
from pathlib import Path
from chaos.docker import partition, run_id

def test_waits(container, chaos_container, docker_network):
    mine = container({image!r}, command=["sleep", "infinity"])
    theirs = chaos_container({foreign!r})
    partition([[mine], [theirs]]).start()
    theirs.pause().start()
    Path(os.environ["SYNAPSE_TEST_READY"]).write_text(run_id())
    deadline = time.monotonic() + 60  # bounded: the signal normally ends it in a second
    while time.monotonic() < deadline:
        time.sleep(0.05)
"""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_session_leaves_no_container_network_rule_or_frozen_container(
    pytester: pytest.Pytester,
    images: dict[str, str],
    foreign: Container,
    tmp_path: Path,
    signum: signal.Signals,
) -> None:
    """Ctrl-C or a CI cancellation (SIGTERM) in the middle of a Docker test: the session's
    teardown removes its container and network and heals the partition and the pause it put
    on a container it did not start (only failing tests and SIGKILL were checked before)."""
    pytester.makepyfile(
        test_interrupted=INTERRUPTED.format(image=images["base"], foreign=foreign.name)
    )
    ready = tmp_path / "ready"
    process = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q"],
        cwd=pytester.path,
        env={**os.environ, "SYNAPSE_TEST_READY": str(ready)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not (ready.exists() and ready.read_text()):
            assert process.poll() is None, process.communicate()[0][-3000:]
            assert time.monotonic() < deadline, "the test never got its faults in place"
            time.sleep(0.05)
        run = ready.read_text()
        assert _labelled(run), "nothing labelled before the signal"
        assert foreign.status == "paused"
        assert _rules_of(foreign, run)
        process.send_signal(signum)
        output = process.communicate(timeout=60)[0]
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    tail = "\npytest said:\n" + output[-2000:]
    assert process.returncode != 0, "the session was not interrupted" + tail
    assert _labelled(run) == [], f"left behind: {_labelled(run)}" + tail
    assert foreign.status == "running", f"their container is left {foreign.status}" + tail
    assert _rules_of(foreign, run) == [], f"rules left: {_rules_of(foreign, run)}" + tail


CONTAINER_FAULT_SUITE = """
import socket, time
import pytest
from synapse_core import CircuitBreaker, CircuitBreakerConfig

CONFIG = CircuitBreakerConfig(
    failure_threshold=3, minimum_requests=3, recovery_timeout=0.3, half_open_max_calls=1
)

def make(container):
    echo = container({image!r}, command={command!r}, ports=[7000])
    host, port = echo.address(7000).split(":")

    def call():
        with socket.create_connection((host, int(port)), timeout=0.3) as sock:
            sock.settimeout(0.3)
            sock.sendall(b"x")
            assert sock.recv(1) == b"x"
    return echo, call

def trip(echo, call, breaker, breaker_timeline):
    with echo.pause():
        for _ in range(3):
            with pytest.raises(OSError):
                breaker.call(call)
        breaker_timeline.assert_trips_within(breaker, failures=3, seconds=5)

def test_pause_trips_and_heals(container, breaker_timeline):
    echo, call = make(container)
    breaker = CircuitBreaker("echo", CONFIG)
    trip(echo, call, breaker, breaker_timeline)
    deadline = time.monotonic() + 5
    while breaker.state.value != "closed":
        assert time.monotonic() < deadline
        time.sleep(0.05)
        try:
            breaker.call(call)
        except Exception:
            pass
    breaker_timeline.assert_closes_within(breaker, seconds=3)
"""

NEVER_RECOVERS = """

def test_pause_trips_and_is_left_open(container, breaker_timeline):
    echo, call = make(container)
    breaker = CircuitBreaker("stuck", CONFIG)
    trip(echo, call, breaker, breaker_timeline)  # healed, but no traffic: it stays open
"""


@pytest.mark.parametrize("planted_bug", [False, True])
def test_container_faults_reach_the_report_and_the_gates(
    pytester: pytest.Pytester, images: dict[str, str], tmp_path: Path, planted_bug: bool
) -> None:
    source = CONTAINER_FAULT_SUITE.format(image=images["base"], command=echo_command())
    pytester.makepyfile(source + (NEVER_RECOVERS if planted_bug else ""))
    report = tmp_path / "report.json"
    result = pytester.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        f"--synapse-report={report}",
        "--synapse-gate",
        "all_recovered",
        "--synapse-gate",
        f"faults=={2 if planted_bug else 1}",
    )
    data = json.loads(report.read_text())
    spans = [f for t in data["tests"] for f in t["faults"]]
    assert {f["fault"] for f in spans} == {"pause"}
    assert all(f["proxy"].startswith("synapse-") for f in spans)
    if planted_bug:
        assert result.ret == 1
        result.stdout.fnmatch_lines(["*gate FAIL: all_recovered*"])
        assert data["metrics"]["unrecovered"] == 1
    else:
        assert result.ret == 0, result.stdout.str()
        result.stdout.fnmatch_lines(["*gate PASS: all_recovered*", "*gate PASS: faults == 1*"])
        assert data["metrics"]["trips"] == 1
