"""A store's arguments are checked where the store is made: a bad URL, client, duration or
flag is an error naming it, not a store that silently never reaches Redis; a breaker given
something else as its store, or a name that cannot be a hash tag, is refused with what to do."""

from __future__ import annotations

import itertools
import logging
import subprocess
import sys
from datetime import timedelta
from typing import Any

import pytest
import redis
import redis.asyncio
from conftest import StoreFactory
from shared_support import Target, ThreeMasterCluster, wait_for

from synapse_core import CircuitBreaker
from synapse_core.breaker.shared import SharedBreakerStore

GOOD_URL = "redis://127.0.0.1:1/0"  # never contacted: nothing is created on that store

BAD: list[tuple[dict[str, Any], type[Exception], str]] = [
    ({"redis": 42}, TypeError, "redis must be a redis:// URL"),
    ({"redis": "http://127.0.0.1:6379"}, ValueError, "redis: Redis URL must specify"),
    ({"redis": "localhost:6379"}, ValueError, "for example redis://127.0.0.1:6379/0"),
    ({"redis": "unix:///tmp/redis.sock", "cluster": True}, ValueError, "over TCP"),
    ({"cluster": "yes"}, TypeError, "cluster must be True or False"),
    ({"timeout": 0}, ValueError, "timeout must be a finite number of seconds > 0"),
    ({"timeout": float("nan")}, ValueError, "timeout must be a finite number"),
    ({"reconnect_interval": float("inf")}, ValueError, "reconnect_interval must be a finite"),
    ({"sync_interval": "1s"}, TypeError, "sync_interval must be a number of seconds"),
    ({"flush_interval": True}, TypeError, "flush_interval must be a number of seconds"),
    ({"ttl": 10**400}, ValueError, "ttl is too large to be a number of seconds"),
    ({"max_batch": 0}, ValueError, "max_batch must be an int >= 1"),
    ({"prefix": "a b"}, ValueError, "prefix must be a non-empty str"),
    ({"replica": ""}, ValueError, "replica must be a non-empty str"),
]


@pytest.mark.parametrize(("bad", "error", "message"), BAD, ids=[str(b[0]) for b in BAD])
def test_bad_arguments_are_refused_where_the_store_is_made(
    bad: dict[str, Any], error: type[Exception], message: str
) -> None:
    arguments: dict[str, Any] = {"redis": GOOD_URL, **bad}
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        SharedBreakerStore(**arguments)


def test_good_arguments_of_every_kind_are_taken() -> None:
    """The other side of the table above: URLs of each scheme, clients, timedeltas."""
    client = redis.Redis(port=1)
    made = [
        SharedBreakerStore(GOOD_URL),
        SharedBreakerStore("rediss://user:pw@127.0.0.1:1/2"),
        SharedBreakerStore("unix:///tmp/redis.sock"),
        SharedBreakerStore(GOOD_URL, cluster=True),
        SharedBreakerStore(client, timeout=timedelta(milliseconds=50), ttl=60, max_batch=1),
    ]
    try:
        assert made[-1].timeout == 0.05
    finally:
        for store in made:
            store.close()
        client.close()


def test_an_asyncio_client_is_refused() -> None:
    """The store's threads use the blocking API; an asyncio client would never answer."""
    client = redis.asyncio.Redis(port=1)
    with pytest.raises(TypeError, match=r"not redis\.asyncio"):
        SharedBreakerStore(client)


def test_a_breaker_given_something_else_as_its_store() -> None:
    with pytest.raises(
        TypeError, match=r"store must be a SharedBreakerStore.*SharedBreakerStore\("
    ):
        CircuitBreaker("pricing", store="redis://127.0.0.1:6379/0")  # type: ignore[arg-type]


def test_a_shared_breakers_name_cannot_hold_braces(make_store: StoreFactory) -> None:
    """The name is the hash tag of the breaker's keys: '}x' would spread them over slots
    (CROSSSLOT on a cluster, and the store's own breaker would open for every breaker)."""
    store = make_store("only")
    for name in ("}x", "a{b", "{"):
        with pytest.raises(ValueError, match="cannot contain braces"):
            CircuitBreaker(name, store=store)
    assert CircuitBreaker("a:b/c*d", store=store).stats().fleet.connected  # type: ignore[union-attr]


_names = itertools.count()


@pytest.mark.parametrize("target", ["cluster"], indirect=True)
def test_a_cluster_reached_without_cluster_true_says_so(
    target: Target, prefix: str, make_store: StoreFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A breaker whose slot is on another node than the URL's: Redis answers MOVED, the
    replica follows its own breaker, and the warning says to pass cluster=True."""
    assert isinstance(target.server, ThreeMasterCluster)
    first = target.server.nodes[0].port
    cluster = target.client()
    try:
        name = next(
            n
            for n in (f"elsewhere-{i}" for i in _names)
            if cluster.get_node_from_key(f"{prefix}:v1:{{{n}}}:state").port != first
        )
    finally:
        cluster.close()
    with caplog.at_level(logging.WARNING, logger="synapse.breaker"):
        breaker = CircuitBreaker(name, store=make_store("lost", cluster=False))

        def warnings() -> list[str]:
            """The fallback's warning (logged just after stats show the fallback)."""
            return [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]

        assert wait_for(warnings, 3.0)
    assert breaker.stats().fleet.fallbacks == 1  # type: ignore[union-attr]
    [warning] = warnings()
    assert "MovedError" in warning
    assert "pass cluster=True" in warning


def test_redis_py_is_imported_only_when_a_store_is_made() -> None:
    """The extra is optional: importing the package (shared breakers included) loads no
    redis-py; making a store does, and checks its arguments with it."""
    code = (
        "import sys\n"
        "import synapse_core, synapse_core.breaker.shared as shared\n"
        "print('redis' in sys.modules)\n"
        "shared.SharedBreakerStore('redis://127.0.0.1:1/0').close()\n"
        "print('redis' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.split() == ["False", "True"], done.stdout + done.stderr
