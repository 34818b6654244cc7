"""Circuit breaker configuration, validated where it is built."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from fractions import Fraction
from typing import Any, TypeAlias

from synapse_core.clock import to_seconds

ExceptionMatcher: TypeAlias = type[BaseException] | Callable[[BaseException], bool]
"""An exception class (matched with ``isinstance``) or a predicate on the exception."""

_DURATIONS = ("failure_window", "recovery_timeout")
_OPTIONAL_DURATIONS = ("slow_call_duration", "max_half_open_wait", "max_recovery_timeout")


@dataclass(frozen=True, slots=True)
class CircuitBreakerConfig:
    """How a breaker decides to trip and to recover. Immutable; validated on construction.

    Durations are seconds (``float``) or ``datetime.timedelta``; they are stored as float seconds.
    A bad value raises ``ValueError`` (or ``TypeError`` for a wrong type) naming the field and
    its allowed range.

    Tripping (closed -> open) happens as soon as, inside the sliding ``failure_window``, at
    least ``minimum_requests`` outcomes were recorded and any of these holds:

    * failures >= ``failure_threshold``;
    * ``failure_rate_threshold`` is set and failures / outcomes >= it;
    * ``slow_call_rate_threshold`` is set and slow calls / outcomes >= it, where a call is slow
      when it took at least ``slow_call_duration``.

    The rule is judged whenever the window changes (after every outcome, successes included,
    and as outcomes age out of it); rates compare exactly against the decimal written
    (7 failures in 25 meet 0.28).

    Recovery: at or after ``recovery_timeout`` the next call is admitted as the first of
    ``half_open_max_calls`` probes. The breaker closes once
    ``ceil(success_threshold * half_open_max_calls)`` probes succeeded and re-opens as soon as
    that can no longer happen. Each consecutive re-open multiplies the open time by
    ``open_backoff_multiplier``, up to ``max_recovery_timeout``. A half-open episode that lasts
    ``max_half_open_wait`` without reaching a verdict (probes that never report back) re-opens,
    dated at that deadline, at the next call.

    Classification: an exception matching ``ignore_exceptions`` counts as neither success nor
    failure (it frees its probe slot and leaves the window untouched). Otherwise an exception
    matching ``failure_exceptions`` is a failure (``TimeoutError`` is recorded as a timeout), and
    any other ``Exception`` counts as a success: the dependency answered, the caller's input was
    bad. A ``BaseException`` that is not an ``Exception`` (cancellation, ``KeyboardInterrupt``,
    ``SystemExit``...) counts as neither unless its class is listed in one of the two tuples
    (predicates are only asked about ``Exception``s).
    ``is_failure_result`` marks returned values as failures (e.g. HTTP 503 responses). A
    predicate (exception matcher or ``is_failure_result``) that raises is logged on the
    ``synapse_core.breaker`` logger and counts as "no match"; the caller's call is unaffected.
    """

    failure_threshold: int = 3
    minimum_requests: int = 2
    failure_window: float = 30.0
    recovery_timeout: float = 10.0
    half_open_max_calls: int = 2
    success_threshold: float = 0.7
    failure_rate_threshold: float | None = None
    slow_call_duration: float | None = None
    slow_call_rate_threshold: float | None = None
    failure_exceptions: tuple[ExceptionMatcher, ...] = (Exception,)
    ignore_exceptions: tuple[ExceptionMatcher, ...] = ()
    is_failure_result: Callable[[Any], bool] | None = None
    max_half_open_wait: float | None = None
    open_backoff_multiplier: float = 1.0
    max_recovery_timeout: float | None = None
    half_open_success_target: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in _DURATIONS:
            _set(self, name, to_seconds(getattr(self, name), name))
        for name in _OPTIONAL_DURATIONS:
            value = getattr(self, name)
            if value is not None:
                _set(self, name, to_seconds(value, name))
        for name in ("failure_threshold", "minimum_requests", "half_open_max_calls"):
            _check_int(name, getattr(self, name))
        for name in ("success_threshold", "failure_rate_threshold", "slow_call_rate_threshold"):
            value = getattr(self, name)
            if value is not None:
                _set(self, name, _check_number(name, value))
        _set(
            self,
            "open_backoff_multiplier",
            _check_number("open_backoff_multiplier", self.open_backoff_multiplier),
        )
        self._check_ranges()
        _set(self, "failure_exceptions", _matchers("failure_exceptions", self.failure_exceptions))
        _set(self, "ignore_exceptions", _matchers("ignore_exceptions", self.ignore_exceptions))
        if self.is_failure_result is not None and not callable(self.is_failure_result):
            raise TypeError("is_failure_result must be a callable taking the call's return value")
        # Exact: 0.7 * 10 is 7.000000000000001 in floats, which would round up to 8.
        target = math.ceil(exact_fraction(self.success_threshold) * self.half_open_max_calls)
        _set(self, "half_open_success_target", max(1, target))

    def _check_ranges(self) -> None:
        _require(self.failure_threshold >= 1, "failure_threshold", ">= 1", self.failure_threshold)
        _require(self.minimum_requests >= 1, "minimum_requests", ">= 1", self.minimum_requests)
        _require(self.failure_window > 0, "failure_window", "> 0 seconds", self.failure_window)
        _require(
            self.recovery_timeout > 0, "recovery_timeout", "> 0 seconds", self.recovery_timeout
        )
        _require(
            self.half_open_max_calls >= 1, "half_open_max_calls", ">= 1", self.half_open_max_calls
        )
        _require(
            0 < self.success_threshold <= 1,
            "success_threshold",
            "0 < value <= 1",
            self.success_threshold,
        )
        if self.failure_rate_threshold is not None:
            _require(
                0 < self.failure_rate_threshold <= 1,
                "failure_rate_threshold",
                "0 < value <= 1 (or None to disable)",
                self.failure_rate_threshold,
            )
        if self.slow_call_duration is not None:
            _require(
                self.slow_call_duration > 0,
                "slow_call_duration",
                "> 0 seconds (or None to disable)",
                self.slow_call_duration,
            )
        if self.slow_call_rate_threshold is not None:
            _require(
                0 < self.slow_call_rate_threshold <= 1,
                "slow_call_rate_threshold",
                "0 < value <= 1 (or None to disable)",
                self.slow_call_rate_threshold,
            )
        if (self.slow_call_rate_threshold is None) != (self.slow_call_duration is None):
            raise ValueError(
                "slow_call_duration and slow_call_rate_threshold work together: "
                "set both to enable slow-call tripping, or neither"
            )
        if self.max_half_open_wait is not None:
            _require(
                self.max_half_open_wait > 0,
                "max_half_open_wait",
                "> 0 seconds (or None to disable)",
                self.max_half_open_wait,
            )
        _require(
            self.open_backoff_multiplier >= 1,
            "open_backoff_multiplier",
            ">= 1",
            self.open_backoff_multiplier,
        )
        if self.max_recovery_timeout is not None:
            _require(
                self.max_recovery_timeout >= self.recovery_timeout,
                "max_recovery_timeout",
                f">= recovery_timeout ({self.recovery_timeout}) (or None for no cap)",
                self.max_recovery_timeout,
            )

    def open_duration(self, consecutive_opens: int) -> float:
        """Seconds the breaker stays open on its *consecutive_opens*-th open in a row (0-based)."""
        if self.open_backoff_multiplier == 1.0 or consecutive_opens <= 0:
            return self.recovery_timeout
        cap = self.max_recovery_timeout if self.max_recovery_timeout is not None else math.inf
        # Exponent growth stops mattering once past the cap; avoid float overflow.
        exponent = min(consecutive_opens, 1024)
        try:
            grown = self.recovery_timeout * self.open_backoff_multiplier**exponent
        except OverflowError:
            grown = math.inf
        return min(grown, cap)

    def replace(self, **changes: Any) -> CircuitBreakerConfig:
        """Return a copy with *changes* applied (validated like a new config)."""
        current = {f.name: getattr(self, f.name) for f in fields(self) if f.init}
        unknown = set(changes) - set(current)
        if unknown:
            raise TypeError(f"unknown CircuitBreakerConfig field(s): {', '.join(sorted(unknown))}")
        current.update(changes)
        return CircuitBreakerConfig(**current)


def exact_fraction(value: float) -> Fraction:
    """The decimal a float threshold was written as, as an exact fraction (0.28 -> 7/25).

    ``Fraction(0.28)`` would be the binary float's value, a hair above 28/100; the shortest
    decimal that round-trips (``repr``) is what the user typed.
    """
    return Fraction(repr(float(value)))


def _set(config: CircuitBreakerConfig, name: str, value: object) -> None:
    object.__setattr__(config, name, value)


def _require(ok: bool, name: str, allowed: str, value: object) -> None:
    if not ok:
        raise ValueError(f"{name} must be {allowed}, got {value!r}")


def _check_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")


def _check_number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    if value != value:
        raise ValueError(f"{name} must be a number, got NaN")
    return float(value)


def _matchers(name: str, value: object) -> tuple[ExceptionMatcher, ...]:
    items: tuple[object, ...]
    if isinstance(value, type) or callable(value):
        items = (value,)
    elif isinstance(value, list | tuple | set | frozenset):
        items = tuple(value)
    else:
        raise TypeError(
            f"{name} must be an exception class, a predicate, or a tuple of them, got {value!r}"
        )
    for item in items:
        if isinstance(item, type):
            if not issubclass(item, BaseException):
                raise TypeError(f"{name} entries must be exception classes, got {item.__name__}")
        elif not callable(item):
            raise TypeError(
                f"{name} entries must be exception classes or predicates "
                f"(callable taking the exception), got {item!r}"
            )
    return items  # type: ignore[return-value]
