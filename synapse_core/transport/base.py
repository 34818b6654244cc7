"""The abstract transport: lifecycle, breaker-guarded sends and probes, metrics, inbound queue.

Every transport shares this behaviour; a concrete transport only moves bytes. It implements
``_start``/``_stop``, ``_transmit`` (send one encoded message and return once the peer
acknowledged it), ``_probe`` (one round trip), ``capabilities`` and optionally ``_check_target``
(raise ``PeerUnknownError`` for a target it cannot address), ``_encode``, ``_pinned`` (targets
whose state is kept however many others come and go) and ``_target_forgotten``. Inbound
messages are handed to ``_accept_inbound``, which checks, de-duplicates and queues them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import ClassVar, Self, overload
from uuid import UUID

from synapse_core.breaker import (
    CallPermit,
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitBreakerManager,
    CircuitStats,
    TransportMetrics,
)
from synapse_core.clock import Clock, check_clock, monotonic_clock
from synapse_core.errors import CircuitOpenError
from synapse_core.transport.auth import MessageAuthenticator
from synapse_core.transport.errors import (
    AuthenticationError,
    MessageRejectedError,
    TransportClosedError,
)
from synapse_core.transport.estimator import LinkEstimator, LinkStats
from synapse_core.transport.framing import NackCode
from synapse_core.transport.message import Message

logger = logging.getLogger("synapse_core.transport")

_perf = time.perf_counter

_FAILED_REFUSALS = frozenset((NackCode.BUSY.label, NackCode.MISADDRESSED.label))

DEFAULT_INBOUND_QUEUE_BYTES = 64 * 1024 * 1024
"""64 MiB: inbound bytes a transport holds for the application before answering ``busy``."""
DEFAULT_DEDUP_WINDOW = 65_536
"""Recent message ids a transport without a replay-checking authenticator remembers."""
DEFAULT_TARGET_CACHE_SIZE = 1024
"""Breakers (with metrics) kept for targets that are not known peers, at most."""


@dataclass(frozen=True, slots=True)
class DeliveryReceipt:
    """Proof of delivery: the peer acknowledged the message (it is in the peer's inbound queue).

    Attributes:
        message_id: the message's id.
        target: the peer it was sent to.
        transport: the transport kind that delivered it (``"tcp"``, ``"mdns"``...).
        breaker: the name of the breaker that admitted the send.
        latency: seconds from starting the send to the acknowledgement.
        size: bytes of the encoded message.
        delivered_at: when the acknowledgement arrived (UTC).
    """

    message_id: UUID
    target: str
    transport: str
    breaker: str
    latency: float
    size: int
    delivered_at: datetime


@dataclass(frozen=True, slots=True)
class TransportStats:
    """Counters of a transport since it was created (a snapshot from ``transport.stats()``).

    ``send_failures`` includes ``send_timeouts``; ``rejected_by_breaker`` sends never ran;
    ``rejected_by_peer`` sends were refused with a NACK; ``auth_failures``,
    ``misaddressed`` (addressed to another node) and ``inbound_dropped`` (queue full) are
    inbound messages this transport refused; ``duplicates`` are inbound messages it had
    already delivered (acknowledged again, not queued twice); ``protocol_errors`` are
    connections closed for bad frames or undecodable messages. ``connections_opened`` and
    ``connections_accepted`` count outbound and inbound connections (for transports that have
    them): with connection reuse, many messages share one. ``connections_evicted`` are inbound
    connections closed to make room for a newcomer; ``targets_forgotten`` are targets whose
    breaker and metrics were dropped to stay within ``target_cache_size``.
    """

    messages_sent: int
    messages_received: int
    send_failures: int
    send_timeouts: int
    rejected_by_breaker: int
    rejected_by_peer: int
    probes: int
    probe_failures: int
    auth_failures: int
    inbound_dropped: int
    protocol_errors: int
    bytes_sent: int
    bytes_received: int
    connections_opened: int
    connections_accepted: int
    duplicates: int = 0
    misaddressed: int = 0
    connections_evicted: int = 0
    targets_forgotten: int = 0


class _Counters:
    __slots__ = (
        "auth_failures",
        "bytes_received",
        "bytes_sent",
        "connections_accepted",
        "connections_evicted",
        "connections_opened",
        "duplicates",
        "inbound_dropped",
        "messages_received",
        "messages_sent",
        "misaddressed",
        "probe_failures",
        "probes",
        "protocol_errors",
        "rejected_by_breaker",
        "rejected_by_peer",
        "send_failures",
        "send_timeouts",
        "targets_forgotten",
    )

    def __init__(self) -> None:
        self.messages_sent = 0
        self.messages_received = 0
        self.send_failures = 0
        self.send_timeouts = 0
        self.rejected_by_breaker = 0
        self.rejected_by_peer = 0
        self.probes = 0
        self.probe_failures = 0
        self.auth_failures = 0
        self.inbound_dropped = 0
        self.protocol_errors = 0
        self.bytes_sent = 0
        self.bytes_received = 0
        self.connections_opened = 0
        self.connections_accepted = 0
        self.duplicates = 0
        self.misaddressed = 0
        self.connections_evicted = 0
        self.targets_forgotten = 0

    def snapshot(self) -> TransportStats:
        return TransportStats(**{name: getattr(self, name) for name in self.__slots__})


_Queued = tuple[Message, int]  # a message and the bytes it was received as


class _InboundIterator:
    """``async for message in transport``: yields until the transport stops and is drained."""

    __slots__ = ("_transport",)

    def __init__(self, transport: Transport) -> None:
        self._transport = transport

    def __aiter__(self) -> _InboundIterator:
        return self

    async def __anext__(self) -> Message:
        transport = self._transport
        item = await transport._inbound.get()
        if item is None:
            transport._inbound.put_nowait(None)  # leave the end marker for other readers
            raise StopAsyncIteration
        transport._inbound_bytes -= item[1]
        return item[0]


class _RecentIds:
    """The last *capacity* message ids received (a de-duplication window of fixed size)."""

    __slots__ = ("_capacity", "_order", "ids")

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self.ids: set[int] = set()  # read directly on the hot path
        self._order: deque[int] = deque()

    def add(self, key: int) -> None:
        ids = self.ids
        if key in ids:
            return
        ids.add(key)
        order = self._order
        order.append(key)
        if len(order) > self._capacity:
            ids.discard(order.popleft())


class _RoundTrip:
    """Where the outcome of one admitted round trip goes, for sends and probes alike.

    ``with _RoundTrip(...) as trip: await ...`` reports it to the permit, the link's and the
    transport's estimates, the breaker's triggers and the counters, then lets any exception
    through; ``trip.elapsed`` is the round trip's time. *sent* is the message's size (``None``
    for a probe). Our own shutdown or cancellation, and a ``BaseException`` that is not an
    ``Exception`` (Ctrl-C), say nothing about the peer: the permit is given back unrecorded.
    """

    __slots__ = ("_breaker", "_link", "_permit", "_sent", "_transport", "elapsed", "started")

    def __init__(
        self,
        transport: Transport,
        breaker: CircuitBreaker,
        permit: CallPermit,
        link: LinkEstimator,
        *,
        sent: int | None,
    ) -> None:
        self._transport = transport
        self._breaker = breaker
        self._permit = permit
        self._link = link
        self._sent = sent
        self.started = 0.0
        self.elapsed = 0.0

    def __enter__(self) -> Self:
        self.started = _perf()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        elapsed = self.elapsed = _perf() - self.started
        if exc is None:
            if self._sent is not None:
                counters = self._transport._counters
                counters.messages_sent += 1
                counters.bytes_sent += self._sent
                self._link.messages_sent += 1
            self._answered(elapsed)
        elif isinstance(exc, asyncio.CancelledError | TransportClosedError) or not isinstance(
            exc, Exception
        ):
            self._permit.release()
        elif isinstance(exc, MessageRejectedError) and self._sent is not None:
            self._transport._counters.rejected_by_peer += 1
            # An overloaded peer is unhealthy, and a node that is not the target means the
            # target is not there; any other refusal proves the link to it works.
            if exc.code in _FAILED_REFUSALS:
                self._failed(exc, elapsed, forced=True)
            else:
                self._answered(elapsed)
        else:
            self._failed(exc, elapsed, forced=False)

    def _answered(self, elapsed: float) -> None:
        self._permit.success(elapsed)
        self._transport._succeeded(self._link, elapsed, self._sent or 0)
        self._transport._judge(self._breaker, self._link, elapsed)

    def _failed(self, exc: Exception, elapsed: float, *, forced: bool) -> None:
        counters = self._transport._counters
        if self._sent is None:
            counters.probe_failures += 1
        else:
            counters.send_failures += 1
            self._link.messages_failed += 1
            if isinstance(exc, TimeoutError):
                counters.send_timeouts += 1
        if forced:
            self._permit.failure(exc, elapsed)  # whatever failure_exceptions says
        else:
            self._permit.error(exc, elapsed)
        self._transport._failed(self._link)
        self._transport._judge(self._breaker, self._link, None)


class Transport(ABC):
    """An asynchronous message transport whose every send and probe goes through a breaker.

    Lifecycle: ``await t.start()`` / ``await t.stop()``, or ``async with SomeTransport(...) as
    t``. A stopped transport cannot be started again.

    Sending: ``await t.send_message(target, message)`` returns a :class:`DeliveryReceipt` once
    the peer acknowledged it. It goes through the transport's breaker for *target* (one per
    peer, so one sick peer does not block the healthy ones); ``send_message_with_breaker`` does
    the same with a breaker you pass (shared by several transports, say). While that breaker is
    open the call raises :class:`~synapse_core.CircuitOpenError` at once, without touching the
    network. Each admitted call records exactly one outcome: success, failure, or ``TIMEOUT``
    for timeouts; a peer that refuses a message (``MessageRejectedError``) answered, so that
    counts as a success unless it refused because it is overloaded (``busy``) or is another
    node than the target (``misaddressed``). A cancelled
    send records nothing. After each outcome the breaker's external triggers are evaluated with
    the measured :class:`~synapse_core.TransportMetrics` (skipped when it has none).

    Receiving: ``await t.receive_messages()`` drains the inbound queue (``[]`` when empty);
    ``async for message in t`` waits for messages and ends once the transport stopped and the
    queue is drained. Only messages addressed to ``node_id`` are taken (others are answered
    ``misaddressed``), and each message id is delivered once: a message that arrives again is
    acknowledged again but not queued (``stats().duplicates``).

    Args:
        node_id: this peer's id (its ``from_global_id``); breakers are named
            ``"<kind>:<node_id>-><target>"``.
        breaker_config: the per-peer breakers' config (default: the original Synapse preset,
            3 failures / 2 requests / 30 s window / 10 s recovery / 2 probes / 0.7).
        breaker_manager: register the per-peer breakers in this manager (an existing breaker of
            the same name is reused); by default the transport keeps its own.
        clock: the breakers' clock (``VirtualClock`` in tests). Latency is always measured on
            the real ``time.perf_counter``.
        authenticator: sign outgoing and verify inbound messages, and sign replies (see
            ``MessageAuthenticator``).
        inbound_queue_size: inbound messages held before peers are told ``busy``.
        inbound_queue_bytes: bytes of inbound messages (as received) held before peers are
            told ``busy`` (default 64 MiB); a message larger than this is still taken when the
            queue is empty.
        dedup_window: how many recent message ids are remembered to recognise a message that
            arrives again (a sender's retry, a failover, a replay): it is acknowledged again
            but delivered once (``0`` turns this off). With an authenticator that has a
            ``max_age``, its replay memory does this instead, for exactly ``max_age``.
        target_cache_size: breakers and metrics kept for targets this transport does not
            otherwise know (literal ``"host:port"`` targets, ids no longer discovered); the
            least recently used beyond this many are forgotten. Known peers are never counted.
    """

    kind: ClassVar[str] = "transport"

    def __init__(
        self,
        node_id: str,
        *,
        breaker_config: CircuitBreakerConfig | None = None,
        breaker_manager: CircuitBreakerManager | None = None,
        clock: Clock | None = None,
        authenticator: MessageAuthenticator | None = None,
        inbound_queue_size: int = 1024,
        inbound_queue_bytes: int = DEFAULT_INBOUND_QUEUE_BYTES,
        dedup_window: int = DEFAULT_DEDUP_WINDOW,
        target_cache_size: int = DEFAULT_TARGET_CACHE_SIZE,
    ) -> None:
        if not isinstance(node_id, str) or not node_id:
            raise TypeError(f"node_id must be a non-empty str, got {node_id!r}")
        if inbound_queue_size < 1:
            raise ValueError(f"inbound_queue_size must be >= 1, got {inbound_queue_size}")
        if inbound_queue_bytes < 1:
            raise ValueError(f"inbound_queue_bytes must be >= 1, got {inbound_queue_bytes}")
        if dedup_window < 0:
            raise ValueError(f"dedup_window must be >= 0 message ids, got {dedup_window}")
        if target_cache_size < 1:
            raise ValueError(f"target_cache_size must be >= 1, got {target_cache_size}")
        if authenticator is not None and not isinstance(authenticator, MessageAuthenticator):
            raise TypeError(f"authenticator must be a MessageAuthenticator, got {authenticator!r}")
        self.node_id = node_id
        self._clock: Clock = monotonic_clock if clock is None else check_clock(clock)
        self._breaker_config = breaker_config or CircuitBreakerConfig()
        self._manager = breaker_manager
        self._peer_breakers: dict[str, CircuitBreaker] = {}
        self._links: dict[str, LinkEstimator] = {}
        self._overall = LinkEstimator()
        self._authenticator = authenticator
        self._inbound: asyncio.Queue[_Queued | None] = asyncio.Queue()
        self._inbound_limit = inbound_queue_size
        self._inbound_bytes_limit = inbound_queue_bytes
        self._inbound_bytes = 0
        self._recent = _RecentIds(dedup_window) if dedup_window else None
        self._target_cache_size = target_cache_size
        # Targets with a breaker or metrics that _pinned() does not hold, least recent first.
        self._unpinned: OrderedDict[str, None] = OrderedDict()
        self._counters = _Counters()
        # new -> starting -> running -> stopping -> stopped; "stopping" also covers a start
        # that failed or was aborted and is closing what it opened.
        self._state = "new"
        self._start_task: asyncio.Task[None] | None = None
        self._start_waiters = 0
        self._start_claimed = False  # some start() returned: the transport has an owner
        self._start_aborted = False  # stop() cancelled the start
        self._close_task: asyncio.Task[None] | None = None
        self._ended = False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.node_id!r} {self._state}>"

    # ------------------------------------------------------------------ lifecycle

    @property
    def running(self) -> bool:
        """Whether ``start()`` completed and ``stop()`` has not been called."""
        return self._state == "running"

    async def start(self) -> None:
        """Start listening (and discovering, where the transport does). Idempotent.

        Concurrent calls share one start. If the start fails, or ``stop()`` interrupts it,
        everything it opened is closed before this raises (``TransportClosedError`` for a
        stop), and the transport is stopped for good.
        """
        if self._state == "running":
            self._start_claimed = True
            return
        if self._state != "new" and self._state != "starting":
            raise TransportClosedError(
                f"{self!r} was stopped and cannot be restarted; create a new transport"
            )
        task = self._start_task
        if task is None:
            self._state = "starting"
            task = self._start_task = asyncio.get_running_loop().create_task(self._run_start())
        self._start_waiters += 1
        try:
            # Shielded: one caller giving up must not abort the start the others wait for.
            await asyncio.shield(task)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                if self._start_waiters == 1 and not self._start_claimed:
                    # Nobody else wants this start, and a cancelled caller never gets to
                    # stop() what it started (``async with`` skips __aexit__): close it here.
                    self._begin_close(abort_start=True)
                    await asyncio.wait([self._join_close()])
                raise
            await self._join_close()
            raise TransportClosedError(f"{self!r} was stopped while starting") from None
        except BaseException as exc:
            await self._join_close()
            if self._start_aborted:
                raise TransportClosedError(f"{self!r} was stopped while starting") from exc
            raise
        finally:
            self._start_waiters -= 1
        if self._start_aborted:  # the start swallowed stop()'s cancellation and finished
            await self._join_close()
            raise TransportClosedError(f"{self!r} was stopped while starting")
        self._start_claimed = True

    async def _run_start(self) -> None:
        try:
            await self._start()
        except BaseException:
            if self._state == "starting":
                self._state = "stopping"
            raise
        if self._state == "starting":
            self._state = "running"

    async def stop(self) -> None:
        """Stop listening, close every connection and end inbound iteration. Idempotent.

        A start in progress is cancelled (its ``start()`` raises ``TransportClosedError``);
        concurrent calls all return once everything is closed. Messages already queued stay
        readable with ``receive_messages()``.
        """
        if self._state == "new":
            self._state = "stopped"
            self._end_iteration()
            return
        close = self._close_task
        if self._state == "stopped" and close is None:
            return  # never started, stopped already: nothing to close
        if close is not None and close.done():
            return
        self._begin_close(abort_start=self._state == "starting")
        await self._join_close()

    def _begin_close(self, *, abort_start: bool) -> None:
        start = self._start_task
        if abort_start and start is not None and not start.done():
            # Cancelling beats waiting: an mDNS start may still be probing or announcing for
            # a second and a half, and whatever it opened is closed below either way.
            self._start_aborted = True
            start.cancel()
        if self._state != "stopped":
            self._state = "stopping"
        if self._close_task is None:
            self._close_task = asyncio.get_running_loop().create_task(self._close())

    def _join_close(self) -> asyncio.Future[None]:
        """The shared close (begun if not yet), shielded from the cancellation of one waiter."""
        if self._close_task is None:
            self._begin_close(abort_start=False)
        assert self._close_task is not None
        return asyncio.shield(self._close_task)

    async def _close(self) -> None:
        start = self._start_task
        try:
            if start is not None and not start.done():
                # _stop() must not run alongside _start(): it would close what the start has
                # opened so far and the start would then open the rest.
                await asyncio.wait([start])
            await self._stop()
        finally:
            self._state = "stopped"
            self._end_iteration()

    def _end_iteration(self) -> None:
        if not self._ended:
            self._ended = True
            self._inbound.put_nowait(None)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def _require_running(self) -> None:
        if self._state != "running":
            raise TransportClosedError(
                f"{self!r} is not running: call await transport.start() or use async with"
            )

    # ------------------------------------------------------------------ breakers and metrics

    def breaker_name(self, target: str) -> str:
        """The name of the per-peer breaker for *target*."""
        return f"{self.kind}:{self.node_id}->{target}"

    def get_circuit_breaker(self, target: str) -> CircuitBreaker:
        """The breaker guarding sends to *target* (created on first use).

        For a target that is not a known peer, at most ``target_cache_size`` breakers are
        kept: the least recently used is forgotten (with its metrics) to make room.
        """
        breaker = self._peer_breakers.get(target)
        if breaker is not None:
            unpinned = self._unpinned
            if unpinned and target in unpinned:
                unpinned.move_to_end(target)
            return breaker
        name = self.breaker_name(target)
        if self._manager is not None:
            breaker = self._manager.get_breaker(name)
            if breaker is None:
                breaker = self._manager.add_breaker(
                    name, CircuitBreaker(name, self._breaker_config, clock=self._clock)
                )
        else:
            breaker = CircuitBreaker(name, self._breaker_config, clock=self._clock)
        self._peer_breakers[target] = breaker
        self._track(target)
        return breaker

    @property
    def circuit_breakers(self) -> dict[str, CircuitBreaker]:
        """Every per-peer breaker created so far, by target (a copy)."""
        return dict(self._peer_breakers)

    @overload
    def get_circuit_stats(self) -> dict[str, CircuitStats]: ...
    @overload
    def get_circuit_stats(self, target: str) -> CircuitStats: ...
    def get_circuit_stats(
        self, target: str | None = None
    ) -> dict[str, CircuitStats] | CircuitStats:
        """Stats of the breaker for *target*, or of every per-peer breaker by target."""
        if target is not None:
            return self.get_circuit_breaker(target).stats()
        return {peer: breaker.stats() for peer, breaker in self._peer_breakers.items()}

    def get_metrics(self, target: str | None = None) -> TransportMetrics:
        """Measured link health to *target*, or across all peers when *target* is ``None``."""
        if target is None:
            return self._overall.snapshot()
        link = self._links.get(target)
        return link.snapshot() if link is not None else LinkEstimator().snapshot()

    def link_stats(self) -> dict[str, LinkStats]:
        """Per-peer round-trip and message counters with the current estimates (a snapshot)."""
        return {target: link.stats() for target, link in list(self._links.items())}

    @property
    def estimated_latency(self) -> float:
        """Smoothed round-trip latency in seconds across all peers (0.05 before any sample)."""
        return self._overall.latency

    @property
    def reliability_score(self) -> float:
        """0.0 to 1.0: rises toward 1 with each success, falls toward 0 with each failure."""
        return self._overall.reliability

    @property
    @abstractmethod
    def capabilities(self) -> frozenset[str]:
        """What this transport offers (``"acknowledged"``, ``"discovery"``...)."""

    def stats(self) -> TransportStats:
        """A snapshot of this transport's counters."""
        return self._counters.snapshot()

    def _forget_peer(self, target: str) -> None:
        """Drop the per-peer breaker and metrics of a peer that is gone."""
        breaker = self._peer_breakers.pop(target, None)
        manager = self._manager
        if (
            breaker is not None
            and manager is not None
            and manager.get_breaker(breaker.name) is breaker
        ):
            manager.remove_breaker(breaker.name)
        self._links.pop(target, None)
        self._unpinned.pop(target, None)

    def _link(self, target: str) -> LinkEstimator:
        link = self._links.get(target)
        if link is None:
            link = self._links[target] = LinkEstimator()
            self._track(target)
        else:
            unpinned = self._unpinned
            if unpinned and target in unpinned:
                unpinned.move_to_end(target)
        return link

    def _track(self, target: str) -> None:
        """*target* has new state: if it is not a known peer, count it against
        ``target_cache_size``, forgetting the least recently used such targets beyond it.

        A target that becomes a known peer later is taken out by :meth:`_now_pinned`.
        """
        if self._pinned(target):
            return
        unpinned = self._unpinned
        unpinned[target] = None
        unpinned.move_to_end(target)
        while len(unpinned) > self._target_cache_size:
            oldest = next(iter(unpinned))
            self._forget_peer(oldest)  # also removes it from _unpinned
            self._counters.targets_forgotten += 1
            self._target_forgotten(oldest)

    # ------------------------------------------------------------------ sending

    async def send_message(self, target: str, message: Message) -> DeliveryReceipt:
        """Send *message* to *target* through its per-peer breaker; return the receipt."""
        return await self.send_message_with_breaker(target, message)

    async def send_message_with_breaker(
        self, target: str, message: Message, breaker: CircuitBreaker | None = None
    ) -> DeliveryReceipt:
        """Send through *breaker* (default: the per-peer breaker for *target*).

        Raises ``CircuitOpenError`` (rejected, nothing sent), ``PeerUnknownError`` (nothing
        sent, breaker untouched), ``FrameTooLargeError`` (nothing sent, permit given back
        unrecorded), ``DeliveryError`` /
        ``DeliveryTimeoutError`` (recorded as failure / timeout) or ``MessageRejectedError``.
        """
        self._require_running()
        if not isinstance(message, Message):
            raise TypeError(f"message must be a Message, got {type(message).__name__}")
        self._check_target(target)
        if breaker is None:
            breaker = self.get_circuit_breaker(target)
        try:
            permit = breaker.acquire()  # first: a rejection costs no signing or encoding
        except CircuitOpenError:
            self._counters.rejected_by_breaker += 1
            raise
        try:
            if self._authenticator is not None:
                message = self._authenticator.sign(message)
            data = self._encode(message)
        except BaseException:
            permit.release()  # nothing was sent (too large, say): not the peer's doing
            raise
        with _RoundTrip(self, breaker, permit, self._link(target), sent=len(data)) as trip:
            await self._transmit(target, message, data)
        elapsed = trip.elapsed
        return DeliveryReceipt(
            message_id=message.message_id,
            target=target,
            transport=self.kind,
            breaker=breaker.name,
            latency=elapsed,
            size=len(data),
            delivered_at=datetime.now(UTC),
        )

    async def test_connectivity(self, target: str) -> TransportMetrics:
        """Probe *target* with one round trip through its breaker; return the link's metrics.

        Failures raise like :meth:`send_message` (and are recorded the same way).
        """
        return await self.test_connectivity_with_breaker(target)

    async def test_connectivity_with_breaker(
        self, target: str, breaker: CircuitBreaker | None = None
    ) -> TransportMetrics:
        """Probe *target* through *breaker* (default: its per-peer breaker).

        One exception to "rejected while open": when the recovery timeout has passed but an
        external trigger (say, a ``LatencyTrigger``) still holds the breaker open, the probe is
        made anyway, outside the breaker (no outcome is recorded), so that its measurement
        reaches the trigger. Without it, a breaker opened by a trigger would never see the
        link improve. Call ``test_connectivity`` until the trigger is satisfied; the next call
        is then admitted as a half-open probe.
        """
        self._require_running()
        self._check_target(target)
        if breaker is None:
            breaker = self.get_circuit_breaker(target)
        try:
            permit = breaker.acquire()
        except CircuitOpenError as exc:
            if exc.retry_after is None and breaker.held_by:
                return await self._measure_for_triggers(target, breaker)
            self._counters.rejected_by_breaker += 1
            raise
        link = self._link(target)
        self._counters.probes += 1
        with _RoundTrip(self, breaker, permit, link, sent=None) as trip:
            await self._probe(target)
        return link.snapshot(latency=trip.elapsed)

    async def _measure_for_triggers(self, target: str, breaker: CircuitBreaker) -> TransportMetrics:
        link = self._link(target)
        self._counters.probes += 1
        started = _perf()
        try:
            await self._probe(target)
        except Exception:
            self._counters.probe_failures += 1
            self._failed(link)
            breaker.check_external_triggers(link.snapshot())  # no latency sample: see _judge
            raise
        elapsed = _perf() - started
        self._succeeded(link, elapsed, 0)
        metrics = link.snapshot(latency=elapsed)
        breaker.check_external_triggers(metrics)
        return metrics

    async def can_reach(self, target: str) -> bool:
        """Whether a send to *target* would be attempted now: the peer is known and its breaker
        would admit the call. Changes nothing (no breaker is created or consulted for admission).
        """
        if self._state != "running":
            return False
        try:
            self._check_target(target)
        except LookupError:
            return False
        breaker = self._peer_breakers.get(target)
        return breaker is None or breaker.would_admit()

    def _succeeded(self, link: LinkEstimator, elapsed: float, nbytes: int) -> None:
        link.record_success(elapsed, nbytes)
        self._overall.record_success(elapsed, nbytes)

    def _failed(self, link: LinkEstimator) -> None:
        link.record_failure()
        self._overall.record_failure()

    @staticmethod
    def _judge(breaker: CircuitBreaker, link: LinkEstimator, elapsed: float | None) -> None:
        """Feed the breaker's triggers; *elapsed* is ``None`` after a failure.

        A failed round trip measured no latency: a refusal takes 0.3 ms, and reporting that
        would let a ``LatencyTrigger`` recover on a dead peer. It still moves reliability and
        packet loss; its latency is the smoothed estimate, marked unmeasured, so a
        ``LatencyTrigger`` takes no sample from it.
        """
        # Building metrics costs an allocation and a clock read: only when someone judges them.
        if breaker.triggers:
            breaker.check_external_triggers(link.snapshot(latency=elapsed))

    # ------------------------------------------------------------------ receiving

    async def receive_messages(self) -> list[Message]:
        """Every message received and not yet read (``[]`` when none); does not wait."""
        queue = self._inbound
        messages: list[Message] = []
        ended = False
        while not queue.empty():
            item = queue.get_nowait()
            if item is None:
                ended = True
            else:
                messages.append(item[0])
                self._inbound_bytes -= item[1]
        if ended:
            queue.put_nowait(None)
        return messages

    def __aiter__(self) -> AsyncIterator[Message]:
        return _InboundIterator(self)

    def _accept_inbound(self, message: Message, size: int) -> NackCode | None:
        """Check, de-duplicate and queue an inbound message; return why it was refused, or
        ``None`` (acknowledge it: queued now, or delivered already)."""
        counters = self._counters
        to = message.to_global_id
        if to != self.node_id and not self._addressed_to_me(to):
            counters.misaddressed += 1
            logger.warning(
                "%s refused a message from %r addressed to %r",
                self,
                message.from_global_id,
                message.to_global_id,
            )
            return NackCode.MISADDRESSED
        authenticator = self._authenticator
        if authenticator is not None:
            try:
                authenticator.check(message, replay=False)
            except AuthenticationError as exc:
                counters.auth_failures += 1
                logger.warning(
                    "%s refused a message from %r: %s", self, message.from_global_id, exc
                )
                return NackCode.UNAUTHENTICATED
        if authenticator is not None and authenticator.max_age is not None:
            recent = None  # the authenticator's replay memory is the window
            duplicate = authenticator.seen(message.message_id)
        else:
            authenticator = None
            recent = self._recent
            duplicate = recent is not None and message.message_id.int in recent.ids
        if duplicate:
            # Delivered before (a retry whose ack was lost, a failover, a replay): acknowledge
            # it again so the sender stops, but never hand it to the application twice.
            counters.duplicates += 1
            logger.debug("%s: message %s arrived again", self, message.message_id)
            return None
        queue = self._inbound
        queued = queue.qsize()
        if queued >= self._inbound_limit or (
            queued and self._inbound_bytes + size > self._inbound_bytes_limit
        ):
            # Not remembered as received: the sender may (and should) retry the same message.
            counters.inbound_dropped += 1
            return NackCode.BUSY
        queue.put_nowait((message, size))
        self._inbound_bytes += size
        if authenticator is not None:
            authenticator.remember(message)  # only now is a second copy a repeat
        elif recent is not None:
            recent.add(message.message_id.int)
        counters.messages_received += 1
        counters.bytes_received += size
        return None

    @property
    def inbound_bytes(self) -> int:
        """Bytes of the messages waiting in the inbound queue (as they were received)."""
        return self._inbound_bytes

    # ------------------------------------------------------------------ for implementations

    def _check_target(self, target: str) -> None:  # noqa: B027 - optional hook
        """Raise ``PeerUnknownError`` if *target* cannot be addressed."""

    def _pinned(self, target: str) -> bool:
        """Whether *target* is a known peer, whose breaker is kept until the peer goes."""
        return False

    def _now_pinned(self, target: str) -> None:
        """*target* became a known peer: its state no longer counts as a passing target's."""
        self._unpinned.pop(target, None)

    def _target_forgotten(self, target: str) -> None:  # noqa: B027 - optional hook
        """*target*'s breaker and metrics were dropped (``target_cache_size``): free the rest."""

    def _addressed_to_me(self, to_global_id: str) -> bool:
        """Whether a message for *to_global_id* is for this node (else ``NACK misaddressed``)."""
        return to_global_id == self.node_id

    def _encode(self, message: Message) -> bytes:
        """The bytes ``_transmit`` sends (raise ``FrameTooLargeError`` if too big)."""
        return message.to_bytes()

    @abstractmethod
    async def _start(self) -> None:
        """Open listeners (and discovery)."""

    @abstractmethod
    async def _stop(self) -> None:
        """Close everything ``_start`` and the sends opened; must tolerate a failed start."""

    @abstractmethod
    async def _transmit(self, target: str, message: Message, data: bytes) -> None:
        """Deliver *data* (the encoded *message*); return once the peer acknowledged it."""

    @abstractmethod
    async def _probe(self, target: str) -> None:
        """One round trip to *target* (raise on failure)."""
