"""Assertions on the breakers of a service in another process, read from its /breakers.

The service (``remote_service.py``) runs as a subprocess and mounts ``synapse_core.health``
under ``/ops``; the test sees its breaker only from outside. A correct service passes every
assertion; planted bugs (a breaker that never opens, one that never closes) fail with a
message naming the cause.
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from timeline_support import fault_span

from pytest_synapse import BreakerAssertionError
from pytest_synapse.remote import RemoteBreakerError, breakers_url

SERVICE = Path(__file__).with_name("remote_service.py")


class Service:
    """The subprocess: its URL, and calls through its breaker."""

    def __init__(self, mode: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(SERVICE), mode],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.url = self.process.stdout.readline().strip()
        assert self.url.startswith("http://"), f"the service did not start: {self.url!r}"

    def call(self, *, fail: bool = False) -> int:
        """One request through the service's breaker; its HTTP status."""
        try:
            with urllib.request.urlopen(f"{self.url}/?fail={int(fail)}", timeout=5) as reply:
                return int(reply.status)
        except urllib.error.HTTPError as error:
            error.close()
            return int(error.code)

    def stop(self) -> None:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process.stdout.close()


@pytest.fixture
def service() -> Iterator[Callable[[str], Service]]:
    started: list[Service] = []

    def start(mode: str) -> Service:
        started.append(Service(mode))
        return started[-1]

    yield start
    for running in started:
        running.stop()


def test_a_correct_service_passes_every_assertion_from_outside(
    service: Callable[[str], Service], breaker_timeline: Any, remote_breakers: Any
) -> None:
    svc = service("correct")
    remote = remote_breakers(svc.url + "/ops")
    assert remote.states == {"backend": "closed"}
    with fault_span(breaker_timeline, "down", "backend"):
        assert [svc.call(fail=True) for _ in range(3)] == [502, 502, 502]
        # The failures that tripped it come from the service itself, not from the poller.
        breaker_timeline.assert_trips_within("backend", failures=3, seconds=5)
        breaker_timeline.assert_rejects_fast(
            "backend", lambda: svc.call(), max_ms=100, calls=5, expect=None
        )
    remote.wait_for_state("backend", "open", within=5)
    time.sleep(0.35)  # the recovery timeout
    assert [svc.call() for _ in range(2)] == [200, 200]  # two probes: closed
    breaker_timeline.assert_closes_within("backend", seconds=3)
    breaker_timeline.assert_half_open_probes_at_most("backend", 2)
    assert breaker_timeline.states("backend") == ["open", "half_open", "closed"]
    opened = breaker_timeline.events("backend", "opened")[0]
    assert opened.detail["failure_count"] == 3
    assert opened.detail["reason"].startswith("3 failures in 3 calls")
    assert remote.stats("backend")["rejection_count"] == 5


def test_transitions_between_two_polls_are_all_recorded(
    service: Callable[[str], Service], breaker_timeline: Any
) -> None:
    """A trip and a recovery inside one poll interval: a state sampler would see nothing."""
    svc = service("correct")
    remote = breaker_timeline.watch_remote(svc.url + "/ops", interval=60)  # no background poll
    with fault_span(breaker_timeline, "down", "backend"):
        for _ in range(3):
            svc.call(fail=True)
    time.sleep(0.35)
    svc.call()
    svc.call()
    assert remote.poll() == {"backend": "closed"}  # closed again, as when polling began
    assert breaker_timeline.states("backend") == ["open", "half_open", "closed"]
    breaker_timeline.assert_trips_within("backend", failures=3)
    breaker_timeline.assert_closes_within("backend", seconds=3)


def test_planted_bug_a_breaker_that_never_opens_fails(
    service: Callable[[str], Service], breaker_timeline: Any, remote_breakers: Any
) -> None:
    svc = service("never_opens")
    remote_breakers(svc.url + "/ops")
    with fault_span(breaker_timeline, "down", "backend"):
        assert [svc.call(fail=True) for _ in range(5)] == [502] * 5  # every call waits it out
        with pytest.raises(
            BreakerAssertionError, match=r"breaker 'backend' never opened \(polled until"
        ):
            breaker_timeline.assert_trips_within("backend", failures=3, seconds=0.3)


def test_planted_bug_a_breaker_that_never_closes_fails(
    service: Callable[[str], Service], breaker_timeline: Any, remote_breakers: Any
) -> None:
    svc = service("never_closes")
    remote = remote_breakers(svc.url + "/ops")
    with fault_span(breaker_timeline, "down", "backend"):
        for _ in range(3):
            svc.call(fail=True)
        breaker_timeline.assert_trips_within("backend", failures=3, seconds=5)
    for _ in range(3):
        assert svc.call() == 503  # healed, but it keeps rejecting
    with pytest.raises(
        BreakerAssertionError, match=r"'backend' did not close .*state now: open.*polled until"
    ):
        breaker_timeline.assert_closes_within("backend", seconds=0.3)
    assert remote.states["backend"] == "open"


def test_a_url_that_is_not_a_breakers_endpoint_is_refused_at_once(
    service: Callable[[str], Service], breaker_timeline: Any
) -> None:
    svc = service("correct")
    with pytest.raises(RemoteBreakerError, match=r"/wrong/breakers did not answer JSON.*health"):
        breaker_timeline.watch_remote(svc.url + "/wrong")
    with pytest.raises(RemoteBreakerError, match=r"/ops/nothing/breakers answered HTTP 404"):
        breaker_timeline.watch_remote(svc.url + "/ops/nothing")
    with pytest.raises(ValueError, match="http"):
        breaker_timeline.watch_remote("127.0.0.1:8000")
    with pytest.raises(RemoteBreakerError, match="did not answer"):
        breaker_timeline.watch_remote("http://127.0.0.1:9", timeout=1)


def test_breakers_url_forms() -> None:
    assert breakers_url("http://h:1") == "http://h:1/breakers"
    assert breakers_url("http://h:1/ops/") == "http://h:1/ops/breakers"
    assert breakers_url("http://h:1/ops/breakers") == "http://h:1/ops/breakers"
