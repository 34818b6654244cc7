"""Breakers shared by replicas through a real Redis (one server, and a three-master cluster):
one window for the whole fleet, probes limited fleet-wide, every transition reaching every
replica, and the replicas in separate processes."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest
from conftest import StoreFactory
from shared_support import Replica, Target, wait_for

from synapse_core import CircuitBreaker, CircuitBreakerConfig, CircuitOpenError, CircuitState
from synapse_core.breaker import (
    CircuitEvent,
    CircuitOpened,
    LatencyTrigger,
    TransportMetrics,
)
from synapse_core.breaker.shared.fleet import Keys

OPEN, CLOSED, HALF_OPEN = CircuitState.OPEN, CircuitState.CLOSED, CircuitState.HALF_OPEN


class Down(Exception):
    pass


def fail() -> None:
    raise Down("the dependency failed")


def ok() -> str:
    return "ok"


def outcome(breaker: CircuitBreaker, fn: Any) -> str:
    """Call through the breaker; only the dependency's errors and rejections may come out."""
    try:
        breaker.call(fn)
        return "ran"
    except Down:
        return "ran"
    except CircuitOpenError:
        return "rejected"


def test_replicas_in_separate_processes_share_one_breaker(target: Target, prefix: str) -> None:
    """Failures spread so that no replica alone reaches the threshold open every replica;
    concurrent replicas get exactly half_open_max_calls probes between them; closing reaches
    every replica; every replica's events name the replica that caused each transition."""
    config = {
        "failure_threshold": 6,
        "minimum_requests": 1,
        "recovery_timeout": 0.3,
        "half_open_max_calls": 3,
        "success_threshold": 1.0,
    }
    replicas = [Replica(target, prefix, f"replica-{i}", config) for i in range(3)]
    try:
        for replica in replicas:
            replica.ready()
        for replica in replicas:  # 2 each: a local breaker would need 6 of its own
            assert replica.ask("fail", n=2) == {"ran": 2, "rejected": 0}
        for replica in replicas:
            assert replica.ask("wait", state="open", within=3.0)["ok"], replica.name
        opened_by = set()
        for replica in replicas:
            opened = [e for e in replica.ask("events") if e["kind"] == "opened"]
            assert len(opened) == 1, (replica.name, opened)
            opened_by.add(opened[0]["replica"])
        assert len(opened_by) == 1, opened_by
        assert opened_by <= {r.name for r in replicas}, opened_by
        stats = replicas[0].ask("stats")
        assert stats["failure_count"] == 2  # this replica's own
        assert stats["fleet"]["failure_count"] == 6  # the fleet's
        assert stats["fleet"]["replicas"] == 3

        time.sleep(0.35)  # past the recovery timeout: every replica may ask for a probe
        for replica in replicas:  # four threads in each process call at the same moment
            replica.send("probes", threads=4, hold=0.3)
        results = [replica.read() for replica in replicas]
        assert sum(r["admitted"] for r in results) == 3, results
        assert sum(r["rejected"] for r in results) == 9, results
        for replica in replicas:
            assert replica.ask("wait", state="closed", within=3.0)["ok"], replica.name
        for replica in replicas:
            kinds = [e["kind"] for e in replica.ask("events")]
            assert kinds[-1] == "closed", (replica.name, kinds)
    finally:
        for replica in replicas:
            replica.close()


def test_events_and_stats_say_who_did_what(make_store: StoreFactory) -> None:
    """The tripping replica is named in every replica's event; stats keep each replica's own
    counts apart from the fleet's."""
    config = CircuitBreakerConfig(failure_threshold=3, minimum_requests=1, recovery_timeout=30)
    breakers = [CircuitBreaker("ledger", config, store=make_store(f"r{i}")) for i in range(3)]
    heard: dict[str, list[CircuitEvent]] = {}
    for i, breaker in enumerate(breakers):
        breaker.subscribe(heard.setdefault(f"r{i}", []).append)
    assert outcome(breakers[0], ok) == "ran"
    assert outcome(breakers[1], fail) == "ran"
    assert outcome(breakers[1], fail) == "ran"
    stores = [b._shared.store for b in breakers if b._shared is not None]
    for store in stores:  # successes wait for the next sync unless a rate rule needs them
        store.flush()
    assert breakers[2].state is CLOSED
    assert outcome(breakers[2], fail) == "ran"  # the third failure, on another replica
    assert wait_for(lambda: all(b.state is OPEN for b in breakers), 3.0)
    for events in heard.values():
        opened = [e for e in events if isinstance(e, CircuitOpened)]
        assert len(opened) == 1
        assert opened[0].replica == "r2"
        assert opened[0].reason == "3 failures in 4 calls within 30s (threshold 3)"
    assert outcome(breakers[0], ok) == "rejected"
    local = breakers[1].stats()
    assert (local.failure_count, local.success_count) == (2, 0)
    assert local.fleet is not None
    assert local.fleet.connected
    assert local.fleet.state is OPEN
    assert local.fleet.caused_by == "r2"
    assert (local.fleet.failure_count, local.fleet.success_count) == (3, 1)
    assert local.to_dict()["fleet"]["state"] == "open"
    # Rejections are counted where they happened and summed in the fleet.
    for store in stores:
        store.flush()
    assert breakers[0].stats().rejection_count == 1
    assert breakers[2].stats().fleet.rejection_count == 1  # type: ignore[union-attr]


def test_forced_states_and_reset_reach_every_replica(make_store: StoreFactory) -> None:
    config = CircuitBreakerConfig(failure_threshold=2, recovery_timeout=30)
    breakers = [CircuitBreaker("mail", config, store=make_store(f"r{i}")) for i in range(2)]
    breakers[0].force_open("maintenance")
    assert wait_for(lambda: breakers[1].state is OPEN, 3.0)
    assert breakers[1].stats().forced
    assert breakers[1].retry_after == float("inf")
    breakers[1].force_close()
    assert wait_for(lambda: breakers[0].state is CLOSED, 3.0)
    assert outcome(breakers[0], fail) == outcome(breakers[1], fail) == "ran"
    assert wait_for(lambda: all(b.state is OPEN for b in breakers), 3.0)
    breakers[0].reset()
    assert wait_for(lambda: breakers[1].state is CLOSED, 3.0)


def test_an_external_trigger_on_one_replica_opens_the_fleet(make_store: StoreFactory) -> None:
    """A trigger trips the fleet; it holds probes only where it fired (documented)."""
    config = CircuitBreakerConfig(recovery_timeout=0.05)
    here, there = (CircuitBreaker("link", config, store=make_store(n)) for n in ("here", "there"))
    here.add_trigger(LatencyTrigger(max_latency=0.1, samples_required=1))
    assert here.check_external_triggers(TransportMetrics(latency=1.0))
    assert wait_for(lambda: there.state is OPEN, 3.0)
    opened = there.stats().fleet
    assert opened is not None
    assert opened.caused_by == "here"
    # Wait for both conditions at once: a late message of the trip may set here's open time
    # again (by a few milliseconds) after the recovery timeout was first seen to pass.
    assert wait_for(
        lambda: "external trigger" in (here.stats().waiting_for or "") and there.would_admit(),
        3.0,
    ), (here.stats(), there.stats())
    assert not here.would_admit()


def test_a_probe_held_by_a_replica_that_died_is_given_back(
    target: Target, prefix: str, make_store: StoreFactory
) -> None:
    """A replica killed (SIGKILL) while holding the fleet's only probe slot: once it has been
    silent for the liveness period (3 x sync_interval + 2 x timeout), the slot is freed and
    another replica probes and closes the fleet; without that, it would stay half-open for
    ever (no max_half_open_wait)."""
    config = {"failure_threshold": 2, "minimum_requests": 1, "recovery_timeout": 0.2,
              "half_open_max_calls": 1, "success_threshold": 1.0}  # fmt: skip
    victim = Replica(target, prefix, "victim", config)
    try:
        victim.ready()
        store = make_store("survivor")
        survivor = CircuitBreaker("inventory", CircuitBreakerConfig(**config), store=store)
        assert victim.ask("fail", n=2) == {"ran": 2, "rejected": 0}
        assert wait_for(lambda: survivor.state is OPEN, 3.0)
        time.sleep(0.25)
        assert victim.ask("hold") == {"admitted": True}  # the fleet's one probe, kept
        assert wait_for(lambda: survivor.state is HALF_OPEN, 3.0)
        assert outcome(survivor, ok) == "rejected"  # the slot is taken
        victim.process.kill()
        victim.process.wait(10)
        killed_at = time.monotonic()
        bound = store.alive_for + store.sync_interval + store.timeout + 2.0  # + load slack
        assert wait_for(lambda: outcome(survivor, ok) == "ran", bound, 0.05), survivor.stats()
        assert wait_for(lambda: survivor.state is CLOSED, 3.0)  # its probe's report closes it
        # Not before it was due: the victim was last heard of at most one sync before it died.
        assert time.monotonic() - killed_at >= store.alive_for - store.sync_interval - 0.1
    finally:
        victim.close()


def test_a_foreign_message_on_a_breakers_channel_is_ignored(
    target: Target, prefix: str, make_store: StoreFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Something that is not a fleet state published on a breaker's channel (another tool,
    another version) is warned of once per store and ignored: the listener stays connected,
    so the next real change still arrives by pub/sub (syncs and reconnects are 30 s away)."""
    config = CircuitBreakerConfig(failure_threshold=1, minimum_requests=1, recovery_timeout=30)
    slow = {"sync_interval": 30.0, "reconnect_interval": 30.0}
    here = CircuitBreaker("quotes", config, store=make_store("here", **slow))
    there = CircuitBreaker("quotes", config, store=make_store("there", **slow))
    client = target.client()
    try:
        with caplog.at_level(logging.WARNING, logger="synapse_core.breaker"):
            for garbage in (b"not json", b'{"state": "open"}', b"[]"):
                client.publish(Keys.of(prefix, "quotes").channel, garbage)
            assert outcome(there, fail) == "ran"
            assert wait_for(lambda: here.state is OPEN, 3.0), here.stats()

            def warned() -> list[str]:
                return [
                    r.getMessage() for r in caplog.records if "not a fleet state" in r.getMessage()
                ]

            assert wait_for(lambda: len(warned()) == 2, 3.0), warned()  # once per store
    finally:
        client.close()


def test_half_open_wait_and_backoff_apply_to_the_fleet(make_store: StoreFactory) -> None:
    """A probe that never reports while its replica is alive: once max_half_open_wait has
    passed, the next replica that asks re-opens the fleet, dated at the deadline, for
    recovery_timeout x open_backoff_multiplier; every replica follows, and the late report
    changes nothing."""
    config = CircuitBreakerConfig(
        failure_threshold=1,
        minimum_requests=1,
        recovery_timeout=0.2,
        half_open_max_calls=1,
        success_threshold=1.0,
        max_half_open_wait=0.3,
        open_backoff_multiplier=10.0,
        max_recovery_timeout=60,
    )
    stores = [make_store("a"), make_store("b")]
    a, b = (CircuitBreaker("rates", config, store=store) for store in stores)
    opened: list[CircuitOpened] = []
    b.subscribe(lambda e: opened.append(e) if isinstance(e, CircuitOpened) else None)
    assert outcome(a, fail) == "ran"
    assert wait_for(lambda: a.state is OPEN and b.state is OPEN, 3.0)
    time.sleep(0.25)
    permit = a.try_acquire()  # the fleet's one probe, never reported in time
    assert permit is not None
    assert wait_for(lambda: b.state is HALF_OPEN, 3.0)
    assert outcome(b, ok) == "rejected"  # the slot is taken
    time.sleep(0.35)  # past max_half_open_wait
    assert outcome(b, ok) == "rejected"  # b asks; the episode is over: open again
    assert wait_for(lambda: a.state is OPEN and b.state is OPEN, 3.0)
    assert "max_half_open_wait=0.3s" in opened[-1].reason
    assert b.stats().consecutive_opens == 1
    retry_after = b.retry_after
    assert retry_after is not None
    assert 1.0 < retry_after <= 2.0, retry_after  # 0.2 s x 10, from the deadline
    permit.success()  # late: its episode is over
    assert stores[0].flush()
    assert a.state is OPEN
    assert b.state is OPEN


def test_a_slow_probe_counts_against_closing_the_fleet(make_store: StoreFactory) -> None:
    """With every probe needed to close (success_threshold 1.0), one probe that succeeds but
    takes slow_call_duration or more re-opens the fleet, as it would a local breaker; the
    same probe, quick, closes it."""
    config = CircuitBreakerConfig(
        failure_threshold=1,
        minimum_requests=1,
        recovery_timeout=0.1,
        half_open_max_calls=1,
        success_threshold=1.0,
        slow_call_duration=0.05,
        slow_call_rate_threshold=1.0,
    )
    stores = [make_store("a"), make_store("b")]
    a, b = (CircuitBreaker("fx", config, store=store) for store in stores)
    opened: list[CircuitOpened] = []
    a.subscribe(lambda e: opened.append(e) if isinstance(e, CircuitOpened) else None)
    assert outcome(a, fail) == "ran"
    for probe_takes, ends in ((0.08, OPEN), (0.0, CLOSED)):
        assert wait_for(lambda: a.state is OPEN and b.state is OPEN, 3.0)
        time.sleep(0.12)
        assert b.call(time.sleep, probe_takes) is None  # the fleet's one probe
        assert wait_for(lambda e=ends: a.state is e and b.state is e, 3.0), (a.stats(), b.stats())
    assert [e.reason for e in opened][-1] == "half-open: slow probe call"
    assert opened[-1].replica == "b"
