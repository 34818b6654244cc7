"""Each fault through the real embedded server (or SYNAPSE_TOXIPROXY), observed from a client.

Tolerances: lower bounds are the fault's own figure minus 5% (timers never fire early by more),
upper bounds leave hundreds of milliseconds for a noisy 2-core machine.
"""

from __future__ import annotations

import socket
import time

import pytest
from chaos_helpers import (
    EchoServer,
    connect,
    connect_state,
    echoes,
    is_silent,
    recv_exactly,
    recv_until_closed,
    round_trip,
    timed_echo,
    wait_until,
)

from chaos import Proxy


def test_latency_both_directions_doubles_on_a_round_trip(echo_handle: Proxy) -> None:
    with connect(echo_handle.address) as sock:
        baseline = min(round_trip(sock) for _ in range(3))
        with echo_handle.latency(100) as fault:
            assert fault.active
            slowed = round_trip(sock)  # an open connection gets the fault too
        healed = round_trip(sock)
    assert baseline < 0.05
    assert 0.19 <= slowed <= 0.7, slowed
    assert healed < 0.1
    assert not fault.active


def test_latency_one_direction_and_jitter(echo_handle: Proxy) -> None:
    with (
        echo_handle.latency(100, jitter=20, stream="downstream"),
        connect(echo_handle.address) as sock,
    ):
        times = [round_trip(sock) for _ in range(3)]
    assert all(0.075 <= t <= 0.5 for t in times), times


def test_latency_toxicity_zero_leaves_connections_alone(echo_handle: Proxy) -> None:
    with echo_handle.latency(400, toxicity=0.0), connect(echo_handle.address) as sock:
        assert round_trip(sock) < 0.2


def test_bandwidth_limits_the_rate(echo_handle: Proxy) -> None:
    payload = bytes(range(256)) * 160  # 40,960 bytes
    with echo_handle.bandwidth(100), connect(echo_handle.address) as sock:  # 100 KB/s down
        echoed, elapsed = timed_echo(sock, payload)
    assert echoed == payload
    # 40.96 KB at 100 KB/s is 0.41 s; the first 100 ms slice may leave at once.
    assert 0.28 <= elapsed <= 2.5, elapsed
    assert len(payload) / elapsed / 1000 <= 150


def test_slow_close_delays_the_end_of_stream(echo_handle: Proxy) -> None:
    with echo_handle.slow_close(300), connect(echo_handle.address) as sock:
        sock.sendall(b"bye")
        assert recv_exactly(sock, 3) == b"bye"
        start = time.perf_counter()
        sock.shutdown(socket.SHUT_WR)  # the echo server closes in turn: its FIN is held
        data, how = recv_until_closed(sock, timeout=5)
        elapsed = time.perf_counter() - start
    assert (data, how) == (b"", "eof")
    assert 0.285 <= elapsed <= 1.5, elapsed


def test_blackhole_is_silence_on_open_and_new_connections(echo_handle: Proxy) -> None:
    with connect(echo_handle.address) as before:
        assert round_trip(before) < 0.5
        with echo_handle.blackhole():
            before.sendall(b"anyone?")
            assert is_silent(before, 0.4)
            with connect(echo_handle.address) as during:  # connects, then nothing
                during.sendall(b"hello?")
                assert is_silent(during, 0.4)
        # Removing a blackhole closes the connections it swallowed data from, as Toxiproxy does.
        assert recv_until_closed(before, timeout=3)[1] in ("eof", "reset")
    assert echoes(echo_handle.address)


@pytest.mark.parametrize(
    ("stream", "server_gets_data"), [("upstream", False), ("downstream", True)]
)
def test_one_direction_blackhole_is_an_asymmetric_partition(
    echo_handle: Proxy, echo_server: EchoServer, stream: str, server_gets_data: bool
) -> None:
    with (
        echo_handle.blackhole(stream=stream),  # type: ignore[arg-type]
        connect(echo_handle.address) as sock,
    ):
        sock.sendall(b"x" * 100)
        assert is_silent(sock, 0.4)  # no echo either way
        # The silence above took 0.4 s: data that can get through has arrived by now.
        got = wait_until(lambda: echo_server.received == 100, timeout=0.3)
    assert got is server_gets_data
    if not server_gets_data:
        assert echo_server.received == 0


def test_reset_peer_resets_the_connection(echo_handle: Proxy) -> None:
    with echo_handle.reset_peer(after_ms=200), connect(echo_handle.address) as sock:
        start = time.perf_counter()
        sock.sendall(b"ping")
        data, how = recv_until_closed(sock, timeout=5)
        elapsed = time.perf_counter() - start
    assert how == "reset", (data, how)
    assert 0.19 <= elapsed <= 1.5, elapsed


def test_down_cuts_open_connections_and_refuses_new_ones(echo_handle: Proxy) -> None:
    port = echo_handle.port
    with connect(echo_handle.address) as sock:
        assert round_trip(sock) < 0.5
        with echo_handle.down():
            assert recv_until_closed(sock, timeout=3)[1] in ("eof", "reset")
            assert connect_state(echo_handle.address) == "refused"
            assert echo_handle.refresh().enabled is False
    assert echo_handle.port == port == echo_handle.refresh().listen_port
    assert echoes(echo_handle.address)


def test_partition_drop_silently_discards_both_directions(
    echo_handle: Proxy, echo_server: EchoServer
) -> None:
    with connect(echo_handle.address) as open_conn:
        open_conn.sendall(b"a")
        assert recv_exactly(open_conn, 1) == b"a"
        with echo_handle.partition():
            assert connect_state(echo_handle.address) == "open"  # like DROP: no refusal
            with connect(echo_handle.address) as new_conn:
                new_conn.sendall(b"b" * 10)
                assert is_silent(new_conn, 0.3)
            open_conn.sendall(b"c" * 10)
            assert is_silent(open_conn, 0.3)
            assert echo_server.received == 1  # nothing crossed after the first byte
        assert recv_until_closed(open_conn, timeout=3)[1] in ("eof", "reset")
    assert echoes(echo_handle.address)


def test_partition_reject_refuses(echo_handle: Proxy) -> None:
    with echo_handle.partition(mode="reject"):
        assert connect_state(echo_handle.address) == "refused"
    assert echoes(echo_handle.address)


def test_slicer_cuts_and_spaces_the_data(echo_handle: Proxy) -> None:
    payload = bytes(range(200)) * 5  # 1,000 bytes -> 100 slices of 10 bytes, 3 ms apart
    with (
        echo_handle.slicer(average_size=10, size_variation=2, delay_us=3000),
        connect(echo_handle.address) as sock,
    ):
        echoed, elapsed = timed_echo(sock, payload)
    assert echoed == payload
    assert 0.2 <= elapsed <= 3.0, elapsed


def test_limit_data_closes_after_the_budget(echo_handle: Proxy) -> None:
    with echo_handle.limit_data(100), connect(echo_handle.address) as sock:
        sock.sendall(b"z" * 300)
        data, how = recv_until_closed(sock, timeout=5)
    assert (len(data), how) == (100, "eof")
