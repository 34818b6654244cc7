"""Fixtures for the orders demo suite: the inventory dependency, a chaos proxy, the service.

The same tests run three ways:

* in this process (default, ``make demo``): both services on loopback, the embedded server;
* ``--synapse-toxiproxy=docker``: inventory and orders run as containers (the chaos image with
  ``examples/`` mounted), the chaos server is a container too, and the orders container reaches
  inventory only through the proxy, by name on the session's Docker network;
* against a running stack (``make docker-demo``, ``docker/compose.yaml``): ``SYNAPSE_ORDERS_URL``
  is the service's URL, and the chaos server (``--synapse-toxiproxy=http://...``) already has the
  ``inventory`` proxy the service goes through.

Out of process, the service's breakers are read from its ``/breakers`` endpoint
(``breaker_timeline.watch_remote``), so the same assertions work by name.
"""

from __future__ import annotations

import json
import os
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

EXAMPLES = Path(__file__).resolve().parents[1]
ORDERS_URL = "SYNAPSE_ORDERS_URL"


class RemoteOrders:
    """The orders service running elsewhere (a container, a compose stack): its URL."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")


def _mode(request: pytest.FixtureRequest) -> str:
    if os.environ.get(ORDERS_URL):
        return "stack"
    return "docker" if request.getfixturevalue("synapse_backend").kind == "docker" else "local"


def _in_container(container: Callable[..., Any], module: str, *args: str, port: int) -> Any:
    """Run ``python3 -m orders.<module>`` in the chaos image, ``examples/`` mounted read-only."""
    from chaos.docker import default_image

    return container(
        os.environ.get("SYNAPSE_DOCKER_IMAGE") or default_image(),
        entrypoint=["python3", "-m", f"orders.{module}", "--host", "0.0.0.0", "--port", str(port)],
        command=list(args),
        volumes={str(EXAMPLES): {"bind": "/app", "mode": "ro"}},
        working_dir="/app",
        ports=[port],
    )


@pytest.fixture
def inventory(request: pytest.FixtureRequest) -> Iterator[Any]:
    mode = _mode(request)
    if mode == "stack":
        yield None  # the stack runs it
    elif mode == "docker":
        yield _in_container(request.getfixturevalue("container"), "inventory", port=7000)
    else:
        with InventoryServer() as server:
            yield server


@pytest.fixture
def inventory_proxy(
    request: pytest.FixtureRequest, chaos_proxy: Callable[..., Any], inventory: Any
) -> Any:
    """A chaos proxy between the service and inventory."""
    mode = _mode(request)
    if mode == "stack":
        timeline = request.getfixturevalue("breaker_timeline").timeline
        return request.getfixturevalue("synapse_backend").attach("inventory", timeline=timeline)
    upstream = (inventory, 7000) if mode == "docker" else inventory.address
    return chaos_proxy(upstream, name="inventory")


@pytest.fixture
def orders_process(request: pytest.FixtureRequest, inventory_proxy: Any) -> Iterator[str]:
    """The service in a process of its own; yields its URL.

    ``python -m orders.service`` here; with the docker backend, a container reaching inventory
    through the proxy container; against a stack, the stack's service.
    """
    mode = _mode(request)
    if mode == "stack":
        yield os.environ[ORDERS_URL].rstrip("/")
        return
    if mode == "docker":
        address = inventory_proxy.network_address
        handle = _in_container(
            request.getfixturevalue("container"), "service", "--inventory", address, port=8080
        )
        yield f"http://{handle.address(8080)}"
        return
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
def orders(request: pytest.FixtureRequest, inventory_proxy: Any) -> Iterator[Any]:
    """The service, talking to inventory through the proxy (out of process: its URL, with its
    breakers recorded on the test's timeline)."""
    if _mode(request) == "local":
        with OrdersService(inventory_proxy.listen) as service:
            yield service
        default_manager.remove_breaker("inventory")
        return
    service = RemoteOrders(request.getfixturevalue("orders_process"))
    request.getfixturevalue("breaker_timeline").watch_remote(service.url)
    yield service


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
