"""What a shared breaker leaves in Redis: its keys share one hash slot, carry the prefix and
the schema version, every one expires ``ttl`` after its breaker last wrote it, the window
never holds more than its 100 slices, and replicas long gone are dropped. Nothing grows
without bound, on a server and on a cluster."""

from __future__ import annotations

import time
from typing import Any

from conftest import StoreFactory
from shared_support import Target, wait_for
from test_shared_fleet import OPEN, fail, outcome

from synapse_core import CircuitBreaker, CircuitBreakerConfig
from synapse_core.breaker.shared.fleet import Keys

TTL = 2.0


def keys_of(target: Target, prefix: str) -> list[bytes]:
    """Every key of *prefix* (on every master of a cluster)."""
    client = target.client()
    try:
        if target.cluster:
            return sorted(client.keys(f"{prefix}:*", target_nodes=client.ALL_NODES))  # type: ignore[no-any-return]
        return sorted(client.keys(f"{prefix}:*"))
    finally:
        client.close()


def test_every_key_expires_and_one_breakers_keys_share_a_slot(
    target: Target, prefix: str, make_store: StoreFactory
) -> None:
    config = CircuitBreakerConfig(
        failure_threshold=2, minimum_requests=1, failure_window=1.0, recovery_timeout=0.05
    )
    store = make_store("r0", ttl=TTL)
    breaker = CircuitBreaker("catalog", config, store=store)
    keys = Keys.of(prefix, "catalog")
    client: Any = target.client()
    written: set[bytes] = set()

    def every_key_expires() -> None:
        """Every key of the prefix is one of the breaker's, with a TTL within the store's."""
        for key in keys_of(target, prefix):
            ttl = client.pttl(key)
            assert 0 < ttl <= TTL * 1000, f"key {key!r} has no TTL (PTTL {ttl})"
            written.add(key)

    try:
        assert outcome(breaker, fail) == "ran"  # closed, one failure: state, window, replicas
        assert store.flush()
        every_key_expires()
        assert outcome(breaker, fail) == "ran"  # the trip empties the window
        assert wait_for(lambda: breaker.state is OPEN, 3.0)
        time.sleep(0.06)
        permit = breaker.acquire()  # a probe: the probes key
        every_key_expires()
        assert written == {k.encode() for k in keys.all()}
        if target.cluster:
            slots = {client.keyslot(k) for k in [*keys.all(), keys.channel]}
            assert len(slots) == 1, f"one breaker's keys span slots {slots}"
        permit.success()
        store.close()
        # Nobody writes them any more: they are gone once the ttl has passed.
        assert wait_for(lambda: keys_of(target, prefix) == [], TTL + 3.0, 0.1), keys_of(
            target, prefix
        )
    finally:
        client.close()


def test_the_window_keeps_at_most_its_100_slices(
    target: Target, prefix: str, make_store: StoreFactory
) -> None:
    """Failures flushed over five windows' time: old slices are deleted as new ones come."""
    config = CircuitBreakerConfig(failure_threshold=10**9, minimum_requests=1, failure_window=0.1)
    store = make_store("r0")
    breaker = CircuitBreaker("feed", config, store=store)
    window = Keys.of(prefix, "feed").window
    client: Any = target.client()
    seen: set[bytes] = set()
    largest = 0
    try:
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            assert outcome(breaker, fail) == "ran"
            assert store.flush()
            slices = client.hkeys(window)
            seen.update(slices)
            largest = max(largest, len(slices))
    finally:
        client.close()
    assert len(seen) > 100, f"only {len(seen)} slices written: the test proves nothing"
    assert largest <= 100, f"the window held {largest} slices (at most 100)"


def test_replicas_long_gone_are_dropped(
    target: Target, prefix: str, make_store: StoreFactory
) -> None:
    """A replica unheard of for ten liveness periods leaves the replicas hash; one unheard of
    for longer than one period stays there but is not counted as alive."""
    store = make_store("here")
    breaker = CircuitBreaker("mailer", CircuitBreakerConfig(), store=store)
    replicas = Keys.of(prefix, "mailer").replicas
    client: Any = target.client()
    try:
        seconds, micros = client.time()
        now = seconds + micros / 1e6
        client.hset(
            replicas,
            mapping={
                "long-gone": f"{now - 11 * store.alive_for:.6f}",
                "quiet": f"{now - 2 * store.alive_for:.6f}",
            },
        )
        assert store.flush()
        listed = set(client.hkeys(replicas))
        assert listed == {b"here", b"quiet"}, f"replicas listed: {listed} (long-gone stays)"
        fleet = breaker.stats().fleet
        assert fleet is not None
        assert fleet.replicas == 1
    finally:
        client.close()
