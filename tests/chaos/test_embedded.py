"""EmbeddedToxiproxy: both modes start fast, expose their address and stop cleanly."""

from __future__ import annotations

import socket
import time

import pytest
from chaos_helpers import EchoServer, connect, recv_exactly, recv_until_closed

from chaos import EmbeddedServerError, EmbeddedToxiproxy, ToxiproxyClient


def test_thread_mode_starts_fast_and_stops_cleanly(echo_server: EchoServer) -> None:
    start = time.perf_counter()
    server = EmbeddedToxiproxy().start()
    try:
        started_in = time.perf_counter() - start
        assert started_in < 1.0  # typically ~5 ms
        assert server.host == "127.0.0.1"
        assert server.url == f"http://127.0.0.1:{server.port}"
        assert server.running
        assert "thread" in repr(server)
        info = server.client().create_proxy("echo", upstream=echo_server.address)
        sock = socket.create_connection((info.listen_host, info.listen_port), timeout=5)
        with sock:
            sock.sendall(b"x")
            assert recv_exactly(sock, 1) == b"x"
            server.stop()
            assert recv_until_closed(sock, timeout=5)[1] in ("eof", "reset")
    finally:
        server.stop()
    server.stop()  # idempotent
    assert not server.running
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((info.listen_host, info.listen_port), timeout=5).close()
    with pytest.raises(EmbeddedServerError, match="not running"):
        _ = server.url


def test_context_manager_stops_on_error() -> None:
    def fail_inside() -> int:
        with EmbeddedToxiproxy() as server:
            ports.append(server.port)
            raise RuntimeError("boom")

    ports: list[int] = []
    with pytest.raises(RuntimeError, match="boom"):
        fail_inside()
    port = ports[0]
    assert not ToxiproxyClient(f"http://127.0.0.1:{port}", timeout=2).is_running()


def test_port_in_use_is_reported() -> None:
    with (
        EmbeddedToxiproxy() as first,
        pytest.raises(EmbeddedServerError, match="could not start"),
    ):
        EmbeddedToxiproxy(port=first.port).start()


def test_many_servers_start_quickly() -> None:
    start = time.perf_counter()
    for _ in range(20):
        with EmbeddedToxiproxy() as server:
            assert server.client().version() == "2.12.0"
    assert time.perf_counter() - start < 10.0  # ~20 ms each here


@pytest.mark.slow
def test_subprocess_mode(echo_server: EchoServer) -> None:
    with EmbeddedToxiproxy(mode="subprocess", seed=7) as server:
        assert "subprocess" in repr(server)
        client = server.client()
        info = client.create_proxy("echo", upstream=echo_server.address)
        with connect((info.listen_host, info.listen_port)) as sock:
            sock.sendall(b"sub")
            assert recv_exactly(sock, 3) == b"sub"
        port = server.port
    assert not ToxiproxyClient(f"http://127.0.0.1:{port}", timeout=2).is_running()


def test_bad_mode_is_rejected() -> None:
    with pytest.raises(ValueError, match="mode"):
        EmbeddedToxiproxy(mode="fork")  # type: ignore[arg-type]
