"""Fixtures for the health endpoint tests: a manager on a virtual clock, served for real."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from health_support import Breakers

from synapse_core import CircuitBreakerManager, VirtualClock
from synapse_core.health import HealthServer, serve_health


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(100.0)


@pytest.fixture
def manager(clock: VirtualClock) -> CircuitBreakerManager:
    return CircuitBreakerManager(clock=clock)


@pytest.fixture
def breakers(manager: CircuitBreakerManager, clock: VirtualClock) -> Breakers:
    return Breakers(manager, clock)


@pytest.fixture
def serve(manager: CircuitBreakerManager) -> Iterator[Callable[..., HealthServer]]:
    """``serve(**options) -> HealthServer`` over the test's manager; closed at teardown."""
    servers: list[HealthServer] = []

    def start(**options: object) -> HealthServer:
        server = serve_health(manager, **options)  # type: ignore[arg-type]
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()
