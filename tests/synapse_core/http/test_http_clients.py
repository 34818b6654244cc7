"""Breaker-guarded HTTP clients (httpx sync and async, requests, aiohttp) against a real server.

A local HTTP server sits behind the embedded chaos proxy: a partition or latency trips the
host's breaker, 4xx answers do not, an open breaker rejects without opening a connection (the
server counts the ones it accepts), and the breaker recovers once the fault is healed.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from http_support import CLIENTS, Client, CountingServer, config
from threaded_servers import serving

from pytest_synapse import assert_closes_within, assert_trips_within
from synapse_core import CircuitBreaker, CircuitOpenError


@pytest.fixture
def server() -> Iterator[tuple[CountingServer, str]]:
    instance = CountingServer()
    with serving(instance) as address:
        yield instance, address


@pytest.fixture
def client_of() -> Iterator[Callable[..., Client]]:
    made: list[Client] = []

    def make(kind: str, address: str, **guard: Any) -> Client:
        guard.setdefault("config", config(half_open_max_calls=1))
        client = Client(kind, address, **guard)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def fail_three(client: Client) -> None:
    for _ in range(3):
        with pytest.raises(client.timeouts):
            client.get()


@pytest.mark.parametrize("kind", CLIENTS)
def test_a_partition_trips_the_host_breaker_which_rejects_without_connecting_then_recovers(
    kind: str,
    server: tuple[CountingServer, str],
    chaos_proxy: Callable[..., Any],
    client_of: Callable[..., Client],
    breaker_timeline: Any,
) -> None:
    instance, address = server
    proxy = chaos_proxy(address)
    client = client_of(kind, f"{proxy.listen_host}:{proxy.listen_port}")
    assert client.get() == 200
    breaker = client.breaker
    assert breaker.name == f"{proxy.listen_host}:{proxy.listen_port}"
    fault = proxy.partition().start()
    fail_three(client)
    assert breaker.state.value == "open"
    assert_trips_within(breaker, failures=3, seconds=3)
    accepted, traffic = instance.accepted, len(proxy.traffic().connections)
    for _ in range(5):
        with pytest.raises(CircuitOpenError):
            client.get()
    assert instance.accepted == accepted
    assert len(proxy.traffic().connections) == traffic  # not even the proxy saw a connect
    fault.stop()
    time.sleep(0.35)
    assert client.get() == 200
    assert breaker.state.value == "closed"
    assert_closes_within(breaker, 2)


@pytest.mark.parametrize("kind", CLIENTS)
def test_latency_beyond_the_client_timeout_trips(
    kind: str,
    server: tuple[CountingServer, str],
    chaos_proxy: Callable[..., Any],
    client_of: Callable[..., Client],
    breaker_timeline: Any,
) -> None:
    _, address = server
    proxy = chaos_proxy(address)
    client = client_of(kind, f"{proxy.listen_host}:{proxy.listen_port}", timeout=0.2)
    assert client.get() == 200
    proxy.latency(ms=300).start()
    fail_three(client)
    assert client.breaker.state.value == "open"
    assert client.breaker.stats().timeout_count >= 3


@pytest.mark.parametrize("kind", CLIENTS)
def test_4xx_answers_are_successes_and_5xx_failures(
    kind: str,
    server: tuple[CountingServer, str],
    chaos_proxy: Callable[..., Any],
    client_of: Callable[..., Client],
    breaker_timeline: Any,
) -> None:
    _, address = server
    proxy = chaos_proxy(address)
    client = client_of(kind, f"{proxy.listen_host}:{proxy.listen_port}")
    for status in (404, 400, 409, 429, 404, 403):
        assert client.get(f"/{status}") == status
    assert client.breaker.state.value == "closed"
    for _ in range(3):
        assert client.get("/503") == 503
    assert client.breaker.state.value == "open"
    assert "HTTP 503" in str(client.breaker.last_failure)


@pytest.mark.parametrize("kind", CLIENTS)
def test_which_answers_fail_is_configurable(
    kind: str,
    server: tuple[CountingServer, str],
    client_of: Callable[..., Client],
    breaker_timeline: Any,
) -> None:
    _, address = server
    client = client_of(kind, address, failure_status=lambda status: status in (429, 503))
    for _ in range(3):
        assert client.get("/500") == 500  # not a failure here
    assert client.breaker.state.value == "closed"
    for _ in range(3):
        assert client.get("/429") == 429
    assert client.breaker.state.value == "open"


@pytest.mark.parametrize("kind", CLIENTS)
def test_one_given_breaker_guards_every_host(
    kind: str,
    server: tuple[CountingServer, str],
    client_of: Callable[..., Client],
    breaker_timeline: Any,
) -> None:
    _, address = server
    shared = CircuitBreaker("inventory", config(half_open_max_calls=1))
    client = client_of(kind, address, breaker=shared, config=None)
    for _ in range(3):
        client.get("/500")
    assert shared.state.value == "open"
    with pytest.raises(CircuitOpenError):
        client.get("/200")
    assert client.guard.breakers.breakers == {"*": shared}
    assert_trips_within("inventory", failures=3)  # the plugin records it like any breaker


def test_a_missing_library_is_an_import_error_naming_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "httpx", None)
    monkeypatch.delitem(sys.modules, "synapse_core.http.httpx_transport", raising=False)
    import synapse_core.http

    with pytest.raises(ImportError, match=r"pip install 'synapse-chaos\[httpx\]'"):
        synapse_core.http.BreakerTransport  # noqa: B018
