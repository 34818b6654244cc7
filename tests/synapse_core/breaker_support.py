"""Helpers shared by the breaker tests."""

from __future__ import annotations

import pytest

from synapse_core import CircuitBreaker


class Boom(ConnectionError):
    """The failure the guarded functions raise."""


def fail() -> None:
    raise Boom("dependency down")


def ok() -> str:
    return "ok"


def fail_times(breaker: CircuitBreaker, n: int) -> None:
    for _ in range(n):
        with pytest.raises(Boom):
            breaker.call(fail)
