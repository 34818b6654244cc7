"""Hypothesis strategies and the stateful chaos machine, including shrinking a planted bug."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings

from pytest_synapse.strategies import FaultStep, breaker_configs, fault_schedules
from synapse_core import CircuitBreakerConfig


@given(breaker_configs())
@settings(max_examples=50, deadline=None)
def test_breaker_configs_are_valid(config: CircuitBreakerConfig) -> None:
    assert isinstance(config, CircuitBreakerConfig)
    assert config.half_open_success_target <= config.half_open_max_calls


@given(breaker_configs(failure_threshold=5, recovery_timeout=2.0))
@settings(max_examples=10, deadline=None)
def test_breaker_configs_pin_fields(config: CircuitBreakerConfig) -> None:
    assert (config.failure_threshold, config.recovery_timeout) == (5, 2.0)


def test_breaker_configs_reject_unknown_fields() -> None:
    with pytest.raises(TypeError, match="unknown CircuitBreakerConfig field 'nope'"):
        breaker_configs(nope=1)


@given(fault_schedules(proxies=["db", "cache"], horizon=30.0))
@settings(max_examples=100, deadline=None)
def test_fault_schedules_are_ordered_paired_and_non_overlapping(steps: list[FaultStep]) -> None:
    assert steps == sorted(steps)
    open_faults: dict[str, FaultStep] = {}
    for step in steps:
        assert 0 <= step.at <= 30.0
        if step.action == "inject":
            assert step.proxy not in open_faults, "two faults at once on one proxy"
            open_faults[step.proxy] = step
        else:
            injected = open_faults.pop(step.proxy)
            assert injected.fault == step.fault
            assert injected.at <= step.at
    assert not open_faults, "every fault is healed"


MACHINES = """
from synapse_core import CircuitBreaker, CircuitBreakerConfig, CircuitOpenError
from pytest_synapse.strategies import BreakerChaosMachine
from hypothesis import settings

class GoodService(BreakerChaosMachine):
    def build(self, dependency, clock):
        breaker = CircuitBreaker("dep", CircuitBreakerConfig(), clock=clock)
        return lambda: breaker.call(dependency)

class FallbackBug(BreakerChaosMachine):
    # The bug: when the breaker rejects, it "falls back" to calling the dependency anyway.
    def build(self, dependency, clock):
        breaker = CircuitBreaker("dep", CircuitBreakerConfig(), clock=clock)
        def request():
            try:
                return breaker.call(dependency)
            except CircuitOpenError:
                return dependency()
        return request

GoodService.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
FallbackBug.TestCase.settings = settings(max_examples=200, stateful_step_count=30, deadline=None)
TestGood = GoodService.TestCase
TestBuggy = FallbackBug.TestCase
"""


def test_machine_passes_a_correct_service_and_shrinks_a_planted_bug(
    synapse_pytester: pytest.Pytester,
) -> None:
    synapse_pytester.makepyfile(test_machines=MACHINES)
    result = synapse_pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    out = result.stdout.str()
    assert "a call reached the dependency while breaker 'dep' was open" in out
    # The minimal schedule, printed as code: one fault, enough calls to trip, one more call.
    # pytest prints the report again, untruncated, in the short summary when it runs on CI
    # (the CI environment variable), so read only the first listing of the schedule.
    lines = [m[1] for m in re.finditer(r"^E?\s*(state\.\w+\(.*\))\s*$", out, re.MULTILINE)]
    lines = lines[: lines.index("state.teardown()") + 1] if "state.teardown()" in lines else lines
    assert lines == [
        "state.inject(fault='blackhole')",
        "state.call()",
        "state.call()",
        "state.call()",
        "state.call()",
        "state.teardown()",
    ], out
