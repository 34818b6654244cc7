"""The service under test: an aiohttp API that reads stock levels from a real Redis.

``GET /stock/<item>`` reads ``stock:<item>`` from Redis (redis-py's asyncio client, 200 ms
timeouts) through the circuit breaker ``redis``. While the breaker is open the service answers
from its in-memory cache at once (``"source": "cache"``), or ``503`` for an item it never saw.
``GET /breakers`` shows the states of every breaker in the process (for a test that polls them).

``bugs=`` plants some of the mistakes the suite must catch (``STOCK_BUG=a,b`` in the
environment, or ``--bug`` once per bug when run as a process):

==========================  =========================================================
bug                         what the service then does wrong
==========================  =========================================================
``fallback_calls_redis``    its fallback still asks Redis for fresher data while open
``slow_fallback``           its fallback reads a slow cold store: rejections are slow
``never_closes``            ``recovery_timeout=500`` (meant as milliseconds): no probe
                            for 8 minutes, so it never closes during the test
``late_trip``               ``failure_threshold=10``: trips long after the outage began
``probe_flood``             ``half_open_max_calls=10``: a burst of probes after recovery
==========================  =========================================================

Run it as a process (the suite's "service in another process" tests do)::

    python -m stock.service --redis 127.0.0.1:6379      # prints its URL, serves until killed
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import threading
from collections.abc import Collection

import redis.asyncio as aioredis
from aiohttp import web
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from synapse_core import CircuitBreakerConfig, CircuitOpenError, default_manager

BUGS = ("fallback_calls_redis", "slow_fallback", "never_closes", "late_trip", "probe_flood")

REDIS_BREAKER = CircuitBreakerConfig(
    failure_threshold=3,
    minimum_requests=3,
    failure_window=10.0,
    recovery_timeout=0.3,
    half_open_max_calls=1,
)
_MISCONFIGURED = {
    "never_closes": {"recovery_timeout": 500},
    "late_trip": {"failure_threshold": 10, "minimum_requests": 10},
    "probe_flood": {"half_open_max_calls": 10},
}


def breaker_config(bugs: Collection[str] = ()) -> CircuitBreakerConfig:
    """The breaker settings, with the planted misconfigurations among *bugs*."""
    changes = {k: v for bug in bugs for k, v in _MISCONFIGURED.get(bug, {}).items()}
    return dataclasses.replace(REDIS_BREAKER, **changes)


class StockService:
    """The stock API on loopback, in a thread with its own event loop; Redis at ``redis``."""

    def __init__(self, redis: str, *, bugs: Collection[str] = (), port: int = 0) -> None:
        unknown = set(bugs) - set(BUGS)
        if unknown:
            raise ValueError(f"unknown bug(s) {sorted(unknown)}; choose from {', '.join(BUGS)}")
        host, _, redis_port = redis.rpartition(":")
        self.redis_address = (host, int(redis_port))
        self.bugs = frozenset(bugs)
        self.port = port
        self.breaker = default_manager.get_or_create("redis", breaker_config(self.bugs))
        self.cache: dict[str, int] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="stock-service")
        self._runner: web.AppRunner | None = None
        self._redis: aioredis.Redis | None = None
        self.url = ""

    def breakers(self) -> dict[str, str]:
        """The state of every breaker in this process (what ``GET /breakers`` answers)."""
        return {b.name: b.state.value for b in default_manager}

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> StockService:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()
            default_manager.remove_breaker("redis")

    def __enter__(self) -> StockService:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def _start(self) -> None:
        host, port = self.redis_address
        # No retries inside the client (redis-py's default retries a timeout with backoff for
        # seconds): each request fails in 200 ms and the breaker decides what happens next.
        self._redis = aioredis.Redis(
            host=host,
            port=port,
            socket_timeout=0.2,
            socket_connect_timeout=0.2,
            retry=Retry(NoBackoff(), 0),
        )
        app = web.Application()
        app.router.add_get("/stock/{item}", self._stock)
        app.router.add_get("/breakers", self._breakers)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        bound = self._runner.addresses[0]
        self.url = f"http://{bound[0]}:{bound[1]}"

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._redis is not None:
            await self._redis.aclose()

    # -- handlers --------------------------------------------------------------------------------

    async def _stock(self, request: web.Request) -> web.Response:
        item = request.match_info["item"]
        assert self._redis is not None
        try:
            raw = await self.breaker.call_async(self._redis.get, f"stock:{item}")
        except CircuitOpenError:
            return await self._fallback(item)
        except (RedisError, OSError) as exc:
            return web.json_response({"error": f"redis failed: {exc}"}, status=502)
        if raw is None:
            return web.json_response({"error": f"no item {item!r}"}, status=404)
        self.cache[item] = int(raw)
        return web.json_response({"item": item, "stock": int(raw), "source": "redis"})

    async def _fallback(self, item: str) -> web.Response:
        """The breaker rejected the call: answer from the cache, at once."""
        if "fallback_calls_redis" in self.bugs:
            assert self._redis is not None
            try:  # "fresher data if Redis happens to answer": the bug this suite must catch
                raw = await self._redis.get(f"stock:{item}")
                if raw is not None:
                    self.cache[item] = int(raw)
            except (RedisError, OSError):
                pass
        if "slow_fallback" in self.bugs:
            await asyncio.sleep(0.15)  # stands for reading a cold store
        if item in self.cache:
            return web.json_response({"item": item, "stock": self.cache[item], "source": "cache"})
        return web.json_response({"error": "stock unavailable"}, status=503)

    async def _breakers(self, request: web.Request) -> web.Response:
        return web.json_response(self.breakers())


def main(argv: list[str] | None = None) -> None:
    """Serve until killed; print the URL first (one line) for whoever started the process."""
    parser = argparse.ArgumentParser(prog="python -m stock.service")
    parser.add_argument("--redis", required=True, help="HOST:PORT of Redis (or of its proxy)")
    parser.add_argument(
        "--bug", action="append", default=[], choices=BUGS, help="plant a bug (see above)"
    )
    args = parser.parse_args(argv)
    service = StockService(args.redis, bugs=args.bug).start()
    print(service.url, flush=True)
    try:
        sys.stdin.read()  # until the parent closes our stdin (or kills us)
    finally:
        service.stop()


if __name__ == "__main__":
    main()
