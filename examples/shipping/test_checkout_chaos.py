"""The checkout service's httpx client, guarded by Synapse's breaker transport, under chaos."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from shipping.checkout import FLAT_RATE, Checkout

pytestmark = pytest.mark.chaos


@pytest.fixture
def checkout(rates_proxy: Any) -> Iterator[Checkout]:
    service = Checkout(rates_proxy.listen)
    try:
        yield service
    finally:
        service.close()


def test_slow_rates_trip_the_breaker_and_checkout_falls_back_at_once(
    rates_proxy: Any, checkout: Checkout, breaker_timeline: Any
) -> None:
    assert checkout.shipping_price("us") == 7.0
    rates = rates_proxy.listen  # the breaker is named after the host it guards
    with rates_proxy.latency(ms=400):
        for _ in range(3):
            assert checkout.shipping_price("us") == FLAT_RATE  # each waits for the timeout
        breaker_timeline.assert_trips_within(rates, failures=3, seconds=3)
        breaker_timeline.assert_rejects_fast(
            rates, lambda: checkout.shipping_price("us"), max_ms=100, expect=None
        )
    time.sleep(0.5)
    assert checkout.shipping_price("us") == 7.0
    breaker_timeline.assert_closes_within(rates, 2)
