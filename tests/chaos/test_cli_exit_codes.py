"""``synapse-chaos`` exit codes: 2 and one line for bad input, 1 for server and run failures.

``serve`` and ``run`` both: bad URLs, timeouts, hosts, config and scenario files, report paths;
ports in use, proxies deleted under a run, reports or cleanups that fail after it. Never a
traceback.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from chaos_helpers import EchoServer

from chaos import Backend, EmbeddedToxiproxy, InvalidToxic, Proxy, ScenarioRunner, runcli
from chaos.cli import main

SHORT = "name: short\nproxies: [svc]\nsteps:\n  - {at: 0, fault: latency, ms: 1, duration: 0.05}\n"


@pytest.fixture
def scenario_file(tmp_path: Path) -> Callable[[str], str]:
    def write(text: str, suffix: str = ".yaml") -> str:
        path = tmp_path / f"scenario-{len(list(tmp_path.iterdir()))}{suffix}"
        path.write_text(text)
        return str(path)

    return write


@pytest.fixture
def short_scenario(tmp_path: Path) -> str:
    """A scenario file: 1 ms of latency on proxy ``svc`` for 50 ms."""
    path = tmp_path / "short.yaml"
    path.write_text(SHORT)
    return str(path)


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.startswith("synapse-chaos: error: ")
    assert err.count("\n") == 1
    assert "Traceback" not in err
    return err


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


@pytest.fixture
def existing(chaos_backend: Backend, echo_server: EchoServer) -> Proxy:
    """A proxy that exists before the run (``run`` attaches to it)."""
    return chaos_backend.create_proxy(echo_server.address, name="cli-existing")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not valid JSON"),
        ('{"name": "x"}', "must hold a JSON array"),
        ('[{"name": "x"}]', "missing required field: upstream at proxy 1"),
    ],
)
def test_bad_config_is_explained(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    config = tmp_path / "bad.json"
    config.write_text(content)
    assert main(["serve", "--port", "0", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_missing_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--config", str(tmp_path / "absent.json")]) == 2
    assert "cannot read --config" in capsys.readouterr().err


def test_port_in_use(capsys: pytest.CaptureFixture[str]) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        assert main(["serve", "--port", str(taken.getsockname()[1])]) == 1
    finally:
        taken.close()
    assert "pick another --port" in capsys.readouterr().err


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "serve" in capsys.readouterr().err


def test_serve_config_that_cannot_be_bound_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "config.json"
        config.write_text(
            json.dumps([{"name": "x", "listen": f"127.0.0.1:{port}", "upstream": "127.0.0.1:1"}])
        )
        assert main(["serve", "--port", "0", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert f"--config {config}" in err
    assert "Traceback" not in err


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


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "nope", "--proxy", "a=127.0.0.1:1"], "no library scenario named 'nope'"),
        (["run", "blackhole"], "needs its proxies bound: --proxy service=HOST:PORT"),
        (["run", "blackhole", "--proxy", "a=nohost"], "'nohost' is not HOST:PORT"),
        (["run", "blackhole", "--proxy", "a="], "expected NAME or NAME=HOST:PORT"),
        (
            ["run", "blackhole", "--proxy", "a=1.2.3.4:5", "--listen", "b=127.0.0.1:0"],
            "no --proxy named 'b'",
        ),
        (["run", "blackhole", "--proxy", "a=1.2.3.4:5", "--toxiproxy", "ftp://x"], "not a"),
        (["run", "blackhole", "--proxy", "a=1.2.3.4:5", "--timeout", "0"], "--timeout"),
        (
            ["run", "blackhole", "--proxy", "db=1.2.3.4:5", "--proxy", "cache=1.2.3.4:6"],
            "has one proxy (service) but got 2 --proxy flags; drop --proxy cache=1.2.3.4:6",
        ),
        (["scenarios", "missing.yaml"], "no such file 'missing.yaml'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("synapse-chaos: error: ")
    assert message in err


def test_bad_scenario_files_are_explained(
    capsys: pytest.CaptureFixture[str], scenario_file: Callable[[str], str]
) -> None:
    broken = scenario_file("name: x\nsteps:\n  - {at: 0, fault: down\n")
    assert main(["run", broken, "--proxy", "a=127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert f"{broken}:4: invalid YAML" in err
    undeclared = scenario_file(
        "name: x\nproxies: [a]\nsteps:\n  - {at: 0, proxy: b, fault: down}\n"
    )
    assert main(["run", undeclared, "--proxy", "a=127.0.0.1:1"]) == 2
    assert "step uses proxy 'b', which the scenario does not declare" in capsys.readouterr().err


def test_unknown_proxy_and_unreachable_server(
    capsys: pytest.CaptureFixture[str], toxiproxy: EmbeddedToxiproxy
) -> None:
    assert main(["run", "blackhole", "--proxy", "ghost", "--toxiproxy", toxiproxy.url]) == 2
    err = capsys.readouterr().err
    assert "no proxy named 'ghost'" in err
    assert "--proxy ghost=HOST:PORT" in err
    assert err.count("\n") == 1
    started = time.monotonic()
    code = main(
        ["run", "blackhole", "--proxy", "a=127.0.0.1:1", "--toxiproxy", "http://127.0.0.1:1"]
    )
    assert code == 1
    assert time.monotonic() - started < 5
    err = capsys.readouterr().err
    assert "cannot reach the Toxiproxy API" in err
    assert "http://127.0.0.1:1" in err
    assert "Traceback" not in err


def test_a_timeout_hint_names_the_cli_option(capsys: pytest.CaptureFixture[str]) -> None:
    """It used to say "raise ToxiproxyClient(timeout=...)", which a CLI user cannot do."""
    with socket.socket() as silent:  # accepts connections (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        code = main(["run", "blackhole", "--proxy", "a=127.0.0.1:1", "--toxiproxy", url,
                     "--timeout", "0.2"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1
    assert "no answer within 0.2 s" in err
    assert "raise --timeout if the server is just slow" in err
    assert "ToxiproxyClient" not in err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--toxiproxy", "http://[::1"], "is not a Toxiproxy API URL"),
        (["--toxiproxy", "http://127.0.0.1:99999"], "is not a Toxiproxy API URL"),
        (["--timeout", "nan"], "--timeout must be a finite number"),
        (["--timeout", "inf"], "--timeout must be a finite number"),
    ],
)
def test_bad_url_and_timeout_are_one_line(
    capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    assert main(["run", "blackhole", "--proxy", "a=127.0.0.1:1", *extra]) == 2
    assert message in one_line_error(capsys)


def test_bad_url_in_the_environment_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SYNAPSE_TOXIPROXY", "http://[::1")
    assert main(["run", "blackhole", "--proxy", "a=127.0.0.1:1"]) == 2
    assert "SYNAPSE_TOXIPROXY" in one_line_error(capsys)


@pytest.mark.parametrize(
    ("text", "suffix"),
    [
        ("name: x\nsteps: " + "[" * 600 + "]" * 600 + "\n", ".yaml"),
        ('{"name": "x", "steps": ' + "[" * 100_000 + "]" * 100_000 + "}", ".json"),
        (
            "name: x\nproxies: [a]\nsteps:\n  - {at: 0, fault: latency, ms: "
            + "[" * 600
            + "]" * 600
            + "}\n",
            ".yaml",
        ),
    ],
)
def test_deeply_nested_files_are_one_line(
    capsys: pytest.CaptureFixture[str],
    scenario_file: Callable[[str, str], str],
    text: str,
    suffix: str,
) -> None:
    path = scenario_file(text, suffix)
    assert main(["scenarios", path]) == 2
    err = one_line_error(capsys)
    assert path in err
    assert len(err) < 300


@pytest.mark.parametrize("value", ["1.0e+300", "9" * 400, "9007199254740993", ".inf"])
def test_out_of_range_parameters_fail_at_load(
    capsys: pytest.CaptureFixture[str], scenario_file: Callable[[str], str], value: str
) -> None:
    path = scenario_file(
        f"name: x\nproxies: [a]\nduration: 1\nsteps:\n  - {{at: 0, fault: latency, ms: {value}}}\n"
    )
    assert main(["scenarios", path]) == 2
    err = one_line_error(capsys)
    assert "ms must be a finite number >= 0 and <= 2**53" in err
    assert len(err) < 300


def test_listen_that_does_not_match_an_existing_proxy_is_bad_input(
    capsys: pytest.CaptureFixture[str],
    scenario_file: Callable[[str], str],
    existing: Proxy,
    echo_server: EchoServer,
) -> None:
    path = scenario_file(SHORT)
    base = ["run", path, "--proxy", f"{existing.name}={echo_server.address}"]
    base += ["--toxiproxy", existing.client.url, "--no-progress"]
    other = existing.port + 1 if existing.port < 65535 else existing.port - 1
    assert main([*base, "--listen", f"{existing.name}=127.0.0.1:{other}"]) == 2
    err = one_line_error(capsys)
    assert f"already exists listening on {existing.listen}" in err
    assert main([*base, "--listen", f"{existing.name}={existing.listen}"]) == 0
    capsys.readouterr()
    assert existing.refresh().enabled


def test_failures_during_the_run_exit_1(
    capsys: pytest.CaptureFixture[str],
    scenario_file: Callable[[str], str],
    toxiproxy: EmbeddedToxiproxy,
    echo_server: EchoServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class DeletedUnderIt(ScenarioRunner):
        def run(self, **kwargs: Any) -> Any:
            for proxy in self.proxies.values():  # someone else deletes the proxy
                proxy.client.delete_proxy(proxy.name)
            return super().run(**kwargs)

    path = scenario_file(SHORT)
    args = ["run", path, "--proxy", f"p={echo_server.address}", "--toxiproxy", toxiproxy.url]
    monkeypatch.setattr(runcli, "ScenarioRunner", DeletedUnderIt)
    assert main([*args, "--no-progress"]) == 1
    assert "proxy not found" in capsys.readouterr().err

    class Refused(ScenarioRunner):
        def run(self, **kwargs: Any) -> Any:
            raise InvalidToxic("a value the server does not take", status=400)

    monkeypatch.setattr(runcli, "ScenarioRunner", Refused)
    assert main([*args, "--no-progress"]) == 1
    assert "a value the server does not take" in capsys.readouterr().err


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
