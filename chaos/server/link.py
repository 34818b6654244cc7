"""The data plane: one proxied TCP connection and the two directions of data through it.

Hot path: with no active toxic in a direction, bytes read into a shared buffer are written straight
to the other socket from ``buffer_updated`` (no task, no queue, no per-chunk allocation besides the
memoryview slice). As soon as a toxic is active the direction switches to a queue drained by one
task that runs each chunk through the toxic runtimes, and back once the queue is empty again.

Fastest path (Linux): once a toxic-free direction carries bulk data (one read of
:data:`~chaos.server.splice.SPLICE_MIN_READ` or more) and the destination's write buffer is empty,
it hands over to a :class:`~chaos.server.splice.SplicePump`, which moves the bytes inside the
kernel. Adding a toxic takes the direction back at once: bytes the pump holds are written through
the destination's transport first (as bytes already passed on, like the transport's own buffer),
then reading resumes through the toxics.

Flow control: when a socket's write buffer passes asyncio's high-water mark, or a direction's queue
passes :data:`QUEUE_HIGH_WATER`, reading from the source socket pauses until it drains, so a slow
reader or a slow toxic never makes the proxy buffer without bound.

Toxicity is rolled once per connection, direction and toxic: when the connection opens (for the
toxics that exist then) and again for a toxic whenever it is added or updated.

Ending a connection: a graceful :meth:`Connection.close` flushes what the proxy still holds, but
a peer that does not read would keep it open for good, so a close that delivers nothing for
``ServerLimits.close_timeout`` seconds becomes a reset. Disabling or deleting the proxy ends its
connections at once (:meth:`Connection.abort`), as Toxiproxy does. While the upstream connect is
pending the client is read (its bytes wait in the direction's queue), so a client that leaves is
noticed: a reset ends the attempt at once, a FIN after ``connect_after_client_eof`` seconds.
No task of the data plane ends with an exception: a peer that went away is a normal end.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import sys
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Final, Protocol

from chaos.server import splice
from chaos.server.fds import RESOURCE_ERRNOS, FdReserve
from chaos.server.limits import ServerLimits
from chaos.server.runtimes import Chunks, ToxicRuntime, make_runtime
from chaos.server.splice import SPLICE_MIN_READ, PipePool, SplicePump
from chaos.server.throttle import ThrottledLog
from chaos.server.toxics import Stream, ToxicSpec

if TYPE_CHECKING:
    from collections.abc import Iterator

    from chaos.server.traffic import TrafficLog

QUEUE_HIGH_WATER: Final = 1 << 20
"""Bytes queued behind toxics in one direction before reading from its source pauses."""

CONNECTING_HIGH_WATER: Final = 64 * 1024
"""Bytes a client may send before the upstream is connected; beyond that they wait in the kernel
(so thousands of clients of a blackholed upstream cannot make the proxy buffer gigabytes)."""

# Bigger reads mean fewer trips through Python per byte: 1 MiB measured ~35% faster than 256 KiB
# (benchmarks/bench_proxy.py). One buffer serves the whole server, so its size costs nothing per
# connection.
READ_BUFFER_SIZE: Final = 1024 * 1024

# CPython 3.11's socket transport copies any unsent tail of write() into its own bytearray, so a
# view of the shared read buffer can be written as is. Later versions may keep a reference to the
# object passed in, so there the bytes are copied first.
_WRITE_VIEWS: Final = sys.version_info < (3, 12)

_PAUSED_BY_DEST: Final = 1
_PAUSED_BY_QUEUE: Final = 2
_LINGER_RST: Final = struct.pack("ii", 1, 0)


class ConnectionOwner(Protocol):
    """What a :class:`Connection` needs from the proxy that accepted it.

    :class:`chaos.server.proxy.ServedProxy` is the one owner; naming only this much keeps the data
    plane from depending on the proxy's listener and API side.
    """

    name: str
    upstream: str
    upstream_address: tuple[str, int]
    enabled: bool
    counters: dict[Stream, list[int]]
    """[received, sent] bytes per direction."""
    traffic: TrafficLog
    closing: set[Connection]
    """Closed connections still flushing to a peer (stopping the proxy aborts them)."""

    def connection_opened(self, conn: Connection) -> None:
        """*conn* was accepted and its upstream is being connected."""

    def connection_closed(self, conn: Connection) -> None:
        """*conn* is closed on both sides."""

    def toxic_specs(self) -> Iterator[ToxicSpec]:
        """The proxy's toxics now (a new connection starts with them)."""
        ...

    def toxic_order(self, stream: Stream) -> list[str]:
        """The names of *stream*'s toxics, in the order data goes through them."""
        ...


class PlaneContext:
    """State shared by every connection of one server: loop, clock, random source, read buffer,
    limits, the descriptor reserve, the splice pipes and the throttled log."""

    __slots__ = ("buffer", "clock", "fds", "limits", "log", "loop", "pipes", "rng", "splice")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        clock: Callable[[], float],
        rng: random.Random,
        *,
        limits: ServerLimits | None = None,
        fds: FdReserve | None = None,
    ) -> None:
        self.loop = loop
        self.clock = clock
        self.rng = rng
        self.limits = limits if limits is not None else ServerLimits()
        self.fds = fds if fds is not None else FdReserve(self.limits.fd_reserve)
        self.pipes = PipePool(self.fds)
        self.log = ThrottledLog(loop.time, self.limits.log_interval)
        # One buffer for all reads: buffer_updated consumes it before the next read can start.
        self.buffer = memoryview(bytearray(READ_BUFFER_SIZE))
        # Decided once per server: the platform supports splice and the loop is asyncio's own.
        self.splice = splice.usable(loop)

    def close(self) -> None:
        """Release the pipes and the descriptor reserve (server shutdown)."""
        self.pipes.close()
        self.fds.close()


class Flow:
    """One direction of a connection: bytes read from ``source`` go, through toxics, to ``dest``."""

    __slots__ = (
        "_busy",
        "_consumer",
        "_drain_waiter",
        "_item_waiter",
        "_paused",
        "_pump",
        "_queue",
        "_queued",
        "_splice_ok",
        "chain",
        "conn",
        "counters",
        "dest",
        "dest_paused",
        "direction",
        "eof_seen",
        "finished",
        "log",
        "loop",
        "rng",
        "runtimes",
        "source",
        "spliced",
    )

    def __init__(self, conn: Connection, direction: Stream, counters: list[int]) -> None:
        self.conn = conn
        self.direction = direction
        self.loop = conn.ctx.loop
        self.rng = conn.ctx.rng
        self.counters = counters  # [bytes received, bytes sent] of the proxy in this direction
        # The proxy's traffic log for bytes from the client (upstream direction only).
        self.log: TrafficLog | None = conn.proxy.traffic if direction == "upstream" else None
        self.source: asyncio.Transport | None = None
        self.dest: asyncio.Transport | None = None
        self.runtimes: dict[str, ToxicRuntime] = {}
        self.chain: list[ToxicRuntime] = []
        self.dest_paused = False
        self.finished = False
        self.eof_seen = False
        self._queue: deque[tuple[bytes, float] | None] = deque()
        self._queued = 0
        self._busy = False
        self._paused = 0
        self._consumer: asyncio.Task[None] | None = None
        self._item_waiter: asyncio.Future[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self._pump: SplicePump | None = None
        self._splice_ok = conn.ctx.splice
        self.spliced = 0  # bytes passed on by splice (tests check that the fast path ran)

    # -- FlowHooks for runtimes ------------------------------------------------------------------

    def now(self) -> float:
        """Current time on the data plane's clock."""
        return self.conn.ctx.clock()

    def close_connection(self) -> None:
        """Close the whole connection gracefully."""
        self.conn.close()

    def reset_connection(self) -> None:
        """Reset the whole connection (TCP RST)."""
        self.conn.reset()

    # -- reading side ----------------------------------------------------------------------------

    def feed(self, buffer: memoryview, nbytes: int) -> None:
        """Take *nbytes* just read into *buffer* (hot path)."""
        counters = self.counters
        counters[0] += nbytes
        if self.log is not None:
            self.log.received(self.conn.serial, nbytes)
        dest = self.dest
        if dest is not None and not self.chain and not self._busy and not self._queue:
            dest.write(buffer[:nbytes] if _WRITE_VIEWS else bytes(buffer[:nbytes]))
            counters[1] += nbytes
            # A bulk read and nothing left in the transport's buffer: nothing can overtake or be
            # overtaken, so the kernel may take over from here.
            if (
                nbytes >= SPLICE_MIN_READ
                and self._splice_ok
                and not self._paused
                and not dest.get_write_buffer_size()
            ):
                self._start_splice()
            return
        # Behind toxics, or the upstream is still being connected: queued, in order.
        self._queue.append((bytes(buffer[:nbytes]), self.conn.ctx.clock()))
        self._queued += nbytes
        if self._queued >= (QUEUE_HIGH_WATER if dest is not None else CONNECTING_HIGH_WATER):
            self._pause(_PAUSED_BY_QUEUE)
        self._kick()

    def feed_eof(self) -> None:
        """The source sent FIN: pass it on after everything queued before it."""
        if self.eof_seen:
            return
        self.eof_seen = True
        if self.dest is None:
            self.conn.client_eof_while_connecting()
        elif not self.chain and not self._busy and not self._queue:
            self._forward_eof()
            return
        self._queue.append(None)
        self._kick()

    # -- toxics ----------------------------------------------------------------------------------

    def set_toxic(self, spec: ToxicSpec, order: Iterable[str]) -> None:
        """Roll toxicity for a new or updated toxic and (re)build the chain in *order*.

        The replacement (if the roll succeeds) takes over from the runtime it replaces before
        that one retires, so a retiring runtime knows at once whether the stream goes on without
        it (a toxic that dropped data then ends the connection, before any later byte passes).
        """
        previous = self.runtimes.pop(spec.name, None)
        runtime = None
        if spec.toxicity >= 1.0 or self.rng.random() < spec.toxicity:
            runtime = make_runtime(spec, self, previous)
            self.runtimes[spec.name] = runtime
        if previous is not None:
            previous.retire(removed=False)
        if runtime is not None:
            runtime.activate()
        self._rebuild(order)

    def remove_toxic(self, name: str, order: Iterable[str]) -> None:
        """Drop toxic *name* from this direction (no-op if its roll had failed)."""
        runtime = self.runtimes.pop(name, None)
        if runtime is not None:
            self._rebuild(order)
            runtime.retire(removed=True)

    def _rebuild(self, order: Iterable[str]) -> None:
        runtimes = self.runtimes
        self.chain = [runtimes[name] for name in order if name in runtimes]
        if self.chain and self._pump is not None:
            self._leave_splice()
        # The consumer task starts with the first chunk queued (feed, _kick), not here: adding a
        # toxic to thousands of idle connections creates no tasks.

    # -- splice (kernel-side) forwarding -----------------------------------------------------------

    def _start_splice(self) -> None:
        source, dest = self.source, self.dest
        if source is None or dest is None or self.eof_seen or self.conn.closed:
            return
        source_sock = source.get_extra_info("socket")
        dest_sock = dest.get_extra_info("socket")
        if source_sock is None or dest_sock is None:
            self._splice_ok = False
            return
        pump = SplicePump(
            self.loop, self, source_sock.fileno(), dest_sock.fileno(), self.conn.ctx.pipes
        )
        # The pump reads the source from now on; the transport must not read it as well.
        source.pause_reading()
        self._pump = pump
        pump.start()

    def _stop_splice(self, salvage: bool) -> None:
        pump = self._pump
        if pump is None:
            return
        self._pump = None
        data = pump.stop(salvage)
        dest = self.dest
        if data and dest is not None and not dest.is_closing():
            dest.write(data)
            self.counters[1] += len(data)

    def _leave_splice(self) -> None:
        """Back to the transport path (a toxic became active), without losing or reordering."""
        self._stop_splice(salvage=True)
        if self._may_read() and self.source is not None:
            self.source.resume_reading()

    def splice_received(self, nbytes: int) -> None:
        """The pump read *nbytes* from the source."""
        self.counters[0] += nbytes
        if self.log is not None:
            self.log.received(self.conn.serial, nbytes)

    def splice_eof(self) -> None:
        """The pump saw the source's FIN with its pipe empty: pass the FIN on."""
        self.eof_seen = True
        self._stop_splice(salvage=True)  # nothing to salvage; gives the pipe back now
        self._forward_eof()

    def splice_unavailable(self) -> None:
        """No pipe to spare (out of descriptors): this direction keeps the transport path."""
        self._splice_ok = False
        self._leave_splice()

    def splice_failed(self, on_write: bool) -> None:
        """A splice failed: close the connection, as the transport path does on a socket error.

        After a failed read the bytes in the pipe are still passed on (through the destination's
        transport, flushed before its FIN); after a failed write the destination is broken.
        """
        self._stop_splice(salvage=not on_write)
        self.conn.close()

    # -- writing side ----------------------------------------------------------------------------

    def on_dest_paused(self) -> None:
        """The destination's write buffer is full: stop reading from the source."""
        self.dest_paused = True
        self._pause(_PAUSED_BY_DEST)

    def on_dest_resumed(self) -> None:
        """The destination drained: read again and wake a waiting writer."""
        self.dest_paused = False
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        self._resume(_PAUSED_BY_DEST)

    def connected(self) -> None:
        """The destination (the upstream) is connected: pass on what waited for it."""
        if self._queue:
            self._kick()

    def _may_read(self) -> bool:
        # After EOF the transport has stopped reading for good; while a pump runs it is the
        # source's only reader (_leave_splice resumes the transport).
        return not (self._paused or self.eof_seen or self.conn.closed) and self._pump is None

    def _pause(self, reason: int) -> None:
        # After EOF the transport has stopped reading; pausing and resuming it again would make
        # it read the closed socket a second time.
        if not (self._paused or self.eof_seen or self.conn.closed) and self.source is not None:
            self.source.pause_reading()
        self._paused |= reason

    def _resume(self, reason: int) -> None:
        was = self._paused
        self._paused &= ~reason
        if was and self._may_read() and self.source is not None:
            self.source.resume_reading()

    def _kick(self) -> None:
        waiter = self._item_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        # Not before the destination exists: the queue waits for the upstream connect.
        if self._consumer is None and self.dest is not None and not self.conn.closed:
            self._consumer = self.loop.create_task(self._consume())

    async def _consume(self) -> None:
        try:
            await self._consume_queue()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Not expected; but the task must not die with its exception unseen, nor leave the
            # connection hanging: log it (throttled) and reset the connection.
            self.conn.ctx.log.warning(
                "dataplane",
                f"proxy {self.conn.proxy.name!r}: {self.direction} direction failed: {exc!r}; "
                "the connection was reset",
            )
            self.conn.reset()

    async def _consume_queue(self) -> None:
        queue = self._queue
        while not self.conn.closed:
            if not queue:
                waiter = self._item_waiter = self.loop.create_future()
                await waiter
                self._item_waiter = None
                continue
            item = queue.popleft()
            self._busy = True
            try:
                if item is None:
                    for runtime in self.chain:
                        await runtime.on_eof()
                    self._forward_eof()
                    return
                data, ts = item
                self._queued -= len(data)
                if self._queued < QUEUE_HIGH_WATER // 2:
                    self._resume(_PAUSED_BY_QUEUE)
                await self._through(self.chain, data, ts)
            finally:
                self._busy = False

    async def _through(self, chain: list[ToxicRuntime], data: bytes, ts: float) -> None:
        """Pass one chunk through *chain*, depth first, without recursion.

        ``stack[i]`` is runtime *i*'s generator for the piece it is working on: what it yields
        goes through runtime *i + 1* before runtime *i* is resumed, so pieces keep their order
        and a toxic's pace (a bandwidth slice, a slicer delay) applies to the whole chain
        behind it.
        """
        if not chain:
            await self._write(data)
            return
        depth = len(chain)
        stack: list[Chunks] = [chain[0].process(data, ts)]
        try:
            while stack:
                try:
                    out, out_ts = await anext(stack[-1])
                except StopAsyncIteration:
                    stack.pop()
                    continue
                level = len(stack)
                if level == depth:
                    await self._write(out)
                else:
                    stack.append(chain[level].process(out, out_ts))
        finally:
            for generator in reversed(stack):
                await generator.aclose()

    async def _write(self, data: bytes) -> None:
        while self.dest_paused and not self.conn.closed:
            waiter = self._drain_waiter = self.loop.create_future()
            await waiter
            self._drain_waiter = None
        dest = self.dest
        if dest is None or self.conn.closed or dest.is_closing():
            return
        dest.write(data)
        self.counters[1] += len(data)

    def _forward_eof(self) -> None:
        dest = self.dest
        if dest is not None and not dest.is_closing():
            try:
                if dest.can_write_eof():
                    dest.write_eof()
                else:
                    dest.close()
            except OSError:
                # The peer is gone already (it reset while we were not reading it, e.g. a
                # client that aborted after its FIN): the normal end of this connection.
                self.finished = True
                self.conn.abort()
                return
        self.finished = True
        self.conn.flow_finished()

    def shutdown(self, salvage: bool = True) -> None:
        """Stop toxics, the consumer task and any pump because the connection is closing.

        *salvage*: bytes a pump holds go to the destination's transport, which flushes them
        before closing (a graceful close); false for a reset, which discards unsent data.
        """
        self._stop_splice(salvage)
        for runtime in self.runtimes.values():
            runtime.detach()
        self.runtimes.clear()
        self.chain = []
        self._queue.clear()
        consumer = self._consumer
        self._consumer = None
        if consumer is not None and not consumer.done():
            consumer.cancel()
        for waiter in (self._item_waiter, self._drain_waiter):
            if waiter is not None and not waiter.done():
                waiter.cancel()


class Endpoint(asyncio.BufferedProtocol):
    """The protocol of one socket of a proxied connection (client side or upstream side)."""

    __slots__ = ("buffer", "conn", "inbound", "outbound", "transport")

    def __init__(self, conn: Connection, inbound: Flow, outbound: Flow) -> None:
        self.conn = conn
        self.inbound = inbound  # the direction this socket's reads feed
        self.outbound = outbound  # the direction that writes into this socket
        self.buffer = conn.ctx.buffer
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.conn.endpoint_made(self, transport)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.inbound.feed(self.buffer, nbytes)

    def eof_received(self) -> bool:
        self.inbound.feed_eof()
        return True  # keep the socket open for writing: TCP half-close is passed on, not forced

    def pause_writing(self) -> None:
        self.outbound.on_dest_paused()

    def resume_writing(self) -> None:
        self.outbound.on_dest_resumed()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.conn.endpoint_lost(self)


class Connection:
    """A client connection accepted by a proxy, and its connection to the upstream."""

    __slots__ = (
        "_close_watch",
        "_connector",
        "_eof_timer",
        "client",
        "closed",
        "ctx",
        "downstream",
        "proxy",
        "serial",
        "upstream",
        "upstream_side",
    )

    def __init__(self, proxy: ConnectionOwner, ctx: PlaneContext) -> None:
        self.proxy = proxy
        self.ctx = ctx
        self.closed = False
        self.serial = 0  # in the proxy's traffic log, once accepted
        self.upstream = Flow(self, "upstream", proxy.counters["upstream"])
        self.downstream = Flow(self, "downstream", proxy.counters["downstream"])
        self.client = Endpoint(self, self.upstream, self.downstream)
        self.upstream_side: Endpoint | None = None
        self._connector: asyncio.Task[None] | None = None
        self._eof_timer: asyncio.TimerHandle | None = None
        self._close_watch: asyncio.TimerHandle | None = None

    def flows(self) -> tuple[Flow, Flow]:
        """Both directions: (upstream, downstream)."""
        return self.upstream, self.downstream

    def flow(self, stream: Stream) -> Flow:
        """The direction named *stream*."""
        return self.upstream if stream == "upstream" else self.downstream

    def endpoint_made(self, endpoint: Endpoint, transport: asyncio.Transport) -> None:
        """Wire a newly connected socket into the flows."""
        if endpoint is self.client:
            if not self.proxy.enabled:
                # Accepted by the listener just before the proxy was disabled (the accept was
                # already queued on the loop): a disabled proxy has no open connections.
                self.closed = True
                transport.close()
                return
            # The client is read while the upstream connects (its bytes wait in the queue), so
            # a client that leaves meanwhile is noticed. (Nothing is paused here: before CPython
            # 3.11.3 a transport started reading after connection_made() even if it paused in
            # there.)
            self.upstream.source = transport
            self.downstream.dest = transport
            self.proxy.connection_opened(self)
            self.serial = self.proxy.traffic.connected()
            self._connector = self.ctx.loop.create_task(self._connect_upstream())
        else:
            self.upstream_side = endpoint
            if self.closed:
                transport.close()
                return
            self.downstream.source = transport
            self.upstream.dest = transport
            # Toxics before the first byte from the upstream can be read.
            for spec in self.proxy.toxic_specs():
                self.flow(spec.stream).set_toxic(spec, self.proxy.toxic_order(spec.stream))

    async def _connect_upstream(self) -> None:
        host, port = self.proxy.upstream_address
        downstream, upstream = self.downstream, self.upstream
        log = self.ctx.log
        name = self.proxy.name
        if not self.ctx.fds.full:
            self._connector = None
            log.warning("fds", f"proxy {name!r}: out of descriptors; closing a new client")
            self.close()
            return
        try:
            await self.ctx.loop.create_connection(
                lambda: Endpoint(self, downstream, upstream), host, port
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Toxiproxy closes the client when the upstream refuses; the client sees EOF.
            # (OSError: refused, unreachable, out of descriptors; UnicodeError and the like: a
            # host name that cannot even be looked up.)
            self._connector = None
            if isinstance(exc, OSError) and exc.errno in RESOURCE_ERRNOS:
                log.warning("fds", f"proxy {name!r}: out of descriptors; closing a new client")
            else:
                log.warning(
                    f"upstream:{name}",
                    f"proxy {name!r}: cannot connect to upstream {self.proxy.upstream}: {exc}",
                )
            self.close()
            return
        self._connector = None
        self._cancel_eof_timer()
        if self.closed:
            return
        self.upstream.connected()

    def client_eof_while_connecting(self) -> None:
        """The client sent FIN before the upstream answered: give the connect a little longer.

        The client may only have half-closed (its request sent, waiting for the answer): the
        FIN is passed on once connected. If it left for good, nobody waits for this connect.
        """
        if self._connector is None or self._eof_timer is not None:
            return
        self._eof_timer = self.ctx.loop.call_later(
            self.ctx.limits.connect_after_client_eof, self._give_up_connect
        )

    def _give_up_connect(self) -> None:
        self._eof_timer = None
        if self._connector is not None:
            self.close()

    def _cancel_eof_timer(self) -> None:
        if self._eof_timer is not None:
            self._eof_timer.cancel()
            self._eof_timer = None

    def flow_finished(self) -> None:
        """Close the connection once both directions have passed on their EOF."""
        if self.upstream.finished and self.downstream.finished:
            self.close()

    def endpoint_lost(self, endpoint: Endpoint) -> None:
        """One socket closed (or failed): close the other one too."""
        self.close()
        if self.client.transport is None and (
            self.upstream_side is None or self.upstream_side.transport is None
        ):
            self._stop_close_watch()

    def _transports(self) -> list[asyncio.Transport]:
        return [t for t in (self.upstream.source, self.upstream.dest) if t is not None]

    def close(self) -> None:
        """Close both sockets gracefully: data already written is still delivered, then FIN.

        A peer that does not read could hold that off for good: if the sockets deliver nothing
        for ``close_timeout`` seconds, they are aborted.
        """
        if self.closed:
            return
        self._stop(salvage=True)
        transports = self._transports()
        for transport in transports:
            transport.close()
        self._watch_close(transports, None)

    def abort(self) -> None:
        """Close both sockets at once, dropping what the proxy still holds for them.

        What disabling or deleting the proxy does, as Toxiproxy: the kernel then sends a FIN,
        or a reset to a peer whose data was left unread.
        """
        self._stop_close_watch()
        if not self.closed:
            self._stop(salvage=False)
        for transport in self._transports():
            transport.abort()

    def reset(self) -> None:
        """Close both sockets with a TCP RST (SO_LINGER 0), discarding unsent data."""
        self._stop_close_watch()
        if not self.closed:
            self._stop(salvage=False)
        for transport in self._transports():
            sock = transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
            transport.abort()

    def _watch_close(self, transports: list[asyncio.Transport], before: int | None) -> None:
        """Abort a graceful close that delivers nothing for ``close_timeout`` seconds."""
        self._close_watch = None
        pending = [t for t in transports if t.get_write_buffer_size()]
        if pending and before is not None and _buffered(pending) >= before:
            for transport in pending:
                transport.abort()
            pending = []
        if not pending:
            self.proxy.closing.discard(self)
            return
        self.proxy.closing.add(self)  # so that stopping the proxy aborts it too
        self._close_watch = self.ctx.loop.call_later(
            self.ctx.limits.close_timeout, self._watch_close, pending, _buffered(pending)
        )

    def _stop_close_watch(self) -> None:
        self.proxy.closing.discard(self)
        if self._close_watch is not None:
            self._close_watch.cancel()
            self._close_watch = None

    def _stop(self, salvage: bool) -> None:
        self.closed = True
        self._cancel_eof_timer()
        self.upstream.shutdown(salvage)
        self.downstream.shutdown(salvage)
        if self._connector is not None:
            self._connector.cancel()
            self._connector = None
        self.proxy.connection_closed(self)


def _buffered(transports: list[asyncio.Transport]) -> int:
    return sum(t.get_write_buffer_size() for t in transports)
