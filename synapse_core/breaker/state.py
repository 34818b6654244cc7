"""Circuit states and call outcomes."""

from __future__ import annotations

from enum import StrEnum


class CircuitState(StrEnum):
    """The three states of a circuit breaker; values are the lower-case names."""

    CLOSED = "closed"
    """Calls flow; outcomes are recorded in the sliding window."""
    OPEN = "open"
    """Calls are rejected at once with ``CircuitOpenError`` until the recovery timeout passes."""
    HALF_OPEN = "half_open"
    """A bounded number of probe calls test whether the dependency recovered."""


class RequestOutcome(StrEnum):
    """How a guarded call ended. Timeouts count as failures and are also counted on their own."""

    SUCCESS = "success"
    FAILURE = "failure"
    TIMEOUT = "timeout"
