"""The toxiproxy-python package drives our server unchanged (see the fixture for the address)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from chaos_helpers import EchoServer, RawApi, connect, recv_exactly, round_trip
from toxiproxy.exceptions import InvalidToxic, NotFound, ProxyExists


def test_create_list_get_destroy(toxiproxy_python: Any, echo_server: EchoServer) -> None:
    proxy = toxiproxy_python.create(upstream=echo_server.address, name="echo")
    assert proxy.name == "echo"
    assert proxy.enabled is True
    assert proxy.listen.startswith("127.0.0.1:")
    assert not proxy.listen.endswith(":0")
    assert set(toxiproxy_python.proxies()) == {"echo"}
    assert toxiproxy_python.get_proxy("echo").upstream == echo_server.address
    assert toxiproxy_python.running() is True
    assert b"2.12.0" in toxiproxy_python.version()
    host, port = proxy.listen.rsplit(":", 1)
    with connect((host, int(port))) as sock:
        sock.sendall(b"hi")
        assert recv_exactly(sock, 2) == b"hi"
    assert toxiproxy_python.destroy(proxy) is True
    assert toxiproxy_python.proxies() == {}


def test_toxics(toxiproxy_python: Any, echo_server: EchoServer) -> None:
    proxy = toxiproxy_python.create(upstream=echo_server.address, name="echo")
    proxy.add_toxic(type="latency", attributes={"latency": 150})
    proxy.add_toxic(type="bandwidth", stream="upstream", name="bw", attributes={"rate": 1000})
    toxics = proxy.toxics()
    assert set(toxics) == {"latency_downstream", "bw"}
    assert toxics["latency_downstream"].attributes == {"latency": 150, "jitter": 0}
    assert proxy.get_toxic("bw").stream == "upstream"
    host, port = proxy.listen.rsplit(":", 1)
    with connect((host, int(port))) as sock:
        assert round_trip(sock) >= 0.145
        proxy.destroy_toxic("latency_downstream")
        assert round_trip(sock) < 0.145 + 1.0
    assert set(proxy.toxics()) == {"bw"}


def test_disable_enable_down_and_reset(
    toxiproxy_python: Any, echo_server: EchoServer, raw_api: RawApi
) -> None:
    proxy = toxiproxy_python.create(upstream=echo_server.address, name="echo")
    with proxy.down():
        assert raw_api("GET", "/proxies/echo").json()["enabled"] is False
    assert raw_api("GET", "/proxies/echo").json()["enabled"] is True
    proxy.disable()
    proxy.add_toxic(type="timeout")
    assert toxiproxy_python.reset() is True
    state = raw_api("GET", "/proxies/echo").json()
    assert state["enabled"] is True
    assert state["toxics"] == []


def test_populate(toxiproxy_python: Any, echo_server: EchoServer) -> None:
    created = toxiproxy_python.populate(
        [
            {"name": "one", "upstream": echo_server.address, "listen": "127.0.0.1:0"},
            {"name": "two", "upstream": echo_server.address, "listen": "127.0.0.1:0"},
        ]
    )
    assert {p.name for p in created} == {"one", "two"}
    assert set(toxiproxy_python.proxies()) == {"one", "two"}
    toxiproxy_python.destroy_all()
    assert toxiproxy_python.proxies() == {}


def test_errors_map_to_its_exceptions(toxiproxy_python: Any) -> None:
    from toxiproxy.api import APIConsumer

    proxy = toxiproxy_python.create(upstream="127.0.0.1:1", name="p")
    with pytest.raises(ProxyExists):  # its own pre-check
        toxiproxy_python.create(upstream="127.0.0.1:1", name="p")
    with pytest.raises(ProxyExists) as exists:  # our 409
        APIConsumer.post("/proxies", json={"name": "p", "upstream": "127.0.0.1:1"})
    # It keeps the body as its message: Toxiproxy's members, exactly, and our hint after them.
    assert _error(exists.value) == ("proxy already exists", 409)
    with pytest.raises(InvalidToxic) as invalid:
        proxy.add_toxic(type="no_such_toxic")
    assert _error(invalid.value) == ("invalid toxic type", 400)
    with pytest.raises(NotFound) as missing:
        proxy.destroy_toxic("missing")
    assert _error(missing.value) == ("toxic not found", 404)
    proxy.destroy()
    with pytest.raises(NotFound) as gone:
        proxy.toxics()
    assert _error(gone.value) == ("proxy not found", 404)


def _error(exc: Exception) -> tuple[str, int]:
    """The ``error`` and ``status`` of a toxiproxy-python exception's body (its message)."""
    (content,) = exc.args
    body = json.loads(content)
    assert list(body) == ["error", "status", "hint"]
    assert body["hint"]
    return body["error"], body["status"]
