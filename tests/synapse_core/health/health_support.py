"""Helpers for the health endpoint tests: driving breakers, HTTP, reading event streams."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import urllib.error
import urllib.request
from typing import Any

from synapse_core import (
    CallPermit,
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitBreakerManager,
    CircuitOpenError,
    VirtualClock,
)

CONFIG = CircuitBreakerConfig(
    failure_threshold=3, minimum_requests=3, recovery_timeout=5, half_open_max_calls=2
)


class Down(ConnectionError):
    """What the guarded dependency raises."""


def _fail() -> None:
    raise Down("dependency down")


class Breakers:
    """Makes breakers in the test's manager and walks them through their states."""

    def __init__(self, manager: CircuitBreakerManager, clock: VirtualClock) -> None:
        self.manager = manager
        self.clock = clock

    def make(self, name: str, config: CircuitBreakerConfig = CONFIG) -> CircuitBreaker:
        return self.manager.get_or_create(name, config)

    def succeed(self, breaker: CircuitBreaker, n: int = 1) -> None:
        for _ in range(n):
            breaker.call(lambda: None)

    def trip(self, breaker: CircuitBreaker) -> None:
        """Three failures: closed -> open."""
        for _ in range(3):
            with contextlib.suppress(Down):
                breaker.call(_fail)

    def reject(self, breaker: CircuitBreaker, n: int = 1) -> None:
        for _ in range(n):
            try:
                breaker.call(lambda: None)
            except CircuitOpenError:
                pass
            else:
                raise AssertionError(f"{breaker.name} admitted a call")

    def half_open(self, breaker: CircuitBreaker) -> CallPermit:
        """After the recovery timeout, one probe in (and still running: half-open)."""
        self.clock.advance(5)
        return breaker.acquire()

    def close(self, breaker: CircuitBreaker) -> None:
        """From open: wait, two successful probes."""
        self.clock.advance(5)
        self.succeed(breaker, 2)


def get(url: str, *, method: str = "GET", headers: dict[str, str] | None = None) -> Any:
    """``(status, headers, body bytes)`` of a request, for any status."""
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.headers, error.read()


def get_json(url: str) -> Any:
    status, _, body = get(url)
    return status, json.loads(body)


class EventReader:
    """Reads ``/events`` over a real socket, one server-sent event at a time."""

    def __init__(self, host: str, port: int, path: str = "/events") -> None:
        self.connection = http.client.HTTPConnection(host, port, timeout=10)
        self.connection.request("GET", path)
        self.response = self.connection.getresponse()

    def next(self) -> tuple[str, Any]:
        """``(event, data)`` of the next event (comments and ``retry:`` skipped)."""
        event, data = "message", []
        while True:
            line = self.response.fp.readline().decode()
            if line == "":
                raise EOFError("the stream ended")
            line = line.rstrip("\n")
            if line == "":
                if data:
                    return event, json.loads("\n".join(data))
                continue
            if line.startswith((":", "retry:")):
                continue
            key, _, value = line.partition(": ")
            if key == "event":
                event = value
            elif key == "data":
                data.append(value)

    def until(self, kind: str) -> Any:
        """The data of the next event of *kind* (skipping others)."""
        while True:
            event, data = self.next()
            if event == kind:
                return data

    def close(self) -> None:
        self.response.close()
        self.connection.close()


def raw_connection(host: str, port: int) -> socket.socket:
    return socket.create_connection((host, port), timeout=10)
