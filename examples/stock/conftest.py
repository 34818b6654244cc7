"""Fixtures: a real redis-server on a free loopback port, a chaos proxy in front of it, the
service in this process or in another one.

``STOCK_BUG`` in the environment plants a bug in the service (see ``stock.service``):
``tests/e2e/test_stock_suite.py`` runs this suite once per bug to prove each assertion fails.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from stock.service import StockService

HERE = Path(__file__).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server of our own on loopback (no persistence); its ``host:port``."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (scripts/system-deps.sh installs it)")
    folder = tmp_path_factory.mktemp("redis")
    for _ in range(5):  # a free port can be taken between the check and redis binding it
        port = free_port()
        process = subprocess.Popen(
            [
                binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(folder),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1)
        deadline = time.monotonic() + 10
        while process.poll() is None and time.monotonic() < deadline:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.02)
        if process.poll() is None:
            break
        client.close()
    else:
        raise RuntimeError("redis-server did not start on a free port in 5 attempts")
    try:
        client.mset({"stock:apple": 7, "stock:plum": 3})
        client.close()
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture
def redis_proxy(chaos_proxy: Callable[..., Any], redis_server: str) -> Any:
    """The chaos proxy between the service and Redis."""
    return chaos_proxy(redis_server, name="redis")


def planted_bugs() -> list[str]:
    """``STOCK_BUG=a,b``: the bugs to plant in the service (none by default)."""
    return [bug for bug in os.environ.get("STOCK_BUG", "").split(",") if bug]


@pytest.fixture
def service(redis_proxy: Any) -> Iterator[StockService]:
    """The service in this process: its breaker is recorded as it acts."""
    with StockService(redis_proxy.listen, bugs=planted_bugs()) as svc:
        yield svc


class RemoteService:
    """The service in another process (``python -m stock.service``), as in production."""

    def __init__(self, redis_address: str) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "stock.service",
                "--redis",
                redis_address,
                *(f"--bug={bug}" for bug in planted_bugs()),
            ],
            cwd=HERE.parent,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.url = self.process.stdout.readline().strip()
        if not self.url:
            self.close()
            raise RuntimeError("the service process did not start")

    def breakers(self) -> dict[str, str]:
        """Its breaker states, from its own ``/breakers`` endpoint."""
        return get(f"{self.url}/breakers")[1]

    def close(self) -> None:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.close()  # it serves until its stdin closes
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self.process.stdout.close()


@pytest.fixture
def remote_service(redis_proxy: Any) -> Iterator[RemoteService]:
    remote = RemoteService(redis_proxy.listen)
    try:
        yield remote
    finally:
        remote.close()


def get(url: str, timeout: float = 5.0) -> tuple[int, dict[str, Any]]:
    """GET *url*; returns (status, JSON body) for any status."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        with err:
            return err.code, json.loads(err.read())


def warm(url: str, within: float = 5.0) -> bool:
    """GET *url* until it answers 200 from Redis, for at most *within* seconds.

    A precondition, not a check: the service's Redis timeout is 200 ms, which a loaded CI
    machine can exceed once; a test starts from a healthy service with a filled cache.
    """
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if get(url)[0] == 200:
            return True
        time.sleep(0.05)
    return False


def drive_until_closed(url: str, states: Callable[[], dict[str, str]], *, within: float) -> bool:
    """Request stock until the ``redis`` breaker reports closed, for at most *within* seconds.

    A breaker recovers lazily: its probes are the requests that arrive after the recovery
    timeout, so recovery needs traffic. Returns whether it closed; the test's
    ``assert_closes_within`` says how it went if not.
    """
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        get(f"{url}/stock/apple")
        if states().get("redis") == "closed":
            return True
        time.sleep(0.05)
    return False
