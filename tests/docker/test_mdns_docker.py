"""Two MdnsTransport peers in two containers: real mDNS discovery on a Docker network, and a
container fault (isolate) that the sender's breaker detects and recovers from."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from chaos.docker import Container

HERE = Path(__file__).resolve().parent
BREAKER = "mdns:node-a->node-b"

pytestmark = pytest.mark.usefixtures("leftovers")


def _states(url: str) -> dict[str, str]:
    with urllib.request.urlopen(url, timeout=2) as response:
        states: dict[str, str] = json.loads(response.read())
        return states


def _wait_state(fetch: Callable[[], dict[str, str]], state: str, within: float) -> None:
    deadline = time.monotonic() + within
    while fetch().get(BREAKER) != state:
        assert time.monotonic() < deadline, f"{BREAKER} not {state} within {within}s: {fetch()}"
        time.sleep(0.05)


def test_mdns_peers_in_containers_discover_each_other_and_isolation_trips_the_breaker(
    container: Callable[..., Container], images: dict[str, str], breaker_timeline: Any
) -> None:
    mount = {str(HERE): {"bind": "/tests", "mode": "ro"}}

    def peer(*args: str, **options: Any) -> Container:
        return container(
            images["chaos"],
            entrypoint=["python3", "/tests/mdns_peer.py", *args],
            volumes=mount,
            **options,
        )

    b = peer("node-b", wait=re.compile("node-b: up"))
    # Ready once it found node-b (by mDNS) and serves its breaker states.
    a = peer("node-a", "node-b", ports=[8080], timeout=45)
    assert re.search(r"node-a: found node-b at (\S+):7100", a.logs()).group(1) == b.ip()
    url = f"http://{a.address(8080)}/breakers"
    poller = breaker_timeline.poll(lambda: _states(url))

    def fetch() -> dict[str, str]:
        poller.poll_once()
        return poller.states

    _wait_state(fetch, "closed", within=10)
    with b.isolate():
        _wait_state(fetch, "open", within=10)
        breaker_timeline.assert_trips_within(BREAKER, seconds=5)
    _wait_state(fetch, "closed", within=10)
    breaker_timeline.assert_closes_within(BREAKER, seconds=5)
    assert breaker_timeline.states(BREAKER)[0] == "open"
