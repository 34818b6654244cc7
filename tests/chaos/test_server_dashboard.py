"""The chaos server's /dashboard and /events: proxies and active toxics, breakers beside them."""

from __future__ import annotations

import http.client
import json
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from chaos_helpers import EchoServer

from chaos import EmbeddedToxiproxy, ToxiproxyClient
from synapse_core import CircuitBreakerConfig, default_manager

BROWSER = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/156"}


class Events:
    """Reads /events over a real socket, one server-sent event at a time."""

    def __init__(self, server: EmbeddedToxiproxy) -> None:
        self.connection = http.client.HTTPConnection(server.host, server.port, timeout=10)
        self.connection.request("GET", "/events", headers=BROWSER)
        self.response = self.connection.getresponse()

    def until(self, kind: str, accept: Any = lambda data: True) -> Any:
        """The data of the next *kind* event that *accept* takes."""
        event = ""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            line = self.response.fp.readline().decode().rstrip("\n")
            if not line and self.response.fp.closed:
                break
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: ") and event == kind:
                data = json.loads(line.removeprefix("data: "))
                if accept(data):
                    return data
        raise AssertionError(f"no {kind} event as expected within 10 s")

    def close(self) -> None:
        self.response.close()
        self.connection.close()


@pytest.fixture
def server() -> Iterator[EmbeddedToxiproxy]:
    with EmbeddedToxiproxy() as running:
        yield running


def test_the_page_is_served_to_browsers_and_the_api_still_is_not(
    server: EmbeddedToxiproxy,
) -> None:
    request = urllib.request.Request(server.url + "/dashboard", headers=BROWSER)
    with urllib.request.urlopen(request, timeout=10) as reply:
        page = reply.read()
        assert reply.headers["Content-Type"] == "text/html; charset=utf-8"
        assert "default-src 'none'" in reply.headers["Content-Security-Policy"]
    assert b"Synapse chaos server" in page
    assert b'new EventSource("events")' in page
    refused = urllib.request.Request(server.url + "/proxies", headers=BROWSER)
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(refused, timeout=10)
    assert caught.value.code == 403  # Toxiproxy's rule for its API is kept
    caught.value.close()


def test_events_show_proxies_toxics_and_the_breakers_of_this_process(
    server: EmbeddedToxiproxy, echo_server: EchoServer
) -> None:
    client: ToxiproxyClient = server.client(timeout=5)
    client.create_proxy("inventory", echo_server.address)
    name = "dashboard-test-breaker"
    breaker = default_manager.get_or_create(name, CircuitBreakerConfig(recovery_timeout=60))
    events = Events(server)
    try:
        snapshot = events.until("snapshot")
        (proxy,) = snapshot["proxies"]
        assert (proxy["name"], proxy["enabled"], proxy["toxics"]) == ("inventory", True, [])
        assert snapshot["breakers"][name]["state"] == "closed"
        client.add_toxic("inventory", "latency", attributes={"latency": 400})
        stats = events.until("stats", lambda d: d["proxies"] and d["proxies"][0]["toxics"])
        assert stats["proxies"][0]["toxics"][0]["type"] == "latency"
        breaker.force_open("for the dashboard test")
        transition = events.until("transition", lambda d: d["breaker"] == name)
        assert (transition["to_state"], transition["reason"]) == ("open", "for the dashboard test")
    finally:
        events.close()
        default_manager.remove_breaker(name)


def test_stopping_the_server_ends_open_pages(server: EmbeddedToxiproxy) -> None:
    events = Events(server)
    events.until("snapshot")
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 5
    events.close()
