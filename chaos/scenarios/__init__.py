"""Scenarios: timed fault plans, the files they are written in, and the runner that plays them.

``scenario`` (:class:`Scenario`, :class:`ScenarioStep`, loading and checking YAML/JSON files,
the built-in library in ``library/*.yaml``) and ``runner`` (:class:`ScenarioRunner`, which
applies each step's fault to its proxy or container as its time comes, on a real or virtual
clock, and :class:`ConsoleProgress`). ``synapse-chaos run`` is :mod:`chaos.runcli`.

Users import these names from :mod:`chaos` (``ConsoleProgress`` from here).
"""

from chaos.scenarios.runner import ConsoleProgress, RunnerEvent, ScenarioRunner
from chaos.scenarios.scenario import (
    Scenario,
    ScenarioStep,
    load_scenario,
    parse_scenario,
    scenario_library,
)

__all__ = [
    "ConsoleProgress",
    "RunnerEvent",
    "Scenario",
    "ScenarioRunner",
    "ScenarioStep",
    "load_scenario",
    "parse_scenario",
    "scenario_library",
]
