"""The traffic log: when clients of a proxy connected and sent bytes (GET /synapse/traffic).

It is what lets ``assert_no_calls_while_open`` see real calls made while a breaker was open;
Toxiproxy's own /metrics cannot (it adds a connection's bytes only when that connection ends).
"""

from __future__ import annotations

import http.server
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest
from chaos_helpers import EchoServer, connect, round_trip, wait_until
from threaded_servers import serving

from chaos import NotFound, ToxiproxyClient
from chaos.control.traffic import ProxyTraffic, TrafficUnavailable
from chaos.server.traffic import TrafficLog


def test_connections_and_bytes_are_logged_with_times(
    client: ToxiproxyClient, echo_server: EchoServer
) -> None:
    proxy = client.create_proxy("svc", upstream=echo_server.address)
    before = time.monotonic()
    with connect(proxy.address) as sock:
        round_trip(sock, b"hello")
        round_trip(sock, b"again!")
    with connect(proxy.address) as sock:
        round_trip(sock, b"x")
    after = time.monotonic()
    traffic = proxy.traffic()
    assert [serial for serial, _ in traffic.connections] == [1, 2]
    assert [(serial, n) for serial, _, n in traffic.received] == [(1, 5), (1, 6), (2, 1)]
    times = [t for _, t in traffic.connections] + [t for _, t, _ in traffic.received]
    assert all(before <= t <= after for t in times)  # the embedded server shares this clock
    assert traffic.uncertainty == 0.0
    window = traffic.between(before, after)
    assert (len(window.connections), window.bytes) == (2, 12)
    assert traffic.between(after, after + 1).empty
    assert traffic.blind(before, after) == []


def test_bytes_a_fault_swallows_are_still_seen(
    client: ToxiproxyClient, echo_server: EchoServer
) -> None:
    """A blackhole drops what the service sends; the service still called the dependency."""
    proxy = client.create_proxy("svc", upstream=echo_server.address)
    with proxy.blackhole(), connect(proxy.address) as sock:
        sock.sendall(b"lost request")
        assert wait_until(lambda: proxy.traffic().received != ())
    assert [n for _, _, n in proxy.traffic().received] == [12]


def test_disabled_periods_are_blind(client: ToxiproxyClient, echo_server: EchoServer) -> None:
    """While disabled, connects are refused by the OS: the log says it could not see them."""
    proxy = client.create_proxy("svc", upstream=echo_server.address)
    start = time.monotonic()
    fault = proxy.down().start()
    downed = time.monotonic()
    still_down = proxy.traffic()
    assert still_down.disabled[-1][1] is None
    assert still_down.blind(start, time.monotonic())[0][0] <= downed
    fault.stop()
    healed = time.monotonic()
    traffic = proxy.traffic()
    (first, last) = traffic.blind(start, healed + 1)[0]
    assert start <= first <= downed
    assert downed <= last <= healed
    assert traffic.blind(healed, healed + 1) == []


def test_unknown_proxy_is_not_found(client: ToxiproxyClient) -> None:
    with pytest.raises(NotFound, match="proxy not found"):
        client.traffic("nope")


def test_the_log_is_bounded_and_says_from_when_it_is_complete() -> None:
    now = [0.0]
    log = TrafficLog(lambda: now[0], limit=3)
    for i in range(5):
        now[0] = float(i)
        log.received(log.connected(), 10)
    data = log.to_json()
    assert [c[0] for c in data["connections"]] == [3, 4, 5]  # type: ignore[index]
    assert data["complete_since"] == 1.0  # entries up to t=1 were dropped
    assert log.to_json(since=4.0)["received"] == [[5, 4.0, 10]]


def test_a_server_on_another_clock_is_aligned() -> None:
    """A server elsewhere reports its own ``now``; times are shifted onto the local clock."""
    data = {
        "proxy": "p",
        "now": 1000.0,
        "connections": [[1, 999.0]],
        "received": [[1, 999.5, 3]],
        "disabled": [[990.0, None]],
        "complete_since": None,
    }
    traffic = ProxyTraffic.from_json(data, sent_at=10.0, received_at=10.2)
    assert traffic.connections[0][1] == pytest.approx(9.1)
    assert traffic.received[0][1] == pytest.approx(9.6)
    assert traffic.disabled == ((pytest.approx(0.1), None),)
    assert traffic.uncertainty == pytest.approx(0.1)


class _NoExtension(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"404 page not found\n"
        self.send_response(404)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def plain_server() -> Iterator[str]:
    with serving(http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NoExtension)) as address:
        yield f"http://{address}"


def test_a_server_without_the_extension_is_refused_clearly(plain_server: str) -> None:
    with pytest.raises(TrafficUnavailable, match="only Synapse's server does"):
        ToxiproxyClient(plain_server).traffic("svc")


def _real_toxiproxy() -> str | None:
    path = os.environ.get("TOXIPROXY_SERVER") or "/work/toxiproxy/toxiproxy-server"
    return path if os.access(path, os.X_OK) else shutil.which("toxiproxy-server")


@pytest.mark.skipif(_real_toxiproxy() is None, reason="no real Toxiproxy (TOXIPROXY_SERVER)")
def test_the_real_toxiproxy_is_refused_clearly() -> None:
    binary = _real_toxiproxy()
    assert binary is not None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen(
        [binary, "-host", "127.0.0.1", "-port", str(port), "-proxy-metrics"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        client = ToxiproxyClient(f"http://127.0.0.1:{port}")
        assert wait_until(client.is_running, timeout=10)
        client.create_proxy("svc", upstream="127.0.0.1:9")
        with pytest.raises(TrafficUnavailable, match="only when the connection closes"):
            client.traffic("svc")
    finally:
        process.terminate()
        process.wait(10)
