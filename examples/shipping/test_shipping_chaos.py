"""The pybreaker-guarded shipping service under chaos, judged by Synapse's assertions."""

from __future__ import annotations

import time
from typing import Any

import pytest

from shipping.service import RatesUnavailable, ShippingQuotes, UnknownZone, rates_breaker

pytestmark = pytest.mark.chaos


def test_rates_partition_trips_rejects_fast_and_recovers(
    rates_proxy: Any, breaker_timeline: Any
) -> None:
    breaker_timeline.watch(rates_breaker)
    shipping = ShippingQuotes(rates_proxy.listen)
    assert shipping.quote("eu") == 4.5
    with rates_proxy.partition():
        for _ in range(3):
            with pytest.raises((OSError, RatesUnavailable)):
                shipping.quote("eu")
        breaker_timeline.assert_trips_within(rates_breaker, failures=3, seconds=3)
        breaker_timeline.assert_rejects_fast(
            rates_breaker, lambda: shipping.quote("eu"), max_ms=100, expect=RatesUnavailable
        )
        breaker_timeline.assert_no_calls_while_open(rates_breaker, rates_proxy)
    time.sleep(0.5)  # reset_timeout: the next call is pybreaker's trial call
    assert shipping.quote("eu") == 4.5
    breaker_timeline.assert_closes_within(rates_breaker, 2)
    assert breaker_timeline.states(rates_breaker) == ["open", "half_open", "closed"]


def test_unknown_zones_do_not_trip(rates_proxy: Any, breaker_timeline: Any) -> None:
    """Bad input is not an outage: the service's breaker excludes ``UnknownZone``."""
    breaker_timeline.watch(rates_breaker)
    shipping = ShippingQuotes(rates_proxy.listen)
    for _ in range(5):
        with pytest.raises(UnknownZone):
            shipping.quote("mars")
    assert breaker_timeline.states(rates_breaker) == []
    assert shipping.quote("us") == 7.0
