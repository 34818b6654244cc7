"""Strategy arguments checked when the strategy is made, and machines whose build() is wrong."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_synapse.strategies import FaultStep, breaker_configs, fault_schedules
from synapse_core import CircuitBreakerConfig

# -- fault_schedules -------------------------------------------------------------------------------


@given(fault_schedules(horizon=0.05, max_faults=3))
@settings(max_examples=30, deadline=None)
def test_a_horizon_under_a_tenth_of_a_second_draws_schedules(steps: list[FaultStep]) -> None:
    assert all(0 <= step.at <= 0.05 for step in steps)
    injects = [s for s in steps if s.action == "inject"]
    assert len(injects) <= 1  # one proxy, one start time: faults cannot overlap


def test_a_small_horizon_does_draw_a_fault() -> None:
    seen: list[list[FaultStep]] = []

    @given(fault_schedules(horizon=0.05, max_faults=1))
    @settings(max_examples=30, deadline=None)
    def collect(steps: list[FaultStep]) -> None:
        seen.append(steps)

    collect()
    assert any(steps for steps in seen)


def test_no_faults_is_refused_when_the_strategy_is_made() -> None:
    with pytest.raises(ValueError, match=r"non-empty .*the faults are: latency, blackhole"):
        fault_schedules(faults=[])


def test_unknown_faults_are_refused_naming_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown fault\(s\) 'bogus'; the faults are: .*down"):
        fault_schedules(faults=["down", "bogus"])
    with pytest.raises(ValueError, match="fault names"):
        fault_schedules(faults="down")  # a string is not a sequence of names here


def test_real_proxy_fault_kinds_are_accepted() -> None:
    fault_schedules(faults=["bandwidth", "partition", "down"])


@pytest.mark.parametrize("horizon", [0, -1.0, float("nan"), float("inf")])
def test_bad_horizons_are_refused_when_the_strategy_is_made(horizon: float) -> None:
    with pytest.raises(ValueError, match="horizon"):
        fault_schedules(horizon=horizon)


def test_negative_max_faults_is_refused() -> None:
    with pytest.raises(ValueError, match="max_faults"):
        fault_schedules(max_faults=-1)


# -- breaker_configs -------------------------------------------------------------------------------


@given(breaker_configs(max_recovery_timeout=5.0))
@settings(max_examples=60, deadline=None)
def test_recovery_timeout_is_drawn_within_a_pinned_cap(config: CircuitBreakerConfig) -> None:
    assert config.max_recovery_timeout == 5.0
    assert config.recovery_timeout <= 5.0


@given(breaker_configs(max_recovery_timeout=0.2))
@settings(max_examples=10, deadline=None)
def test_a_cap_below_every_listed_timeout_still_draws(config: CircuitBreakerConfig) -> None:
    assert config.recovery_timeout <= config.max_recovery_timeout == 0.2  # type: ignore[operator]


@given(breaker_configs(slow_call_duration=1.0))
@settings(max_examples=20, deadline=None)
def test_pinning_slow_call_duration_draws_its_rate(config: CircuitBreakerConfig) -> None:
    assert config.slow_call_duration == 1.0
    assert config.slow_call_rate_threshold is not None


@given(breaker_configs(slow_call_rate_threshold=0.5))
@settings(max_examples=20, deadline=None)
def test_pinning_slow_call_rate_draws_its_duration(config: CircuitBreakerConfig) -> None:
    assert config.slow_call_rate_threshold == 0.5
    assert config.slow_call_duration is not None


@given(
    breaker_configs(
        failure_threshold=st.integers(2, 3),
        max_recovery_timeout=st.sampled_from([0.2, 1.0]),
        slow_call_duration=st.none() | st.just(2.0),
    )
)
@settings(max_examples=40, deadline=None)
def test_a_field_pinned_to_a_strategy_is_drawn_from_it(config: CircuitBreakerConfig) -> None:
    """Regression: the strategy itself was passed to CircuitBreakerConfig as the value."""
    assert config.failure_threshold in (2, 3)
    assert config.max_recovery_timeout in (0.2, 1.0)
    assert config.recovery_timeout <= config.max_recovery_timeout
    assert (config.slow_call_rate_threshold is None) == (config.slow_call_duration is None)


def test_computed_fields_cannot_be_pinned() -> None:
    with pytest.raises(TypeError, match="'half_open_success_target' is computed"):
        breaker_configs(half_open_success_target=2)


def test_a_non_positive_cap_is_refused_when_the_strategy_is_made() -> None:
    with pytest.raises(ValueError, match="max_recovery_timeout must be > 0"):
        breaker_configs(max_recovery_timeout=0)


# -- BreakerChaosMachine.build() mistakes ----------------------------------------------------------

MACHINES = """
from synapse_core import CircuitBreaker
from pytest_synapse.strategies import BreakerChaosMachine
from hypothesis import settings

class NoReturn(BreakerChaosMachine):
    def build(self, dependency, clock):
        breaker = CircuitBreaker("dep", clock=clock)
        def request():
            return breaker.call(dependency)
        # forgot: return request

class NotCallable(BreakerChaosMachine):
    def build(self, dependency, clock):
        CircuitBreaker("dep", clock=clock)
        return 42

class NeedsAnArgument(BreakerChaosMachine):
    def build(self, dependency, clock):
        breaker = CircuitBreaker("dep", clock=clock)
        return lambda payload: breaker.call(dependency)

class AsyncRequest(BreakerChaosMachine):
    def build(self, dependency, clock):
        breaker = CircuitBreaker("dep", clock=clock)
        async def request():
            return breaker.call(dependency)
        return request

class ReturnsAwaitable(BreakerChaosMachine):
    def build(self, dependency, clock):
        breaker = CircuitBreaker("dep", clock=clock)
        async def request():
            return breaker.call(dependency)
        return lambda: request()

class Good(BreakerChaosMachine):
    def build(self, dependency, clock):
        breaker = CircuitBreaker("dep", clock=clock)
        return lambda: breaker.call(dependency)

quick = settings(max_examples=5, stateful_step_count=5, deadline=None)
for machine in (NoReturn, NotCallable, NeedsAnArgument, AsyncRequest, ReturnsAwaitable, Good):
    machine.TestCase.settings = quick
    globals()["Test" + machine.__name__] = machine.TestCase
"""


def test_a_build_that_cannot_make_requests_fails_the_test_instead_of_passing(
    synapse_pytester: pytest.Pytester,
) -> None:
    synapse_pytester.makepyfile(test_machines=MACHINES)
    result = synapse_pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=5)
    out = result.stdout.str()
    assert "NoReturn.build() must return the zero-argument callable" in out
    assert "(missing `return request`?)" in out
    assert "NotCallable.build() must return the zero-argument callable" in out
    assert "got int 42" in out
    assert "NeedsAnArgument.build() must return a callable taking no arguments" in out
    assert "AsyncRequest.build() returned the coroutine function" in out
    assert "from ReturnsAwaitable.build() returned an awaitable (coroutine)" in out
    assert "RuntimeWarning" not in out
