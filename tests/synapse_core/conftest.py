"""Shared fixtures for the breaker tests: everything runs on a virtual clock."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from synapse_core import CircuitBreaker, CircuitBreakerConfig, VirtualClock


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(1000.0)


@pytest.fixture
def make_breaker(clock: VirtualClock) -> Callable[..., CircuitBreaker]:
    def make(name: str = "dep", **fields: object) -> CircuitBreaker:
        return CircuitBreaker(name, CircuitBreakerConfig(**fields), clock=clock)  # type: ignore[arg-type]

    return make
