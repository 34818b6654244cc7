"""Chaos on the Redis link of one replica, with the project's own Toxiproxy-compatible server:
that replica protects itself with its own breaker, the others stay shared, nothing from the
store reaches the caller, and after the heal every replica converges. Then Redis itself
restarts with its data lost, and the breakers rebuild the fleet's state."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from conftest import StoreFactory
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry
from shared_support import RedisServer, Target, ThreeMasterCluster, wait_for
from test_shared_fleet import CLOSED, OPEN, fail, ok, outcome

from chaos import EmbeddedToxiproxy
from chaos.control.proxy import Proxy
from synapse_core import CircuitBreaker, CircuitBreakerConfig

TIMEOUT = 0.25
CONFIG = CircuitBreakerConfig(
    failure_threshold=3,
    minimum_requests=1,
    recovery_timeout=0.3,
    half_open_max_calls=1,
    success_threshold=1.0,
)


@pytest.fixture(scope="module")
def toxiproxy() -> Iterator[EmbeddedToxiproxy]:
    with EmbeddedToxiproxy() as server:
        yield server


def tight(**options: Any) -> dict[str, Any]:
    """What SharedBreakerStore gives a client it makes from a URL."""
    return {
        "socket_timeout": TIMEOUT,
        "socket_connect_timeout": TIMEOUT,
        "retry": Retry(NoBackoff(), 0),
        **options,
    }


@pytest.fixture
def proxied(target: Target, toxiproxy: EmbeddedToxiproxy) -> Iterator[tuple[Any, list[Proxy]]]:
    """A client that reaches Redis only through chaos proxies (one per cluster node), and the
    proxies."""
    client = toxiproxy.client()
    server = target.server
    nodes = server.nodes if isinstance(server, ThreeMasterCluster) else [server]
    assert all(isinstance(node, RedisServer) for node in nodes)
    proxies = [
        client.create_proxy(f"redis-{uuid.uuid4().hex[:8]}", upstream=node.address)
        for node in nodes
    ]
    try:
        if isinstance(server, ThreeMasterCluster):
            pairs = zip(nodes, proxies, strict=True)
            remap = {("127.0.0.1", n.port): (p.host, p.port) for n, p in pairs}
            redis_client: Any = RedisCluster(
                host=proxies[0].host,
                port=proxies[0].port,
                address_remap=lambda address: remap.get(address, address),
                **tight(),
            )
        else:
            redis_client = redis.Redis(host=proxies[0].host, port=proxies[0].port, **tight())
        try:
            yield redis_client, proxies
        finally:
            redis_client.close()
    finally:
        for proxy in proxies:
            proxy.delete()


def start_faults(proxies: list[Proxy], kind: str) -> list[Any]:
    if kind == "partition":
        return [proxy.partition().start() for proxy in proxies]
    if kind == "latency":  # each way: a round trip takes 4x the store's timeout
        return [proxy.latency(ms=TIMEOUT * 2000).start() for proxy in proxies]
    return [proxy.reset_peer(stream="both").start() for proxy in proxies]


@pytest.mark.parametrize("fault", ["partition", "latency", "reset"])
def test_a_replica_cut_off_from_redis_protects_itself_then_converges(
    make_store: StoreFactory, proxied: tuple[Any, list[Proxy]], fault: str
) -> None:
    client, proxies = proxied
    stores = [make_store("a"), make_store("b"), make_store("cut-off", redis=client)]
    a, b, cut = (CircuitBreaker("payments", CONFIG, store=store) for store in stores)
    assert wait_for(lambda: cut.stats().fleet.connected, 3.0)  # type: ignore[union-attr]
    faults = start_faults(proxies, fault)
    try:
        # The cut-off replica notices at its next command (here a flush with nothing in it:
        # under latency a timed-out command may still run later, which must not matter),
        # falls back to its own breaker and opens on its own three failures; none of the
        # store's errors reaches its caller.
        assert not stores[2].flush()
        assert wait_for(lambda: not cut.stats().fleet.connected, 3.0)  # type: ignore[union-attr]
        for _ in range(3):
            assert outcome(cut, fail) == "ran"
        assert wait_for(lambda: cut.state is OPEN, 3.0), cut.stats()
        fleet = cut.stats().fleet
        assert fleet is not None
        assert not fleet.connected
        assert fleet.fallbacks == 1
        assert outcome(cut, ok) == "rejected"
        # The other two still share one breaker, which the cut-off replica's failures did
        # not reach: two failures between them are two in the fleet's window.
        assert outcome(a, fail) == outcome(b, fail) == "ran"
        stores[1].flush()
        stores[0].flush()  # a's answer comes last: it has seen both
        fleet = a.stats().fleet
        assert fleet is not None
        assert fleet.connected
        assert fleet.window_failures == 2
        assert a.state is CLOSED
        assert b.state is CLOSED
    finally:
        for started in faults:
            started.stop()
    # After the heal the cut-off replica rejoins; an open anywhere wins over closed, so the
    # whole fleet opens, named after it.
    assert wait_for(lambda: a.state is OPEN and b.state is OPEN, 5.0), (a.stats(), cut.stats())
    assert a.stats().fleet.caused_by == "cut-off"  # type: ignore[union-attr]
    assert cut.stats().fleet.connected  # type: ignore[union-attr]
    # ... and recovers as one: probes after the recovery timeout close every replica.
    assert wait_for(lambda: outcome(a, ok) == "ran" and a.state is CLOSED, 3.0, 0.05)
    assert wait_for(lambda: b.state is CLOSED and cut.state is CLOSED, 3.0)


def test_outcomes_recorded_while_cut_off_join_the_fleet_on_rejoin(
    make_store: StoreFactory, proxied: tuple[Any, list[Proxy]]
) -> None:
    """Closed here and in the fleet when the link heals: the failures this replica recorded
    on its own (too few to open it) join the fleet's window, so they still count."""
    client, proxies = proxied
    stores = [make_store("a"), make_store("cut-off", redis=client)]
    a, cut = (CircuitBreaker("billing", CONFIG, store=store) for store in stores)
    assert wait_for(lambda: cut.stats().fleet.connected, 3.0)  # type: ignore[union-attr]
    faults = start_faults(proxies, "partition")
    try:
        assert not stores[1].flush()
        assert outcome(cut, fail) == outcome(cut, fail) == "ran"  # 2 of 3: closed here
        assert cut.state is CLOSED
        assert cut.stats().fleet.unsent_failures == 2  # type: ignore[union-attr]
    finally:
        for started in faults:
            started.stop()
    assert wait_for(lambda: cut.stats().fleet.connected, 5.0)  # type: ignore[union-attr]
    assert stores[1].flush()
    assert stores[0].flush()
    fleet = a.stats().fleet
    assert fleet is not None
    assert fleet.window_failures == 2, f"the fleet's window holds {fleet.window_failures} failures"
    assert a.state is CLOSED
    assert outcome(a, fail) == "ran"  # the third, on the other replica
    assert wait_for(lambda: a.state is OPEN and cut.state is OPEN, 3.0), (a.stats(), cut.stats())


def test_control_made_while_cut_off_reaches_the_fleet_on_rejoin(
    make_store: StoreFactory, proxied: tuple[Any, list[Proxy]]
) -> None:
    """force_open / force_close on a replica that cannot reach Redis act there at once and are
    sent first when the link heals: a forced open stays forced on every replica, and a
    force_close closes a fleet that is open (the one case the rejoin rule, an open anywhere
    wins over closed, would not bring about by itself)."""
    client, proxies = proxied
    stores = [make_store("a"), make_store("cut-off", redis=client)]
    a, cut = (CircuitBreaker("reports", CONFIG, store=store) for store in stores)
    assert wait_for(lambda: cut.stats().fleet.connected, 3.0)  # type: ignore[union-attr]

    def cut_off(then: Any) -> None:
        faults = start_faults(proxies, "partition")
        try:
            assert not stores[1].flush()
            then()
        finally:
            for started in faults:
                started.stop()

    def force_open() -> None:
        cut.force_open("maintenance")
        assert cut.state is OPEN
        assert outcome(cut, ok) == "rejected"
        assert a.state is CLOSED  # not heard: the link is cut

    cut_off(force_open)
    assert wait_for(lambda: a.state is OPEN, 5.0), (a.stats(), cut.stats())
    assert a.retry_after == float("inf")  # forced, as it was made
    assert a.stats().fleet.caused_by == "cut-off"  # type: ignore[union-attr]

    def force_close() -> None:
        cut.force_close()
        assert cut.state is CLOSED
        assert outcome(cut, ok) == "ran"
        assert a.state is OPEN

    cut_off(force_close)
    assert wait_for(lambda: a.state is CLOSED, 5.0), (a.stats(), cut.stats())
    assert cut.state is CLOSED


def test_redis_restarted_with_its_data_lost(
    target: Target, make_store: StoreFactory, prefix: str, tmp_path: Any
) -> None:
    """While Redis is down every replica protects itself; when it is back empty, the open
    replicas rebuild the fleet's state (open wins), and the fleet works as before. On the
    cluster, the node that holds the breaker's slot restarts."""
    own: RedisServer | None = None
    if isinstance(target.server, ThreeMasterCluster):
        cluster = target.client()
        try:
            port = cluster.get_node_from_key(f"{prefix}:v1:{{search}}:state").port
        finally:
            cluster.close()
        [server] = [node for node in target.server.nodes if node.port == port]
        url = target.url
    else:
        server = own = RedisServer(tmp_path).start()
        url = server.url
    try:
        stores = [make_store(f"r{i}", redis=url) for i in range(3)]
        breakers = [CircuitBreaker("search", CONFIG, store=store) for store in stores]
        for breaker in breakers:
            assert outcome(breaker, fail) == "ran"
        assert wait_for(lambda: all(b.state is OPEN for b in breakers), 3.0)
        server.stop()
        # Down: rejections stay local and nothing raises; r0 probes after its open time and
        # decides alone (its own breaker), re-opening on its own failure.
        assert wait_for(lambda: outcome(breakers[0], fail) == "ran", 3.0, 0.05)
        assert not breakers[0].stats().fleet.connected  # type: ignore[union-attr]
        assert breakers[0].state is OPEN
        server.start()
        # Back, empty: the open replicas write the fleet's state again.
        node = redis.Redis(host="127.0.0.1", port=server.port)
        try:
            assert wait_for(lambda: node.keys(f"{prefix}:*:state"), 10.0, 0.05)
            assert wait_for(lambda: all(b.stats().fleet.connected for b in breakers), 5.0)  # type: ignore[union-attr]
            [key] = node.keys(f"{prefix}:*:state")
            assert node.hget(key, "state") in (b"open", b"half_open")
        finally:
            node.close()
        assert wait_for(
            lambda: outcome(breakers[1], ok) == "ran" and breakers[1].state is CLOSED, 3.0, 0.05
        )
        assert wait_for(lambda: all(b.state is CLOSED for b in breakers), 3.0)
        # The rebuilt fleet shares failures again.
        assert outcome(breakers[0], fail) == outcome(breakers[1], fail) == "ran"
        assert outcome(breakers[2], fail) == "ran"
        assert wait_for(lambda: all(b.state is OPEN for b in breakers), 3.0)
    finally:
        if own is not None:
            for store in stores:
                store.close()
            own.stop()


def test_calls_never_wait_on_a_dead_redis_in_the_closed_state(
    make_store: StoreFactory, proxied: tuple[Any, list[Proxy]]
) -> None:
    """Admission and successes are local: with Redis unreachable, closed-state calls run at
    the same speed (the store's breaker refuses its own commands at once)."""
    client, proxies = proxied
    breaker = CircuitBreaker("quotes", CONFIG, store=make_store("solo", redis=client))
    faults = start_faults(proxies, "partition")
    try:
        done = threading.Event()

        def calls() -> None:
            for _ in range(2000):
                breaker.call(ok)
            done.set()

        worker = threading.Thread(target=calls)
        worker.start()
        assert done.wait(TIMEOUT), "2,000 closed-state calls took longer than one Redis timeout"
        worker.join()
    finally:
        for started in faults:
            started.stop()
