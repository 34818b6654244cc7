"""Assertions on a breaker polled from another process poll once more before they conclude.

They used to read only what the poller thread had recorded: right after the request that
tripped the remote breaker, ``assert_trips_within("postgres", seconds=5)`` failed with "never
opened" although the remote state was already open.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from timeline_support import fault_span

from pytest_synapse import BreakerAssertionError


class RemoteService:
    """Stands for the other process: its breaker states, read by ``fetch``."""

    def __init__(self) -> None:
        self.states = {"postgres": "closed"}
        self.fetches = 0

    def fetch(self) -> dict[str, str]:
        self.fetches += 1
        return dict(self.states)


SLOW = 60.0  # the poller thread would not poll again during the test


def test_a_trip_the_poller_has_not_seen_yet_is_found(breaker_timeline: Any) -> None:
    remote = RemoteService()
    breaker_timeline.poll(remote.fetch, interval=SLOW)
    with fault_span(breaker_timeline, "partition", "postgres-proxy"):
        remote.states["postgres"] = "open"  # the tripping request just returned
        assert breaker_timeline.assert_trips_within("postgres", seconds=5) < 5


def test_a_recovery_under_way_is_waited_for_up_to_the_deadline(breaker_timeline: Any) -> None:
    remote = RemoteService()
    breaker_timeline.poll(remote.fetch, interval=0.02)
    with fault_span(breaker_timeline, "partition", "postgres-proxy"):
        remote.states["postgres"] = "open"
        breaker_timeline.assert_trips_within("postgres", seconds=5)
    timer = threading.Timer(0.2, remote.states.__setitem__, ("postgres", "closed"))
    timer.start()
    try:
        recovery = breaker_timeline.assert_closes_within("postgres", seconds=5)
    finally:
        timer.cancel()
    assert 0.1 < recovery < 5


def test_a_breaker_that_never_closes_fails_after_the_deadline(breaker_timeline: Any) -> None:
    remote = RemoteService()
    breaker_timeline.poll(remote.fetch, interval=0.02)
    with fault_span(breaker_timeline, "partition", "postgres-proxy"):
        remote.states["postgres"] = "open"
    fetches = remote.fetches
    with pytest.raises(BreakerAssertionError, match=r"did not close .*polled until the deadline"):
        breaker_timeline.assert_closes_within("postgres", seconds=0.2)
    assert remote.fetches > fetches + 2  # it kept polling until the deadline


def test_failure_counts_are_refused_for_polled_breakers(breaker_timeline: Any) -> None:
    remote = RemoteService()
    breaker_timeline.poll(remote.fetch, interval=SLOW)
    with pytest.raises(TypeError, match="only known for in-process breakers"):
        breaker_timeline.assert_trips_within("postgres", failures=3)


@pytest.mark.parametrize("reports_transitions", [False, True], ids=["states", "transitions"])
def test_a_breaker_open_when_polling_starts_counts_as_open_for_no_calls_while_open(
    breaker_timeline: Any, reports_transitions: bool
) -> None:
    """Regression: a remote breaker already open at the first poll (and still open) was "never
    open during this test", so assert_no_calls_while_open refused to check the calls."""
    from pytest_synapse.poller import PolledState

    def fetch() -> dict[str, Any]:
        states = remote.fetch()
        if reports_transitions:
            return {name: PolledState(state) for name, state in states.items()}
        return states

    remote = RemoteService()
    remote.states["postgres"] = "open"
    breaker_timeline.poll(fetch, interval=SLOW)
    breaker_timeline.upstream_call("postgres")
    with pytest.raises(BreakerAssertionError, match=r"1 call\(s\) reached postgres while"):
        breaker_timeline.assert_no_calls_while_open("postgres", "postgres")


def test_a_call_after_a_breaker_open_at_the_first_poll_closed_is_not_a_leak(
    breaker_timeline: Any,
) -> None:
    remote = RemoteService()
    remote.states["postgres"] = "open"
    poller = breaker_timeline.poll(remote.fetch, interval=SLOW)
    remote.states["postgres"] = "closed"
    poller.poll_once()
    breaker_timeline.upstream_call("postgres")
    breaker_timeline.assert_no_calls_while_open("postgres", "postgres")
