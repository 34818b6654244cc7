"""ScenarioRunner on a VirtualClock: exact timing, breakers on the same clock, cleanup, errors."""

from __future__ import annotations

import contextlib
import math
import socket
import time

import pytest
from chaos_helpers import EchoServer, connect_state, echoes

from chaos import (
    Backend,
    NotFound,
    Proxy,
    ScenarioBindingError,
    ScenarioError,
    ScenarioRunner,
    load_scenario,
    parse_scenario,
)
from synapse_core import (
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitOpenError,
    Timeline,
    VirtualClock,
)

TWO_PROXIES = """
name: two
proxies: [api, db]
duration: 30
steps:
  - {at: 2, proxy: api, fault: latency, ms: 50, duration: 8}
  - {at: 5, proxy: db, fault: down}
  - {at: 12, proxy: db, fault: heal}
  - {at: 20, proxy: api, fault: flapping, period: 4, down_fraction: 0.25, duration: 8}
"""


def toxic_types(proxy: Proxy) -> list[str]:
    return sorted(t.type for t in proxy.toxics())


def test_advance_applies_each_step_at_its_exact_time(
    chaos_backend: Backend, echo_server: EchoServer
) -> None:
    api = chaos_backend.create_proxy(echo_server.address)
    db = chaos_backend.create_proxy(echo_server.address)
    clock = VirtualClock(1000.0)
    with ScenarioRunner(parse_scenario(TWO_PROXIES), {"api": api, "db": db}, clock=clock) as run:
        assert run.step() == [run.log[0]]  # begin; nothing due at 0
        assert run.log[0].action == "begin"
        run.advance(3)
        assert toxic_types(api) == ["latency", "latency"]
        assert db.refresh().enabled
        run.advance(3)  # 6: db is down (a marker toxic + disabled)
        assert not db.refresh().enabled
        assert connect_state(db.address) == "refused"
        run.advance(6.5)  # 12.5: latency expired at 10, db healed at 12
        assert api.toxics() == []
        assert echoes(db.address)
        run.advance(10)  # 22.5: flapping since 20: down 20-21, up 21-24
        assert echoes(api.address)
        assert not run.finished
        run.advance(100)
        assert run.finished
        assert clock() == 1000 + 12.5 + 10 + 100
    spans = [(s.fault, s.proxy, s.start - 1000, (s.end or 0) - 1000) for s in run.timeline.faults]
    assert spans == [
        ("latency", api.name, 2, 10),
        ("down", db.name, 5, 12),
        ("flapping", api.name, 20, 28),
        ("down", api.name, 20, 21),
        ("down", api.name, 24, 25),
    ]
    actions = [(e.at, e.action, e.step) for e in run.log]
    assert actions == [
        (0, "begin", None),
        (2, "apply", 1),
        (5, "apply", 2),
        (10, "expire", 1),
        (12, "heal", 3),
        (20, "apply", 4),
        (21, "up", 4),
        (24, "down", 4),
        (25, "up", 4),
        (28, "expire", 4),
        (30, "end", None),
    ]
    assert api.toxics() == db.toxics() == []
    assert api.refresh().enabled
    assert db.refresh().enabled


def test_a_breaker_on_the_same_clock_sees_the_partition_and_recovers(echo_handle: Proxy) -> None:
    """A 40 s scenario checked against a real breaker in well under a second of real time."""
    clock = VirtualClock()
    timeline = Timeline(clock)
    breaker = CircuitBreaker(
        "echo", CircuitBreakerConfig(failure_threshold=3, recovery_timeout=10), clock=clock
    )
    timeline.watch(breaker)

    def call() -> None:
        with socket.create_connection(echo_handle.address, timeout=0.05) as sock:
            sock.sendall(b"ping")
            if sock.recv(4) != b"ping":
                raise ConnectionError("no echo")

    started = time.perf_counter()
    runner = ScenarioRunner(
        load_scenario("partition-heal"), {"service": echo_handle}, clock=clock, timeline=timeline
    )
    with runner:
        for _ in range(40):
            runner.advance(1.0)
            with contextlib.suppress(OSError, CircuitOpenError):  # outcomes go to the timeline
                breaker.call(call)
    elapsed = time.perf_counter() - started
    timeline.close()

    (partition,) = timeline.faults
    assert (partition.fault, partition.start, partition.end) == ("partition", 5.0, 25.0)
    kinds = [(r.kind, r.at) for r in timeline.breaker_events if r.kind != "request_rejected"]
    # Calls at 5, 6, 7 time out: open at 7. Probe at 17 fails (still partitioned): open until
    # 27; probes at 27 and 28 succeed: closed at 28.
    assert kinds == [
        ("opened", 7.0),
        ("half_opened", 17.0),
        ("opened", 17.0),
        ("half_opened", 27.0),
        ("closed", 28.0),
    ]
    assert elapsed < 5.0, elapsed


def test_step_applies_what_became_due_when_the_caller_moves_the_clock(echo_handle: Proxy) -> None:
    clock = VirtualClock()
    runner = ScenarioRunner(load_scenario("latency-spike"), {"service": echo_handle}, clock=clock)
    with runner:
        runner.start()
        clock.advance(4.9)
        assert runner.step() == []
        clock.advance(0.2)
        (applied,) = runner.step()
        assert (applied.action, applied.fault) == ("apply", "latency")
        assert applied.at == pytest.approx(5.1)
        assert applied.params == {"ms": 800, "jitter": 100, "stream": "both", "toxicity": 1.0}
        clock.advance(100)
        assert [e.action for e in runner.step()] == ["expire", "end"]
    (span,) = runner.timeline.faults
    assert (span.start, span.end) == (pytest.approx(5.1), 105.1)  # stamped when step() ran


def test_leaving_the_block_early_removes_active_faults(echo_handle: Proxy) -> None:
    clock = VirtualClock()
    runner = ScenarioRunner(load_scenario("flapping"), {"service": echo_handle}, clock=clock)

    def body() -> None:
        with runner:
            runner.advance(5.5)
            assert not echo_handle.refresh().enabled
            raise RuntimeError("test body failed")

    with pytest.raises(RuntimeError, match="test body failed"):
        body()
    assert runner.finished
    assert echo_handle.refresh().enabled
    assert echo_handle.toxics() == []
    assert [e.action for e in runner.log][-2:] == ["cleanup", "end"]
    assert runner.log[-1].message == "stopped early"
    assert all(span.end is not None for span in runner.timeline.faults)


def test_run_with_a_virtual_clock_plays_everything_at_once(echo_handle: Proxy) -> None:
    clock = VirtualClock()
    started = time.perf_counter()
    timeline = ScenarioRunner(
        load_scenario("brownout-ramp"), {"service": echo_handle}, clock=clock
    ).run()
    assert time.perf_counter() - started < 3.0
    assert clock() == 60.0
    latencies = [s.params["ms"] for s in timeline.faults if s.fault == "latency"]
    assert latencies == [100, 250, 500, 1000]
    assert echo_handle.toxics() == []


def test_stale_faults_are_removed_when_a_run_starts(echo_handle: Proxy) -> None:
    client = echo_handle.client
    stale = "synapse:tests:latency:deadbeef-1:downstream"
    client.add_toxic(echo_handle.name, "latency", name=stale, attributes={"latency": 500})
    client.add_toxic(echo_handle.name, "noop", name="synapse:tests:down:deadbeef-2:marker")
    client.disable(echo_handle.name)
    runner = ScenarioRunner(
        load_scenario("blackhole"), {"service": echo_handle}, clock=VirtualClock()
    )
    with runner:
        runner.start()
    (event,) = [e for e in runner.log if e.action == "stale"]
    assert stale in event.message
    assert echo_handle.toxics() == []
    assert echo_handle.refresh().enabled


def test_binding_and_clock_errors(echo_handle: Proxy) -> None:
    scenario = parse_scenario(TWO_PROXIES)
    with pytest.raises(ScenarioBindingError, match=r"no proxy given for 'db' \(given: api\)"):
        ScenarioRunner(scenario, {"api": echo_handle})
    with pytest.raises(ValueError, match="timeline must use the runner's clock"):
        ScenarioRunner(
            scenario,
            {"api": echo_handle, "db": echo_handle},
            timeline=Timeline(),
            clock=VirtualClock(),
        )
    real = ScenarioRunner(scenario, {"api": echo_handle, "db": echo_handle})
    with pytest.raises(ScenarioError, match="advance\\(\\) needs a VirtualClock"):
        real.advance(1)


def test_a_failing_step_leaves_nothing_behind(
    chaos_backend: Backend, echo_server: EchoServer
) -> None:
    api = chaos_backend.create_proxy(echo_server.address)
    db = chaos_backend.create_proxy(echo_server.address)
    scenario = parse_scenario(TWO_PROXIES)
    runner = ScenarioRunner(scenario, {"api": api, "db": db}, clock=VirtualClock())

    def body() -> None:
        with runner:
            runner.advance(3)  # api has latency now
            db.client.delete_proxy(db.name)
            runner.advance(3)  # db.down() fails: the proxy is gone

    with pytest.raises(NotFound, match="proxy not found"):
        body()
    assert api.toxics() == []
    assert [e.action for e in runner.log][-2:] == ["cleanup", "end"]


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


SHORT = "name: short\nproxies: [svc]\nsteps:\n  - {at: 0, fault: latency, ms: 1, duration: 0.05}\n"


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
