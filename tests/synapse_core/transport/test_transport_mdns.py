"""MdnsTransport with real zeroconf on 127.0.0.1: discovery, messaging, goodbyes, expiry, the
TXT record and advertised address, max_peers, and the maintenance loop.

Each test browses its own random service type, so runs never see each other's peers. Name
probing is off except where a test is about it (it costs about a second per start).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import pytest_asyncio
from transport_support import PeerProcess, free_port, msg, until
from zeroconf import IPVersion
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from synapse_core import CircuitBreakerConfig, CircuitState, VirtualClock
from synapse_core.transport import (
    DeliveryError,
    DiscoveryError,
    DiscoveryTimeoutError,
    EnhancedMdnsTransport,
    MdnsConfig,
    MdnsTransport,
    Message,
    MessageRejectedError,
    PeerUnknownError,
    TcpTransport,
    TransportClosedError,
)

pytestmark = pytest.mark.usefixtures("loopback_multicast")

Factory = Callable[..., Awaitable[MdnsTransport]]


@pytest.fixture
def config(mdns_config: MdnsConfig) -> MdnsConfig:
    return mdns_config


@pytest_asyncio.fixture
async def raw_zeroconf() -> AsyncIterator[AsyncZeroconf]:
    """A bare zeroconf instance on loopback, for announcing hand-made (bogus) services."""
    zc = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    try:
        yield zc
    finally:
        await zc.async_unregister_all_services()
        await zc.async_close()


@pytest.mark.asyncio
async def test_three_peers_discover_each_other_and_exchange_messages(
    start_peer: Factory,
) -> None:
    ids = ["node-a", "node b", "nöde.c"]
    peers = await asyncio.gather(*(start_peer(entity_id) for entity_id in ids))
    for peer in peers:
        for other in ids:
            if other != peer.entity_id:
                info = await peer.wait_for_peer(other)
                assert info.entity_id == other
                assert {"mdns", "discovery", "acknowledged"} <= info.capabilities
                assert info.transport_types == {"tcp"}
    for sender in peers:
        for receiver in peers:
            if sender is not receiver:
                message = Message(receiver.entity_id, sender.entity_id, b"hi")
                receipt = await sender.send_message(receiver.entity_id, message)
                assert receipt.transport == "mdns"
    for peer in peers:
        received = await peer.receive_messages()
        assert sorted(m.from_global_id for m in received) == sorted(
            i for i in ids if i != peer.entity_id
        )
        assert peer.entity_id not in peer.discovered_peers  # never itself


@pytest.mark.asyncio
async def test_a_peer_stopping_cleanly_disappears(start_peer: Factory) -> None:
    a, b = await asyncio.gather(start_peer("a"), start_peer("b"))
    await a.wait_for_peer("b")
    await a.send_message("b", msg("b", "a"))
    assert "b" in a.circuit_breakers
    await b.stop()
    await a.wait_for_peer_removed("b", timeout=5)
    assert "b" not in a.peers
    assert "b" not in a.circuit_breakers  # breaker and metrics forgotten with it
    with pytest.raises(PeerUnknownError, match="wait_for_peer"):
        await a.send_message("b", msg("b", "a"))
    assert not await a.can_reach("b")


@pytest.mark.asyncio
async def test_default_breaker_is_the_original_preset(start_peer: Factory) -> None:
    a, _ = await asyncio.gather(start_peer("a"), start_peer("b"))
    await a.wait_for_peer("b")
    await a.send_message("b", msg("b", "a"))
    config = a.get_circuit_breaker("b").config
    assert config == CircuitBreakerConfig()
    assert (
        config.failure_threshold,
        config.minimum_requests,
        config.failure_window,
        config.recovery_timeout,
        config.half_open_max_calls,
        config.success_threshold,
    ) == (3, 2, 30.0, 10.0, 2, 0.7)
    assert a.get_circuit_stats()["b"].success_count == 1
    assert a.get_metrics("b").reliability_score > 0.95
    assert EnhancedMdnsTransport is MdnsTransport


@pytest.mark.asyncio
async def test_advertised_address_can_differ_from_the_listener(start_peer: Factory) -> None:
    async with TcpTransport(node_id="stand-in") as relay:
        relay_host, relay_port = relay.address
        a, b = await asyncio.gather(
            start_peer("a"), start_peer("b", advertise_host=relay_host, advertise_port=relay_port)
        )
        info = await a.wait_for_peer("b")
        assert (info.host, info.port) == relay.address
        with pytest.raises(MessageRejectedError) as refused:
            await a.send_message("b", msg("b", "a"))
        assert refused.value.code == "misaddressed"  # it went where b said, not to b ...
        assert relay.stats().misaddressed == 1  # ... and the stand-in knew it was not for it
        await b.set_advertised_address(*b.address)
        for _ in range(100):
            if a.resolve("b") == b.address:
                break
            await asyncio.sleep(0.05)
        assert a.resolve("b") == b.address
        await a.send_message("b", msg("b", "a"))
        assert len(await b.receive_messages()) == 1


@pytest.mark.asyncio
async def test_bogus_and_oddly_named_services_are_ignored(
    start_peer: Factory, raw_zeroconf: AsyncZeroconf, config: MdnsConfig
) -> None:
    a = await start_peer("a")
    stype = config.service_type
    good = {"version": "1", "protocol": "synapse", "capabilities": "tcp"}
    bogus: list[dict[str, str | bytes | None]] = [
        {"version": "1", "entity_id": "no-protocol"},
        {**good, "protocol": "http", "entity_id": "other-protocol"},
        {**good, "version": "2", "entity_id": "future"},
        {**good, "entity_id": "bell\x07"},
        {**good, "entity_id": b"\xff\xfe"},
        {**good},
    ]
    announcements = []
    for i, txt in enumerate(bogus):
        info = AsyncServiceInfo(
            stype,
            f"bogus {i} (x).{stype}",
            port=1000 + i,
            properties=txt,
            server=f"bogus{i}.local.",
            parsed_addresses=["127.0.0.1"],
        )
        announcements.append(
            await raw_zeroconf.async_register_service(info, cooperating_responders=True)
        )
    odd = AsyncServiceInfo(
        stype,
        f"Odd Name ü (2).{stype}",
        port=4242,
        properties={**good, "entity_id": "the real id"},
        server="odd.local.",
        parsed_addresses=["127.0.0.1"],
    )
    announcements.append(
        await raw_zeroconf.async_register_service(odd, cooperating_responders=True)
    )
    await asyncio.gather(*announcements)
    info = await a.wait_for_peer("the real id")
    assert info.port == 4242
    await asyncio.sleep(0.5)  # the bogus ones were announced first; give their resolution time
    assert set(a.discovered_peers) == {"the real id"}


@pytest.mark.asyncio
async def test_max_peers_is_enforced(start_peer: Factory, config: MdnsConfig) -> None:
    a = await start_peer("a", config=config.replace(max_peers=1))
    await asyncio.gather(start_peer("b"), start_peer("c"))
    for _ in range(100):
        if a.discovered_peers and a.peers_ignored:
            break
        await asyncio.sleep(0.05)
    assert len(a.discovered_peers) == 1
    assert a.peers_ignored >= 1


@pytest.mark.asyncio
async def test_silent_peers_expire_and_come_back_when_heard_again(
    start_peer: Factory, config: MdnsConfig
) -> None:
    clock = VirtualClock()  # liveness time; the breakers keep their own clock
    slow_queries = config.replace(query_interval=60.0, peer_timeout=30.0)
    a, _ = await asyncio.gather(
        start_peer("a", config=slow_queries, discovery_clock=clock), start_peer("b")
    )
    await a.wait_for_peer("b")
    clock.advance(29.0)
    await asyncio.sleep(0.1)  # the maintenance task wakes up but b is not due yet
    assert "b" in a.discovered_peers
    clock.advance(2.0)  # 31 s without hearing from b
    await a.wait_for_peer_removed("b", timeout=2)  # expired by the transport, not by a read
    assert "b" not in a.discovered_peers
    with pytest.raises(PeerUnknownError):
        a.resolve("b")
    a.query()  # b answers; its records were still in zeroconf's cache, so we resolve it again
    info = await a.wait_for_peer("b", timeout=5)
    assert a.last_seen("b") == clock()
    assert info.entity_id == "b"


@pytest.mark.asyncio
async def test_wait_for_peer_times_out(start_peer: Factory) -> None:
    a = await start_peer("a")
    with pytest.raises(DiscoveryTimeoutError, match=r"'ghost' was not discovered within 0\.3s"):
        await a.wait_for_peer("ghost", timeout=0.3)


@pytest.mark.asyncio
async def test_a_taken_entity_id_is_refused(start_peer: Factory, config: MdnsConfig) -> None:
    await start_peer("dup")
    with pytest.raises(DiscoveryError, match="'dup' is taken"):
        await start_peer("dup", config=config.replace(probe_name=True))


@pytest.mark.asyncio
async def test_a_shared_zeroconf_is_left_running(config: MdnsConfig) -> None:
    zc = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    try:
        async with MdnsTransport("a", 0, config, zeroconf=zc) as a:
            assert a.service_name.endswith(config.service_type)
        assert not zc.zeroconf.done
    finally:
        await zc.async_close()


def test_validation() -> None:
    with pytest.raises(ValueError, match="entity_id"):
        MdnsTransport("bad\nid")
    with pytest.raises(TypeError, match="MdnsConfig"):
        MdnsTransport("a", 0, {"interfaces": ["127.0.0.1"]})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="capabilities"):
        MdnsTransport("a", extra_capabilities=["no spaces allowed"])
    transport = MdnsTransport("a", extra_capabilities=["gpu"])
    assert "gpu" in transport.capabilities
    assert transport.config.interfaces == ("127.0.0.1",)


@pytest.mark.asyncio
async def test_a_restarted_peer_gets_a_fresh_breaker_as_soon_as_it_is_announced(
    start_peer: Factory, config: MdnsConfig
) -> None:
    """After a peer was killed and restarted, sends kept failing with CircuitOpenError for
    about 4.7 s after the new instance was announced (until the breaker's recovery timeout)."""
    clock = VirtualClock()  # the breaker's recovery never comes by itself
    breaker = CircuitBreakerConfig(failure_threshold=2, minimum_requests=2, recovery_timeout=30)
    a = await start_peer(
        "a", clock=clock, breaker_config=breaker, connect_timeout=1.0, send_timeout=1.0
    )
    port = free_port()  # the new instance comes back on the same address: only its TXT differs
    first = await PeerProcess.start("b", config.service_type, port)
    second: PeerProcess | None = None
    try:
        await a.wait_for_peer("b")
        await a.send_message("b", msg("b", "a"))
        await first.kill()  # no goodbye: a's cache keeps the peer
        for _ in range(2):
            with pytest.raises(DeliveryError):
                await a.send_message("b", msg("b", "a"))
        assert a.get_circuit_breaker("b").state is CircuitState.OPEN

        second = await PeerProcess.start("b", config.service_type, port)
        assert second.ready["instance"] != first.ready["instance"]
        for _ in range(200):
            if a.discovered_peers["b"].instance == second.ready["instance"]:
                break
            await asyncio.sleep(0.05)
        assert a.discovered_peers["b"].instance == second.ready["instance"]
        await a.send_message("b", msg("b", "a"))  # at once, not after the recovery timeout
        assert a.get_circuit_breaker("b").state is CircuitState.CLOSED
    finally:
        await first.kill()
        if second is not None:
            await second.kill()


@pytest.mark.asyncio
async def test_fake_services_filling_max_peers_do_not_keep_a_real_peer_out(
    start_peer: Factory, config: MdnsConfig, raw_zeroconf: AsyncZeroconf
) -> None:
    """70 fake but valid services filled max_peers=64, and a real node started afterwards was
    never discovered."""
    config = config.replace(max_peers=6)
    a = await start_peer("a", config=config)
    fakes = [
        AsyncServiceInfo(
            config.service_type,
            f"fake-{i}.{config.service_type}",
            port=free_port(),  # nothing answers there
            properties={"version": "1", "protocol": "synapse", "entity_id": f"fake-{i}"},
            server=f"fake-{i}.local.",
            parsed_addresses=["127.0.0.1"],
        )
        for i in range(9)
    ]
    for announced in await asyncio.gather(
        *(raw_zeroconf.async_register_service(info, cooperating_responders=True) for info in fakes)
    ):
        await announced
    for _ in range(200):
        if len(a.discovered_peers) == 6 and a.peers_ignored >= 3:
            break
        await asyncio.sleep(0.05)
    assert len(a.discovered_peers) == 6  # full of fakes ...
    assert a.peers_ignored >= 3  # ... and more of them waiting

    c = await start_peer("c", config=config)
    await a.wait_for_peer("c", timeout=10)
    await a.send_message("c", msg("c", "a"))
    assert a.peers_replaced >= 1
    await asyncio.sleep(1.0)  # refused fakes come back, but only in the place of fakes
    assert "c" in a.discovered_peers
    assert len(await c.receive_messages()) == 1


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


@pytest.fixture
def lasting_config(mdns_config: MdnsConfig) -> MdnsConfig:
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
    start_peer: Factory, lasting_config: MdnsConfig, own_zeroconf: AsyncZeroconf
) -> None:
    a, b = await asyncio.gather(
        start_peer("a", config=lasting_config),
        start_peer("b", config=lasting_config, zeroconf=own_zeroconf),
    )
    await a.wait_for_peer("b")
    await a.send_message("b", Message("b", "a", b"hello"))
    zc = own_zeroconf.zeroconf

    def answer_queued() -> bool:
        return bool(zc.out_queue.queue or zc.out_delay_queue.queue)

    a.query()  # b answers after a delay of its zeroconf's choosing...
    await until(answer_queued, within=2.0)
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
    start_peer: Factory, lasting_config: MdnsConfig
) -> None:
    a, b = await asyncio.gather(
        start_peer("a", config=lasting_config), start_peer("b", config=lasting_config)
    )
    await a.wait_for_peer("b")
    await b.stop()
    await a.wait_for_peer_removed("b", timeout=2.0)
    again = await start_peer("b", config=lasting_config)  # announces during a's grace for b
    info = await a.wait_for_peer("b", timeout=6.0)
    assert info.port == again.address[1]
    await a.send_message("b", Message("b", "a", b"welcome back"))
    assert [m.content for m in await again.receive_messages()] == [b"welcome back"]


@pytest.fixture
def fast_query_config(mdns_config: MdnsConfig) -> MdnsConfig:
    """The shared settings with faster queries: these tests wait on re-resolution."""
    return dataclasses.replace(mdns_config, query_interval=0.3)


@pytest.mark.asyncio
async def test_breaker_time_never_expires_peers_and_reads_are_pure(
    start_peer: Factory, fast_query_config: MdnsConfig
) -> None:
    breaker_clock, discovery_clock = VirtualClock(), VirtualClock()
    quiet = fast_query_config.replace(query_interval=60.0, peer_timeout=30.0)
    a, _ = await asyncio.gather(
        start_peer("a", config=quiet, clock=breaker_clock, discovery_clock=discovery_clock),
        start_peer("b", config=fast_query_config),
    )
    info = await a.wait_for_peer("b")
    breaker = a.get_circuit_breaker("b")
    breaker.force_open("test")
    breaker.force_close()

    breaker_clock.advance(3600.0)  # an hour of breaker time: nothing to do with liveness
    await asyncio.sleep(0.1)
    assert await a.can_reach("b")
    assert "b" in a.discovered_peers
    assert a.circuit_breakers == {"b": breaker}

    discovery_clock.advance(31.0)  # b is overdue, but reads do not expire it
    assert a.resolve("b") == (info.host, info.port)
    assert await a.can_reach("b")
    assert "b" in a.discovered_peers
    assert "b" in a.peers
    assert a.circuit_breakers == {"b": breaker}
    await a.wait_for_peer_removed("b", timeout=2)  # the transport expires it
    assert a.circuit_breakers == {}


@pytest.mark.asyncio
async def test_a_peer_over_max_peers_is_counted_once_and_admitted_when_a_slot_frees(
    start_peer: Factory, fast_query_config: MdnsConfig
) -> None:
    a = await start_peer("a", config=fast_query_config.replace(max_peers=1, query_interval=0.2))
    b, c = await asyncio.gather(
        start_peer("b", config=fast_query_config), start_peer("c", config=fast_query_config)
    )
    await until(lambda: bool(a.discovered_peers) and a.peers_ignored > 0)
    await asyncio.sleep(0.7)  # three query intervals: the refused peer answers each one
    assert a.peers_ignored == 1
    [kept] = a.discovered_peers
    other = "c" if kept == "b" else "b"

    await (b if kept == "b" else c).stop()  # goodbye: a slot frees up
    await a.wait_for_peer(other, timeout=5)  # the refused peer was resolved again at once
    assert other in a.discovered_peers


@pytest.mark.asyncio
async def test_a_failing_maintenance_step_is_logged_and_the_loop_lives_on(
    start_peer: Factory,
    fast_query_config: MdnsConfig,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a = await start_peer("a", config=fast_query_config.replace(announce_interval=0.05))
    assert a._zc is not None
    calls = 0

    async def broken(*args: object, **kwargs: object) -> None:
        nonlocal calls
        calls += 1
        raise OSError("no buffer space")

    monkeypatch.setattr(a._zc, "async_update_service", broken)
    with caplog.at_level(logging.ERROR, logger="synapse_core.transport.mdns"):
        await until(lambda: calls >= 3, within=2.0)
    assert a._maintenance is not None
    assert not a._maintenance.done()
    assert "maintenance failed" in caplog.text
