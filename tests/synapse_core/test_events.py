"""Events: kinds and fields, listeners, bounded async streams, nothing built without listeners."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

import pytest
from breaker_support import fail_times, ok

import synapse_core.breaker.breaker as breaker_module
import synapse_core.breaker.observers as observers
from synapse_core import (
    CircuitBreaker,
    CircuitClosed,
    CircuitEvent,
    CircuitHalfOpened,
    CircuitOpened,
    CircuitOpenError,
    CircuitState,
    RequestRejected,
    VirtualClock,
)

MakeBreaker = Callable[..., CircuitBreaker]


def test_full_cycle_emits_the_five_kinds_in_order(
    make_breaker: MakeBreaker, clock: VirtualClock
) -> None:
    breaker = make_breaker()
    events: list[CircuitEvent] = []
    breaker.subscribe(events.append)
    fail_times(breaker, 3)
    with pytest.raises(CircuitOpenError):
        breaker.call(ok)
    clock.advance(10)
    breaker.call(ok)
    breaker.call(ok)
    assert [e.kind for e in events] == ["opened", "request_rejected", "half_opened", "closed"]
    opened, rejected, half, closed = events
    assert isinstance(opened, CircuitOpened)
    assert (opened.breaker_name, opened.timestamp, opened.failure_count) == ("dep", 1000.0, 3)
    assert "3 failures" in opened.reason
    assert opened.previous_state is CircuitState.CLOSED
    assert opened.retry_at == 1010.0
    assert isinstance(rejected, RequestRejected)
    assert rejected.retry_after == 10.0
    assert isinstance(half, CircuitHalfOpened)
    assert half.timestamp == 1010.0
    assert isinstance(closed, CircuitClosed)
    assert closed.previous_state is CircuitState.HALF_OPEN


def test_unsubscribe_stops_delivery(make_breaker: MakeBreaker) -> None:
    breaker = make_breaker()
    events: list[CircuitEvent] = []
    handle = breaker.subscribe(events.append)
    breaker.force_open()
    handle()
    handle()  # idempotent
    breaker.force_close()
    assert [e.kind for e in events] == ["opened"]


def test_a_failing_listener_is_logged_not_raised(
    make_breaker: MakeBreaker, caplog: pytest.LogCaptureFixture
) -> None:
    breaker = make_breaker()

    def broken(event: CircuitEvent) -> None:
        raise RuntimeError("listener bug")

    seen: list[CircuitEvent] = []
    breaker.subscribe(broken)
    breaker.subscribe(seen.append)
    breaker.force_open()
    assert len(seen) == 1
    assert "listener bug" in caplog.text


def test_listener_may_call_the_breaker(make_breaker: MakeBreaker) -> None:
    breaker = make_breaker()
    states: list[CircuitState] = []
    breaker.subscribe(lambda e: states.append(breaker.stats().state))
    fail_times(breaker, 3)
    assert states == [CircuitState.OPEN]


def test_no_event_object_is_built_without_listeners(
    make_breaker: MakeBreaker, clock: VirtualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nobody listens: no listener, no transition watcher, and the synapse.breaker log off.

    The watchers are emptied for the test: a chaos server still running in this process (the
    session's embedded server, with its dashboard's transition journal) watches transitions, and
    made this test fail in a full run.
    """

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("an event was built with nobody listening")

    monkeypatch.setattr(logging.getLogger("synapse.breaker"), "disabled", True)
    monkeypatch.setattr(observers._watchers, "current", ())
    for name in ("CircuitOpened", "CircuitHalfOpened", "CircuitClosed", "RequestRejected"):
        monkeypatch.setattr(breaker_module, name, forbidden)
    breaker = make_breaker()
    fail_times(breaker, 3)
    with pytest.raises(CircuitOpenError):
        breaker.call(ok)
    clock.advance(10)
    breaker.call(ok)
    breaker.call(ok)
    assert breaker.state is CircuitState.CLOSED


@pytest.mark.asyncio
async def test_async_event_stream(make_breaker: MakeBreaker, clock: VirtualClock) -> None:
    breaker = make_breaker()
    async with breaker.events() as stream:
        fail_times(breaker, 3)
        clock.advance(10)
        breaker.call(ok)
        breaker.call(ok)
        kinds = [(await stream.__anext__()).kind for _ in range(3)]
    assert kinds == ["opened", "half_opened", "closed"]
    assert [e async for e in stream] == []  # closed: iteration ends


@pytest.mark.asyncio
async def test_slow_consumer_never_blocks_and_drops_are_counted(
    make_breaker: MakeBreaker,
) -> None:
    breaker = make_breaker()
    breaker.force_open()
    stream = breaker.events(maxsize=5)
    for _ in range(50):
        with pytest.raises(CircuitOpenError):
            breaker.call(ok)
    assert stream.dropped == 45
    received = []
    while (event := stream.get_nowait()) is not None:
        received.append(event)
    assert len(received) == 5
    stream.close()


@pytest.mark.asyncio
async def test_events_from_another_thread_wake_the_consumer(make_breaker: MakeBreaker) -> None:
    breaker = make_breaker()
    stream = breaker.events()
    thread = threading.Thread(target=breaker.force_open)

    async def first() -> CircuitEvent:
        return await stream.__anext__()

    waiter = asyncio.ensure_future(first())
    await asyncio.sleep(0)
    thread.start()
    event = await asyncio.wait_for(waiter, timeout=5)
    thread.join()
    assert event.kind == "opened"
    stream.close()


@pytest.mark.asyncio
async def test_event_stream_validates_maxsize(make_breaker: MakeBreaker) -> None:
    with pytest.raises(ValueError, match="maxsize"):
        make_breaker().events(maxsize=0)


def test_event_stream_needs_a_running_loop(make_breaker: MakeBreaker) -> None:
    with pytest.raises(RuntimeError):
        make_breaker().events()


def test_events_reach_listeners_in_the_order_they_happened(clock: VirtualClock) -> None:
    # A slow listener is delivering "closed" when another thread re-opens the breaker: the
    # later "opened" must not overtake it.
    breaker = CircuitBreaker("ordered", clock=clock)
    seen: list[str] = []
    in_listener = threading.Event()
    release = threading.Event()

    def slow_listener(event: CircuitEvent) -> None:
        if event.kind == "closed" and not in_listener.is_set():
            in_listener.set()
            assert release.wait(10)
        seen.append(event.kind)

    breaker.subscribe(slow_listener)
    breaker.force_open()
    closer = threading.Thread(target=breaker.force_close)
    closer.start()
    assert in_listener.wait(10)
    opener = threading.Thread(target=breaker.force_open)
    opener.start()
    opener.join(10)  # returns at once: the delivering thread will pass its event on
    release.set()
    closer.join(10)
    assert seen == ["opened", "closed", "opened"]
