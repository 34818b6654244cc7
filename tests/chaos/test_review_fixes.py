"""Regression tests for the review of ``chaos``: cancellation and catch-up of flapping, cleanup
after interrupted or failed starts and stops, a thread-safe embedded server, one-line errors for
bad input, bounded values, exit codes."""

from __future__ import annotations

import asyncio
import json
import math
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from chaos_helpers import EchoServer, wait_until

from chaos import (
    Backend,
    EmbeddedServerError,
    EmbeddedToxiproxy,
    InvalidFault,
    InvalidToxic,
    Proxy,
    ScenarioError,
    ScenarioFileError,
    ScenarioRunner,
    ToxiproxyClient,
    ToxiproxyUnavailable,
    parse_scenario,
    runcli,
)
from chaos import embedded as embedded_module
from chaos.cli import main
from chaos.server import ChaosServer
from synapse_core import VirtualClock


class ManualClock:
    """A real-time (not virtual) clock the test moves: the runner's real-time code paths."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def scenario_file(tmp_path: Path) -> Callable[[str], str]:
    def write(text: str, suffix: str = ".yaml") -> str:
        path = tmp_path / f"scenario-{len(list(tmp_path.iterdir()))}{suffix}"
        path.write_text(text)
        return str(path)

    return write


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.startswith("synapse-chaos: error: ")
    assert err.count("\n") == 1
    assert "Traceback" not in err
    return err


def server_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "synapse-chaos-server"]


# -- 1. flapping: cancellation, real-time catch-up, minimum period ------------------------------


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


def test_real_time_flapping_jumps_to_the_current_phase(echo_handle: Proxy) -> None:
    clock = ManualClock()
    scenario = parse_scenario(
        "name: f\nproxies: [svc]\nsteps:\n  - {at: 0, fault: flapping, period: 0.1, duration: 900}"
    )
    with ScenarioRunner(scenario, {"svc": echo_handle}, clock=clock) as runner:
        runner.start()
        assert not echo_handle.refresh().enabled
        clock.now += 500.07  # a stall of 5000 periods: in the up half of a period now
        started = time.monotonic()
        events = runner.step()
        assert time.monotonic() - started < 2
        assert 1 <= len(events) <= 2
        assert echo_handle.refresh().enabled
        clock.now += 0.05  # the next switch: down again
        assert [e.action for e in runner.step()] == ["down"]
        assert not echo_handle.refresh().enabled
    assert echo_handle.refresh().enabled
    assert echo_handle.toxics() == []


def test_flapping_period_has_a_lower_bound(echo_handle: Proxy) -> None:
    with pytest.raises(InvalidFault, match=r"period must be .*>= 0\.05"):
        echo_handle.flapping(1e-6)
    with pytest.raises(ScenarioError, match=r"period must be .*>= 0\.05"):
        parse_scenario("name: f\nproxies: [a]\nsteps:\n  - {at: 0, fault: flapping, period: 0.01}")
    assert echo_handle.flapping(0.05).params["period"] == 0.05


# -- 2./3. cleanup after failed or interrupted starts and stops ----------------------------------


def test_failed_disable_does_not_leave_the_proxy_down(
    echo_handle: Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = echo_handle.client
    real_disable, real_enable = client.disable, client.enable

    def disable_then_lost(name: str) -> Any:
        real_disable(name)
        raise ToxiproxyUnavailable("response lost after the server applied it")

    monkeypatch.setattr(client, "disable", disable_then_lost)
    with pytest.raises(ToxiproxyUnavailable):
        echo_handle.down().start()
    assert echo_handle.refresh().enabled
    assert echo_handle.toxics() == []

    # If enabling fails too, the marker stays, so stale cleanup can re-enable the proxy.
    def enable_fails(name: str) -> Any:
        raise ToxiproxyUnavailable("no answer")

    monkeypatch.setattr(client, "enable", enable_fails)
    with pytest.raises(ToxiproxyUnavailable):
        echo_handle.partition("reject").start()
    assert not echo_handle.refresh().enabled
    monkeypatch.setattr(client, "enable", real_enable)
    assert len(echo_handle.remove_stale_faults()) == 1
    assert echo_handle.refresh().enabled
    assert echo_handle.toxics() == []


def test_interrupted_stop_leaves_nothing_stale_cleanup_cannot_remove(
    echo_handle: Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = echo_handle.client
    real_remove = client.remove_toxic
    fault = echo_handle.latency(10).start()  # two toxics

    def remove_then_interrupt(proxy: str, name: str) -> Any:
        real_remove(proxy, name)
        raise KeyboardInterrupt

    monkeypatch.setattr(client, "remove_toxic", remove_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        fault.stop()
    monkeypatch.setattr(client, "remove_toxic", real_remove)
    assert not fault.active
    assert len(echo_handle.toxics()) == 1
    assert len(echo_handle.remove_stale_faults()) == 1  # same process: no longer held as live
    assert echo_handle.toxics() == []
    fault.stop()  # the retry finds them gone: fine


def test_stop_after_a_server_error_can_be_retried(
    echo_handle: Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = echo_handle.client
    real_remove, real_enable = client.remove_toxic, client.enable

    def unavailable(*args: object) -> Any:
        raise ToxiproxyUnavailable("no answer")

    latency = echo_handle.latency(10).start()
    down = echo_handle.down().start()
    monkeypatch.setattr(client, "remove_toxic", unavailable)
    monkeypatch.setattr(client, "enable", unavailable)
    for fault in (latency, down):
        with pytest.raises(ToxiproxyUnavailable):
            fault.stop()
    monkeypatch.setattr(client, "remove_toxic", real_remove)
    monkeypatch.setattr(client, "enable", real_enable)
    assert not echo_handle.refresh().enabled
    assert len(echo_handle.toxics()) == 3
    latency.stop()
    down.stop()
    assert echo_handle.refresh().enabled
    assert echo_handle.toxics() == []
    assert latency.toxic_names == down.toxic_names == []


# -- 4. EmbeddedToxiproxy is thread-safe -----------------------------------------------------------


def test_embedded_start_and_stop_are_thread_safe() -> None:
    before = len(server_threads())
    server = EmbeddedToxiproxy()
    errors: list[BaseException] = []

    def call(fn: Callable[[], object]) -> None:
        try:
            for _ in range(5):
                fn()
        except BaseException as exc:  # collected: asserted below
            errors.append(exc)

    starters = [threading.Thread(target=call, args=(server.start,)) for _ in range(3)]
    for thread in starters:
        thread.start()
    for thread in starters:
        thread.join(30)
    assert len(server_threads()) == before + 1
    assert server.client().version()
    racers = [threading.Thread(target=call, args=(fn,)) for fn in (server.start, server.stop) * 2]
    for thread in racers:
        thread.start()
    for thread in racers:
        thread.join(30)
    server.stop()
    assert errors == []
    assert wait_until(lambda: len(server_threads()) == before)


def test_embedded_start_timeout_leaves_no_server_running(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class SlowServer(ChaosServer):
        async def start(self) -> None:
            await asyncio.sleep(0.3)
            await super().start()

    before = len(server_threads())
    monkeypatch.setattr(embedded_module, "ChaosServer", SlowServer)
    server = EmbeddedToxiproxy(start_timeout=0.05)
    with pytest.raises(EmbeddedServerError, match="did not start within"):
        server.start()
    assert not server.running
    assert wait_until(lambda: len(server_threads()) == before, timeout=5)


# -- 5. bad input: one line, exit 2, never a traceback ---------------------------------------------


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


def test_client_rejects_bad_url_and_timeout_with_value_error() -> None:
    with pytest.raises(ValueError, match="http://host:port"):
        ToxiproxyClient("http://[::1")
    with pytest.raises(ValueError, match="http://host:port"):
        ToxiproxyClient("http://127.0.0.1:70000")
    for timeout in (math.nan, math.inf, 0):
        with pytest.raises(ValueError, match="timeout"):
            ToxiproxyClient("http://127.0.0.1:1", timeout=timeout)


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


def test_duplicate_yaml_keys_are_rejected_with_the_line() -> None:
    text = "name: x\nproxies: [a]\nsteps:\n  - {at: 0, fault: latency, ms: 10, ms: 20}\n"
    with pytest.raises(ScenarioFileError, match="duplicate key 'ms'") as info:
        parse_scenario(text, source="dup.yaml")
    assert str(info.value).startswith("dup.yaml:4: ")


def test_duplicate_json_keys_are_rejected() -> None:
    step = '{"at": 0, "fault": "latency", "ms": 10, "ms": 20}'
    text = f'{{"name": "x", "proxies": ["a"], "steps": [{step}]}}'
    with pytest.raises(ScenarioFileError, match="invalid JSON: found duplicate key 'ms'") as info:
        parse_scenario(text, source="dup.json", format="json")
    assert str(info.value).startswith("dup.json: ")


# -- 6. values bounded at load ---------------------------------------------------------------------


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


def test_parameter_limit_is_the_servers(echo_handle: Proxy) -> None:
    with pytest.raises(InvalidFault, match=r"2\*\*53"):
        echo_handle.slicer(2**53 + 2)
    with pytest.raises(ScenarioError, match="at must be a finite number"):
        parse_scenario("name: x\nproxies: [a]\nsteps:\n  - {at: " + "9" * 400 + ", fault: down}")
    with echo_handle.latency(2**53, stream="upstream"):  # the largest accepted is applied
        assert echo_handle.toxics()[0].attributes["latency"] == 2**53


# -- 7. non-finite clock moves ---------------------------------------------------------------------


@pytest.mark.parametrize("seconds", [math.nan, math.inf])
def test_advance_rejects_non_finite_seconds(echo_handle: Proxy, seconds: float) -> None:
    clock = VirtualClock()
    scenario = parse_scenario(
        "name: x\nproxies: [a]\nduration: 2\nsteps:\n  - {at: 1, fault: down}"
    )
    with ScenarioRunner(scenario, {"a": echo_handle}, clock=clock) as runner:
        with pytest.raises(ValueError, match="finite"):
            runner.advance(seconds)
        assert clock() == 0.0
    with pytest.raises(ValueError, match="finite"):
        clock.advance_to(seconds)
    with pytest.raises(ValueError, match="finite"):
        clock.advance_to(-math.inf)
    assert clock() == 0.0
    assert clock.advance_to(2.5) == 2.5


# -- 8. --listen must match an existing proxy -----------------------------------------------------

QUICK = "name: quick\nproxies: [svc]\nsteps:\n  - {at: 0, fault: latency, ms: 1, duration: 0.05}\n"


@pytest.fixture
def existing(chaos_backend: Backend, echo_server: EchoServer) -> Proxy:
    return chaos_backend.create_proxy(echo_server.address, name="review-existing")


def test_listen_that_does_not_match_an_existing_proxy_is_bad_input(
    capsys: pytest.CaptureFixture[str],
    scenario_file: Callable[[str], str],
    existing: Proxy,
    echo_server: EchoServer,
) -> None:
    path = scenario_file(QUICK)
    base = ["run", path, "--proxy", f"{existing.name}={echo_server.address}"]
    base += ["--toxiproxy", existing.client.url, "--no-progress"]
    other = existing.port + 1 if existing.port < 65535 else existing.port - 1
    assert main([*base, "--listen", f"{existing.name}=127.0.0.1:{other}"]) == 2
    err = one_line_error(capsys)
    assert f"already exists listening on {existing.listen}" in err
    assert main([*base, "--listen", f"{existing.name}={existing.listen}"]) == 0
    capsys.readouterr()
    assert existing.refresh().enabled


# -- 9. exit codes: input errors 2, server and runtime failures 1 ---------------------------------


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

    path = scenario_file(QUICK)
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
