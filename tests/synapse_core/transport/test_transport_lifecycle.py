"""Regressions for tester-found transport bugs: lifecycle races, start window, labels, limits.

TCP tests run on loopback with real sockets; the mDNS ones need loopback multicast (they skip
with the reason otherwise) and browse their own random service type. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import gc
import pickle
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from types import MappingProxyType
from typing import Any

import pytest
import pytest_asyncio
from transport_support import ScriptedTransport, msg
from zeroconf.asyncio import AsyncZeroconf

from synapse_core import CircuitBreakerConfig, CircuitState, VirtualClock
from synapse_core.breaker import LatencyTrigger, PacketLossTrigger, ReliabilityTrigger
from synapse_core.transport import (
    DeliveryError,
    FrameDecoder,
    FrameKind,
    MdnsConfig,
    MdnsTransport,
    Message,
    SecurityLevel,
    TcpTransport,
    TransportClosedError,
    encode_frame,
)
from synapse_core.transport.discovery import instance_label

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


async def _until(predicate: Callable[[], bool], limit: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.005)


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


# ---------------------------------------------------------------- 1. start/stop concurrency


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
        await _until(lambda: shared._bound is not None)
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
    await _until(lambda: alone._bound is not None)
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


# ---------------------------------------------------------------- 2. the start window


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


# ---------------------------------------------------------------- 3. case-insensitive labels


def test_ids_differing_only_in_case_get_labels_differing_without_case() -> None:
    assert instance_label("node") == "node"  # lower-case ids keep their labels
    assert instance_label("node-1_a") == "node-1_a"
    variants = ["node", "Node", "NODE", "nodE"]
    labels = [instance_label(v).lower() for v in variants]
    assert len(set(labels)) == len(variants)
    assert all(len(label) <= 63 for label in labels)


@pytest.mark.asyncio
async def test_ids_differing_only_in_case_are_two_peers(start_peer: Factory) -> None:
    observer = await start_peer("observer")
    upper = await start_peer("Node")
    lower = await start_peer("node")
    await observer.wait_for_peer("Node", timeout=5)
    await observer.wait_for_peer("node", timeout=5)
    await upper.wait_for_peer("node", timeout=5)
    await lower.wait_for_peer("Node", timeout=5)
    await upper.send_message("node", Message("node", "Node", b"hi"))
    await lower.send_message("Node", Message("Node", "node", b"hello"))
    assert [m.content for m in await lower.receive_messages()] == [b"hi"]
    assert [m.content for m in await upper.receive_messages()] == [b"hello"]


# ---------------------------------------------------------------- 4. iteration always ends


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


# ---------------------------------------------------------------- 5. TXT size


def test_capabilities_too_long_for_one_txt_string_are_refused_up_front() -> None:
    tokens = [f"c{i}-" + "x" * 60 for i in range(3)]  # each a valid token, 190 bytes together
    with pytest.raises(ValueError, match=r"'capabilities'.*255"):
        MdnsTransport("n", 0, extra_capabilities=tokens)


@pytest.mark.asyncio
async def test_capabilities_filling_one_txt_string_exactly_still_start(
    start_peer: Factory,
) -> None:
    base = MdnsTransport("probe").capabilities
    budget = 255 - len("capabilities=" + ",".join(sorted(base)))
    tokens: list[str] = []
    while budget > 0:  # each token costs its length and a comma
        size = min(64, budget - 1)
        if budget - 1 - size == 1:
            size -= 1  # a lone byte left over could not hold a comma and a token
        tokens.append(chr(ord("a") + len(tokens)) * size)
        budget -= size + 1
    with pytest.raises(ValueError, match="'capabilities' would be 256 bytes"):
        MdnsTransport("full-caps", 0, extra_capabilities=[*tokens[:-1], tokens[-1] + "-"])
    peer = await start_peer("full-caps", extra_capabilities=tokens)
    entry = "capabilities=" + peer._txt()["capabilities"]
    assert len(entry.encode()) == 255
    observer = await start_peer("observer")
    info = await observer.wait_for_peer("full-caps", timeout=5)
    assert set(tokens) <= info.capabilities


# ---------------------------------------------------------------- 6. set_advertised_address


@pytest.mark.asyncio
async def test_a_bad_advertised_address_is_refused_and_changes_nothing(
    start_peer: Factory,
) -> None:
    peer = await start_peer("b")
    observer = await start_peer("observer")
    await observer.wait_for_peer("b", timeout=5)
    advertised = peer.advertised_address
    info = peer._info
    host, port = advertised
    bad: list[tuple[Any, Any]] = [
        (host, 70000),
        (host, 0),
        (host, True),
        (host, "80"),
        ("localhost", port),
        ("300.1.1.1", port),
        (None, port),
        (2130706433, port),  # an int ipaddress would accept: the API takes strings
    ]
    for bad_host, bad_port in bad:
        with pytest.raises(ValueError, match="advertised"):
            await peer.set_advertised_address(bad_host, bad_port)
        assert peer.advertised_address == advertised
        assert peer._info is info
    await observer.send_message("b", Message("b", "observer", b"still fine"))
    with pytest.raises(ValueError, match="advertised port"):
        MdnsTransport("c", 0, advertise_port=70000)
    with pytest.raises(ValueError, match="advertised host"):
        MdnsTransport("c", 0, advertise_host="localhost")


# ---------------------------------------------------------------- 7. failures are no latency


class _SlowPeer:
    """A loopback server that acknowledges every frame after *delay* seconds."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        decoder = FrameDecoder()
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                for kind, seq, body in decoder.feed(data):
                    await asyncio.sleep(self.delay)
                    if kind is FrameKind.MESSAGE:
                        writer.write(encode_frame(FrameKind.ACK, seq))
                    else:
                        writer.write(encode_frame(FrameKind.PONG, seq, body))

    async def kill(self) -> None:
        """Stop listening and drop every connection: connections are refused from now on."""
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.close()
        await self.server.wait_closed()


@pytest_asyncio.fixture
async def slow_peer() -> AsyncIterator[tuple[_SlowPeer, int]]:
    peer = _SlowPeer(0.1)
    port = await peer.start()
    try:
        yield peer, port
    finally:
        await peer.kill()


@pytest.mark.asyncio
async def test_refused_probes_do_not_let_a_latency_trigger_recover(
    slow_peer: tuple[_SlowPeer, int],
) -> None:
    peer, port = slow_peer
    clock = VirtualClock()
    async with TcpTransport(node_id="a", clock=clock, connect_timeout=1.0) as a:
        a.add_peer("b", "127.0.0.1", port)
        breaker = a.get_circuit_breaker("b")
        latency = LatencyTrigger(max_latency=0.05, samples_required=3)
        reliability = ReliabilityTrigger(min_reliability=0.0)  # never trips; keeps the figure
        breaker.add_trigger(latency)
        breaker.add_trigger(reliability)
        for _ in range(3):
            await a.send_message("b", msg("b", "a"))
        assert breaker.state is CircuitState.OPEN  # slow: opened by the latency trigger
        assert reliability.last is not None
        healthy = reliability.last

        await peer.kill()
        clock.advance(breaker.config.recovery_timeout + 1)
        requests = breaker.stats().total_requests
        for _ in range(4):  # measured outside the breaker, since the trigger holds it open
            with pytest.raises(DeliveryError):
                await a.test_connectivity("b")
        assert latency.average is not None
        assert latency.average > 0.05  # a 0.3 ms refusal is no round trip
        assert not latency.should_recover(CircuitState.OPEN)
        assert breaker.state is CircuitState.OPEN
        assert breaker.stats().total_requests == requests  # no half-open probe was admitted
        assert reliability.last < healthy  # the failures still count for reliability
        assert a.stats().probe_failures == 4


@pytest.mark.asyncio
async def test_refused_sends_feed_loss_but_no_latency_sample(
    slow_peer: tuple[_SlowPeer, int],
) -> None:
    peer, port = slow_peer
    lenient = CircuitBreakerConfig(failure_threshold=50, minimum_requests=50)
    async with TcpTransport(node_id="a", breaker_config=lenient, connect_timeout=1.0) as a:
        a.add_peer("b", "127.0.0.1", port)
        breaker = a.get_circuit_breaker("b")
        latency = LatencyTrigger(max_latency=10.0, samples_required=2)
        loss = PacketLossTrigger(max_packet_loss=1.0)
        breaker.add_trigger(latency)
        breaker.add_trigger(loss)
        for _ in range(2):
            await a.send_message("b", msg("b", "a"))
        assert latency.average is not None
        assert latency.average >= 0.09
        await peer.kill()
        for _ in range(2):
            with pytest.raises(DeliveryError):
                await a.send_message("b", msg("b", "a"))
        assert latency.average >= 0.09  # the smoothed round trip, not the refusal's duration
        assert loss.last == 0.5  # 2 of 4 lost


@pytest.mark.asyncio
async def test_failures_before_any_success_give_a_latency_trigger_no_sample(
    slow_peer: tuple[_SlowPeer, int],
) -> None:
    peer, port = slow_peer
    await peer.kill()  # refused from the start: no round trip was ever measured
    lenient = CircuitBreakerConfig(failure_threshold=50, minimum_requests=50)
    async with TcpTransport(node_id="a", breaker_config=lenient, connect_timeout=1.0) as a:
        a.add_peer("b", "127.0.0.1", port)
        breaker = a.get_circuit_breaker("b")
        latency = LatencyTrigger(max_latency=0.01, samples_required=1)
        breaker.add_trigger(latency)
        for _ in range(3):
            with pytest.raises(DeliveryError):
                await a.send_message("b", msg("b", "a"))
        # The estimate (50 ms default) is above 10 ms, but it is no measurement: no sample,
        # so no "latency" trip of a breaker whose peer simply refuses.
        assert latency.average is None
        assert breaker.state is CircuitState.CLOSED


# ---------------------------------------------------------------- 8. pickle and copies


def _full_message() -> Message:
    return Message(
        "b",
        "a",
        b"\x00payload",
        signature=b"sig",
        timestamp=datetime(2024, 5, 1, 12, 30, tzinfo=timezone(timedelta(hours=2))),
        security_level=SecurityLevel.SECURE,
        routing_path=("x", "y"),
        metadata={"k": "v", "é": "\n"},
    )


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_a_message_pickles_to_an_equal_message(protocol: int) -> None:
    for message in (_full_message(), Message.from_bytes(_full_message().to_bytes())):
        restored = pickle.loads(pickle.dumps(message, protocol))
        assert restored == message
        assert restored.to_bytes() == message.to_bytes()
        assert isinstance(restored.metadata, MappingProxyType)
        with pytest.raises(TypeError):
            restored.metadata["k"] = "changed"  # type: ignore[index]


def test_a_message_copies_to_an_equal_read_only_message() -> None:
    message = _full_message()
    for duplicate in (copy.deepcopy(message), copy.copy(message), copy.deepcopy([message])[0]):
        assert duplicate == message
        assert duplicate.to_bytes() == message.to_bytes()
        with pytest.raises(TypeError):
            duplicate.metadata["k"] = "changed"  # type: ignore[index]
    assert message.metadata == {"k": "v", "é": "\n"}


# ---------------------------------------------------------------- 9. error types


@pytest.mark.parametrize(
    "timestamp",
    [
        datetime.min.replace(tzinfo=timezone(timedelta(hours=1))),
        datetime.max.replace(tzinfo=timezone(timedelta(hours=-1))),
    ],
)
def test_a_timestamp_outside_the_utc_calendar_is_a_value_error(timestamp: datetime) -> None:
    with pytest.raises(ValueError, match="timestamp"):
        Message("b", "a", b"", timestamp=timestamp)
    assert Message("b", "a", b"", timestamp=datetime.min.replace(tzinfo=UTC)).timestamp.year == 1


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


# ---------------------------------------------------------------- round 2: peers that stop reading


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


@pytest.mark.asyncio
async def test_a_client_that_never_reads_replies_is_cut_off_and_stop_leaves_no_handler() -> None:
    b = TcpTransport(node_id="b", send_timeout=0.5)
    await b.start()
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.connect(b.address)
    client.setblocking(False)
    body = b"p" * 60_000
    ping = encode_frame(FrameKind.PING, 1, body, b.max_frame_size)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 1.5
    cut_off = False
    while loop.time() < deadline and not cut_off:  # PINGs, never reading the PONGs
        try:
            client.send(ping)
        except BlockingIOError:
            pass
        except OSError:
            cut_off = True  # reset by the server: what a graceful close never got to
        await asyncio.sleep(0.01)
    await asyncio.sleep(1.0)
    await asyncio.wait_for(b.stop(), 5)
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert not [t for t in others if "_serve" in repr(t.get_coro())]
    with contextlib.suppress(OSError):
        client.recv(1 << 20)  # drains what was sent before the cut, then sees the close
    client.close()


@pytest.mark.asyncio
async def test_an_advertised_address_set_during_a_start_is_announced(
    start_peer: Factory, mdns_config: MdnsConfig
) -> None:
    watcher = await start_peer("watcher")
    a = MdnsTransport("a", 0, mdns_config)
    starting = asyncio.create_task(a.start())
    await asyncio.sleep(0)
    await a.set_advertised_address("127.0.0.1", 5555)  # waits for the start, then announces
    await starting
    try:
        await watcher.wait_for_peer("a", timeout=10)
        for _ in range(200):  # up to 10 s for the re-announcement to be resolved
            if watcher.peers["a"][1] == 5555:
                break
            await asyncio.sleep(0.05)
        assert watcher.peers["a"] == ("127.0.0.1", 5555)
    finally:
        await a.stop()
    with pytest.raises(TransportClosedError):
        await a.set_advertised_address("127.0.0.1", 5556)
