"""Scenario steps on containers: validated when loaded, played on one timeline with proxies."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from docker_helpers import echo_command, probe

from chaos import ScenarioBindingError, ScenarioError, ScenarioRunner, parse_scenario
from chaos.docker import Container

MIXED = """
name: mixed
proxies: [api]
containers: [db, cache]
steps:
  - {at: 0, proxy: api, fault: latency, ms: 100, duration: 1}
  - {at: 0.2, container: db, fault: pause, duration: 0.6}
  - {at: 1.0, container: db, fault: partition, from: [cache], duration: 0.6}
  - {at: 1.2, container: cache, fault: kill}
  - {at: 1.8, container: cache, fault: heal}
"""


def test_container_steps_load_and_round_trip() -> None:
    scenario = parse_scenario(MIXED)
    assert scenario.proxies == ("api",)
    assert scenario.containers == ("db", "cache")
    assert [s.on_container for s in scenario.steps] == [False, True, True, True, True]
    assert scenario.steps[2].others == ("cache",)
    again = parse_scenario(scenario.to_yaml())
    assert again == scenario
    assert "container: db" in scenario.to_yaml().replace("{", "").replace("'", "")


@pytest.mark.parametrize(
    ("steps", "words"),
    [
        ("[{at: 0, container: db, fault: melt}]", "unknown container fault 'melt'"),
        ("[{at: 0, container: db, fault: pause, ms: 3}]", "pause takes no parameter 'ms'"),
        ("[{at: 0, container: db, fault: flaky, loss: 2}]", "loss must be a number from 0 to 1"),
        (
            "[{at: 0, container: db, fault: partition}]",
            "partition: from must be a list of container names",
        ),
        ("[{at: 0, container: db, fault: kill, signal: 'kill -9'}]", "signal must be"),
        ("[{at: 0, container: db, proxy: db, fault: pause}]", "a proxy or a container, not both"),
        (
            "[{at: 0, container: db, fault: pause, duration: 5}, "
            "{at: 1, container: db, fault: pause}]",
            "on container 'db': both set its pause state",
        ),
        (
            "[{at: 0, container: db, fault: kill, duration: 5}, "
            "{at: 1, container: db, fault: restart}]",
            "both set its running state",
        ),
    ],
)
def test_bad_container_steps_fail_when_loaded(steps: str, words: str) -> None:
    with pytest.raises(ScenarioError, match=words):
        parse_scenario(f"name: bad\nsteps: {steps}\n")


def test_undeclared_containers_and_name_clashes_are_refused() -> None:
    with pytest.raises(ScenarioError, match=r"step uses container 'other'.*add it to 'containers'"):
        parse_scenario(
            "name: x\ncontainers: [db]\n"
            "steps: [{at: 0, container: db, fault: partition, from: [other], duration: 1}]\n"
        )
    with pytest.raises(ScenarioError, match="both as a proxy and as a container"):
        parse_scenario(
            "name: x\nduration: 1\nsteps: [{at: 0, proxy: db, fault: down}, "
            "{at: 0, container: db, fault: pause}]\n"
        )
    with pytest.raises(ScenarioBindingError, match="no container given for 'db'"):
        ScenarioRunner(
            parse_scenario("name: x\nsteps: [{at: 0, container: db, fault: pause, duration: 1}]"),
            {},
        )


def test_a_scenario_mixes_proxy_toxics_and_container_faults_on_one_timeline(
    chaos_proxy: Callable[..., Any],
    chaos_scenario: Callable[..., Any],
    container: Callable[..., Container],
    images: dict[str, str],
    breaker_timeline: Any,
) -> None:
    db, cache, client = (
        container(images["base"], command=echo_command(), ports=[7000]) for _ in range(3)
    )
    api = chaos_proxy(db.address(7000), name="api")
    runner = chaos_scenario(
        parse_scenario(MIXED),
        proxies={"api": api},
        containers={
            "db": db,
            "cache": cache.sdk,  # an SDK container binds too
        },
    )
    seen: dict[str, Any] = {}

    def watch(event: Any) -> None:
        if event.action == "apply" and event.fault == "pause":
            seen["paused"] = db.status
        if event.action == "apply" and event.fault == "partition":
            seen["partitioned"] = probe(db, cache.network_address(7000), timeout=0.3)
            seen["client"] = probe(client, cache.network_address(7000), timeout=1)

    runner._on_event = watch
    started = time.monotonic()
    runner.run()
    assert time.monotonic() - started < 10
    assert seen == {"paused": "paused", "partitioned": 1, "client": 0}
    assert db.status == "running"
    assert cache.status == "running"
    spans = [(s.fault, s.proxy, s.end is not None) for s in breaker_timeline.timeline.faults]
    assert spans == [
        ("latency", "api", True),
        ("pause", db.name, True),
        ("partition", f"{db.name} | {cache.name}", True),
        ("kill", cache.name, True),
    ]
