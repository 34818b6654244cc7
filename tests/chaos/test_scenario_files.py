"""Scenario files as text: YAML and JSON syntax errors with their line, duplicate keys, nesting
and number sizes the loader refuses, and numbers YAML 1.1 reads as text."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from chaos import ChaosError, ScenarioError, ScenarioFileError, load_scenario, parse_scenario


def test_yaml_syntax_error_gives_file_line_and_expectation(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: t\nsteps:\n  - {at: 0, proxy: api, fault: down\n  - {at: 1}\n")
    with pytest.raises(ScenarioFileError) as info:
        load_scenario(path)
    message = str(info.value)
    assert message.startswith(f"{path}:4: invalid YAML: ")
    assert re.search(r"expected ',' or '}'", message), message


def test_json_syntax_error_gives_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{\n  "name": "t",\n  "steps": [\n    {"at": 0,}\n  ]\n}\n')
    with pytest.raises(ScenarioFileError) as info:
        load_scenario(str(path))
    assert str(info.value).startswith(f"{path}:4: invalid JSON: ")


JSON_BAD_STEP = """{
  "name": "bad",
  "proxies": ["svc"],
  "steps": [
    {"at": 0, "fault": "latency", "ms": 10, "duration": 5},

    {
      "at": 1,
      "fault": "latency", "colour": "red"
    }
  ]
}
"""


JSON_OVERLAP = """{"name": "overlap", "proxies": ["svc"], "steps": [
  {"at": 0, "fault": "down", "duration": 5},
  {"at": 2, "fault": "partition", "mode": "reject"}
]}
"""


@pytest.mark.parametrize(
    ("text", "where", "words"),
    [
        (JSON_BAD_STEP, ":7, step 2: ", "latency has no parameter 'colour'"),
        (JSON_OVERLAP, ":3, step 2: ", "overlaps step 1"),
        (
            '{"proxies": ["a"], "steps": [{"at": 0, "fault": "down"},\n\n'
            ' {"at": -1, "fault": "down"}]}',
            ":3, step 2: ",
            "at must be a finite number of seconds >= 0",
        ),
    ],
)
def test_json_scenario_errors_name_the_line_of_the_step(
    tmp_path: Path, text: str, where: str, words: str
) -> None:
    path = tmp_path / "scenario.json"
    path.write_text(text)
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    assert str(caught.value).startswith(f"{path}{where}")
    assert words in str(caught.value)
    assert caught.value.line == int(where.split(",")[0][1:])


def test_json_and_yaml_errors_have_one_format(tmp_path: Path) -> None:
    yaml_path = tmp_path / "scenario.yaml"
    yaml_path.write_text(
        "name: bad\nproxies: [svc]\nsteps:\n  - {at: 0, fault: latency, ms: 10, duration: 5}\n"
        "\n  - {at: 1,\n     fault: latency, colour: red}\n"
    )
    json_path = tmp_path / "scenario.json"
    json_path.write_text(JSON_BAD_STEP)
    messages = []
    for path in (yaml_path, json_path):
        with pytest.raises(ChaosError) as caught:
            load_scenario(path)
        messages.append(str(caught.value).replace(str(path), "FILE"))
    assert messages[0] == messages[1].replace("FILE:7", "FILE:6")


def test_json_syntax_errors_name_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"name": "x",\n "steps": [\n  {"at": 0, "fault": "down" "duration": 1}]}\n')
    with pytest.raises(ChaosError) as caught:
        load_scenario(path)
    assert str(caught.value) == f"{path}:3: invalid JSON: Expecting ',' delimiter (column 29)"


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_numbers_too_long_to_read_are_a_file_error(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"huge{suffix}"
    digits = "9" * 5000
    if suffix == ".json":
        path.write_text(f'{{"steps": [{{"at": {digits}, "fault": "down"}}]}}')
    else:
        path.write_text(f"steps:\n  - {{at: {digits}, fault: down}}\n")
    with pytest.raises(ChaosError, match="no scenario value needs a number that long"):
        load_scenario(path)


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
