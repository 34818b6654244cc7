"""SharedBreakerStore: breakers shared by every replica of a service, on Redis."""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
import uuid
import weakref
from typing import TYPE_CHECKING, Any

from synapse_core.breaker.config import CircuitBreakerConfig
from synapse_core.breaker.shared.fleet import SCRIPT, FleetState, Keys
from synapse_core.breaker.shared.link import SharedLink
from synapse_core.clock import to_seconds
from synapse_core.errors import CircuitOpenError

if TYPE_CHECKING:
    from synapse_core.breaker.breaker import CircuitBreaker

logger = logging.getLogger("synapse_core.breaker")

_FORKED = (
    "a SharedBreakerStore made in process {parent} is used in process {child}, forked from it: "
    "its threads and connections stayed in {parent}, so its breakers follow their own rules "
    "here; make the store (and the breakers) in each process after the fork (gunicorn: in "
    "post_fork, not at import with --preload)"
)
_STORES: weakref.WeakSet[SharedBreakerStore] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for store in list(_STORES):
        if not store._stop.is_set():
            store._orphaned()


os.register_at_fork(after_in_child=_after_fork_in_child)


class SharedBreakerStore:
    """Shares circuit breakers between the replicas of a service through Redis.

    ::

        store = SharedBreakerStore("redis://127.0.0.1:6379/0")  # or a redis.Redis/RedisCluster
        breaker = CircuitBreaker("payments", config, store=store)

    Every replica that creates a breaker of the same name on a store with the same Redis and
    ``prefix`` shares one breaker: one sliding window of everyone's outcomes, one half-open
    episode with ``half_open_max_calls`` probes across the fleet, each transition decided
    once, in Redis (a Lua script), and announced to the others by pub/sub. Calls are still
    admitted and rejected from local state, and outcomes are sent in the background; see
    ``synapse_core.breaker.shared`` for the rules and README's "Breakers shared across
    replicas" for the figures.

    Args:
        redis: a ``redis://`` URL (``cluster=True`` for Redis Cluster), or a client you made
            (``redis.Redis`` or ``redis.cluster.RedisCluster``; its own timeouts and retries
            then apply: give it ``socket_timeout`` and no retries, as ``from_url`` does).
        replica: this process's name among the replicas (events and stats carry it); by
            default ``host:pid:random``.
        prefix: the first part of every key, so several stores can share a Redis.
        timeout: seconds a Redis command may take before the store counts it as failed and
            this replica follows its own breaker (the client's socket timeouts, for a URL).
        flush_interval: the longest a recorded failure (or, with rate rules, success) waits
            before it is sent.
        max_batch: failures and slow calls waiting that make a flush happen at once.
        sync_interval: how often each breaker asks Redis for the fleet's state when nothing
            else made it talk to Redis (it also says this replica is alive); a missed message
            heals within it.
        ttl: seconds every key lives after its breaker last wrote it (renewed by every flush
            and sync; an idle breaker's keys vanish). At least every shared breaker's
            ``failure_window``.
        reconnect_interval: while Redis does not answer, how long the store waits before
            trying again (its own breaker's recovery timeout).
        cluster: with a URL, connect to a Redis Cluster.

    Bad values raise ``ValueError`` or ``TypeError`` here, naming the argument (and
    ``ImportError`` without redis-py); a Redis that does not answer is not an error: the
    breakers follow their own rules until it does.
    """

    def __init__(
        self,
        redis: Any,
        *,
        replica: str | None = None,
        prefix: str = "synapse",
        timeout: float = 0.1,
        flush_interval: float = 0.05,
        max_batch: int = 100,
        sync_interval: float = 1.0,
        ttl: float = 3600.0,
        reconnect_interval: float = 1.0,
        cluster: bool = False,
    ) -> None:
        durations = {
            field: _seconds(field, value)
            for field, value in (
                ("timeout", timeout),
                ("flush_interval", flush_interval),
                ("sync_interval", sync_interval),
                ("ttl", ttl),
                ("reconnect_interval", reconnect_interval),
            )
        }
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"max_batch must be an int >= 1, got {max_batch!r}")
        if not isinstance(prefix, str) or not prefix or set(prefix) & set("{}[]*?\\ "):
            raise ValueError(
                "prefix must be a non-empty str without spaces, braces or glob characters "
                f"([]*?\\), got {prefix!r}"
            )
        if not isinstance(cluster, bool):
            raise TypeError(
                f"cluster must be True or False, got {type(cluster).__name__} {cluster!r}"
            )
        _check_redis(redis, cluster)
        if replica is None:
            replica = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:4]}"
        if not isinstance(replica, str) or not replica:
            raise ValueError(f"replica must be a non-empty str, got {replica!r}")
        self.replica = replica
        self.prefix = prefix
        self.timeout = durations["timeout"]
        self.flush_interval = durations["flush_interval"]
        self.max_batch = max_batch
        self.sync_interval = durations["sync_interval"]
        self.ttl = durations["ttl"]
        self.reconnect_interval = durations["reconnect_interval"]
        # A replica unheard of for this long holds no probe slot and counts as gone.
        self.alive_for = 3 * self.sync_interval + 2 * self.timeout
        # From a URL the client is made on first use (a cluster client connects when made):
        # a Redis that is down when the service starts is a store that is away, not an error.
        self._url = redis if isinstance(redis, str) else None
        self._cluster = cluster
        self._client: Any = None if isinstance(redis, str) else redis
        self._script: Any = None
        # The store's own calls go through a breaker of their own: while Redis does not
        # answer, they are refused at once, and one is tried again after reconnect_interval.
        from synapse_core.breaker.breaker import CircuitBreaker

        self.breaker = CircuitBreaker(
            f"{prefix}-store",
            CircuitBreakerConfig(
                failure_threshold=1,
                minimum_requests=1,
                recovery_timeout=self.reconnect_interval,
                half_open_max_calls=1,
                success_threshold=1.0,
            ),
        )
        self._links: weakref.WeakValueDictionary[str, SharedLink] = weakref.WeakValueDictionary()
        self._lock = threading.Lock()
        self._client_lock = threading.Lock()
        self._wakeup = threading.Event()
        self._listening = threading.Event()
        self._stop = threading.Event()
        self._flushed = threading.Condition(self._lock)
        self._flush_asked = 0
        self._flush_done = 0
        self._flush_sent = False
        self._pid = os.getpid()
        self._forked = self._said_forked = self._warned_message = False
        _STORES.add(self)
        self._worker = threading.Thread(
            target=self._work, name=f"synapse-store-{replica}", daemon=True
        )
        self._listener = threading.Thread(
            target=self._listen, name=f"synapse-store-events-{replica}", daemon=True
        )
        self._worker.start()
        self._listener.start()

    # ------------------------------------------------------------ breakers

    def attach(self, breaker: CircuitBreaker) -> SharedLink:
        """Share *breaker* (``CircuitBreaker(..., store=store)`` calls this)."""
        if self._forked:
            raise RuntimeError(_FORKED.format(parent=self._pid, child=os.getpid()))
        if self._stop.is_set():
            raise RuntimeError("this SharedBreakerStore is closed; create a new one")
        if set(breaker.name) & set("{}"):
            # The name is the keys' hash tag ({name}): a brace would move some keys to
            # another cluster slot, and the script would fail on every call.
            raise ValueError(
                f"a shared breaker's name cannot contain braces, got {breaker.name!r}; "
                "it is the hash tag of its Redis keys"
            )
        if breaker.config.failure_window > self.ttl:
            raise ValueError(
                f"breaker {breaker.name!r}: failure_window ({breaker.config.failure_window:g}s) "
                f"is longer than the store's ttl ({self.ttl:g}s); its window would expire "
                "while in use: give the store a longer ttl"
            )
        with self._lock:
            if breaker.name in self._links:
                raise ValueError(
                    f"a breaker named {breaker.name!r} is already shared through this store; "
                    "one store is one replica: give each replica its own store"
                )
            link = SharedLink(self, breaker)
            self._links[breaker.name] = link
        return link

    def flush(self, timeout: float = 5.0) -> bool:
        """Send everything recorded so far now and wait for the answers (at most *timeout*).

        Returns whether Redis took it all in time (``False`` also while it is unreachable:
        the breakers then follow their own rules, and keep what they could not send). For
        tests and for a clean shutdown; the store flushes by itself otherwise.
        """
        deadline = time.monotonic() + timeout
        with self._lock:
            self._flush_asked += 1
            wanted = self._flush_asked
            self._wakeup.set()
            while self._flush_done < wanted and not self._stop.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._flushed.wait(left)
            return self._flush_done >= wanted and self._flush_sent

    @property
    def connected(self) -> bool:
        """Whether every shared breaker currently follows the fleet (Redis answers)."""
        return all(link.connected for link in list(self._links.values()))

    def close(self) -> None:
        """Stop sharing: pending outcomes are flushed (briefly), the breakers go on locally."""
        if self._forked:
            self.say_forked()
        if self._stop.is_set():
            return
        self.flush(timeout=max(0.5, 5 * self.timeout))
        self._stop.set()
        self._wakeup.set()
        self._worker.join(5)
        self._listener.join(5)
        for link in list(self._links.values()):
            link.close()
        if self._url is not None and self._client is not None:
            self._client.close()

    def __enter__(self) -> SharedBreakerStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<SharedBreakerStore replica={self.replica!r} breakers={len(self._links)}>"

    def _orphaned(self) -> None:
        """In a child forked after this store was made: its threads and connections stayed
        in the parent, so nothing here would send, hear or sync. Every breaker of the store
        follows its own rules (rather than a fleet it can no longer reach, whose rule never
        trips it locally), and the user is told where to make the store."""
        self._forked = True
        self._stop.set()
        self._client = None  # the parent's connections: never to be used here
        for link in list(self._links.values()):
            link.orphan()

    def say_forked(self) -> None:
        """Warn, once, that this store is used in a forked child (see :meth:`_orphaned`).

        Not from the fork handler itself: that also runs between fork and exec of a
        subprocess started with ``preexec_fn``, which never uses the store."""
        if self._said_forked:
            return
        self._said_forked = True
        logger.warning(
            _FORKED.format(parent=self._pid, child=os.getpid()),
            extra={"synapse_event": "breaker.store_forked", "replica": self.replica},
        )

    # ------------------------------------------------------------ calls (no breaker lock held)

    def wake(self) -> None:
        """Ask the store's thread to look at its breakers now."""
        self._wakeup.set()

    def listening(self) -> bool:
        """Wait (at most ``timeout``) until state changes can be heard; whether they can."""
        return self._listening.wait(self.timeout)

    def reachable(self) -> bool:
        """Whether a call to Redis would be tried now (its breaker admits one)."""
        return self.breaker.would_admit()

    def call(self, link: SharedLink, op: str, *args: str) -> FleetState | None:
        """Run *op* of the script for *link*'s breaker; the fleet's state, or ``None`` if
        Redis did not answer (every breaker then follows its own rules)."""
        answer = self.call_raw(link, op, *args)
        return None if answer is None else answer[0]

    def call_raw(
        self, link: SharedLink, op: str, *args: str
    ) -> tuple[FleetState, list[Any]] | None:
        """:meth:`call`, with the rest of the script's reply as it came."""
        keys = link.keys.all()
        argv = [op, self.replica, uuid.uuid4().hex, link.keys.channel, *link.args, *args]
        try:
            reply: list[Any] = self.breaker.call(self._run, keys, argv)
            fleet = FleetState.parse(reply[0])
        except CircuitOpenError:
            self._away("its breaker is open after a failed call")
            return None
        except Exception as exc:
            from redis.exceptions import MovedError  # redis-py is loaded: it raised this

            hint = (
                " (this Redis is a cluster: pass cluster=True)"
                if isinstance(exc, MovedError)
                else ""
            )
            self._away(f"{type(exc).__name__}: {exc}{hint}")
            return None
        link.exchanged_at = link.breaker._clock()
        return fleet, reply[1:]

    def _redis(self) -> Any:
        """The client (made from the URL on first use)."""
        client = self._client
        if client is None:
            with self._client_lock:
                if self._client is None:
                    assert self._url is not None
                    self._client = _connect(self._url, self.timeout, self._cluster)
                client = self._client
        return client

    def _run(self, keys: list[str], argv: list[str]) -> list[Any]:
        script = self._script
        if script is None:
            script = self._script = self._redis().register_script(SCRIPT)
        reply: list[Any] = script(keys=keys, args=argv)
        return reply

    def _away(self, why: str) -> None:
        for link in list(self._links.values()):
            link.disconnect(why)

    def _ignored(self, channel: bytes | str, error: Exception) -> None:
        """A message on a breaker's channel that is not a fleet state: warned of once."""
        if self._warned_message:
            return
        self._warned_message = True
        logger.warning(
            "shared breakers: ignored a message on %r that is not a fleet state (%r); only "
            "the stores of synapse_core.breaker.shared should publish there (others ignored "
            "silently)",
            channel,
            error,
            extra={"synapse_event": "breaker.store_bad_message", "replica": self.replica},
        )

    # ------------------------------------------------------------ the store's two threads

    def _work(self) -> None:
        """Send what each breaker has due, every flush_interval or when woken."""
        tick = min(self.flush_interval, self.sync_interval)
        while not self._stop.is_set():
            self._wakeup.wait(tick)
            self._wakeup.clear()
            with self._lock:
                asked = self._flush_asked
            force = asked > self._flush_done
            sent = True
            for link in list(self._links.values()):
                try:
                    sent = link.work(force=force) and sent
                except Exception:
                    sent = False
                    logger.exception(
                        "shared breaker %r: the store's thread failed", link.breaker.name
                    )
            if force:
                with self._lock:
                    self._flush_done = asked
                    self._flush_sent = sent
                    self._flushed.notify_all()

    def _listen(self) -> None:
        """Hear the fleet's state changes (pub/sub), resubscribing after any failure.

        One pattern covers every breaker of this prefix, present and future: a breaker made
        later hears from its first moment, and nothing is subscribed per breaker.
        """
        pattern = Keys.pattern(self.prefix)
        pubsub: Any = None
        pinged_at: float | None = None
        last_heard = time.monotonic()
        while not self._stop.is_set():
            try:
                if pubsub is None:
                    pubsub = self._redis().pubsub(ignore_subscribe_messages=True)
                    pubsub.psubscribe(pattern)
                    pinged_at = None
                    last_heard = time.monotonic()
                    # What was published while nobody listened is read by a sync.
                    for link in list(self._links.values()):
                        link.resync = True
                    self._wakeup.set()
                    self._listening.set()
                now = time.monotonic()
                if pinged_at is None and now - last_heard >= self.sync_interval:
                    pubsub.ping()  # a link cut without a reset says nothing: ask
                    pinged_at = now
                elif pinged_at is not None and now - pinged_at > self.sync_interval + self.timeout:
                    raise TimeoutError("no answer to PING on the pub/sub connection")
                message = pubsub.get_message(timeout=0.1)
                if message is None:
                    continue
                last_heard = time.monotonic()
                pinged_at = None
                if message["type"] != "pmessage":
                    continue
                name = Keys.name_of(message["channel"], self.prefix)
                heard = None if name is None else self._links.get(name)
                if heard is not None:
                    try:
                        fleet = FleetState.parse(message["data"])
                    except (ValueError, KeyError, TypeError) as exc:
                        # Someone else's message on our channel: not a reason to drop the
                        # connection (and miss the real ones while reconnecting).
                        self._ignored(message["channel"], exc)
                        continue
                    heard.receive(fleet)
            except Exception as exc:
                self._listening.clear()
                logger.debug("shared breakers: pub/sub connection lost (%r); reconnecting", exc)
                if pubsub is not None:
                    _quietly_close(pubsub)
                    pubsub = None
                self._stop.wait(self.reconnect_interval)
        if pubsub is not None:
            _quietly_close(pubsub)


def _seconds(field: str, value: object) -> float:
    """*value* as a finite number of seconds > 0 (a ``timedelta`` too), or an error naming
    *field*."""
    seconds = to_seconds(value, field)  # type: ignore[arg-type]  # checked there
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ValueError(f"{field} must be a finite number of seconds > 0, got {value!r}")
    return seconds


def _import_redis() -> Any:
    try:
        import redis
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "SharedBreakerStore needs redis-py: pip install 'synapse-chaos[redis]'"
        ) from exc
    return redis


def _check_redis(given: object, cluster: bool) -> None:
    """A URL redis-py can read, or a client of its blocking API; an error saying what to
    pass otherwise (where the store is made, not as a store that never connects)."""
    redis = _import_redis()
    from redis.cluster import RedisCluster
    from redis.connection import parse_url

    if isinstance(given, str):
        try:
            parse_url(given)  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
        except ValueError as exc:
            raise ValueError(
                f"redis: {exc} (got {given!r}); for example redis://127.0.0.1:6379/0"
            ) from None
        if cluster and given.startswith("unix://"):
            raise ValueError(
                f"redis: a Redis Cluster is reached over TCP (redis:// or rediss://), got {given!r}"
            )
        return
    if not isinstance(given, redis.Redis | RedisCluster):
        raise TypeError(
            "redis must be a redis:// URL, or a redis.Redis or redis.cluster.RedisCluster client "
            f"(the blocking API, not redis.asyncio), got {type(given).__name__} {given!r}"
        )


def _connect(url: str, timeout: float, cluster: bool) -> Any:
    """A client for *url* with tight timeouts and no retries (the store's breaker retries)."""
    redis = _import_redis()
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    options: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 0),
        "health_check_interval": 0,
    }
    if cluster:
        from redis.cluster import RedisCluster

        return RedisCluster.from_url(url, **options)
    return redis.Redis.from_url(url, **options)


def _quietly_close(pubsub: Any) -> None:
    try:
        pubsub.close()
    except Exception:
        logger.debug("shared breakers: closing the pub/sub connection failed", exc_info=True)
