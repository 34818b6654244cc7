"""The server at the edge of its resources: open-file limits, control connections, idle clients.

A server under a lowered open-file limit runs in a subprocess (``resource.setrlimit`` before it
starts), so the limit binds the server and not the test. Every socket has a timeout; every loop
is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import select
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import pytest
from chaos_helpers import EchoServer, LoopThread, limited_server, running_plane, wait_until

from chaos import EmbeddedToxiproxy
from chaos.cli import build_parser, limits_from_args
from chaos.cli import main as cli_main
from chaos.server import ServerLimits

_HARD = resource.getrlimit(resource.RLIMIT_NOFILE)[1]

# The tests open up to ~1,300 sockets of their own (clients and the echo server's side).
needs_descriptors = pytest.mark.skipif(
    _HARD != resource.RLIM_INFINITY and _HARD < 4096,
    reason=f"the hard open-file limit ({_HARD}) is too low for this test's own sockets",
)


class _Crowd:
    """Many concurrent connections through a proxy, each echoing one payload and then staying
    open until :meth:`release`, so the test can look at the server while they are all open."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.answered = 0
        self.all_answered = asyncio.Event()
        self.hold = asyncio.Event()

    def _answer(self) -> None:
        self.answered += 1
        if self.answered == self.count:
            self.all_answered.set()

    async def exchange(self, address: tuple[str, int], payload: bytes) -> str:
        """``"ok"``, ``"refused"`` (reset or closed by the proxy), ``"hung"`` or ``"corrupt"``."""
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(*address), 10)
        except (TimeoutError, OSError):
            self._answer()
            return "refused"
        try:
            outcome = "ok"
            try:
                writer.write(payload)
                echoed = await asyncio.wait_for(reader.readexactly(len(payload)), 15)
                if echoed != payload:
                    outcome = "corrupt"
            except TimeoutError:  # before OSError, of which it is a subclass
                outcome = "hung"
            except (OSError, asyncio.IncompleteReadError):
                outcome = "refused"
            self._answer()
            if outcome == "ok":
                await self.hold.wait()
            return outcome
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def crowd(
    address: tuple[str, int], count: int, size: int, while_open: Callable[[], None] | None = None
) -> list[str]:
    """*count* concurrent echoes of *size* bytes; *while_open()* runs (in a thread) once every
    one has its answer, while the connections that got one are still open."""
    state = _Crowd(count)
    tasks = [
        asyncio.ensure_future(state.exchange(address, os.urandom(16) * (size // 16)))
        for _ in range(count)
    ]
    try:
        await asyncio.wait_for(state.all_answered.wait(), 60)
        if while_open is not None:
            await asyncio.to_thread(while_open)
    finally:
        state.hold.set()
    return list(await asyncio.wait_for(asyncio.gather(*tasks), 60))


def _log_lines_about_descriptors(log: str) -> int:
    return sum(
        1 for line in log.splitlines() if "Too many open files" in line or "descriptor" in line
    )


@pytest.mark.slow
@needs_descriptors
def test_a_low_soft_limit_is_raised_and_600_bulk_connections_all_pass(
    tmp_path: Path, echo_server: EchoServer
) -> None:
    """Under a 1024 soft open-file limit (hard limit higher) 100 of 600 concurrent connections
    were reset and every failed accept logged a traceback. The server raises its soft limit to
    the hard one at start, as Go programs (Toxiproxy) do, and holds 2 descriptors per idle
    connection (the splice path's pipes are pooled and its duplicate descriptors are gone;
    it held up to 10)."""
    with limited_server(tmp_path, soft=1024, hard=_HARD) as server:
        assert server.soft_limit() == _HARD
        info = server.client.create_proxy("p", upstream=echo_server.address)
        idle_fds: list[int] = []
        outcomes = asyncio.run(
            crowd(
                (info.listen_host, info.listen_port),
                600,
                256 * 1024,  # bulk: each direction hands over to splice
                lambda: idle_fds.append(server.fds()),
            )
        )
        assert outcomes.count("ok") == 600, {o: outcomes.count(o) for o in set(outcomes)}
        assert idle_fds[0] <= 2 * 600 + 64, f"{idle_fds[0]} descriptors for 600 connections"
        assert "Traceback" not in server.log()


@pytest.mark.slow
@needs_descriptors
def test_out_of_descriptors_connections_are_refused_cleanly_and_the_api_answers(
    tmp_path: Path, echo_server: EchoServer
) -> None:
    """With the hard limit at 256, 400 concurrent connections cannot all be served. Connections
    beyond it hung in the listen queue, every failed accept logged a traceback (98,000 of them,
    40 MB), and the control API could not accept either. Now they are refused at once (reset),
    the log says so once per interval, the API keeps a reserve of descriptors and answers, and
    the proxy serves again as soon as descriptors are free."""
    with limited_server(tmp_path, soft=256, hard=256) as server:
        info = server.client.create_proxy("p", upstream=echo_server.address)
        address = (info.listen_host, info.listen_port)
        baseline = server.fds()
        api_answers: list[float] = []

        def use_the_api() -> None:
            for _ in range(20):
                start = time.monotonic()
                assert "p" in server.client.proxies()
                server.client.metrics()
                api_answers.append(time.monotonic() - start)

        outcomes = asyncio.run(crowd(address, 400, 64, use_the_api))
        counts = {o: outcomes.count(o) for o in set(outcomes)}
        assert set(counts) == {"ok", "refused"}, counts
        # Two sockets per connection: at most (256 - reserve - the server's own) / 2, ~110,
        # fewer while some upstream connects are under way; served is what matters.
        assert counts["ok"] >= 50, counts
        assert len(api_answers) == 20
        log = server.log()
        assert _log_lines_about_descriptors(log) <= 4, log[-3000:]
        assert "Traceback" not in log
        # Everything closed: once the server has let the crowd's descriptors go (right after the
        # crowd it still holds ~250, closing each as it reads the EOF; a fresh crowd at that
        # moment was refused for lack of descriptors), the proxy serves new connections again.
        # Up to 8 empty pipes are kept for reuse.
        deadline = time.monotonic() + 10
        while server.fds() > baseline + 16 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.fds() <= baseline + 16, (server.fds(), baseline)
        outcomes = asyncio.run(crowd(address, 50, 64))
        assert outcomes == ["ok"] * 50


def _half_sent_requests(host: str, port: int, count: int) -> list[socket.socket]:
    """*count* connections to the API, each with a request line and no end of headers."""
    socks = []
    for _ in range(count):
        try:
            sock = socket.create_connection((host, port), timeout=2)
        except OSError:
            break
        socks.append(sock)
        with contextlib.suppress(OSError):
            sock.sendall(b"GET /proxies HTTP/1.1\r\nHost: x\r\n")
    return socks


@pytest.mark.slow
def test_half_sent_requests_do_not_lock_other_clients_out_of_the_api(tmp_path: Path) -> None:
    """Under a 256 descriptor limit, 300 connections that never finish their request headers
    held every descriptor, and no other client could reach the API again. Control connections
    are capped now (the oldest idle one makes room), and a request still answers at once."""
    with limited_server(tmp_path, soft=256, hard=256) as server:
        host, port = server.url.rsplit(":", 1)
        socks = _half_sent_requests(host, int(port), 300)
        try:
            start = time.monotonic()
            assert server.client.version() == "2.12.0"
            assert time.monotonic() - start < 2
        finally:
            for sock in socks:
                sock.close()


def test_a_request_that_never_finishes_its_headers_is_closed(loop_thread: LoopThread) -> None:
    """No header timeout existed: a half-sent request kept its connection (and descriptor)
    for as long as the client liked. Now it gets ``ServerLimits.header_timeout`` seconds (15 by
    default, as Toxiproxy's read timeout), a request body too, and an idle connection
    ``idle_timeout`` (60, as Toxiproxy)."""
    limits = ServerLimits(header_timeout=0.3, idle_timeout=0.6)
    with running_plane(loop_thread, limits=limits) as plane:
        host, port = plane.server.host, plane.server.port
        half_head = socket.create_connection((host, port), timeout=5)
        half_body = socket.create_connection((host, port), timeout=5)
        idle = socket.create_connection((host, port), timeout=5)
        try:
            start = time.monotonic()
            half_head.sendall(b"GET /proxies HTTP/1.1\r\nHost: x\r\n")
            half_body.sendall(
                b'POST /proxies HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"name"'
            )
            for sock in (half_head, half_body):
                assert _closed_by_server(sock), "a half-sent request kept its connection"
            assert time.monotonic() - start < 3
            assert _closed_by_server(idle), "an idle connection was never closed"
            assert time.monotonic() - start >= 0.6 - 0.05
        finally:
            for sock in (half_head, half_body, idle):
                sock.close()
        # a complete request on a fresh connection is answered as always
        assert plane.client.version() == "2.12.0"


def _closed_by_server(sock: socket.socket) -> bool:
    """True once the server closes *sock* (an answer before the close is fine), within 5 s."""
    sock.settimeout(5)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except OSError:
        return True
    return True


def _closed_now(sock: socket.socket) -> bool:
    """True if the server has closed *sock* (without waiting)."""
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def test_control_connections_beyond_the_cap_make_room_by_closing_idle_ones(
    loop_thread: LoopThread,
) -> None:
    """Twelve half-sent requests under a cap of eight: the four idle the longest are closed,
    and a real request still gets through (closing one more)."""
    limits = ServerLimits(max_control_connections=8)
    with running_plane(loop_thread, limits=limits) as plane:
        host, port = plane.server.host, plane.server.port
        socks = _half_sent_requests(host, port, 12)
        try:
            assert len(socks) == 12
            assert wait_until(lambda: sum(map(_closed_now, socks)) == 4, 5)
            assert plane.client.version() == "2.12.0"
            assert wait_until(lambda: sum(map(_closed_now, socks)) == 5, 5)
            time.sleep(0.1)
            assert sum(map(_closed_now, socks)) == 5
        finally:
            for sock in socks:
                sock.close()


# -- the limits from the command line and EmbeddedToxiproxy ---------------------------------------


def _half_sent_request_is_closed(url: str) -> float:
    """Seconds until the server at *url* closes a connection whose request head never ends."""
    host, _, port = url.removeprefix("http://").rpartition(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        start = time.monotonic()
        sock.sendall(b"GET /proxies HTTP/1.1\r\nHost: x\r\n")
        assert _closed_by_server(sock), "the half-sent request kept its connection"
        return time.monotonic() - start


@pytest.mark.parametrize("mode", ["thread", "subprocess"])
def test_embedded_toxiproxy_applies_its_limits(mode: Literal["thread", "subprocess"]) -> None:
    """ServerLimits could only be set on a ChaosServer: EmbeddedToxiproxy and ``synapse-chaos
    serve`` (its subprocess mode) ran with the defaults, a 15 s header timeout here."""
    limits = ServerLimits(header_timeout=0.3, max_control_connections=8)
    with EmbeddedToxiproxy(mode=mode, limits=limits) as toxiproxy:
        assert toxiproxy.limits == limits
        assert _half_sent_request_is_closed(toxiproxy.url) < 3
        assert toxiproxy.client().version() == "2.12.0"


def test_limits_become_serve_options_and_back() -> None:
    limits = ServerLimits(header_timeout=2.5, fd_reserve=40, connect_after_client_eof=0)
    options = limits.as_options()
    assert options == [
        "--header-timeout", "2.5", "--fd-reserve", "40", "--connect-after-client-eof", "0",
    ]  # fmt: skip
    args = build_parser().parse_args(["serve", *options])
    assert limits_from_args(args) == limits
    assert ServerLimits().as_options() == []


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--header-timeout", "0", "--header-timeout must be a finite number of seconds > 0"),
        ("--idle-timeout", "nan", "--idle-timeout must be a finite number of seconds > 0"),
        ("--close-timeout", "-1", "--close-timeout must be a finite number of seconds > 0"),
        ("--connect-after-client-eof", "inf", "must be a finite number of seconds >= 0"),
        ("--fd-reserve", "0", "--fd-reserve must be an integer >= 1, got 0"),
        ("--max-control-connections", "1.5", "invalid int value: '1.5'"),
    ],
)
def test_serve_refuses_bad_limits(
    option: str, value: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with contextlib.suppress(SystemExit):  # argparse's own type errors exit 2 themselves
        assert cli_main(["serve", "--port", "0", option, value]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_embedded_toxiproxy_refuses_limits_of_the_wrong_type() -> None:
    with pytest.raises(TypeError, match=r"limits must be a chaos\.server\.ServerLimits"):
        EmbeddedToxiproxy(limits={"header_timeout": 1})  # type: ignore[arg-type]
