"""A store made before the process forked (a pre-forking server that builds its breakers at
import): in the child the store's threads and connections are gone. Its breakers must then
protect the child on their own rules, not wait on a fleet they can no longer reach (whose
rule never trips them locally), and the child is told to make the store after the fork."""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import Any

import pytest
from conftest import StoreFactory
from shared_support import wait_for
from test_shared_fleet import CLOSED, OPEN, fail, outcome

from synapse_core import CircuitBreaker, CircuitBreakerConfig
from synapse_core.breaker.shared import SharedBreakerStore

CONFIG = CircuitBreakerConfig(failure_threshold=2, minimum_requests=1, recovery_timeout=30)


def child(breaker: CircuitBreaker, store: SharedBreakerStore, answer: Connection) -> None:
    """Runs in the forked child: what its breaker does, and what it was told."""
    try:
        report: dict[str, Any] = {"calls": [outcome(breaker, fail) for _ in range(3)]}
        report["state"] = breaker.state.value
        report["connected"] = breaker.stats().fleet.connected  # type: ignore[union-attr]
        report["flushed"] = store.flush(timeout=1.0)
        try:
            CircuitBreaker("another", CONFIG, store=store)
            report["attach"] = "accepted"
        except RuntimeError as exc:
            report["attach"] = str(exc)
        store.close()
        report["heard"] = HEARD.messages
    except BaseException as exc:  # the parent shows it
        report = {"error": f"{type(exc).__name__}: {exc}"}
    answer.send(report)
    answer.close()


class Keep(logging.Handler):
    """Keeps messages in this process's memory (the child's copy holds the child's)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


HEARD = Keep()


@pytest.fixture
def heard() -> Iterator[Keep]:
    """Warnings of the store's logger, in whichever process logs them."""
    logger = logging.getLogger("synapse_core.breaker")
    HEARD.messages.clear()
    logger.addHandler(HEARD)
    try:
        yield HEARD
    finally:
        logger.removeHandler(HEARD)


def test_a_forked_child_protects_itself_and_is_told_why(
    make_store: StoreFactory, heard: Keep
) -> None:
    store = make_store("parent")
    breaker = CircuitBreaker("pricing", CONFIG, store=store)
    assert breaker.stats().fleet.connected  # type: ignore[union-attr]
    context = multiprocessing.get_context("fork")
    theirs, ours = context.Pipe(duplex=False)
    process = context.Process(target=child, args=(breaker, store, ours))
    process.start()
    ours.close()
    try:
        assert theirs.poll(30), "the child did not answer within 30 s"
        report = theirs.recv()
    finally:
        process.join(10)
        theirs.close()
    assert "error" not in report, report["error"]
    # Two failures open it on its own rules; the third call is rejected, not run.
    assert report["calls"] == ["ran", "ran", "rejected"]
    assert report["state"] == "open"
    assert report["connected"] is False
    assert report["flushed"] is False
    assert "forked from it" in report["attach"]
    [warning] = [m for m in report["heard"] if "forked from it" in m]
    assert "make the store (and the breakers) in each process after the fork" in warning
    assert not [m for m in heard.messages if "forked" in m]  # said in the child only
    assert process.exitcode == 0
    # The parent still shares the breaker: the child's failures never reached the fleet.
    assert breaker.stats().fleet.connected  # type: ignore[union-attr]
    assert store.flush()
    assert breaker.state is CLOSED
    assert breaker.stats().fleet.failure_count == 0  # type: ignore[union-attr]
    assert outcome(breaker, fail) == outcome(breaker, fail) == "ran"
    assert wait_for(lambda: breaker.state is OPEN, 3.0)
