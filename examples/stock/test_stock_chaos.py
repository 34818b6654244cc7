"""The stock service under chaos, on a real Redis: every breaker assertion, for real.

Run with ``pytest examples/stock --synapse-chaos``. Redis runs on a free loopback port, the
chaos proxy sits between the service and Redis, and time is real. The same assertions hold for
the service in this process (its breaker object) and in another process (its ``/breakers``
endpoint, polled by ``breaker_timeline.poll``). ``STOCK_BUG=<bug>`` plants a bug in the
service; the assertion that must catch it then fails naming the cause.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from pytest_synapse import BreakerTimeline
from stock.conftest import RemoteService, drive_until_closed, get, warm
from stock.service import StockService
from synapse_core import CircuitState

pytestmark = pytest.mark.chaos


def test_healthy_redis(service: StockService) -> None:
    assert get(f"{service.url}/stock/apple") == (
        200,
        {"item": "apple", "stock": 7, "source": "redis"},
    )


def test_partition_trips_fast_and_the_fallback_leaves_redis_alone(
    service: StockService, redis_proxy: Any, breaker_timeline: BreakerTimeline
) -> None:
    url = f"{service.url}/stock/apple"
    assert warm(url)  # fills the service's cache
    with redis_proxy.partition():
        trip(service)
        breaker_timeline.assert_trips_within(service.breaker, failures=3, seconds=3)
        assert get(url) == (200, {"item": "apple", "stock": 7, "source": "cache"})
        # The fallback answered without touching Redis: nothing went through the proxy.
        breaker_timeline.assert_no_calls_while_open(service.breaker, redis_proxy)
        # And at once: the cache, not a 200 ms wait for Redis.
        breaker_timeline.assert_rejects_fast(
            service.breaker, lambda: get(url), max_ms=100, calls=10, expect=None
        )
    drive_until_closed(service.url, service.breakers, within=1.5)  # leave it healthy


def test_recovers_after_the_heal_one_probe_at_a_time(
    service: StockService, redis_proxy: Any, breaker_timeline: BreakerTimeline
) -> None:
    url = f"{service.url}/stock/apple"
    assert warm(url)
    with redis_proxy.partition():
        trip(service)
    healed = breaker_timeline.timeline.clock()
    # A burst of clients once the recovery timeout has passed, while Redis is slow: the breaker
    # must let one probe through at a time, not the whole burst.
    time.sleep(0.35)  # the recovery timeout is 0.3 s
    with redis_proxy.latency(20):
        burst(url, 8)
    drive_until_closed(service.url, service.breakers, within=1.5)
    breaker_timeline.assert_half_open_probes_at_most(service.breaker, 1)
    breaker_timeline.assert_closes_within(service.breaker, seconds=1.5, after=healed)


def test_a_service_in_another_process(
    remote_service: RemoteService, redis_proxy: Any, breaker_timeline: BreakerTimeline
) -> None:
    breaker_timeline.poll(remote_service.breakers)
    url = f"{remote_service.url}/stock/apple"
    assert warm(url)
    with redis_proxy.partition():
        for _ in range(3):
            get(url)
        # Right after the tripping request: the assertion polls once more before concluding.
        breaker_timeline.assert_trips_within("redis", seconds=2)
        assert get(url)[1]["source"] == "cache"
        breaker_timeline.assert_no_calls_while_open("redis", redis_proxy)
        breaker_timeline.assert_rejects_fast(
            "redis", lambda: get(url), max_ms=100, calls=10, expect=None
        )
    drive_until_closed(remote_service.url, remote_service.breakers, within=1)
    breaker_timeline.assert_closes_within("redis", seconds=1)


def trip(service: StockService, most: int = 12) -> None:
    """Request stock until the breaker opens (each request waits for the 200 ms timeout)."""
    url = f"{service.url}/stock/apple"
    for _ in range(most):
        if service.breaker.state is not CircuitState.CLOSED:
            return
        assert get(url)[0] == 502


def burst(url: str, clients: int) -> None:
    """*clients* requests at the same moment, each from its own thread."""
    start = threading.Barrier(clients)

    def client() -> None:
        start.wait(5)
        get(url)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
