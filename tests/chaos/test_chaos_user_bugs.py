"""Bugs users found: exit codes of ``run``/``serve``, flapping on a virtual timeline, runner
stop before start, overlap hints, numbers YAML reads as text.

Real embedded servers and real sockets on 127.0.0.1; every wait is bounded.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from chaos_helpers import EchoServer, connect_state

from chaos import (
    Backend,
    EmbeddedToxiproxy,
    InvalidFault,
    Proxy,
    ScenarioError,
    ScenarioRunner,
    parse_scenario,
    runcli,
)
from chaos.cli import main
from synapse_core import Timeline, VirtualClock

SHORT = "name: short\nproxies: [svc]\nsteps:\n  - {at: 0, fault: latency, ms: 1, duration: 0.05}\n"


@pytest.fixture
def short_scenario(tmp_path: Path) -> str:
    path = tmp_path / "short.yaml"
    path.write_text(SHORT)
    return str(path)


def _run_args(scenario: str, server: EmbeddedToxiproxy, echo: EchoServer, *extra: str) -> list[str]:
    return [
        "run",
        scenario,
        "--proxy",
        f"p={echo.address}",
        "--toxiproxy",
        server.url,
        "--no-progress",
        "--timeout",
        "2",
        *extra,
    ]


# -- 1. synapse-chaos run: a report or a cleanup that failed is not a success ---------------------


@pytest.mark.parametrize("where", ["directory", "parent-is-a-file", "proc"])
def test_json_path_that_cannot_be_written_is_bad_input_before_the_run(
    where: str,
    tmp_path: Path,
    short_scenario: str,
    toxiproxy: EmbeddedToxiproxy,
    echo_server: EchoServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = {
        "directory": tmp_path,
        "parent-is-a-file": tmp_path / "afile" / "run.json",
        "proc": Path("/proc/nope/x.json"),
    }[where]
    (tmp_path / "afile").write_text("a file, not a folder")
    code = main(_run_args(short_scenario, toxiproxy, echo_server, "--json", str(path)))
    out, err = capsys.readouterr()
    assert code == 2
    assert err.startswith(f"synapse-chaos: error: --json {path}")
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err
    assert "apply" not in out  # found before anything was applied
    assert toxiproxy.client().proxies() == {}


def test_json_report_that_cannot_be_written_after_the_run_exits_1(
    tmp_path: Path,
    short_scenario: str,
    toxiproxy: EmbeddedToxiproxy,
    echo_server: EchoServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder = tmp_path / "reports"
    folder.mkdir()
    report = folder / "run.json"

    class FolderRemovedDuringTheRun(ScenarioRunner):
        def run(self, **kwargs: Any) -> Any:
            try:
                return super().run(**kwargs)
            finally:
                shutil.rmtree(folder)  # someone cleans up while the scenario plays...
                folder.write_text("")  # ...and leaves a file where the folder was

    monkeypatch.setattr(runcli, "ScenarioRunner", FolderRemovedDuringTheRun)
    code = main(_run_args(short_scenario, toxiproxy, echo_server, "--json", str(report)))
    out, err = capsys.readouterr()
    assert code == 1
    assert f"cannot write --json {report}" in err
    assert "end      scenario short complete" in out  # the run itself went through
    assert toxiproxy.client().proxies() == {}


def test_proxies_that_could_not_be_removed_after_the_run_exit_1(
    short_scenario: str,
    echo_server: EchoServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with EmbeddedToxiproxy() as server:

        class ServerGoneAfterTheRun(ScenarioRunner):
            def run(self, **kwargs: Any) -> Any:
                result = super().run(**kwargs)
                server.stop()  # the proxy the run created can no longer be deleted
                return result

        monkeypatch.setattr(runcli, "ScenarioRunner", ServerGoneAfterTheRun)
        code = main(_run_args(short_scenario, server, echo_server))
    out, err = capsys.readouterr()
    assert code == 1
    assert "while removing the proxies" in err
    assert "end      scenario short complete" in out
    assert "Traceback" not in err


# -- 2. a hand-started flapping fault follows real time, whatever the timeline's clock ---------


def test_flapping_on_a_virtual_timeline_still_switches_in_real_time(
    chaos_backend: Backend, echo_server: EchoServer
) -> None:
    clock = VirtualClock(100.0)  # nobody advances it
    timeline = Timeline(clock)
    proxy = chaos_backend.create_proxy(echo_server.address, timeline=timeline)
    states: list[str] = []
    with proxy.flapping(0.2):
        deadline = time.monotonic() + 1.2
        while time.monotonic() < deadline:
            state = connect_state(proxy.address, timeout=1.0)
            if not states or states[-1] != state:
                states.append(state)
            time.sleep(0.02)
    assert states[0] == "refused"  # it starts down
    assert states.count("open") >= 2, states  # and comes back up, again and again
    assert states.count("refused") >= 2, states
    assert connect_state(proxy.address) == "open"
    downs = [span for span in timeline.faults if span.fault == "down"]
    assert len(downs) >= 3
    # Spans stay on the timeline's clock.
    assert {span.start for span in downs} == {100.0}
    assert all(span.end == 100.0 for span in downs)


def test_flapping_driven_by_a_runner_still_follows_the_virtual_clock(echo_handle: Proxy) -> None:
    scenario = parse_scenario(
        "name: f\nproxies: [svc]\nsteps:\n  - {at: 0, fault: flapping, period: 10, duration: 30}\n"
    )
    clock = VirtualClock()
    with ScenarioRunner(scenario, {"svc": echo_handle}, clock=clock) as runner:
        runner.advance(1)
        assert connect_state(echo_handle.address) == "refused"
        runner.advance(5)  # t=6: up since 5
        assert connect_state(echo_handle.address) == "open"
        runner.advance(5)  # t=11: down again since 10
        assert connect_state(echo_handle.address) == "refused"
    downs = [(s.start, s.end) for s in runner.timeline.faults if s.fault == "down"]
    assert downs == [(0.0, 5.0), (10.0, 11.0)]
    assert connect_state(echo_handle.address) == "open"


# -- 3. ScenarioRunner.stop() before start() ------------------------------------------------------


def test_stop_before_start_does_not_keep_a_later_run_from_playing(echo_handle: Proxy) -> None:
    scenario = parse_scenario(SHORT)
    runner = ScenarioRunner(scenario, {"svc": echo_handle}, clock=VirtualClock())
    runner.stop()
    with runner:
        pass  # leaving the block stops it too
    stopped_before_start = runner.finished
    assert not stopped_before_start
    assert runner.log == []
    runner.run()
    assert runner.finished
    assert [e.action for e in runner.log] == ["begin", "apply", "expire", "end"]
    assert [s.fault for s in runner.timeline.faults] == ["latency"]
    assert echo_handle.toxics() == []


# -- 4. overlap errors say what to change --------------------------------------------------------


def _overlap_message(*steps: str, duration: str = "") -> str:
    text = "name: x\nproxies: [api]\n" + duration + "steps:\n"
    text += "".join(f"  - {step}\n" for step in steps)
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text)
    return str(info.value)


@pytest.mark.parametrize(
    ("steps", "hint"),
    [
        (  # /tmp/explore/s/sc2/overlap.yaml: step 1 has a duration that reaches step 2
            (
                "{at: 0, fault: latency, ms: 10, duration: 5}",
                "{at: 1, fault: latency, ms: 20, duration: 1}",
            ),
            "step 1's duration of 5 s runs until 5 s; shorten it to at most 1 s, "
            "or start step 2 at 5 s or later",
        ),
        (  # /tmp/explore/s/sc2/pb.yaml
            (
                "{at: 0, fault: partition, mode: drop, duration: 5}",
                "{at: 1, fault: blackhole, stream: upstream, duration: 1}",
            ),
            "step 1's duration of 5 s runs until 5 s; shorten it to at most 1 s",
        ),
        (
            (
                "{at: 0, fault: latency, ms: 10}",
                "{at: 2, fault: latency, ms: 20, duration: 1}",
            ),
            "step 1 has no duration, so it lasts until the scenario ends; give it a duration "
            "of at most 2 s or add a heal step at 2 s",
        ),
        (
            (
                "{at: 0, fault: down}",
                "{at: 2, fault: flapping, period: 1, duration: 1}",
                "{at: 4, fault: heal}",
            ),
            "step 1 lasts until the heal step at 4 s; move that heal step to 2 s or earlier, "
            "or start step 2 at 4 s or later",
        ),
        (
            (
                "{at: 1, fault: down, duration: 3}",
                "{at: 1, fault: partition, mode: reject, duration: 1}",
            ),
            "both start at 1 s; start step 2 later, once step 1 has ended",
        ),
    ],
)
def test_overlap_errors_suggest_what_fits_the_steps(steps: tuple[str, ...], hint: str) -> None:
    message = _overlap_message(*steps)
    assert "overlaps step 1" in message
    assert hint in message
    if "duration" in steps[0]:
        assert "give step 1 a duration" not in message


# -- 5. numbers that YAML 1.1 reads as text --------------------------------------------------------


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        (
            "{at: 0, fault: latency, ms: 1e3, duration: 1}",
            "ms must be a number, got str '1e3' (YAML reads 1e3 as text; write 1000 or 1.0e+3)",
        ),
        (
            "{at: 0, fault: latency, ms: 2.5e2, duration: 1}",
            "(YAML reads 2.5e2 as text; write 250 or 2.5e+2)",
        ),
        (
            "{at: 1e1, fault: latency, ms: 10, duration: 1}",
            "at must be a number of seconds, got '1e1' (YAML reads 1e1 as text; "
            "write 10 or 1.0e+1)",
        ),
        (
            "{at: 0, fault: latency, ms: 10, duration: 5E-1}",
            "(YAML reads 5E-1 as text; write 0.5 or 5.0e-1)",
        ),
        (
            '{at: 0, fault: latency, ms: "10", duration: 1}',
            "ms must be a number, got str '10' (a number in quotes is text; write 10 without "
            "quotes)",
        ),
    ],
)
def test_numbers_yaml_reads_as_text_get_a_hint(step: str, expected: str) -> None:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(f"name: x\nproxies: [api]\nsteps:\n  - {step}\n")
    assert expected in str(info.value)


def test_the_suggested_spellings_load_as_numbers() -> None:
    for text, suggestions in [("1e3", ("1000", "1.0e+3")), ("1e20", ("1.0e+20",))]:
        for suggestion in suggestions:
            loaded = yaml.safe_load(f"ms: {suggestion}")["ms"]
            assert isinstance(loaded, int | float)
            assert loaded == float(text)
    with pytest.raises(ScenarioError, match=r"write 1\.0e\+20\)"):
        parse_scenario(
            "name: x\nproxies: [api]\nsteps:\n  - {at: 0, fault: latency, ms: 1e20, duration: 1}\n"
        )


def test_text_that_is_no_number_gets_no_hint(echo_handle: Proxy) -> None:
    with pytest.raises(InvalidFault) as info:
        echo_handle.latency("slow")  # type: ignore[arg-type]
    assert str(info.value).endswith("got str 'slow'")
    with pytest.raises(InvalidFault, match=r"write 1000 or 1\.0e\+3\)"):
        echo_handle.latency("1e3")  # type: ignore[arg-type]


# -- 6. synapse-chaos serve --host --------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("256.1.1.1", "is not a valid IPv4 address"),
        ("1.2.3", "is not a valid IPv4 address"),
        ("bad host", "is neither an IP address nor a host name"),
        ("no-such-host.invalid", "does not resolve"),
        ("", "must not be empty"),
    ],
)
def test_malformed_host_is_bad_input(
    host: str, reason: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", "--host", host, "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("synapse-chaos: error: --host")
    assert reason in err
    assert "--port" not in err
    assert len(err.strip().splitlines()) == 1


def test_malformed_host_from_the_command_line_exits_2() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "chaos", "serve", "--host", "256.1.1.1", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "--host '256.1.1.1' is not a valid IPv4 address" in done.stderr
    assert "Traceback" not in done.stderr


def test_host_that_is_not_on_this_machine_names_the_host(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # 192.0.2.1 (TEST-NET-1) is well formed but never an address of this machine.
    assert main(["serve", "--host", "192.0.2.1", "--port", "0"]) == 1
    err = capsys.readouterr().err
    assert "--host 192.0.2.1 is not an address of this machine" in err
    assert "pick another --port" not in err


def test_port_in_use_still_exits_1_with_the_port_hint(
    toxiproxy: EmbeddedToxiproxy, capsys: pytest.CaptureFixture[str]
) -> None:
    # A host name that resolves is accepted; the port is what fails.
    assert main(["serve", "--host", "localhost", "--port", str(toxiproxy.port)]) == 1
    err = capsys.readouterr().err
    assert "pick another --port" in err
    assert "Traceback" not in err
