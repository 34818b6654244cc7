"""/events: snapshot then live transitions; bounded buffers; slow and vanished clients."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

from health_support import Breakers, EventReader, get

from synapse_core import CircuitBreakerManager
from synapse_core.health import HealthEndpoints, HealthServer
from synapse_core.health.feed import KEEPALIVE, EventFeed

Serve = Callable[..., HealthServer]


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_a_stream_starts_with_a_snapshot_then_carries_each_transition(
    serve: Serve, breakers: Breakers
) -> None:
    inventory = breakers.make("inventory")
    server = serve()
    reader = EventReader(server.host, server.port)
    try:
        assert reader.response.getheader("Content-Type") == "text/event-stream; charset=utf-8"
        snapshot = reader.until("snapshot")
        assert snapshot["breakers"]["inventory"]["state"] == "closed"
        breakers.trip(inventory)
        breakers.close(inventory)
        seen = [reader.until("transition") for _ in range(3)]
        assert [(t["breaker"], t["seq"], t["to_state"]) for t in seen] == [
            ("inventory", 1, "open"),
            ("inventory", 2, "half_open"),
            ("inventory", 3, "closed"),
        ]
        assert seen[0]["failure_count"] == 3
    finally:
        reader.close()


def test_stats_events_carry_the_counters_of_every_breaker(serve: Serve, breakers: Breakers) -> None:
    inventory = breakers.make("inventory")
    server = serve(event_interval=0.05)
    reader = EventReader(server.host, server.port)
    try:
        reader.until("snapshot")
        breakers.succeed(inventory, 7)
        breakers.trip(inventory)
        breakers.reject(inventory, 4)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            figures = reader.until("stats")["breakers"]["inventory"]
            if figures["rejected"] == 4:
                break
        assert figures == {
            "state": "open",
            "seq": 1,
            "critical": True,
            "success": 7,
            "failure": 3,
            "rejected": 4,
            "failure_rate": 0.0,
            "retry_after": 5.0,
        }
    finally:
        reader.close()


def test_a_client_that_never_reads_does_not_slow_the_breakers(
    serve: Serve, breakers: Breakers
) -> None:
    """A dashboard that stopped reading: its buffer stays bounded and breakers keep going.

    The stalled client's socket buffers fill up and the server's writer blocks on it; the
    breakers only ever append to the bounded buffer, so 2,000 transitions still take about
    the time they take with nobody connected. (The server caps each connection's kernel send
    buffer, so the stall reaches the feed's buffer and overflows it.)
    """
    inventory = breakers.make("inventory")
    server = serve(buffer_bytes=16 * 1024, event_interval=0.05)
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting
    stalled.connect((server.host, server.port))
    try:
        stalled.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_until(lambda: server.endpoints.feed.subscribers == 1)

        def cycles(n: int) -> float:
            started = time.perf_counter()
            for _ in range(n):
                breakers.trip(inventory)
                breakers.close(inventory)
            return time.perf_counter() - started

        with_stalled = cycles(2000)  # 6,000 transitions, ~800 KB of events
        (subscription,) = server.endpoints.feed._subscribers
        assert subscription._size <= 16 * 1024  # bounded
        assert subscription.overflows >= 1  # the backlog was dropped for a snapshot
        stalled.close()
        wait_until(lambda: server.endpoints.feed.subscribers == 0)  # noticed on the next write
        alone = cycles(2000)
        # Generous: only a blocked breaker (seconds) could fail this, not a noisy machine.
        assert with_stalled < 5 * alone + 0.5, (with_stalled, alone)
    finally:
        stalled.close()


def test_a_vanished_client_is_dropped(serve: Serve, breakers: Breakers) -> None:
    breakers.make("inventory")
    server = serve(event_interval=0.05)
    reader = EventReader(server.host, server.port)
    reader.until("snapshot")
    assert server.endpoints.feed.subscribers == 1
    reader.close()
    wait_until(lambda: server.endpoints.feed.subscribers == 0)  # the next stats write fails


def test_closing_the_server_ends_open_streams(serve: Serve, breakers: Breakers) -> None:
    breakers.make("inventory")
    server = serve()
    reader = EventReader(server.host, server.port)
    reader.until("snapshot")
    started = time.monotonic()
    server.close()
    assert time.monotonic() - started < 5
    try:
        while True:
            reader.next()
    except (EOFError, OSError):
        pass
    finally:
        reader.close()


def test_too_many_connections_are_refused_not_queued(serve: Serve) -> None:
    server = serve(max_connections=2, event_interval=0.05)
    streams = [EventReader(server.host, server.port) for _ in range(2)]
    try:
        for stream in streams:
            stream.until("snapshot")
        extra = socket.create_connection((server.host, server.port), timeout=5)
        with extra:
            extra.sendall(b"GET /health HTTP/1.0\r\n\r\n")
            assert extra.recv(100) == b""  # closed at once
    finally:
        for stream in streams:
            stream.close()
    wait_until(lambda: server.endpoints.feed.subscribers == 0)  # noticed on the next write
    assert get(server.url + "/health")[0] == 200


def test_periodic_messages_replace_each_other_in_a_slow_buffer() -> None:
    feed = EventFeed(lambda: {"snap": True}, buffer_bytes=10_000)
    subscription = feed.subscribe()
    assert subscription.read(0.01) is not None  # the snapshot
    feed.publish("transition", {"n": 1})
    for i in range(50):
        feed.publish("stats", {"i": i}, periodic=True)
    feed.publish("transition", {"n": 2})
    feed.publish("stats", {"i": 99}, periodic=True)
    chunk = subscription.read(0.01)
    assert chunk == (
        b'event: transition\ndata: {"n":1}\n\n'
        b'event: transition\ndata: {"n":2}\n\n'
        b'event: stats\ndata: {"i":99}\n\n'
    )
    assert subscription.read(0.01) == KEEPALIVE
    feed.close()
    assert subscription.read(0.01) is None


def test_an_overflowing_buffer_resyncs_with_a_snapshot() -> None:
    snapshots = []

    def snapshot() -> dict[str, int]:
        snapshots.append(1)
        return {"version": len(snapshots)}

    feed = EventFeed(snapshot, buffer_bytes=200)
    subscription = feed.subscribe()
    assert b'"version":1' in (subscription.read(0.01) or b"")
    for n in range(100):
        feed.publish("transition", {"n": n})
    assert subscription.overflows >= 1
    chunk = subscription.read(0.01) or b""
    assert chunk.startswith(b"event: snapshot")  # the present, not the dropped past
    assert b'"n":0' not in chunk
    feed.close()


def test_endpoints_close_stops_listening_to_breakers(breakers: Breakers) -> None:
    manager = breakers.manager
    endpoints = HealthEndpoints(manager)
    inventory = breakers.make("inventory")
    endpoints.close()
    breakers.trip(inventory)
    assert endpoints.breakers()["breakers"]["inventory"]["recent_transitions"] == []
    assert isinstance(manager, CircuitBreakerManager)
