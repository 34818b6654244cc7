"""Scenario data: parsing, validation with clear errors, dump/load round trips, the library."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from chaos import ScenarioError, UnknownScenario
from chaos.control.faultspec import FAULT_KINDS
from chaos.scenarios.scenario import (
    Scenario,
    ScenarioStep,
    load_scenario,
    parse_scenario,
    scenario_library,
)

LIBRARY = {
    "latency-spike",
    "brownout-ramp",
    "blackhole",
    "partition-heal",
    "flapping",
    "reset-storm",
    "slow-drain",
}
DOCS = Path(__file__).resolve().parents[2] / "docs" / "scenarios.md"


def scenario(*steps: str, head: str = "name: t\nproxies: [api, db]\n") -> str:
    return head + "steps:\n" + "".join(f"  - {s}\n" for s in steps)


def test_library_has_the_named_scenarios_each_binding_one_proxy() -> None:
    library = scenario_library()
    assert set(library) == LIBRARY
    for name, item in library.items():
        assert item.name == name
        assert item.proxies == ("service",)
        assert item.description
        assert item.duration >= 30
    assert load_scenario("partition-heal") is library["partition-heal"]
    library.clear()  # a copy: the library itself is untouched
    assert set(scenario_library()) == LIBRARY


@pytest.mark.parametrize("name", sorted(LIBRARY))
def test_library_scenarios_round_trip_through_yaml_and_json(name: str, tmp_path: Path) -> None:
    original = scenario_library()[name]
    assert parse_scenario(original.to_yaml()) == original
    assert parse_scenario(original.to_json(), format="json") == original
    saved = original.save(tmp_path / f"{name}.json")
    assert load_scenario(saved) == original
    assert load_scenario(str(original.save(tmp_path / f"{name}.yaml"))) == original


def test_a_step_per_fault_kind_parses() -> None:
    text = scenario(
        "{at: 0, proxy: api, fault: latency, ms: 100, jitter: 10, duration: 1}",
        "{at: 1, proxy: api, fault: bandwidth, rate: 50, duration: 1}",
        "{at: 2, proxy: api, fault: slow_close, ms: 500, duration: 1}",
        "{at: 3, proxy: api, fault: blackhole, stream: upstream, duration: 1}",
        "{at: 4, proxy: api, fault: reset_peer, after_ms: 10, toxicity: 0.5, duration: 1}",
        "{at: 5, proxy: api, fault: down, duration: 1}",
        "{at: 6, proxy: api, fault: partition, mode: reject, duration: 1}",
        "{at: 7, proxy: api, fault: slicer, average_size: 64, delay_us: 100, duration: 1}",
        "{at: 8, proxy: api, fault: limit_data, bytes: 1000, duration: 1}",
        "{at: 9, proxy: db, fault: flapping, period: 2, down_fraction: 0.25}",
        "{at: 11, proxy: db, fault: heal}",
    )
    parsed = parse_scenario(text)
    assert {s.fault for s in parsed.steps} == {*FAULT_KINDS, "heal"}
    assert parsed.duration == 11  # the last step's time
    assert parsed.steps[0].resolved_params == {
        "ms": 100,
        "jitter": 10,
        "stream": "both",
        "toxicity": 1.0,
    }
    assert parsed.step_end(9) == 11  # flapping ends at the heal step


def test_defaults_proxy_and_name() -> None:
    one = parse_scenario(
        "proxies: [svc]\nsteps:\n  - {at: 0, fault: down, duration: 2}\n", source="x/outage.yaml"
    )
    assert one.name == "outage"  # from the file name
    assert one.steps[0].proxy == "svc"  # the only proxy
    inferred = Scenario("s", (ScenarioStep(0, "a", "down", duration=1),))
    assert inferred.proxies == ("a",)
    assert inferred.duration == 1


def test_nested_params_mapping_is_accepted() -> None:
    parsed = parse_scenario(
        scenario("{at: 0, proxy: api, fault: latency, params: {ms: 5}, duration: 1}")
    )
    assert parsed.steps[0].params == {"ms": 5}


@pytest.mark.parametrize(
    ("steps", "extra", "words", "step", "line"),
    [
        (["{at: 0, proxy: api, fault: explode}"], "", "unknown fault 'explode'", 1, 4),
        (
            ["{at: 0, proxy: api, fault: down, duration: 1}", "{at: -1, proxy: api, fault: down}"],
            "",
            "at must be a finite number of seconds >= 0, got -1",
            2,
            5,
        ),
        (["{at: 0, proxy: cache, fault: down}"], "", "does not declare (proxies: api, db)", 1, 4),
        (["{at: 0, proxy: api, fault: latency}"], "", "latency needs 'ms'", 1, 4),
        (["{at: 0, proxy: api, fault: latency, ms: 1, colour: red}"], "", "'colour'", 1, 4),
        (["{at: 0, proxy: api, fault: down, duration: 0}"], "", "duration must be", 1, 4),
        (["{at: 0, proxy: api, fault: heal, ms: 3}"], "duration: 5\n", "takes no param", 1, 4),
        (["{at: 1, proxy: api, fault: down}"], "", "would end as soon as it starts", 1, 4),
        (["{proxy: api, fault: down}"], "", "step needs 'at'", 1, 4),
        (["{at: 0, fault: down}"], "", "step needs 'proxy'", 1, 4),
        (["just text"], "", "a step is a mapping", 1, 4),
    ],
)
def test_invalid_steps_name_the_step_and_line(
    steps: list[str], extra: str, words: str, step: int, line: int
) -> None:
    text = scenario(*steps, head="name: t\nproxies: [api, db]\n" + extra)
    if extra:  # the extra key moved the steps down
        line += extra.count("\n")
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, source="bad.yaml")
    assert words in str(info.value)
    assert info.value.step == step
    assert info.value.line == line
    assert str(info.value).startswith(f"bad.yaml:{line}, step {step}: ")


@pytest.mark.parametrize(
    ("first", "second", "conflict"),
    [
        ("latency, ms: 10", "latency, ms: 20", "a latency toxic downstream"),
        ("latency, ms: 10, stream: upstream", "latency, ms: 20, stream: downstream", None),
        ("down", "flapping, period: 1", "the proxy's enabled state"),
        ("down", "partition, mode: reject", "enabled state"),
        ("partition", "blackhole, stream: upstream", "a timeout toxic upstream"),
        ("blackhole, stream: upstream", "blackhole, stream: downstream", None),
        ("latency, ms: 10", "down", None),
        ("bandwidth, rate: 10", "slow_close, ms: 10", None),
    ],
)
def test_overlapping_faults_conflict_only_on_the_same_toxic_or_state(
    first: str, second: str, conflict: str | None
) -> None:
    text = scenario(
        f"{{at: 0, proxy: api, fault: {first}, duration: 10}}",
        f"{{at: 5, proxy: api, fault: {second}, duration: 10}}",
        f"{{at: 5, proxy: db, fault: {second}, duration: 10}}",  # another proxy: never a conflict
    )
    if conflict is None:
        assert parse_scenario(text).duration == 15
        return
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text)
    message = str(info.value)
    assert conflict in message
    assert "overlaps step 1" in message
    assert info.value.step == 2
    assert "step 1's duration of 10 s runs until 10 s; shorten it to at most 5 s" in message


def test_no_conflict_when_the_first_fault_ended_or_was_healed() -> None:
    back_to_back = scenario(
        "{at: 0, proxy: api, fault: latency, ms: 1, duration: 5}",
        "{at: 5, proxy: api, fault: latency, ms: 2, duration: 5}",
    )
    assert parse_scenario(back_to_back).duration == 10
    healed = scenario(
        "{at: 0, proxy: api, fault: down}",
        "{at: 4, proxy: api, fault: heal}",
        "{at: 4, proxy: api, fault: down, duration: 1}",
    )
    parsed = parse_scenario(healed)
    assert parsed.step_end(0) == 4
    assert parsed.duration == 5


def test_scenario_level_errors() -> None:
    with pytest.raises(ScenarioError, match="ends before the steps do"):
        parse_scenario(
            scenario("{at: 0, proxy: api, fault: down, duration: 9}", head="name: t\nduration: 5\n")
        )
    with pytest.raises(ScenarioError, match="unknown key 'stepz'"):
        parse_scenario("name: t\nstepz: []\n")
    with pytest.raises(ScenarioError, match="steps must be a non-empty list"):
        parse_scenario("name: t\nsteps: []\n")
    with pytest.raises(ScenarioError, match="a scenario is a mapping"):
        parse_scenario("- 1\n- 2\n")
    with pytest.raises(ScenarioError, match="listed twice"):
        Scenario("t", (ScenarioStep(0, "a", "down", duration=1),), proxies=("a", "a"))
    with pytest.raises(ScenarioError, match="needs at least one step"):
        Scenario("t", ())


def test_unknown_names_and_missing_files() -> None:
    with pytest.raises(UnknownScenario) as info:
        load_scenario("partition-hea1")
    assert "library: blackhole, brownout-ramp" in str(info.value)
    with pytest.raises(UnknownScenario, match="no such file"):
        load_scenario("missing/partition.yaml")


def test_json_dump_is_the_documented_file_form() -> None:
    item = Scenario(
        "x",
        (ScenarioStep(0.5, "api", "latency", {"ms": 100}, duration=2),),
        description="d",
    )
    assert json.loads(item.to_json()) == {
        "name": "x",
        "description": "d",
        "proxies": ["api"],
        "duration": 2.5,
        "steps": [{"at": 0.5, "proxy": "api", "fault": "latency", "ms": 100, "duration": 2}],
    }


def test_every_yaml_example_in_the_docs_is_valid() -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", DOCS.read_text(encoding="utf-8"), re.S)
    assert len(blocks) >= 2
    for block in blocks:
        parse_scenario(block, source="docs/scenarios.md")


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
