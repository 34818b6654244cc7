"""Flapping: a proxy switched down and up on a period, by hand, in the background or by a runner.

Real-time switching whatever the timeline's clock, exact phases on a virtual clock, catching up
after a stall, the shortest period, and an up phase that leaves another owner's outage alone.
"""

from __future__ import annotations

import threading
import time

import pytest
from chaos_helpers import EchoServer, connect_state, echoes, other_owner_takes_it_down

from chaos import (
    Backend,
    InvalidFault,
    Proxy,
    ScenarioError,
    ScenarioRunner,
    ToxiproxyClient,
    parse_scenario,
)
from synapse_core import Timeline, VirtualClock


def test_flapping_alternates_down_and_up_then_stops_cleanly(echo_handle: Proxy) -> None:
    fault = echo_handle.flapping(period=0.6, down_fraction=0.5)
    observed: list[str] = []
    start = time.perf_counter()
    with fault:
        deadline = start + 1.5
        while time.perf_counter() < deadline:
            state = connect_state(echo_handle.address, timeout=1.0)
            if not observed or observed[-1] != state:
                observed.append(state)
            time.sleep(0.02)
    assert observed[:3] == ["refused", "open", "refused"], observed
    assert not [t for t in threading.enumerate() if t.name.startswith("synapse-flapping")]
    assert echoes(echo_handle.address)
    spans = echo_handle.timeline.faults
    assert spans[0].fault == "flapping"
    phases = [s for s in spans if s.fault == "down"]
    assert len(phases) >= 2
    assert all(s.end is not None and s.params == {"via": "flapping"} for s in phases)
    first = phases[0]
    assert first.end is not None
    assert 0.28 <= first.end - first.start <= 0.6


def test_flapping_can_be_driven_by_hand(echo_handle: Proxy) -> None:
    clock = VirtualClock()
    timeline = Timeline(clock)
    flapping = echo_handle.flapping(period=10, down_fraction=0.3)
    flapping.start(timeline=timeline, background=False)
    assert connect_state(echo_handle.address) == "refused"
    clock.advance(2.9)
    assert flapping.sync() == 0
    clock.advance(0.1)
    assert flapping.sync() == 1
    assert echoes(echo_handle.address)
    clock.advance(17.0)  # 20.0: down at 10, up at 13, down at 20
    assert flapping.sync() == 3
    assert connect_state(echo_handle.address) == "refused"
    flapping.stop()
    assert echoes(echo_handle.address)
    downs = [(s.start, s.end) for s in timeline.faults if s.fault == "down"]
    # sync() stamps the switches it makes with the time it is called (ScenarioRunner.advance
    # stops the clock at each switch instead, for exact spans).
    assert downs == [(0.0, 3.0), (20.0, 20.0), (20.0, 20.0)]


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


class ManualClock:
    """A real-time (not virtual) clock the test moves: the runner's real-time code paths."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


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


def test_flapping_up_phase_does_not_enable_a_proxy_another_owner_holds(
    client: ToxiproxyClient, shared_proxy: str
) -> None:
    bob = client.get_proxy(shared_proxy, owner="bob")
    flapping = bob.flapping(period=10.0)
    flapping.start(background=False)
    try:
        other_owner_takes_it_down(client, shared_proxy)
        assert flapping.sync(flapping.next_change) == 1  # down -> up
        assert not flapping.is_down
        assert not client.proxy_info(shared_proxy).enabled
    finally:
        flapping.stop()
    assert not client.proxy_info(shared_proxy).enabled
