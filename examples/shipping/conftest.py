"""Fixtures for the shipping examples: the rates API, and a chaos proxy in front of it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from shipping.rates import RatesServer
from shipping.service import rates_breaker


@pytest.fixture
def rates() -> Iterator[RatesServer]:
    server = RatesServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def rates_proxy(chaos_proxy: Callable[..., Any], rates: RatesServer) -> Any:
    """The rates API behind a chaos proxy: the services under test call it here."""
    return chaos_proxy(rates.address, name="rates")


@pytest.fixture(autouse=True)
def closed_rates_breaker() -> None:
    """pybreaker's breaker lives in the service module: each test starts with it closed."""
    rates_breaker.close()
