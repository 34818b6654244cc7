"""The splice(2) fast path of the data plane (chaos/server/splice.py).

A direction with no active toxic hands bulk traffic to a SplicePump (socket -> pipe -> socket in
the kernel). These tests check that it really runs (``Flow.spliced``), that bytes are never lost,
duplicated or reordered when toxics come and go on a live connection, that half-close, resets,
/metrics counters and descriptor hygiene are as on the transport path, and that the transport
path alone (splice disabled) still passes the same bulk test.

The server runs in-process on a background loop so the tests can look at its connections; every
socket has a timeout and every loop is bounded in count and time.
"""

from __future__ import annotations

import hashlib
import socket
import struct
import threading
import time

import pytest
from chaos_helpers import (
    MIB,
    EchoServer,
    LoopThread,
    Plane,
    Upstream,
    echo_transfer,
    fds_settle,
    open_fds,
    pattern_stream,
    read_all,
    running_plane,
)

from chaos.server import splice

pytestmark = pytest.mark.skipif(
    not splice.ENABLED, reason="splice fast path unavailable (not Linux) or SYNAPSE_CHAOS_SPLICE=0"
)


# -- bulk ----------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("use_splice", [True, False], ids=["splice", "transport"])
def test_bulk_byte_exact_both_directions_and_metrics(
    loop_thread: LoopThread,
    echo_server: EchoServer,
    monkeypatch: pytest.MonkeyPatch,
    *,
    use_splice: bool,
) -> None:
    monkeypatch.setattr(splice, "ENABLED", use_splice)  # read when the server starts
    with running_plane(loop_thread) as plane:
        total = 48 * MIB
        echo_transfer(plane.proxy(echo_server.address), total)
        plane.all_closed()
        spliced = plane.spliced("upstream"), plane.spliced("downstream")
        if use_splice:
            # A little goes through the transport before the hand-over; the bulk is spliced.
            assert min(spliced) > total // 2, spliced
        else:
            assert spliced == (0, 0)
        assert plane.counters() == {"upstream": [total, total], "downstream": [total, total]}


@pytest.mark.slow
def test_many_concurrent_bulk_connections_leak_no_descriptors(
    plane: Plane, echo_server: EchoServer
) -> None:
    address = plane.proxy(echo_server.address)
    echo_transfer(address, 2 * MIB)  # warm up lazily created state
    plane.all_closed()
    time.sleep(0.1)
    baseline = open_fds() - 2 * kept_pipes(plane)
    errors: list[BaseException] = []

    def one() -> None:
        try:
            echo_transfer(address, 4 * MIB)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    assert not errors, errors
    plane.all_closed()
    assert plane.spliced("upstream") > 0
    expected = baseline + 2 * kept_pipes(plane)  # emptied pipes are kept for reuse (up to 8)
    fds = fds_settle(expected)
    assert fds <= expected, f"descriptors grew from {baseline} to {fds}"


def kept_pipes(plane: Plane) -> int:
    return int(plane.on_loop(lambda: plane.server.proxies.ctx.pipes.kept))


# -- toxics on live spliced connections ----------------------------------------------------------


@pytest.mark.slow
def test_toxics_toggled_under_load_lose_nothing(plane: Plane, echo_server: EchoServer) -> None:
    """Toxics added and removed again and again while bulk data flows both ways."""
    address = plane.proxy(echo_server.address)
    toxics: list[tuple[str, dict[str, int]]] = [
        ("noop", {}),
        ("latency", {"latency": 2, "jitter": 1}),
        ("slicer", {"average_size": 20000, "size_variation": 10000, "delay": 0}),
        ("bandwidth", {"rate": 200_000}),
    ]
    toggles = 0

    def toggle() -> None:
        nonlocal toggles
        # Wait for the hand-over so toxics really interrupt spliced flows.
        plane.wait_for(lambda: all(f.spliced for f in plane.flows("upstream")) and plane.conns)
        deadline = time.monotonic() + 20
        for i in range(40):
            if time.monotonic() > deadline:
                break
            kind, attributes = toxics[i % len(toxics)]
            stream = ("upstream", "downstream")[i % 2]
            toxic = plane.client.add_toxic("p", kind, stream=stream, attributes=attributes)  # type: ignore[arg-type]
            time.sleep(0.02)
            plane.client.remove_toxic("p", toxic.name)
            time.sleep(0.02)
            toggles += 1

    echo_transfer(address, 96 * MIB, during=toggle)
    plane.all_closed()
    assert toggles >= 10
    total = 96 * MIB
    for stream in ("upstream", "downstream"):
        spliced = plane.spliced(stream)
        assert 0 < spliced < total, (stream, spliced)  # both paths carried bytes
    assert plane.counters() == {"upstream": [total, total], "downstream": [total, total]}


@pytest.mark.slow
def test_toxic_added_with_a_full_pipe_keeps_order(plane: Plane) -> None:
    """The pump holds bytes it could not write; a toxic arrives; nothing is lost or reordered."""
    release = threading.Event()
    result: list[tuple[int, str]] = []

    def slow_reader(conn: socket.socket) -> None:
        release.wait(60)
        result.append(read_all(conn))

    upstream = Upstream(slow_reader, rcvbuf=64 * 1024)
    address = plane.proxy(upstream.address)
    sent_hash = hashlib.sha256()
    sent = 0
    with socket.create_connection(address, timeout=30) as sock:
        # Fill every buffer on the way: the client blocks once the pump's pipe is full too.
        sock.setblocking(False)
        blocks = pattern_stream(256 * MIB)
        pending = next(blocks)
        stalled_since = time.monotonic()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and time.monotonic() - stalled_since < 0.5:
            try:
                n = sock.send(pending)
            except BlockingIOError:
                time.sleep(0.01)
                continue
            sent_hash.update(pending[:n])
            sent += n
            pending = pending[n:] or next(blocks)
            stalled_since = time.monotonic()
        assert sent < 200 * MIB, "the proxy kept reading although nothing was written"
        flow = plane.flows("upstream")[0]
        held = plane.on_loop(lambda: flow._pump._pending if flow._pump else 0)
        assert 0 < held <= splice.PIPE_SIZE, held

        plane.client.add_toxic("p", "noop", stream="upstream")
        assert plane.on_loop(lambda: flow._pump is None)
        release.set()
        sock.setblocking(True)
        sock.settimeout(30)
        tail = b"the end" * 1000
        sock.sendall(pending + tail)
        sent_hash.update(pending + tail)
        sent += len(pending) + len(tail)
        sock.shutdown(socket.SHUT_WR)
        upstream.join()
    assert not upstream.errors, upstream.errors
    assert result == [(sent, sent_hash.hexdigest())]
    plane.all_closed()
    counters = plane.counters()["upstream"]
    assert counters == [sent, sent]


@pytest.mark.slow
def test_reset_peer_added_to_spliced_connection_resets_it(
    plane: Plane, echo_server: EchoServer
) -> None:
    address = plane.proxy(echo_server.address)
    with socket.create_connection(address, timeout=10) as sock:
        block = plane.echo_until_spliced(sock, "downstream")
        plane.client.add_toxic("p", "reset_peer", stream="downstream", attributes={"timeout": 0})
        outcome = "open"
        deadline = time.monotonic() + 10
        try:
            while time.monotonic() < deadline:
                sock.sendall(block)
                if not sock.recv(MIB):
                    outcome = "eof"
                    break
        except (ConnectionResetError, BrokenPipeError):
            outcome = "reset"
        assert outcome == "reset"
    plane.all_closed()


# -- half-close, close, reset --------------------------------------------------------------------


@pytest.mark.slow
def test_half_close_passes_through_spliced_directions(plane: Plane) -> None:
    """Client FIN reaches the upstream after all its bytes; the upstream still answers in bulk."""
    answer_size = 24 * MIB
    answer_blocks = list(pattern_stream(answer_size))
    answer_hash = hashlib.sha256(b"".join(answer_blocks)).hexdigest()
    received: list[tuple[int, str]] = []

    def sink_then_answer(conn: socket.socket) -> None:
        received.append(read_all(conn))  # returns at the client's FIN
        for block in answer_blocks:
            conn.sendall(block)

    upstream = Upstream(sink_then_answer)
    address = plane.proxy(upstream.address)
    sent_hash = hashlib.sha256()
    with socket.create_connection(address, timeout=30) as sock:
        for block in pattern_stream(24 * MIB):
            sent_hash.update(block)
            sock.sendall(block)
        sock.shutdown(socket.SHUT_WR)
        got = read_all(sock)
    upstream.join()
    assert not upstream.errors, upstream.errors
    assert received == [(24 * MIB, sent_hash.hexdigest())]
    assert got == (answer_size, answer_hash)
    plane.all_closed()
    assert plane.spliced("upstream") > 0
    assert plane.spliced("downstream") > 0


@pytest.mark.slow
def test_upstream_reset_while_spliced_closes_client_and_frees_descriptors(
    plane: Plane,
) -> None:
    upstream_ready = threading.Event()

    def read_then_reset(conn: socket.socket) -> None:
        buffer = bytearray(MIB)
        got = 0
        while got < 8 * MIB:
            n = conn.recv_into(buffer)
            if not n:
                return
            got += n
        upstream_ready.wait(30)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    upstream = Upstream(read_then_reset)
    address = plane.proxy(upstream.address)
    time.sleep(0.1)
    baseline = open_fds()
    with socket.create_connection(address, timeout=10) as sock:
        for block in pattern_stream(8 * MIB):
            sock.sendall(block)
        plane.wait_for(lambda: plane.flows("upstream")[0].spliced > 0)
        assert open_fds() > baseline  # the sockets (and the pump's pipe while it holds data)
        upstream_ready.set()
        upstream.join()
        outcome = "open"
        deadline = time.monotonic() + 10
        try:
            while time.monotonic() < deadline:
                sock.sendall(b"x" * 65536)
                sock.settimeout(0.05)
                try:
                    if not sock.recv(65536):
                        outcome = "eof"
                        break
                except TimeoutError:
                    pass
                finally:
                    sock.settimeout(10)
        except (ConnectionResetError, BrokenPipeError):
            outcome = "reset"
        assert outcome in ("eof", "reset")
    plane.all_closed()
    # the baseline counted the upstream listener, closed by join(); emptied pipes are kept
    expected = baseline - 1 + 2 * kept_pipes(plane)
    fds = fds_settle(expected)
    assert fds <= expected, f"descriptors: {fds} vs {expected}"


@pytest.mark.slow
def test_disabling_the_proxy_closes_spliced_connections(
    plane: Plane, echo_server: EchoServer
) -> None:
    address = plane.proxy(echo_server.address)
    with socket.create_connection(address, timeout=10) as sock:
        plane.echo_until_spliced(sock, "upstream")
        plane.client.disable("p")
        sock.settimeout(10)
        leftover = b""
        try:
            while chunk := sock.recv(MIB):
                leftover += chunk
            outcome = "eof"
        except ConnectionResetError:
            outcome = "reset"
        assert outcome == "eof"
        assert leftover == b""
    plane.all_closed()
