"""Process-wide transition observers: transition counts, watchers, the synapse.breaker log."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from breaker_support import fail_times, ok

from synapse_core import (
    CircuitBreaker,
    CircuitEvent,
    CircuitOpenError,
    CircuitState,
    VirtualClock,
    watch_transitions,
)

MakeBreaker = Callable[..., CircuitBreaker]
CLOSED, OPEN, HALF = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN


def cycle(breaker: CircuitBreaker, clock: VirtualClock) -> None:
    """closed -> open -> half_open -> closed."""
    fail_times(breaker, 3)
    clock.advance(10)
    breaker.call(ok)
    breaker.call(ok)


def test_transition_counts_follow_every_change_and_survive_reset(
    make_breaker: MakeBreaker, clock: VirtualClock
) -> None:
    breaker = make_breaker()
    assert breaker.transition_counts() == {}
    cycle(breaker, clock)
    cycle(breaker, clock)
    assert breaker.transition_counts() == {(CLOSED, OPEN): 2, (OPEN, HALF): 2, (HALF, CLOSED): 2}
    fail_times(breaker, 3)
    clock.advance(10)
    breaker.call(ok)  # half-open, one probe in
    breaker.reset()  # half_open -> closed, counted; counters cleared but not the transitions
    breaker.force_open()
    breaker.force_open()  # already open: no transition
    breaker.force_close()
    assert breaker.transition_counts() == {
        (CLOSED, OPEN): 4,
        (OPEN, HALF): 3,
        (HALF, CLOSED): 3,
        (OPEN, CLOSED): 1,
    }
    assert breaker.stats().failure_count == 0


def test_watchers_see_transitions_in_order_and_never_rejections(
    make_breaker: MakeBreaker, clock: VirtualClock
) -> None:
    breaker = make_breaker()
    seen: list[tuple[str, str]] = []
    with watch_transitions(lambda b, e: seen.append((b.name, e.kind))):
        fail_times(breaker, 3)
        for _ in range(5):
            with pytest.raises(CircuitOpenError):
                breaker.call(ok)
        clock.advance(10)
        breaker.call(ok)
        breaker.call(ok)
    fail_times(breaker, 3)  # unsubscribed: not seen
    assert seen == [("dep", "opened"), ("dep", "half_opened"), ("dep", "closed")]


def test_a_failing_watcher_is_logged_and_the_others_still_run(
    make_breaker: MakeBreaker, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(breaker: CircuitBreaker, event: CircuitEvent) -> None:
        raise RuntimeError("watcher bug")

    seen: list[str] = []
    with watch_transitions(broken), watch_transitions(lambda b, e: seen.append(e.kind)):
        fail_times(make_breaker(), 3)
    assert seen == ["opened"]
    assert any("watcher bug" in (r.exc_text or "") for r in caplog.records)


def test_watcher_must_be_callable() -> None:
    with pytest.raises(TypeError, match="callable"):
        watch_transitions("nope")  # type: ignore[arg-type]


def test_transitions_are_logged_with_stable_messages_and_extra_fields(
    make_breaker: MakeBreaker, clock: VirtualClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="synapse.breaker")
    breaker = make_breaker("payments")
    cycle(breaker, clock)
    records = [r for r in caplog.records if r.name == "synapse.breaker"]
    assert [(r.levelname, r.synapse_event) for r in records] == [  # type: ignore[attr-defined]
        ("WARNING", "breaker.opened"),
        ("INFO", "breaker.half_opened"),
        ("INFO", "breaker.closed"),
    ]
    opened = records[0]
    assert opened.msg == "circuit breaker %r %s -> %s: %s"
    assert opened.getMessage().startswith("circuit breaker 'payments' closed -> open: 3 failures")
    fields = {k: getattr(opened, k) for k in ("breaker", "from_state", "to_state")}
    assert fields == {"breaker": "payments", "from_state": "closed", "to_state": "open"}
    assert opened.failure_count == 3  # type: ignore[attr-defined]
    assert opened.retry_after == 10.0  # type: ignore[attr-defined]
    assert records[2].reason == "2 probe calls succeeded"  # type: ignore[attr-defined]
    breaker.force_open("maintenance")
    forced = [r for r in caplog.records if r.name == "synapse.breaker"][-1]
    assert forced.retry_after is None  # type: ignore[attr-defined]
    assert forced.reason == "maintenance"  # type: ignore[attr-defined]


def test_the_log_prints_nothing_until_logging_is_configured() -> None:
    """The synapse logger has a NullHandler: no 'last resort' output on stderr."""
    assert any(isinstance(h, logging.NullHandler) for h in logging.getLogger("synapse").handlers)
