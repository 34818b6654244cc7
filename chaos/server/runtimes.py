"""What each toxic does to one direction of one connection.

A :class:`ToxicRuntime` is created for every (connection, direction, toxic) whose toxicity roll
succeeded. The data plane passes each chunk through the active runtimes in order: a runtime's
``process(data, timestamp)`` is an async generator yielding ``(data, timestamp)`` chunks for the
next one, so a toxic may delay, split, drop or cut data, and may close or reset the connection
through its :class:`FlowHooks`. The data plane resumes a runtime only once what it yielded has
gone through the rest of the chain, and walks the chain without recursion, so any number of
toxics can be stacked.

Waits are interruptible: when a toxic is updated or removed, the old runtime is *retired* and any
chunk it is holding is passed on at once (as Toxiproxy does), so a change never waits for a long
latency or a slow bandwidth to drain.

A toxic that dropped data (``timeout``, ``reset_peer``) never lets the stream go on without it:
removing it closes (``timeout``, as Toxiproxy) or resets (``reset_peer``) the connection, and so
does an update whose toxicity roll fails.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncGenerator
from typing import Protocol

from chaos.server.toxics import ToxicSpec

Chunk = tuple[bytes, float]
"""``(data, read_timestamp)``: what goes from one toxic to the next."""

Chunks = AsyncGenerator[Chunk, None]

_NOTHING: tuple[Chunk, ...] = ()


async def _dropped() -> Chunks:
    """Passes nothing on: the input was dropped."""
    for chunk in _NOTHING:
        yield chunk


class FlowHooks(Protocol):
    """What a runtime may use from the connection direction it runs on."""

    loop: asyncio.AbstractEventLoop
    rng: random.Random

    def now(self) -> float:
        """Current time in seconds on the data plane's clock."""
        ...

    def close_connection(self) -> None:
        """Close both sockets gracefully (buffered data is still sent)."""
        ...

    def reset_connection(self) -> None:
        """Close both sockets with a TCP RST, discarding buffered data."""
        ...


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class ToxicRuntime:
    """Base runtime: passes data through unchanged (the ``noop`` toxic)."""

    __slots__ = ("_waiter", "flow", "retired", "spec")

    def __init__(self, spec: ToxicSpec, flow: FlowHooks) -> None:
        self.spec = spec
        self.flow = flow
        self.retired = False
        self._waiter: asyncio.Future[None] | None = None

    def activate(self) -> None:
        """Start timers the toxic needs (called once the runtime joins a live connection)."""

    async def process(self, data: bytes, ts: float) -> Chunks:
        """Handle one chunk read at *ts*; yield whatever should go on."""
        yield data, ts

    async def on_eof(self) -> None:
        """Run before the end of stream (EOF) is passed on."""

    def retire(self, removed: bool) -> None:
        """Stop this runtime because its toxic was updated (*removed* false) or removed.

        Wakes any wait so held data moves on immediately.
        """
        self.retired = True
        if self._waiter is not None:
            _wake(self._waiter)

    def detach(self) -> None:
        """Cancel timers because the connection is closing; no side effects."""
        self.retired = True
        if self._waiter is not None:
            _wake(self._waiter)

    async def _sleep(self, seconds: float) -> None:
        """Sleep up to *seconds*, returning early if the runtime is retired."""
        if self.retired:
            return
        loop = self.flow.loop
        fut: asyncio.Future[None] = loop.create_future()
        self._waiter = fut
        handle = loop.call_later(seconds, _wake, fut) if seconds != float("inf") else None
        try:
            await fut
        finally:
            self._waiter = None
            if handle is not None:
                handle.cancel()


class LatencyRuntime(ToxicRuntime):
    """Delay every chunk by ``latency`` +/- uniform ``jitter`` ms, counted from its timestamp.

    Deadlines are absolute, so chunks read close together leave close together (they pipeline)
    instead of each waiting the full latency after the previous one. A chunk goes on stamped
    with its deadline, so a second latency toxic in the chain adds its delay to this one's.
    """

    __slots__ = ()

    async def process(self, data: bytes, ts: float) -> Chunks:
        latency = self.spec.attr("latency")
        jitter = self.spec.attr("jitter")
        delay_ms = latency + (self.flow.rng.uniform(-jitter, jitter) if jitter else 0.0)
        deadline = ts + max(delay_ms, 0.0) / 1000.0
        wait = deadline - self.flow.now()
        if wait > 0:
            await self._sleep(wait)
        # Released early by a change to this toxic: the delay was not applied, nor passed on.
        yield data, (ts if self.retired else deadline)


class BandwidthRuntime(ToxicRuntime):
    """Pass data at ``rate`` KB/s (1 KB = 1000 bytes), in slices of 100 ms worth of data.

    Rate 0 holds all data, without spinning, until the toxic is updated or removed (Toxiproxy
    busy-loops here).
    """

    __slots__ = ("_next",)

    def __init__(self, spec: ToxicSpec, flow: FlowHooks) -> None:
        super().__init__(spec, flow)
        self._next = 0.0

    async def process(self, data: bytes, ts: float) -> Chunks:
        rate = self.spec.attr("rate") * 1000  # bytes per second
        if rate <= 0:
            await self._sleep(float("inf"))
            yield data, ts
            return
        piece_size = max(rate // 10, 1)
        view = memoryview(data)
        offset = 0
        while offset < len(data):
            if self.retired:
                yield bytes(view[offset:]), ts
                return
            piece = view[offset : offset + piece_size]
            offset += len(piece)
            # A schedule rather than a sleep per slice, so timer overshoot does not add up.
            self._next = max(self._next, self.flow.now()) + len(piece) / rate
            wait = self._next - self.flow.now()
            if wait > 0:
                await self._sleep(wait)
            yield bytes(piece), ts


class SlowCloseRuntime(ToxicRuntime):
    """Hold the end of stream for ``delay`` ms before passing it on."""

    __slots__ = ()

    async def on_eof(self) -> None:
        delay = self.spec.attr("delay")
        if delay > 0:
            await self._sleep(delay / 1000.0)


class TimeoutRuntime(ToxicRuntime):
    """Drop all data; close the connection after ``timeout`` ms (0 = never).

    Removing the toxic closes the connections it was applied to, as Toxiproxy does: the data it
    dropped is gone, so the stream could not continue correctly anyway. An update hands what it
    started over to the new runtime; if that one's toxicity roll fails and data was dropped, the
    connection is closed as on removal.

    A chunk that reaches a retired runtime (it was on its way through the chain when the toxic
    changed) goes to the runtime that took over, or passes if the stream goes on without one:
    dropping it then would leave a hole nobody accounts for.
    """

    __slots__ = ("_dropped", "_successor", "_timer")

    def __init__(self, spec: ToxicSpec, flow: FlowHooks) -> None:
        super().__init__(spec, flow)
        self._timer: asyncio.TimerHandle | None = None
        self._dropped = False  # data was dropped: the stream must not go on without it
        self._successor: TimeoutRuntime | None = None

    def activate(self) -> None:
        timeout = self.spec.attr("timeout")
        if timeout > 0:
            self._timer = self.flow.loop.call_later(timeout / 1000.0, self.flow.close_connection)

    def process(self, data: bytes, ts: float) -> Chunks:
        runtime = self._current()
        if runtime is None:
            return ToxicRuntime.process(self, data, ts)  # the stream goes on: so does this
        return runtime.drop()

    def drop(self) -> Chunks:
        """Drop one chunk (this runtime is the toxic in force)."""
        self._dropped = True
        return _dropped()

    def _current(self) -> TimeoutRuntime | None:
        """The runtime in force for this toxic: this one or a successor; None if the toxic is
        gone and the stream goes on. (A stream it cut is being closed: data still drops.)"""
        runtime: TimeoutRuntime = self
        while runtime._successor is not None:
            runtime = runtime._successor
        if runtime.retired and not runtime._dropped:
            return None
        return runtime

    def take_over(self, previous: TimeoutRuntime) -> None:
        """Continue what *previous* (the runtime before an update) had started."""
        self._dropped = previous._dropped
        previous._successor = self

    def retire(self, removed: bool) -> None:
        super().retire(removed)
        self._cancel()
        # A replacement has taken over already (make_runtime runs first); without one, this
        # runtime ends the stream it cut, before another byte can pass.
        self._end(removed)

    def detach(self) -> None:
        super().detach()
        self._cancel()

    def _end(self, removed: bool) -> None:
        """The toxic is gone from this connection: close it if it was removed or cut."""
        if self._successor is None and (removed or self._dropped):
            self.flow.close_connection()

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class ResetPeerRuntime(TimeoutRuntime):
    """On the first chunk or end of stream, drop data and reset the connection (TCP RST) after
    ``timeout`` ms.

    The end of stream counts as input like data does (as in Toxiproxy): it is held, so a client
    that closes its side sees the reset rather than a graceful close. An update hands a running
    countdown (restarted with the new timeout) and a held end of stream to the new runtime.
    Removing the toxic cancels the countdown: if it had dropped data the connection is reset at
    once (the stream has a hole: it must not go on), otherwise a held end of stream goes on.
    """

    __slots__ = ("_held", "_triggered")

    def __init__(self, spec: ToxicSpec, flow: FlowHooks) -> None:
        super().__init__(spec, flow)
        self._held: asyncio.Future[None] | None = None
        self._triggered = False

    def activate(self) -> None:
        return  # the countdown starts with the first chunk, as in Toxiproxy

    def drop(self) -> Chunks:
        self._start_countdown()
        return super().drop()

    async def on_eof(self) -> None:
        self._start_countdown()
        if self.retired:
            return
        held = self._held = self.flow.loop.create_future()
        await held  # until the reset, or the toxic is removed

    def take_over(self, previous: TimeoutRuntime) -> None:
        super().take_over(previous)
        assert isinstance(previous, ResetPeerRuntime)
        if previous._triggered:
            self._start_countdown()
        self._held, previous._held = previous._held, None

    def detach(self) -> None:
        super().detach()
        self._release()

    def _end(self, removed: bool) -> None:
        if self._successor is not None:
            return
        self._release()
        if self._dropped:
            self.flow.reset_connection()

    def _release(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            _wake(held)

    def _start_countdown(self) -> None:
        if self._timer is None and not self.retired:
            self._triggered = True
            timeout = self.spec.attr("timeout")
            self._timer = self.flow.loop.call_later(timeout / 1000.0, self.flow.reset_connection)


class SlicerRuntime(ToxicRuntime):
    """Cut chunks into slices of ``average_size`` +/- ``size_variation`` bytes; wait ``delay`` us
    after each slice (the last one of a chunk too, as Toxiproxy does, so the next chunk waits).

    An ``average_size`` of 0 passes chunks through whole (each still followed by the delay).
    """

    __slots__ = ()

    async def process(self, data: bytes, ts: float) -> Chunks:
        average = self.spec.attr("average_size")
        delay = self.spec.attr("delay") / 1_000_000.0
        if average <= 0:
            yield data, ts
            if delay > 0:
                await self._sleep(delay)
            return
        variation = min(self.spec.attr("size_variation"), average - 1)
        rng = self.flow.rng
        view = memoryview(data)
        offset = 0
        while offset < len(data):
            if self.retired:
                yield bytes(view[offset:]), ts
                return
            size = average + rng.randint(-variation, variation) if variation else average
            piece = view[offset : offset + size]
            offset += len(piece)
            yield bytes(piece), ts
            if delay > 0:
                await self._sleep(delay)


class LimitDataRuntime(ToxicRuntime):
    """Pass the first ``bytes`` bytes of the stream, then close the connection."""

    __slots__ = ("transmitted",)

    def __init__(self, spec: ToxicSpec, flow: FlowHooks) -> None:
        super().__init__(spec, flow)
        self.transmitted = 0

    async def process(self, data: bytes, ts: float) -> Chunks:
        remaining = self.spec.attr("bytes") - self.transmitted
        if remaining > 0:
            piece = data if len(data) <= remaining else data[:remaining]
            self.transmitted += len(piece)
            yield piece, ts
        if self.transmitted >= self.spec.attr("bytes"):
            self.flow.close_connection()


RUNTIMES: dict[str, type[ToxicRuntime]] = {
    "noop": ToxicRuntime,
    "latency": LatencyRuntime,
    "bandwidth": BandwidthRuntime,
    "slow_close": SlowCloseRuntime,
    "timeout": TimeoutRuntime,
    "reset_peer": ResetPeerRuntime,
    "slicer": SlicerRuntime,
    "limit_data": LimitDataRuntime,
}


def make_runtime(spec: ToxicSpec, flow: FlowHooks, previous: ToxicRuntime | None) -> ToxicRuntime:
    """Create the runtime for *spec*; *previous* is the runtime it replaces on an update.

    ``limit_data`` keeps its byte count across updates, so raising the limit lets exactly the
    difference through; ``reset_peer`` keeps a started countdown and a held end of stream;
    both it and ``timeout`` remember that they dropped data.
    """
    runtime = RUNTIMES[spec.type](spec, flow)
    if isinstance(runtime, LimitDataRuntime) and isinstance(previous, LimitDataRuntime):
        runtime.transmitted = previous.transmitted
    elif isinstance(runtime, TimeoutRuntime) and isinstance(previous, type(runtime)):
        runtime.take_over(previous)
    return runtime
