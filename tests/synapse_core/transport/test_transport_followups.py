"""Follow-ups of the transport review: a stopped mDNS peer stays gone; stale pooled connections.

Real sockets on 127.0.0.1 and real zeroconf. The mDNS tests need loopback multicast (they skip
with the reason otherwise) and browse their own random service type.
"""

from __future__ import annotations

import asyncio
import secrets
import select
import socket
import struct
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest
import pytest_asyncio
from zeroconf import IPVersion
from zeroconf.asyncio import AsyncZeroconf

from synapse_core import CircuitBreakerConfig
from synapse_core.transport import (
    DeliveryError,
    FrameKind,
    MdnsConfig,
    MdnsTransport,
    Message,
    MessageAuthenticator,
    PeerUnknownError,
    TcpTransport,
    encode_frame,
)

T = TypeVar("T")
Factory = Callable[..., Awaitable[MdnsTransport]]
KEY = secrets.token_bytes(32)
LENIENT = CircuitBreakerConfig(failure_threshold=50, minimum_requests=50)


def _wait_readable(fd: int, timeout: float) -> bool:
    """Block (on purpose: the event loop must not run) until *fd* is readable or *timeout*."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(int(timeout * 1000)))


async def _eventually(check: Callable[[], bool], within: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not check():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


# ---------------------------------------------------------------- 1. a stopped peer stays gone


@pytest.fixture
def config(mdns_config: MdnsConfig) -> MdnsConfig:
    return mdns_config.replace(peer_timeout=60.0)  # expiry must play no part in these tests


@pytest_asyncio.fixture
async def own_zeroconf(loopback_multicast: None) -> AsyncIterator[AsyncZeroconf]:
    """A zeroconf that outlives the transport using it, as one shared with other services."""
    zc = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    try:
        yield zc
    finally:
        await zc.async_close()


@pytest.mark.asyncio
async def test_a_stopped_peer_is_not_brought_back_by_an_answer_it_queued_before_its_goodbye(
    start_peer: Factory, config: MdnsConfig, own_zeroconf: AsyncZeroconf
) -> None:
    a, b = await asyncio.gather(
        start_peer("a", config=config), start_peer("b", config=config, zeroconf=own_zeroconf)
    )
    await a.wait_for_peer("b")
    await a.send_message("b", Message("b", "a", b"hello"))
    zc = own_zeroconf.zeroconf

    def answer_queued() -> bool:
        return bool(zc.out_queue.queue or zc.out_delay_queue.queue)

    a.query()  # b answers after a delay of its zeroconf's choosing...
    await _eventually(answer_queued, within=2.0)
    loop = asyncio.get_running_loop()
    stopped_at = loop.time()
    await b.stop()  # ...which is after its goodbye
    await a.wait_for_peer_removed("b", timeout=2.0)
    while loop.time() < stopped_at + 3.0:  # the stale answer is sent within 1.2 s
        assert "b" not in a.discovered_peers, "the stale answer brought b back"
        await asyncio.sleep(0.05)
    assert not answer_queued()  # it was sent, and ignored

    failures = a.stats().send_failures
    with pytest.raises(PeerUnknownError):
        await a.send_message("b", Message("b", "a", b"anyone?"))
    assert a.stats().send_failures == failures  # no dead address was tried
    assert "b" not in a.circuit_breakers


@pytest.mark.asyncio
async def test_a_peer_that_restarts_right_after_its_goodbye_is_found_again(
    start_peer: Factory, config: MdnsConfig
) -> None:
    a, b = await asyncio.gather(start_peer("a", config=config), start_peer("b", config=config))
    await a.wait_for_peer("b")
    await b.stop()
    await a.wait_for_peer_removed("b", timeout=2.0)
    again = await start_peer("b", config=config)  # announces during a's grace for b
    info = await a.wait_for_peer("b", timeout=6.0)
    assert info.port == again.address[1]
    await a.send_message("b", Message("b", "a", b"welcome back"))
    assert [m.content for m in await again.receive_messages()] == [b"welcome back"]


# ---------------------------------------------------------------- 2. stale pooled connections


class _LoopThread:
    """An event loop on another thread: its transport acts while the test's loop is blocked."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="peer", daemon=True)
        self._thread.start()

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        async with asyncio.timeout(10):
            return await asyncio.wrap_future(future)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@pytest_asyncio.fixture
async def idle_closing_peer() -> AsyncIterator[tuple[TcpTransport, _LoopThread]]:
    """``b`` (authenticated, ``idle_timeout=0.5``) running on its own loop and thread."""
    thread = _LoopThread()

    async def make() -> TcpTransport:
        b = TcpTransport(
            node_id="b", idle_timeout=0.5, authenticator=MessageAuthenticator(KEY, max_age=30)
        )
        await b.start()
        return b

    b = await thread.run(make())
    try:
        yield b, thread
    finally:
        await thread.run(b.stop())
        thread.close()


@pytest.mark.asyncio
async def test_a_send_on_a_connection_the_peer_closed_while_idle_goes_on_a_new_one(
    idle_closing_peer: tuple[TcpTransport, _LoopThread],
) -> None:
    b, thread = idle_closing_peer
    async with TcpTransport(
        node_id="a",
        breaker_config=LENIENT,
        connect_timeout=2.0,
        send_timeout=2.0,
        authenticator=MessageAuthenticator(KEY, max_age=30),
    ) as a:
        a.add_peer("b", *b.address)
        await a.send_message("b", Message("b", "a", b"first"))
        conn = a._conns[b.address]
        sock = conn._writer.get_extra_info("socket")
        # b closes the idle connection on its own loop; ours is blocked meanwhile, so a's
        # reader cannot see the end of stream before the next send writes.
        assert _wait_readable(sock.fileno(), timeout=5.0)
        assert not conn.closed

        receipt = await a.send_message("b", Message("b", "a", b"second"))

        assert receipt.target == "b"
        received = await thread.run(b.receive_messages())
        assert [m.content for m in received] == [b"first", b"second"]  # once each
        assert a.stats().connections_opened == 2
        assert b.stats().auth_failures == 0  # the resend was no replay
        stats = a.get_circuit_stats("b")
        assert (stats.success_count, stats.failure_count, stats.total_requests) == (2, 0, 2)


class _ResettingPeer:
    """A frame-speaking peer on a thread: resets its first connection after reading one frame
    (never answering it), then acknowledges every message on its second connection."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(5.0)
        self.address: tuple[str, int] = self._listener.getsockname()[:2]
        self.received: list[Message] = []
        self.got_first = threading.Event()
        self.reset_now = threading.Event()
        self.reset_done = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, name="resetting-peer", daemon=True)
        self._thread.start()

    @staticmethod
    def _read_exactly(sock: socket.socket, size: int) -> bytes | None:
        data = b""
        while len(data) < size:
            chunk = sock.recv(size - len(data))
            if not chunk:
                return None
            data += chunk
        return data

    def _read_frame(self, sock: socket.socket) -> tuple[int, int, bytes] | None:
        header = self._read_exactly(sock, 4)
        if header is None:
            return None
        rest = self._read_exactly(sock, struct.unpack(">I", header)[0])
        if rest is None:
            return None
        kind, seq = struct.unpack(">BI", rest[:5])
        return kind, seq, rest[5:]

    def _serve(self) -> None:
        try:
            first, _ = self._listener.accept()
            with first:
                first.settimeout(5.0)
                frame = self._read_frame(first)
                assert frame is not None
                assert frame[0] == FrameKind.MESSAGE
                self.received.append(Message.from_bytes(frame[2]))
                self.got_first.set()
                assert self.reset_now.wait(5.0)
                first.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.reset_done.set()
            second, _ = self._listener.accept()
            with second:
                second.settimeout(5.0)
                while (frame := self._read_frame(second)) is not None:
                    kind, seq, body = frame
                    assert kind == FrameKind.MESSAGE
                    self.received.append(Message.from_bytes(body))
                    second.sendall(encode_frame(FrameKind.ACK, seq))
        except BaseException as exc:  # reported by close()
            self.error = exc
            self.got_first.set()
            self.reset_done.set()

    def close(self) -> None:
        self.reset_now.set()
        self._listener.close()
        self._thread.join(10)


@pytest.fixture
def resetting_peer() -> Iterator[_ResettingPeer]:
    peer = _ResettingPeer()
    try:
        yield peer
    finally:
        peer.close()
    if peer.error is not None and not isinstance(peer.error, (OSError, TimeoutError)):
        raise peer.error


@pytest.mark.asyncio
async def test_a_write_refused_at_once_on_a_reset_connection_is_sent_again_once(
    resetting_peer: _ResettingPeer,
) -> None:
    peer = resetting_peer
    async with TcpTransport(
        node_id="a", breaker_config=LENIENT, connect_timeout=2.0, send_timeout=2.0
    ) as a:
        a.add_peer("b", *peer.address)
        first = asyncio.create_task(a.send_message("b", Message("b", "a", b"first")))
        try:
            assert await asyncio.to_thread(peer.got_first.wait, 5.0)
            conn = a._conns[peer.address]
            sock = conn._writer.get_extra_info("socket")
            peer.reset_now.set()
            # Blocking waits: a's reader must not learn of the reset before the next send.
            assert peer.reset_done.wait(5.0)
            assert _wait_readable(sock.fileno(), timeout=5.0)
            assert not conn.closed

            second = Message("b", "a", b"second")
            receipt = await a.send_message("b", second)  # "first" still waits on that connection

            assert receipt.message_id == second.message_id
            with pytest.raises(DeliveryError):
                await first  # it left this host before the reset: not sent again
        finally:
            first.cancel()
            await asyncio.gather(first, return_exceptions=True)
        assert [m.content for m in peer.received] == [b"first", b"second"]
        assert a.stats().connections_opened == 2
        stats = a.get_circuit_stats("b")
        assert (stats.success_count, stats.failure_count, stats.total_requests) == (1, 1, 2)
