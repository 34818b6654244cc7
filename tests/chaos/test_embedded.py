"""EmbeddedToxiproxy: both modes start fast, expose their address and stop cleanly."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import threading
import time
from collections.abc import Callable

import pytest
from chaos_helpers import EchoServer, connect, recv_exactly, recv_until_closed, wait_until

from chaos import EmbeddedServerError, EmbeddedToxiproxy, ToxiproxyClient
from chaos import embedded as embedded_module
from chaos.server import ChaosServer


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


def server_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "synapse-chaos-server"]


def test_embedded_start_and_stop_are_thread_safe() -> None:
    before = len(server_threads())
    server = EmbeddedToxiproxy()
    errors: list[BaseException] = []

    def call(fn: Callable[[], object]) -> None:
        try:
            for _ in range(5):
                fn()
        except BaseException as exc:  # collected: asserted below
            errors.append(exc)

    starters = [threading.Thread(target=call, args=(server.start,)) for _ in range(3)]
    for thread in starters:
        thread.start()
    for thread in starters:
        thread.join(30)
    assert len(server_threads()) == before + 1
    assert server.client().version()
    racers = [threading.Thread(target=call, args=(fn,)) for fn in (server.start, server.stop) * 2]
    for thread in racers:
        thread.start()
    for thread in racers:
        thread.join(30)
    server.stop()
    assert errors == []
    assert wait_until(lambda: len(server_threads()) == before)


def test_embedded_start_timeout_leaves_no_server_running(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class SlowServer(ChaosServer):
        async def start(self) -> None:
            await asyncio.sleep(0.3)
            await super().start()

    before = len(server_threads())
    monkeypatch.setattr(embedded_module, "ChaosServer", SlowServer)
    server = EmbeddedToxiproxy(start_timeout=0.05)
    with pytest.raises(EmbeddedServerError, match="did not start within"):
        server.start()
    assert not server.running
    assert wait_until(lambda: len(server_threads()) == before, timeout=5)


def _stops_within(server: EmbeddedToxiproxy, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while server.running and time.monotonic() < deadline:
        time.sleep(0.02)
    return not server.running


def test_a_killed_subprocess_server_is_not_running_and_start_replaces_it() -> None:
    server = EmbeddedToxiproxy(mode="subprocess").start()
    try:
        first = server.pid
        assert first is not None
        assert server.running
        os.kill(first, signal.SIGKILL)
        assert _stops_within(server, 10.0)
        assert server.start() is server
        assert server.running
        assert server.pid not in (None, first)
        assert server.client(timeout=5.0).version() == "2.12.0"
    finally:
        server.stop()
    assert server.pid is None


def test_thread_mode_has_no_pid_and_start_is_idempotent() -> None:
    with EmbeddedToxiproxy() as server:
        assert server.pid is None
        url = server.url
        assert server.start().url == url  # alive: start() keeps the running server
