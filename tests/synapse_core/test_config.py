"""CircuitBreakerConfig: defaults, validation at construction, durations."""

from __future__ import annotations

from datetime import timedelta

import pytest

from synapse_core import CircuitBreaker, CircuitBreakerConfig


def test_defaults_are_the_original_designs() -> None:
    config = CircuitBreakerConfig()
    assert (
        config.failure_threshold,
        config.minimum_requests,
        config.failure_window,
        config.recovery_timeout,
        config.half_open_max_calls,
        config.success_threshold,
    ) == (3, 2, 30.0, 10.0, 2, 0.7)
    assert config.failure_rate_threshold is None
    assert config.slow_call_duration is None
    assert config.max_half_open_wait is None
    assert config.open_backoff_multiplier == 1.0
    assert config.half_open_success_target == 2  # ceil(0.7 * 2)


@pytest.mark.parametrize(
    ("field", "value", "allowed"),
    [
        ("failure_threshold", 0, ">= 1"),
        ("minimum_requests", 0, ">= 1"),
        ("failure_window", 0, "> 0"),
        ("failure_window", -1.5, "> 0"),
        ("recovery_timeout", 0, "> 0"),
        ("half_open_max_calls", 0, ">= 1"),
        ("success_threshold", 0, "0 < value <= 1"),
        ("success_threshold", 1.01, "0 < value <= 1"),
        ("failure_rate_threshold", 0.0, "0 < value <= 1"),
        ("failure_rate_threshold", 1.5, "0 < value <= 1"),
        ("max_half_open_wait", 0, "> 0"),
        ("open_backoff_multiplier", 0.5, ">= 1"),
        ("max_recovery_timeout", 1.0, ">= recovery_timeout"),
    ],
)
def test_out_of_range_values_name_the_field_and_range(
    field: str, value: object, allowed: str
) -> None:
    with pytest.raises(ValueError, match=field) as info:
        CircuitBreakerConfig(**{field: value})  # type: ignore[arg-type]
    assert allowed in str(info.value)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("failure_threshold", 2.5),
        ("failure_threshold", "3"),
        ("failure_threshold", True),
        ("minimum_requests", None),
        ("half_open_max_calls", 1.0),
        ("failure_window", "30"),
        ("recovery_timeout", None),
        ("success_threshold", "0.7"),
        ("open_backoff_multiplier", None),
    ],
)
def test_wrong_types_raise_type_error_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(TypeError, match=field):
        CircuitBreakerConfig(**{field: value})  # type: ignore[arg-type]


def test_nan_is_rejected() -> None:
    with pytest.raises(ValueError, match="success_threshold"):
        CircuitBreakerConfig(success_threshold=float("nan"))


def test_slow_call_settings_come_in_pairs() -> None:
    with pytest.raises(ValueError, match="slow_call_duration and slow_call_rate_threshold"):
        CircuitBreakerConfig(slow_call_duration=1.0)
    with pytest.raises(ValueError, match="slow_call_duration and slow_call_rate_threshold"):
        CircuitBreakerConfig(slow_call_rate_threshold=0.5)
    with pytest.raises(ValueError, match="slow_call_duration"):
        CircuitBreakerConfig(slow_call_duration=-1, slow_call_rate_threshold=0.5)


def test_timedelta_durations_become_seconds() -> None:
    config = CircuitBreakerConfig(
        failure_window=timedelta(minutes=1),
        recovery_timeout=timedelta(milliseconds=1500),
        max_half_open_wait=timedelta(seconds=5),
    )
    assert config.failure_window == 60.0
    assert config.recovery_timeout == 1.5
    assert config.max_half_open_wait == 5.0


def test_exception_matchers_are_validated() -> None:
    with pytest.raises(TypeError, match="failure_exceptions"):
        CircuitBreakerConfig(failure_exceptions=(int,))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="ignore_exceptions"):
        CircuitBreakerConfig(ignore_exceptions=("ValueError",))  # type: ignore[arg-type]
    config = CircuitBreakerConfig(failure_exceptions=OSError)  # type: ignore[arg-type]
    assert config.failure_exceptions == (OSError,)
    with pytest.raises(TypeError, match="is_failure_result"):
        CircuitBreakerConfig(is_failure_result=3)  # type: ignore[arg-type]


def test_config_is_frozen_and_replace_validates() -> None:
    config = CircuitBreakerConfig()
    with pytest.raises(AttributeError):
        config.failure_threshold = 5  # type: ignore[misc]
    assert config.replace(failure_threshold=5).failure_threshold == 5
    with pytest.raises(ValueError, match="failure_threshold"):
        config.replace(failure_threshold=0)
    with pytest.raises(TypeError, match="unknown"):
        config.replace(nope=1)


@pytest.mark.parametrize(
    ("threshold", "calls", "target"),
    [(0.7, 2, 2), (0.5, 2, 1), (0.7, 10, 7), (1.0, 3, 3), (0.01, 3, 1), (0.34, 3, 2)],
)
def test_half_open_success_target_is_ceil_without_float_noise(
    threshold: float, calls: int, target: int
) -> None:
    config = CircuitBreakerConfig(success_threshold=threshold, half_open_max_calls=calls)
    assert config.half_open_success_target == target


def test_backoff_grows_and_is_capped() -> None:
    config = CircuitBreakerConfig(
        recovery_timeout=2, open_backoff_multiplier=3, max_recovery_timeout=30
    )
    assert [config.open_duration(k) for k in range(5)] == [2, 6, 18, 30, 30]
    assert config.open_duration(10_000) == 30
    uncapped = CircuitBreakerConfig(recovery_timeout=2, open_backoff_multiplier=2)
    assert uncapped.open_duration(5000) == float("inf")


def test_breaker_rejects_bad_arguments() -> None:
    with pytest.raises(TypeError, match="clock"):
        CircuitBreaker("x", clock=42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="CircuitBreakerConfig"):
        CircuitBreaker("x", {"failure_threshold": 3})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="name"):
        CircuitBreaker("")
