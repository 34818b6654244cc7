"""Each toxic's effect, measured on real loopback sockets through the embedded server.

Timing tolerances: lower bounds are tight (a toxic must never be *faster* than configured, minus
5 ms of timer granularity); upper bounds are generous (+1 s or more) because a 2-core CI box can
stall any thread for hundreds of milliseconds.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import pytest
from chaos_helpers import connect, recv_exactly, recv_until_closed, round_trip, timed_echo

from chaos import ToxiproxyClient

SLACK = 0.005  # timer granularity allowed below a configured delay
LATE = 1.5  # generous upper bound for "about that long" on a noisy box


class EchoProxy:
    """The ``echo`` proxy in front of the echo server: toxics on it, connections through it."""

    def __init__(self, client: ToxiproxyClient, address: tuple[str, int]) -> None:
        self.client = client
        self.address = address

    def add(
        self, toxic_type: str, stream: str = "downstream", toxicity: float = 1.0, **attrs: int
    ) -> None:
        self.client.add_toxic(
            "echo",
            toxic_type,
            stream=stream,  # type: ignore[arg-type]
            toxicity=toxicity,
            attributes=attrs,
        )

    def update(self, toxic: str, **attrs: int) -> None:
        self.client.update_toxic("echo", toxic, attributes=attrs)

    def remove(self, toxic: str) -> None:
        self.client.remove_toxic("echo", toxic)

    def connect(self) -> contextlib.AbstractContextManager[socket.socket]:
        return connect(self.address)


@pytest.fixture
def echo(client: ToxiproxyClient, echo_proxy: tuple[str, int]) -> EchoProxy:
    return EchoProxy(client, echo_proxy)


class TestLatency:
    @pytest.mark.parametrize("stream", ["downstream", "upstream"])
    def test_round_trip_is_delayed(self, echo: EchoProxy, stream: str) -> None:
        with echo.connect() as sock:
            assert round_trip(sock) < 0.5
            echo.add("latency", stream, latency=100)
            elapsed = round_trip(sock)
        assert 0.100 - SLACK <= elapsed < 0.100 + LATE

    def test_jitter_spreads_delays(self, echo: EchoProxy) -> None:
        echo.add("latency", latency=40, jitter=30)
        with echo.connect() as sock:
            samples = [round_trip(sock) for _ in range(12)]
        assert min(samples) >= 0.010 - SLACK  # 40 - 30 ms
        assert max(samples) < 0.070 + LATE
        assert max(samples) - min(samples) > 0.005

    def test_chunks_pipeline(self, echo: EchoProxy) -> None:
        """Five chunks 30 ms apart under 200 ms latency arrive after ~320 ms, not ~1 s."""
        echo.add("latency", latency=200)
        with echo.connect() as sock:
            start = time.perf_counter()
            for i in range(5):
                sock.sendall(bytes([65 + i]))
                time.sleep(0.03)
            data = recv_exactly(sock, 5)
            elapsed = time.perf_counter() - start
        assert data == b"ABCDE"
        assert 0.320 - SLACK <= elapsed < 0.320 + LATE
        assert elapsed < 0.9  # sequential delays would take >= 1.0 s

    def test_update_applies_to_open_connection(self, echo: EchoProxy) -> None:
        echo.add("latency", latency=20)
        with echo.connect() as sock:
            assert round_trip(sock) >= 0.020 - SLACK
            echo.update("latency_downstream", latency=250)
            assert round_trip(sock) >= 0.250 - SLACK

    def test_removal_releases_held_data_at_once(self, echo: EchoProxy) -> None:
        echo.add("latency", latency=5000)
        with echo.connect() as sock:
            start = time.perf_counter()
            sock.sendall(b"held")
            time.sleep(0.1)
            echo.remove("latency_downstream")
            assert recv_exactly(sock, 4) == b"held"
            assert time.perf_counter() - start < 2.5  # far below the 5 s latency


class TestToxicity:
    def test_zero_toxicity_never_applies(self, echo: EchoProxy) -> None:
        echo.add("latency", toxicity=0.0, latency=500)
        with echo.connect() as sock:
            assert round_trip(sock) < 0.4

    def test_half_toxicity_rolls_per_connection(self, echo: EchoProxy) -> None:
        echo.add("latency", toxicity=0.5, latency=60)
        delayed = 0
        for _ in range(24):
            with echo.connect() as sock:
                delayed += round_trip(sock) >= 0.060 - SLACK
        # P(outside 3..21 of 24 at p=0.5) < 1e-4, and the server seed makes it reproducible.
        assert 3 <= delayed <= 21


class TestBandwidth:
    def test_rate_limits_throughput(self, echo: EchoProxy) -> None:
        echo.add("bandwidth", rate=100)  # 100 KB/s = 100,000 B/s
        payload = b"b" * 50_000
        with echo.connect() as sock:
            echoed, elapsed = timed_echo(sock, payload)
        assert echoed == payload
        assert 0.5 - SLACK - 0.1 <= elapsed < 0.5 + LATE  # first 100 ms slice may go at once

    def test_rate_zero_holds_data_without_spinning(self, echo: EchoProxy) -> None:
        echo.add("bandwidth", rate=0)
        with echo.connect() as sock:
            sock.sendall(b"wait")
            cpu_before = time.process_time()
            sock.settimeout(0.5)
            with pytest.raises(TimeoutError):
                sock.recv(10)
            cpu_used = time.process_time() - cpu_before
            assert cpu_used < 0.25, f"proxy burned {cpu_used:.2f} s CPU in 0.5 s holding data"
            echo.update("bandwidth_downstream", rate=1000)
            assert recv_exactly(sock, 4) == b"wait"


class TestSlowClose:
    def test_close_is_delayed(self, echo: EchoProxy) -> None:
        echo.add("slow_close", delay=300)
        with echo.connect() as sock:
            sock.sendall(b"bye")
            assert recv_exactly(sock, 3) == b"bye"
            start = time.perf_counter()
            sock.shutdown(socket.SHUT_WR)
            data, how = recv_until_closed(sock)
            elapsed = time.perf_counter() - start
        assert (data, how) == (b"", "eof")
        assert 0.300 - SLACK <= elapsed < 0.300 + LATE


class TestTimeout:
    def test_drops_data_and_closes_after_timeout(self, echo: EchoProxy) -> None:
        with echo.connect() as sock:
            start = time.perf_counter()
            echo.add("timeout", timeout=300)
            sock.sendall(b"lost")
            data, how = recv_until_closed(sock)
            elapsed = time.perf_counter() - start
        assert (data, how) == (b"", "eof")
        assert 0.300 - SLACK <= elapsed < 0.300 + LATE

    def test_zero_never_closes_and_removal_closes(self, echo: EchoProxy) -> None:
        echo.add("timeout", "upstream", timeout=0)
        with echo.connect() as sock:
            sock.sendall(b"lost")
            data, how = recv_until_closed(sock, timeout=0.4)
            assert (data, how) == (b"", "timeout")
            echo.remove("timeout_upstream")
            data, how = recv_until_closed(sock, timeout=5)
            assert (data, how) == (b"", "eof")


class TestResetPeer:
    def test_resets_after_timeout(self, echo: EchoProxy) -> None:
        echo.add("reset_peer", "upstream", timeout=200)
        with echo.connect() as sock:
            start = time.perf_counter()
            sock.sendall(b"trigger")
            data, how = recv_until_closed(sock)
            elapsed = time.perf_counter() - start
        assert how == "reset"
        assert data == b""
        assert 0.200 - SLACK <= elapsed < 0.200 + LATE

    def test_zero_timeout_resets_on_first_data(self, echo: EchoProxy) -> None:
        echo.add("reset_peer", "upstream", timeout=0)
        with echo.connect() as sock:
            sock.sendall(b"trigger")
            assert recv_until_closed(sock)[1] == "reset"

    @pytest.mark.parametrize("change", ["remove", "update to toxicity 0"])
    def test_a_change_after_it_swallowed_data_resets_instead_of_leaving_a_gap(
        self, echo: EchoProxy, change: str
    ) -> None:
        """The toxic drops what it reads while its countdown runs. Removing it (or an update
        whose toxicity roll fails) cancelled the countdown and the stream went on without the
        dropped bytes: ``AAAA`` sent, toxic removed, ``BBBB`` echoed, ``AAAA`` silently lost.
        A stream with a hole in it is reset, never continued."""
        echo.add("reset_peer", "upstream", timeout=60_000)
        with echo.connect() as sock:
            sock.sendall(b"AAAA")
            assert recv_until_closed(sock, timeout=0.3) == (b"", "timeout")  # swallowed
            if change == "remove":
                echo.remove("reset_peer_upstream")
            else:
                echo.client.update_toxic("echo", "reset_peer_upstream", toxicity=0.0)
            try:
                sock.sendall(b"BBBB")
            except ConnectionError:  # the reset arrived first: the send reports it
                outcome = (b"", "reset")
            else:
                outcome = recv_until_closed(sock, timeout=5)
            assert outcome == (b"", "reset")


class TestSlicer:
    def test_slices_and_spaces_data(self, echo: EchoProxy) -> None:
        echo.add("slicer", average_size=10, size_variation=4, delay=20_000)  # 20 ms apart
        payload = bytes(range(100))
        with echo.connect() as sock:
            start = time.perf_counter()
            sock.sendall(payload)
            sizes = []
            received = b""
            sock.settimeout(10)
            while len(received) < len(payload):
                chunk = sock.recv(1000)
                assert chunk
                sizes.append(len(chunk))
                received += chunk
            elapsed = time.perf_counter() - start
        assert received == payload
        # at least 100/14 slices, so at least 7 gaps of 20 ms
        assert elapsed >= 7 * 0.020 - SLACK
        assert len(sizes) >= 3  # a busy client may read two slices at once, never all


class TestLimitData:
    def test_passes_limit_then_closes(self, echo: EchoProxy) -> None:
        echo.add("limit_data", bytes=100)
        with echo.connect() as sock:
            sock.sendall(b"x" * 60)
            assert recv_exactly(sock, 60) == b"x" * 60
            sock.sendall(b"y" * 60)
            data, how = recv_until_closed(sock)
        assert data == b"y" * 40
        assert how == "eof"


def test_a_thousand_toxics_pass_data_intact(echo: EchoProxy) -> None:
    """Each toxic in the chain used to add Python frames to one recursive call: about 340 toxics
    on one stream raised RecursionError in the direction's task and the connection hung
    silently (Toxiproxy takes 3,000). The chain is walked without recursion now: 500 toxics on
    each stream, slicing and delaying, still deliver every byte in order."""
    for i in range(1000):
        kind = ("noop", "slicer", "latency")[i % 3]
        attrs = {"average_size": 3} if kind == "slicer" else {}
        stream = "upstream" if i % 2 else "downstream"
        echo.client.add_toxic("echo", kind, name=f"t{i}", stream=stream, attributes=attrs)  # type: ignore[arg-type]
    payload = bytes(range(64))
    with echo.connect() as sock:
        sock.sendall(payload)
        assert recv_exactly(sock, len(payload), timeout=10) == payload


def test_noop_changes_nothing(echo: EchoProxy) -> None:
    echo.add("noop")
    with echo.connect() as sock:
        sock.sendall(b"same")
        assert recv_exactly(sock, 4) == b"same"


def test_upstream_refusing_closes_client(client: ToxiproxyClient) -> None:
    spare = socket.socket()
    spare.bind(("127.0.0.1", 0))
    port = spare.getsockname()[1]
    spare.close()  # nothing listens there now
    info = client.create_proxy("dead", upstream=f"127.0.0.1:{port}")
    with connect((info.listen_host, info.listen_port)) as sock:
        assert recv_until_closed(sock)[1] in ("eof", "reset")


def test_control_api_stays_fast_under_heavy_traffic(echo: EchoProxy) -> None:
    """Toxic changes answer quickly while a connection pushes data through slow toxics."""
    echo.add("latency", latency=50)
    echo.add("bandwidth", "upstream", rate=2000)
    stop = threading.Event()
    errors: list[BaseException] = []

    def pump() -> None:
        try:
            with echo.connect() as sock:
                sock.settimeout(10)
                block = b"z" * 65536
                deadline = time.monotonic() + 10
                while not stop.is_set() and time.monotonic() < deadline:
                    sock.sendall(block)
                    sock.recv(1 << 20)
        except OSError as exc:  # closed under us by the removal below: fine
            if not stop.is_set():
                errors.append(exc)

    thread = threading.Thread(target=pump)
    thread.start()
    try:
        time.sleep(0.3)
        slowest = 0.0
        for attributes in ({"latency": 10}, {"latency": 80}, {"latency": 0}):
            start = time.perf_counter()
            echo.update("latency_downstream", **attributes)
            slowest = max(slowest, time.perf_counter() - start)
        start = time.perf_counter()
        echo.remove("bandwidth_upstream")
        echo.remove("latency_downstream")
        slowest = max(slowest, time.perf_counter() - start)
    finally:
        stop.set()
        thread.join(15)
    assert not errors, errors
    assert slowest < 1.0, f"a toxic change took {slowest:.3f} s under traffic"
