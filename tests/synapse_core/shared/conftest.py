"""Fixtures of the shared-breaker tests: a real Redis, a real three-master Redis Cluster, and
stores on them that are closed after each test (also when it fails)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from shared_support import MISSING, RedisServer, Target, ThreeMasterCluster

from synapse_core.breaker.shared import SharedBreakerStore

if MISSING is not None:
    pytest.skip(MISSING, allow_module_level=True)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreeMasterCluster]:
    cluster = ThreeMasterCluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.fixture(params=["server", "cluster"])
def target(request: pytest.FixtureRequest) -> Target:
    """The same test on one Redis server and on a three-master Redis Cluster."""
    if request.param == "server":
        return Target("server", request.getfixturevalue("redis_server"))
    return Target("cluster", request.getfixturevalue("redis_cluster"))


@pytest.fixture
def prefix() -> str:
    """Keys of this test only."""
    return f"t{uuid.uuid4().hex[:10]}"


StoreFactory = Callable[..., SharedBreakerStore]


@pytest.fixture
def make_store(target: Target, prefix: str) -> Iterator[StoreFactory]:
    """``make_store(replica, redis=None, **options)``: a store on *target* (or on the client
    given), with test-sized intervals; closed at teardown."""
    made: list[SharedBreakerStore] = []

    def make(replica: str, redis: Any = None, **options: Any) -> SharedBreakerStore:
        settings: dict[str, Any] = {
            "prefix": prefix,
            "timeout": 0.25,
            "sync_interval": 0.5,
            "reconnect_interval": 0.2,
            "cluster": target.cluster,
        }
        settings.update(options)
        store = SharedBreakerStore(
            target.url if redis is None else redis, replica=replica, **settings
        )
        made.append(store)
        return store

    try:
        yield make
    finally:
        for store in made:
            store.close()
