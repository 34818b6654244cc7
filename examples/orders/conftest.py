"""Fixtures for the orders demo suite: the inventory dependency, a chaos proxy, the service."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
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
def orders_process(inventory_proxy: Any) -> Iterator[str]:
    """The service in a process of its own (``python -m orders.service``); yields its URL."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "orders.service",
            "--inventory",
            inventory_proxy.listen,
            "--until-stdin-closes",
        ],
        cwd=Path(__file__).parents[1],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdin is not None
    assert process.stdout is not None
    try:
        url = process.stdout.readline().strip()
        assert url.startswith("http://"), f"the orders service did not start ({url!r})"
        yield url
    finally:
        process.stdin.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stdout.close()


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
    """Request orders until the service's /health reports *breaker* closed; returns how many.

    Breakers recover lazily: probes are the requests that arrive after the recovery timeout,
    so recovery needs traffic.
    """
    deadline = time.monotonic() + within
    count = 0
    while time.monotonic() < deadline:
        count += 1
        get(f"{service_url}/orders/apple")
        if get(f"{service_url}/health")[1]["breakers"].get(breaker) == "closed":
            return count
        time.sleep(0.05)
    raise AssertionError(f"breaker {breaker!r} did not close within {within}s ({count} requests)")
