"""``synapse-chaos run`` and ``synapse-chaos scenarios``: output, cleanup on SIGINT (a second one
abandons a hung cleanup, saying what may remain), stale faults of a killed run.

Exit codes and one-line errors for bad input are in ``test_cli_exit_codes.py``."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from chaos_helpers import EchoServer, echoes

from chaos import Backend, EmbeddedToxiproxy, Proxy, ToxiproxyClient
from chaos.cli import main

SHORT = """name: short
proxies: [svc]
steps:
  - {at: 0, fault: latency, ms: 20, duration: 0.2}
  - {at: 0.1, fault: down, duration: 0.2}
"""

LONG = """name: long
proxies: [svc]
duration: 60
steps:
  - {at: 0, fault: latency, ms: 20}
  - {at: 0, fault: down}
"""


class Cli:
    """A ``python -m chaos`` child process whose stdout lines arrive on a queue."""

    def __init__(self, *args: str) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.pop("SYNAPSE_TOXIPROXY", None)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "chaos", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)

    def wait_for(self, predicate: Callable[[str], bool], timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                if self.process.poll() is not None and self.lines.empty():
                    break
                continue
            self.seen.append(line)
            if predicate(line):
                return line
        raise AssertionError(f"not seen within {timeout} s; output so far: {self.seen}")

    def finish(self, timeout: float = 30.0) -> tuple[int, str, str]:
        code = self.process.wait(timeout)
        if self.process.stdout is None or self.process.stdout.closed:
            return code, "".join(self.seen), ""
        self._reader.join(10)
        assert self.process.stderr is not None
        stderr = self.process.stderr.read()
        self.process.stderr.close()
        assert self.process.stdout is not None
        self.process.stdout.close()
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return code, "".join(self.seen), stderr

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.finish()


@pytest.fixture
def cli() -> Iterator[Callable[..., Cli]]:
    started: list[Cli] = []

    def start(*args: str) -> Cli:
        started.append(Cli(*args))
        return started[-1]

    yield start
    for item in started:
        item.kill()


@pytest.fixture
def scenario_file(tmp_path: Path) -> Callable[[str], str]:
    def write(text: str) -> str:
        path = tmp_path / f"scenario-{len(list(tmp_path.iterdir()))}.yaml"
        path.write_text(text)
        return str(path)

    return write


@pytest.fixture
def target(chaos_backend: Backend, echo_server: EchoServer) -> Proxy:
    """An existing proxy the CLI attaches to (so its state can be checked after the CLI exits)."""
    return chaos_backend.create_proxy(echo_server.address, name=f"target-{os.getpid()}")


def test_run_creates_plays_prints_and_cleans_up(
    cli: Callable[..., Cli],
    scenario_file: Callable[[str], str],
    toxiproxy: EmbeddedToxiproxy,
    echo_server: EchoServer,
    tmp_path: Path,
) -> None:
    report = tmp_path / "reports" / "run.json"  # missing folders are created, as pytest's
    run = cli(
        "run",
        scenario_file(SHORT),
        "--proxy",
        f"redis={echo_server.address}",
        "--toxiproxy",
        toxiproxy.url,
        "--json",
        str(report),
    )
    code, out, err = run.finish()
    assert (code, err) == (0, "")
    assert f"scenario short (0.3 s) on {toxiproxy.url} (external)" in out
    assert "proxy redis (scenario proxy svc): 127.0.0.1:" in out
    assert f"-> {echo_server.address} [created]" in out
    assert "apply    latency(ms=20" in out
    assert "apply    down() on svc [step 2]" in out
    assert "timeline:\n" in out
    assert "fault down on redis healed" in out
    assert toxiproxy.client().proxies() == {}  # the proxy it created is deleted again
    data = json.loads(report.read_text())
    assert [s["fault"] for s in data["timeline"]["faults"]] == ["latency", "down"]
    assert data["events"][-1]["action"] == "end"


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_removes_every_fault_it_added(
    cli: Callable[..., Cli],
    scenario_file: Callable[[str], str],
    target: Proxy,
    sig: signal.Signals,
    code: int,
) -> None:
    run = cli("run", scenario_file(LONG), "--proxy", target.name, "--toxiproxy", target.client.url)
    run.wait_for(lambda line: "apply    down()" in line)
    assert not target.refresh().enabled
    assert len(target.toxics()) == 3  # latency both ways + the down marker
    run.process.send_signal(sig)
    exit_code, out, err = run.finish()
    assert exit_code == code
    assert "Traceback" not in err
    assert "interrupted, removing the faults" in err
    assert "end      stopped early" in out
    assert "timeline:" in out
    assert target.toxics() == []
    assert target.refresh().enabled
    assert echoes(target.address)


@pytest.mark.slow
def test_a_killed_run_leaves_faults_the_next_run_removes(
    cli: Callable[..., Cli],
    scenario_file: Callable[[str], str],
    target: Proxy,
) -> None:
    url = target.client.url
    first = cli("run", scenario_file(LONG), "--proxy", target.name, "--toxiproxy", url)
    first.wait_for(lambda line: "apply    down()" in line)
    first.process.kill()  # no chance to clean up
    first.finish()
    assert not target.refresh().enabled
    assert len(target.toxics()) == 3

    second = cli("run", scenario_file(SHORT), "--proxy", target.name, "--toxiproxy", url)
    code, out, err = second.finish()
    assert (code, err) == (0, "")
    assert "stale    on svc synapse:default:latency:" in out
    assert target.toxics() == []
    assert target.refresh().enabled
    assert target.name in ToxiproxyClient(url).proxies()  # existing proxies are kept


# -- in-process: listing and bad input ---------------------------------------------------------


def test_scenarios_lists_the_library(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scenarios"]) == 0
    out = capsys.readouterr().out
    for name in ("latency-spike", "brownout-ramp", "blackhole", "partition-heal", "flapping"):
        assert f"\n{name} " in f"\n{out}"
    assert "reset-storm" in out
    assert "slow-drain" in out
    assert main(["scenarios", "partition-heal"]) == 0
    assert "fault: partition" in capsys.readouterr().out
    assert main(["scenarios", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 7


@pytest.mark.slow
def test_a_second_interrupt_abandons_a_hung_cleanup(
    cli: Callable[..., Cli], echo_server: EchoServer, tmp_path: Path
) -> None:
    server = cli("serve", "--port", "0")
    ready = server.wait_for(lambda line: "listening on http://" in line)
    url = ready.split(" on ", 1)[1].split()[0]
    scenario = tmp_path / "long.yaml"
    scenario.write_text(LONG)
    run = cli(
        "run",
        str(scenario),
        "--proxy",
        f"redis={echo_server.address}",
        "--toxiproxy",
        url,
        "--timeout",
        "60",
        "--no-progress",
    )
    run.wait_for(lambda line: "apply    down()" in line)
    os.kill(server.process.pid, signal.SIGSTOP)  # the server stops answering mid-run
    try:
        run.process.send_signal(signal.SIGINT)  # cleanup starts and hangs on the server
        time.sleep(1.0)
        assert run.process.poll() is None, "the first interrupt should wait for the cleanup"
        run.process.send_signal(signal.SIGINT)
        started = time.monotonic()
        code = run.process.wait(10)
        assert time.monotonic() - started < 5
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
    _, _, err = run.finish()
    assert code == 130
    assert "Traceback" not in err
    (line,) = [line for line in err.splitlines() if "abandoned" in line]
    assert f"may remain on {url}: latency, down on proxy redis" in line
    assert f"POST {url}/reset" in line
    assert "--owner default" in line
    assert f"DELETE {url}/proxies/redis" in line
    # What it said may remain did (the latency toxics at least), and its remedy removes it.
    client = ToxiproxyClient(url, timeout=10)
    assert any(t.name.startswith("synapse:default:latency:") for t in client.toxics("redis"))
    client.reset()
    assert client.toxics("redis") == []
    assert client.proxy_info("redis").enabled
