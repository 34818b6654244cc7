"""The orders service under chaos: its inventory breaker trips fast, rejects fast, recovers.

Run with ``make demo`` (or ``pytest examples/orders --synapse-chaos``). Everything is real:
the service and inventory listen on loopback, faults come from the embedded Toxiproxy-compatible
server, and time is real. With ``--synapse-toxiproxy=docker`` the same tests run on containers,
and ``make docker-demo`` runs them against ``docker/compose.yaml`` (see ``conftest.py``).
"""

from __future__ import annotations

from typing import Any

import pytest

from orders.conftest import drive_until_closed, get
from orders.service import OrdersService
from pytest_synapse import BreakerTimeline

pytestmark = pytest.mark.chaos


def trip_and_check(orders: OrdersService, breaker_timeline: BreakerTimeline) -> None:
    """Three failing requests open the breaker; then clients get 503 at once."""
    url = f"{orders.url}/orders/apple"
    for _ in range(3):
        status, body = get(url)
        assert status == 502, body
    status, body = get(url)
    assert status == 503
    assert body["error"] == "inventory unavailable"
    breaker_timeline.assert_trips_within("inventory", failures=3, seconds=5)
    # Clients of the service get their 503 in milliseconds, not after the 0.3 s timeout. Out of
    # process each call also crosses Docker's port proxy: 250 ms still fails a call that waited
    # for inventory, without failing on a busy machine.
    in_process = isinstance(orders, OrdersService)
    breaker_timeline.assert_rejects_fast(
        "inventory", lambda: get(url), max_ms=100 if in_process else 250, calls=10, expect=None
    )


def test_healthy_inventory(orders: OrdersService) -> None:
    assert get(f"{orders.url}/orders/plum") == (200, {"item": "plum", "in_stock": 7})


def test_latency_beyond_the_timeout_trips_and_heals(
    orders: OrdersService, inventory_proxy: Any, breaker_timeline: BreakerTimeline
) -> None:
    with inventory_proxy.latency(ms=400):  # round trip > 0.3 s client timeout
        trip_and_check(orders, breaker_timeline)
    drive_until_closed(orders.url, "inventory", within=5)
    breaker_timeline.assert_closes_within("inventory", seconds=3)
    assert breaker_timeline.states("inventory") == ["open", "half_open", "closed"]


def test_partition_trips_and_heals(
    orders: OrdersService, inventory_proxy: Any, breaker_timeline: BreakerTimeline
) -> None:
    with inventory_proxy.partition():
        trip_and_check(orders, breaker_timeline)
    drive_until_closed(orders.url, "inventory", within=5)
    breaker_timeline.assert_closes_within("inventory", seconds=3)


def test_inventory_down_trips_at_once_and_heals(
    orders: OrdersService, inventory_proxy: Any, breaker_timeline: BreakerTimeline
) -> None:
    with inventory_proxy.down():
        trip_and_check(orders, breaker_timeline)
        breaker_timeline.assert_trips_within("inventory", seconds=1)
    drive_until_closed(orders.url, "inventory", within=5)
    breaker_timeline.assert_closes_within("inventory", seconds=3)
    # The service's own view of its breakers agrees.
    assert get(f"{orders.url}/breakers")[1]["breakers"]["inventory"]["state"] == "closed"
