"""Fixtures for the orders demo suite: the inventory dependency, a chaos proxy, the service."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from orders.inventory import InventoryServer
from orders.service import OrdersService
from synapse_core import default_manager


@pytest.fixture
def inventory() -> Iterator[InventoryServer]:
    with InventoryServer() as server:
        yield server


@pytest.fixture
def inventory_proxy(chaos_proxy: Callable[..., Any], inventory: InventoryServer) -> Any:
    """A chaos proxy between the service and inventory."""
    return chaos_proxy(inventory.address, name="inventory")


@pytest.fixture
def orders(inventory_proxy: Any) -> Iterator[OrdersService]:
    """The service, talking to inventory through the proxy."""
    with OrdersService(inventory_proxy.listen) as service:
        yield service
    default_manager.remove_breaker("inventory")


def get(url: str, timeout: float = 5.0) -> tuple[int, dict[str, Any]]:
    """GET *url*; returns (status, JSON body) for any status."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def drive_until_closed(service_url: str, breaker: str, *, within: float) -> int:
    """Keep requesting orders until the service reports *breaker* closed; returns requests made.

    Breakers recover lazily: probes are the requests that arrive after the recovery timeout,
    so recovery needs traffic.
    """
    deadline = time.monotonic() + within
    count = 0
    while time.monotonic() < deadline:
        count += 1
        get(f"{service_url}/orders/apple")
        if get(f"{service_url}/breakers")[1].get(breaker) == "closed":
            return count
        time.sleep(0.05)
    raise AssertionError(f"breaker {breaker!r} did not close within {within}s ({count} requests)")
