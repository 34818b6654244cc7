"""Starting and stopping transports: concurrent starts and stops, the start window, iteration
that always ends, failed starts, and a stop that never waits on a peer that stopped reading.

TCP tests run on loopback with real sockets; the mDNS ones need loopback multicast (they skip
with the reason otherwise) and browse their own random service type. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from transport_support import ScriptedTransport, until
from zeroconf.asyncio import AsyncZeroconf

from synapse_core.transport import (
    DeliveryError,
    MdnsConfig,
    MdnsTransport,
    Message,
    TcpTransport,
    TransportClosedError,
)

Factory = Callable[..., Awaitable[MdnsTransport]]


def _serving_servers() -> set[asyncio.Server]:
    """Every listener of this process that still accepts connections."""
    return {o for o in gc.get_objects() if isinstance(o, asyncio.Server) and o.is_serving()}


def _open_zeroconfs() -> set[AsyncZeroconf]:
    return {o for o in gc.get_objects() if isinstance(o, AsyncZeroconf) and not o.zeroconf.done}


def _maintenance_tasks() -> list[asyncio.Task[Any]]:
    return [
        task
        for task in asyncio.all_tasks()
        if not task.done() and task.get_coro().__qualname__ == "MdnsTransport._maintain"  # type: ignore[union-attr]
    ]


async def _refused(port: int) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 2.0)
    except ConnectionRefusedError:
        return True
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()
    return False


class _GatedTcp(TcpTransport):
    """A TCP transport whose start, once listening, waits for ``gate`` (a slow start)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.gate = asyncio.Event()

    async def _start(self) -> None:
        await super()._start()
        await self.gate.wait()


class _GatedMdns(MdnsTransport):
    """An mDNS transport whose start, once announced, waits for ``gate``.

    It widens the window a real start has anyway: ``MdnsTransport._start`` announces and then
    waits for zeroconf to finish its announcements before ``start()`` returns.
    """

    def __init__(self, entity_id: str, config: MdnsConfig) -> None:
        super().__init__(entity_id, 0, config)
        self.gate = asyncio.Event()

    async def _start(self) -> None:
        await super()._start()
        await self.gate.wait()


# ---------------------------------------------------------------- start/stop concurrency


@pytest.mark.asyncio
async def test_concurrent_starts_share_one_start_and_stop_releases_its_listener() -> None:
    before = _serving_servers()
    transport = TcpTransport(node_id="t")
    try:
        await asyncio.wait_for(asyncio.gather(*(transport.start() for _ in range(3))), 5)
        assert transport.running
        opened = _serving_servers() - before
        assert len(opened) == 1  # one listener, not one per start() call
        port = transport.address[1]
        assert not await _refused(port)
    finally:
        await transport.stop()
    assert _serving_servers() - before == set()
    assert await _refused(port)


@pytest.mark.asyncio
async def test_stop_during_start_ends_stopped_at_every_step_of_the_start() -> None:
    before = _serving_servers()
    outcomes: set[str] = set()
    for steps in range(20):  # the stop lands before, inside and after the listener opens
        transport = TcpTransport(node_id=f"t{steps}")
        starting = asyncio.create_task(transport.start())
        for _ in range(steps):
            await asyncio.sleep(0)
        await asyncio.wait_for(transport.stop(), 5)
        try:
            await asyncio.wait_for(starting, 5)
            outcomes.add("started")
        except TransportClosedError:
            outcomes.add("aborted")
        assert not transport.running
        assert "stopped" in repr(transport)
        with pytest.raises(TransportClosedError, match="restarted"):
            await transport.start()
        await asyncio.sleep(0)  # a listener closed by a callback closes on the next turn
        assert _serving_servers() - before == set(), f"listener leaked with {steps} steps"
    assert outcomes == {"started", "aborted"}  # both sides of the race were exercised


@pytest.mark.asyncio
async def test_a_cancelled_start_stops_only_when_nobody_else_waits_for_it() -> None:
    shared = _GatedTcp(node_id="shared")
    try:
        first = asyncio.create_task(shared.start())
        second = asyncio.create_task(shared.start())
        await until(lambda: shared._bound is not None)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        assert "starting" in repr(shared)  # the start goes on for the other caller
        shared.gate.set()
        await asyncio.wait_for(second, 5)
        assert shared.running
    finally:
        shared.gate.set()
        await shared.stop()

    alone = _GatedTcp(node_id="alone")
    only = asyncio.create_task(alone.start())
    await until(lambda: alone._bound is not None)
    port = alone.address[1]
    only.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(only, 5)
    assert "stopped" in repr(alone)  # closed before the cancellation reached the caller
    assert await _refused(port)
    await alone.stop()


@pytest.mark.asyncio
async def test_stop_during_an_mdns_start_leaves_nothing_announced_or_running(
    start_peer: Factory, mdns_config: MdnsConfig
) -> None:
    observer = await start_peer("observer")
    before = _open_zeroconfs()
    peer = _GatedMdns("x", mdns_config)
    starting = asyncio.create_task(peer.start())
    try:
        await observer.wait_for_peer("x", timeout=5)  # announced, start() still running
        assert not peer.running
        port = peer.address[1]
        await asyncio.wait_for(peer.stop(), 5)
        with pytest.raises(TransportClosedError, match="stopped while starting"):
            await asyncio.wait_for(starting, 5)
    finally:
        peer.gate.set()
        starting.cancel()
        with contextlib.suppress(BaseException):
            await starting
        await peer.stop()
    assert "stopped" in repr(peer)
    assert _open_zeroconfs() - before == set()
    assert _maintenance_tasks() == [observer._maintenance]
    assert await _refused(port)
    await observer.wait_for_peer_removed("x", timeout=5)  # its goodbye went out


@pytest.mark.asyncio
async def test_concurrent_mdns_starts_open_one_zeroconf_and_stop_closes_it(
    loopback_multicast: None, mdns_config: MdnsConfig
) -> None:
    before = _open_zeroconfs()
    peer = MdnsTransport("x", 0, mdns_config)
    try:
        await asyncio.wait_for(asyncio.gather(peer.start(), peer.start()), 10)
        assert len(_open_zeroconfs() - before) == 1
        assert len(_maintenance_tasks()) == 1
    finally:
        await peer.stop()
    assert _open_zeroconfs() - before == set()
    assert _maintenance_tasks() == []


# ---------------------------------------------------------------- the start window


@pytest.mark.asyncio
async def test_a_peer_found_while_its_start_is_in_progress_accepts_messages(
    start_peer: Factory, mdns_config: MdnsConfig
) -> None:
    sender = await start_peer("sender")
    peer = _GatedMdns("late", mdns_config)
    starting = asyncio.create_task(peer.start())
    try:
        await sender.wait_for_peer("late", timeout=5)
        assert not peer.running  # found before its start() returned
        message = Message("late", "sender", b"early")
        receipt = await asyncio.wait_for(sender.send_message("late", message), 5)
        assert receipt.message_id == message.message_id
        assert await peer.receive_messages() == [message]
        peer.gate.set()
        await asyncio.wait_for(starting, 5)
        assert peer.running
    finally:
        peer.gate.set()
        await peer.stop()
        with contextlib.suppress(BaseException):
            await starting


# ---------------------------------------------------------------- iteration always ends


@pytest.mark.asyncio
async def test_iteration_ends_after_stopping_a_transport_never_started() -> None:
    transport = TcpTransport(node_id="idle")
    await transport.stop()
    assert await asyncio.wait_for(anext(aiter(transport), None), 2) is None


class _CountingStops(TcpTransport):
    stops = 0

    async def _stop(self) -> None:
        type(self).stops += 1
        await super()._stop()


@pytest.mark.asyncio
async def test_stopping_a_never_started_transport_twice_closes_nothing() -> None:
    transport = _CountingStops(node_id="idle")
    await transport.stop()
    await transport.stop()
    assert _CountingStops.stops == 0


@pytest.mark.asyncio
async def test_iteration_ends_after_a_failed_start() -> None:
    async with TcpTransport(node_id="holder") as holder:
        transport = TcpTransport("127.0.0.1", holder.address[1], node_id="late")
        reader = asyncio.create_task(anext(aiter(transport), None))
        with pytest.raises(OSError, match="in use"):
            await transport.start()
        assert await asyncio.wait_for(reader, 2) is None
        await transport.stop()
        assert [m async for m in transport] == []


# ---------------------------------------------------------------- stopping while others wait


@pytest.mark.asyncio
async def test_stop_while_waiting_for_a_peer_raises_transport_closed(
    start_peer: Factory,
) -> None:
    peer = await start_peer("waiter")
    await start_peer("other")
    await peer.wait_for_peer("other", timeout=5)
    found = asyncio.create_task(peer.wait_for_peer("nobody", timeout=30))
    removed = asyncio.create_task(peer.wait_for_peer_removed("other", timeout=30))
    await asyncio.sleep(0.05)
    await peer.stop()
    for waiter in (found, removed):
        with pytest.raises(TransportClosedError, match="stopped while waiting"):
            await asyncio.wait_for(waiter, 5)


@pytest.mark.asyncio
async def test_a_failed_start_closes_before_every_caller_sees_the_error() -> None:
    class Broken(ScriptedTransport):
        async def _start(self) -> None:
            self.started += 1
            await asyncio.sleep(0.01)
            raise OSError("address in use")

    transport = Broken()
    results = await asyncio.gather(transport.start(), transport.start(), return_exceptions=True)
    assert [type(r) for r in results] == [OSError, OSError]
    assert (transport.started, transport.stopped) == (1, 1)  # one start, one cleanup
    assert not transport.running


# ---------------------------------------------------------------- peers that stop reading


@contextlib.contextmanager
def _deaf_listener() -> Iterator[tuple[str, int]]:
    """A listener that never accepts or reads: a SIGSTOPped peer, say. Small receive buffer."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    try:
        yield listener.getsockname()
    finally:
        listener.close()


@pytest.mark.asyncio
async def test_stop_returns_at_once_after_sends_timed_out_on_a_peer_that_stopped_reading() -> None:
    with _deaf_listener() as (host, port):
        a = TcpTransport(node_id="a", send_timeout=0.5)
        await a.start()
        a.add_peer("b", host, port)
        results = await asyncio.gather(
            *(a.send_message("b", Message("b", "a", b"x" * 700_000)) for _ in range(4)),
            return_exceptions=True,
        )
        assert all(isinstance(r, DeliveryError) for r in results)
        # A graceful close waited for a write buffer the peer will never drain.
        await asyncio.wait_for(a.stop(), 5)


@pytest.mark.asyncio
async def test_our_stop_during_stuck_sends_is_no_failure_of_the_peer() -> None:
    with _deaf_listener() as (host, port):
        a = TcpTransport(node_id="a", send_timeout=5.0)
        await a.start()
        a.add_peer("b", host, port)
        sends = [
            asyncio.create_task(a.send_message("b", Message("b", "a", b"x" * 700_000)))
            for _ in range(4)
        ]
        await asyncio.sleep(0.3)
        await asyncio.wait_for(a.stop(), 5)
        results = await asyncio.wait_for(asyncio.gather(*sends, return_exceptions=True), 5)
        assert all(isinstance(r, TransportClosedError) for r in results), results
        stats = a.get_circuit_stats("b")
        assert (stats.failure_count, stats.timeout_count) == (0, 0)
