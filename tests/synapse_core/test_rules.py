"""The breaker's semantic rules, each checked on a virtual clock."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
from breaker_support import Boom, fail, fail_times, ok

from synapse_core import (
    CircuitBreaker,
    CircuitOpenError,
    CircuitState,
    VirtualClock,
)

MakeBreaker = Callable[..., CircuitBreaker]


# Rule 1: closed -> open needs minimum_requests outcomes and failure_threshold failures in window.


def test_trips_on_threshold_failures_within_the_window(make_breaker: MakeBreaker) -> None:
    breaker = make_breaker(failure_threshold=3, minimum_requests=2)
    fail_times(breaker, 2)
    assert breaker.state is CircuitState.CLOSED
    fail_times(breaker, 1)  # the tripping call raises its own exception
    assert breaker.state is CircuitState.OPEN


def test_minimum_requests_gates_tripping(make_breaker: MakeBreaker) -> None:
    breaker = make_breaker(failure_threshold=1, minimum_requests=4)
    fail_times(breaker, 1)
    breaker.call(ok)
    breaker.call(ok)
    assert breaker.state is CircuitState.CLOSED
    fail_times(breaker, 1)  # 4 outcomes, 2 failures >= 1
    assert breaker.state is CircuitState.OPEN


def test_failures_outside_the_window_do_not_count(
    make_breaker: MakeBreaker, clock: VirtualClock
) -> None:
    breaker = make_breaker(failure_threshold=3, failure_window=10.0)
    fail_times(breaker, 2)
    clock.advance(10.0)  # both failures have left the 10 s window
    fail_times(breaker, 2)
    assert breaker.state is CircuitState.CLOSED
    assert breaker.stats().window_failures == 2
    clock.advance(9.8)  # still inside (resolution is 1% of the window)
    fail_times(breaker, 1)
    assert breaker.state is CircuitState.OPEN


def test_window_drops_outcomes_after_the_window_length(
    make_breaker: MakeBreaker, clock: VirtualClock
) -> None:
    breaker = make_breaker(failure_threshold=100, failure_window=30.0)
    fail_times(breaker, 3)
    for _ in range(5):
        breaker.call(ok)
    stats = breaker.stats()
    assert (stats.window_requests, stats.window_failures) == (8, 3)
    assert stats.window_failure_rate == pytest.approx(3 / 8)
    clock.advance(29.5)
    assert breaker.stats().window_requests == 8
    clock.advance(0.5)
    assert breaker.stats().window_requests == 0
    assert breaker.stats().success_count == 5  # lifetime counters stay


def test_failure_rate_threshold(make_breaker: MakeBreaker) -> None:
    breaker = make_breaker(failure_threshold=1000, minimum_requests=10, failure_rate_threshold=0.5)
    for _ in range(5):
        breaker.call(ok)
    fail_times(breaker, 4)  # 9 outcomes: below minimum_requests
    assert breaker.state is CircuitState.CLOSED
    fail_times(breaker, 1)  # 10 outcomes, 5 failures = 50%
    assert breaker.state is CircuitState.OPEN


def test_slow_call_rate_threshold(make_breaker: MakeBreaker, clock: VirtualClock) -> None:
    breaker = make_breaker(
        failure_threshold=1000,
        minimum_requests=4,
        slow_call_duration=1.0,
        slow_call_rate_threshold=0.5,
    )

    def slow() -> str:
        clock.advance(1.5)
        return "late"

    breaker.call(ok)
    breaker.call(ok)
    assert breaker.call(slow) == "late"
    assert breaker.state is CircuitState.CLOSED
    breaker.call(slow)  # 4 outcomes, 2 slow = 50%
    assert breaker.state is CircuitState.OPEN
    assert breaker.stats().failure_count == 0


@pytest.mark.parametrize(
    "fields",
    [
        {"failure_threshold": 1, "minimum_requests": 2},
        {"failure_threshold": 1000, "minimum_requests": 2, "failure_rate_threshold": 0.5},
    ],
    ids=["count", "rate"],
)
@pytest.mark.parametrize("order", ["FS", "SF"])
def test_the_verdict_does_not_depend_on_the_order_of_outcomes(
    make_breaker: MakeBreaker, fields: dict[str, object], order: str
) -> None:
    """The rule was checked only after a failure: F then S stayed closed, S then F opened."""
    breaker = make_breaker(**fields)
    for outcome in order:
        if outcome == "F":
            fail_times(breaker, 1)
        else:
            breaker.call(ok)
    assert breaker.state is CircuitState.OPEN


def test_the_success_that_completes_minimum_requests_trips_through_the_lock_free_path(
    make_breaker: MakeBreaker,
) -> None:
    """The decorator and ``with`` take the lock-free path too; it must not skip the verdict."""
    breaker = make_breaker(failure_threshold=2, minimum_requests=5)
    guarded = breaker(ok)
    fail_times(breaker, 2)
    guarded()
    with breaker:
        pass
    assert breaker.state is CircuitState.CLOSED
    breaker.call(ok)  # the fifth outcome
    assert breaker.state is CircuitState.OPEN


def test_failure_rate_compares_exactly(make_breaker: MakeBreaker) -> None:
    """7 failures in 25 calls is exactly 28%; 0.28 * 25 is 7.000000000000001 in floats."""
    breaker = make_breaker(failure_threshold=1000, minimum_requests=25, failure_rate_threshold=0.28)
    for _ in range(18):
        breaker.call(ok)
    fail_times(breaker, 6)
    assert breaker.state is CircuitState.CLOSED
    fail_times(breaker, 1)
    assert breaker.state is CircuitState.OPEN


@pytest.mark.parametrize(("threshold", "slow"), [(0.55, 55), (0.07, 7)])
def test_slow_call_rate_compares_exactly(
    make_breaker: MakeBreaker, threshold: float, slow: int
) -> None:
    breaker = make_breaker(
        failure_threshold=1000,
        minimum_requests=100,
        slow_call_duration=1.0,
        slow_call_rate_threshold=threshold,
    )
    for _ in range(100 - slow):
        breaker.acquire().success(duration=0.01)
    for _ in range(slow):
        breaker.acquire().success(duration=2.0)
    assert breaker.state is CircuitState.OPEN


def test_the_window_is_judged_again_as_old_outcomes_leave_it(
    make_breaker: MakeBreaker, clock: VirtualClock
) -> None:
    """3 successes then 2 failures is 40% < 50%; once the successes age out, the 2 failures
    alone are 100%: the breaker opened then, not at the next outcome."""
    breaker = make_breaker(failure_threshold=1000, failure_rate_threshold=0.5, failure_window=12.5)
    seen = []
    breaker.subscribe(seen.append)
    for _ in range(3):
        breaker.call(ok)  # at t=1000: slice 8000 of 0.125 s, which leaves the window at 1012.5
    clock.advance(5)
    fail_times(breaker, 2)
    assert breaker.state is CircuitState.CLOSED
    assert breaker.would_admit()
    clock.advance(7.375)  # t=1012.375: the successes are still in
    assert breaker.would_admit()
    clock.advance(0.625)  # t=1013
    assert breaker.retry_after == 9.5  # open since 1012.5, for 10 s
    assert not breaker.would_admit()
    with pytest.raises(CircuitOpenError):
        breaker.call(ok)
    assert breaker.state is CircuitState.OPEN
    opened = seen[0]
    assert opened.timestamp == 1012.5
    assert "failure rate 2/2" in opened.reason
    assert "left the window" in opened.reason
    clock.advance(9.5)
    breaker.call(ok)  # a probe
    assert breaker.state is CircuitState.HALF_OPEN


def test_ageing_that_trips_a_breaker_nobody_called_is_dated_when_it_happened(
    make_breaker: MakeBreaker, clock: VirtualClock
) -> None:
    """A call long after the window tripped by ageing meets a breaker whose open period is over:
    it is admitted as the first probe."""
    breaker = make_breaker(failure_threshold=1000, failure_rate_threshold=0.5, failure_window=12.5)
    for _ in range(3):
        breaker.call(ok)
    clock.advance(5)
    fail_times(breaker, 2)
    clock.advance(17.375)  # opened at 1012.5 until 1022.5
    assert breaker.retry_after == 0.125
    clock.advance(0.125)
    assert breaker.would_admit()
    breaker.call(ok)
    assert breaker.state is CircuitState.HALF_OPEN
    assert breaker.stats().last_state_change == 1022.5


# Rule 2: open rejects at once, without calling, counting and emitting each rejection.


def test_open_rejects_without_calling(make_breaker: MakeBreaker, clock: VirtualClock) -> None:
    breaker = make_breaker()
    fail_times(breaker, 3)
    calls: list[int] = []
    seen = []
    breaker.subscribe(seen.append)
    errors = []
    for _ in range(3):
        with pytest.raises(CircuitOpenError) as info:
            breaker.call(calls.append, 1)
        errors.append(info.value)
        clock.advance(1.0)
    assert calls == []
    assert len({id(e) for e in errors}) == 3  # a new exception every time
    first = errors[0]
    assert first.breaker_name == "dep"
    assert first.state is CircuitState.OPEN
    assert first.retry_after == pytest.approx(10.0)
    assert errors[2].retry_after == pytest.approx(8.0)
    assert isinstance(first.last_failure, Boom)
    assert "'dep' is open" in str(first)
    assert "retry after 10.000s" in str(first)
    assert breaker.stats().rejection_count == 3
    assert [e.kind for e in seen] == ["request_rejected"] * 3


# Rule 3: open -> half-open lazily on the first admission after recovery_timeout.


def test_half_open_is_lazy_and_the_first_caller_is_a_probe(
    make_breaker: MakeBreaker, clock: VirtualClock
) -> None:
    breaker = make_breaker(recovery_timeout=10.0, half_open_max_calls=2)
    fail_times(breaker, 3)
    clock.advance(9.99)
    with pytest.raises(CircuitOpenError):
        breaker.call(ok)
    clock.advance(0.01)
    assert breaker.state is CircuitState.OPEN  # reads never transition
    assert breaker.retry_after == 0.0
    assert breaker.state is CircuitState.OPEN
    permit = breaker.acquire()
    assert breaker.state is CircuitState.HALF_OPEN
    second = breaker.acquire()
    with pytest.raises(CircuitOpenError) as info:
        breaker.acquire()  # only half_open_max_calls probes; extras are rejected, not queued
    assert info.value.state is CircuitState.HALF_OPEN
    permit.success()
    second.success()
    assert breaker.state is CircuitState.CLOSED


# Rule 4: close at ceil(success_threshold x max_calls) successes; re-open once unreachable.


def test_half_open_closes_at_the_success_target(
    make_breaker: MakeBreaker, clock: VirtualClock
) -> None:
    breaker = make_breaker(half_open_max_calls=4, success_threshold=0.5)
    fail_times(breaker, 3)
    clock.advance(10)
    breaker.call(ok)
    assert breaker.state is CircuitState.HALF_OPEN
    breaker.call(ok)  # 2 of ceil(0.5 * 4) = 2
    assert breaker.state is CircuitState.CLOSED


def test_half_open_reopens_as_soon_as_the_target_is_unreachable(
    make_breaker: MakeBreaker, clock: VirtualClock
) -> None:
    breaker = make_breaker(half_open_max_calls=4, success_threshold=0.5)
    fail_times(breaker, 3)
    clock.advance(10)
    fail_times(breaker, 1)
    fail_times(breaker, 1)  # 2 failures: 2 successes still possible
    assert breaker.state is CircuitState.HALF_OPEN
    fail_times(breaker, 1)  # 3 failures: only 1 success possible < 2
    assert breaker.state is CircuitState.OPEN
    # Re-opening restarts the recovery timer.
    assert breaker.retry_after == pytest.approx(10.0)
    clock.advance(9.9)
    with pytest.raises(CircuitOpenError):
        breaker.call(ok)


def test_default_config_needs_both_probes_to_succeed(
    make_breaker: MakeBreaker, clock: VirtualClock
) -> None:
    breaker = make_breaker()
    fail_times(breaker, 3)
    clock.advance(10)
    breaker.call(ok)
    fail_times(breaker, 1)  # target 2 of 2 is now unreachable
    assert breaker.state is CircuitState.OPEN


def test_backoff_multiplies_consecutive_open_periods(
    make_breaker: MakeBreaker, clock: VirtualClock
) -> None:
    breaker = make_breaker(
        recovery_timeout=1.0, open_backoff_multiplier=2.0, max_recovery_timeout=3.0
    )
    fail_times(breaker, 3)
    durations = []
    for _ in range(4):
        durations.append(breaker.retry_after)
        clock.advance(breaker.retry_after)
        fail_times(breaker, 1)  # the probe fails: re-open
    assert durations == [1.0, 2.0, 3.0, 3.0]
    clock.advance(3.0)
    breaker.call(ok)
    breaker.call(ok)
    assert breaker.state is CircuitState.CLOSED
    fail_times(breaker, 3)
    assert breaker.retry_after == 1.0  # closing resets the backoff


def test_max_half_open_wait_ends_a_wedged_episode(
    make_breaker: MakeBreaker, clock: VirtualClock
) -> None:
    breaker = make_breaker(max_half_open_wait=5.0)
    fail_times(breaker, 3)
    clock.advance(10)
    lost_probes = [breaker.acquire(), breaker.acquire()]  # never report back
    clock.advance(4.9)
    with pytest.raises(CircuitOpenError):
        breaker.acquire()
    clock.advance(0.1)
    with pytest.raises(CircuitOpenError) as info:
        breaker.acquire()
    assert info.value.state is CircuitState.OPEN
    assert breaker.state is CircuitState.OPEN
    for permit in lost_probes:  # late reports are ignored
        permit.success()
    assert breaker.state is CircuitState.OPEN
    clock.advance(10)
    breaker.call(ok)
    breaker.call(ok)
    assert breaker.state is CircuitState.CLOSED


def test_retry_after_in_half_open_counts_the_deadline_and_the_reopening(
    make_breaker: MakeBreaker, clock: VirtualClock
) -> None:
    """With the only probe running it said 4.0 at t=11 (the call then is rejected, and the
    deadline re-opens the breaker for 20 s), and 0.0 at the deadline while would_admit() was
    False. Now it says when a call would be admitted, and waiting that long works."""
    breaker = make_breaker(
        recovery_timeout=10.0,
        open_backoff_multiplier=2.0,
        half_open_max_calls=1,
        max_half_open_wait=5.0,
    )
    fail_times(breaker, 3)  # t=1000, open until 1010
    clock.advance(10)
    breaker.acquire()  # the only probe, never reported; the episode ends at 1015
    clock.advance(1)
    assert breaker.retry_after == 24.0  # 4 s to the deadline, then re-opened for 20 s
    with pytest.raises(CircuitOpenError) as info:
        breaker.call(ok)
    assert info.value.retry_after == 24.0
    clock.advance(4)  # the deadline
    assert not breaker.would_admit()
    assert breaker.retry_after == 20.0
    clock.advance(1)
    with pytest.raises(CircuitOpenError) as info:
        breaker.call(ok)  # re-opens, dated at the deadline
    assert (info.value.state, info.value.retry_after) == (CircuitState.OPEN, 19.0)
    assert breaker.stats().last_state_change == 1015.0
    clock.advance(19)
    assert breaker.retry_after == 0.0
    breaker.call(ok)
    assert breaker.state is CircuitState.CLOSED


def test_a_probe_that_reports_after_the_deadline_but_before_the_next_call_still_counts(
    make_breaker: MakeBreaker, clock: VirtualClock
) -> None:
    breaker = make_breaker(half_open_max_calls=1, max_half_open_wait=5.0)
    fail_times(breaker, 3)
    clock.advance(10)
    probe = breaker.acquire()
    clock.advance(6)
    assert not breaker.would_admit()  # a call now would end the episode
    probe.success()
    assert breaker.state is CircuitState.CLOSED


def test_half_open_with_every_probe_out_has_no_retry_time(
    make_breaker: MakeBreaker, clock: VirtualClock
) -> None:
    """Without max_half_open_wait only a probe's report admits the next call: it used to say
    recovery_timeout, as if the next call were admitted then."""
    breaker = make_breaker()
    fail_times(breaker, 3)
    clock.advance(10)
    probes = [breaker.acquire(), breaker.acquire()]
    with pytest.raises(CircuitOpenError) as info:
        breaker.call(ok)
    assert info.value.retry_after is None
    assert "no retry time" in str(info.value)
    stats = breaker.stats()
    assert stats.retry_after is None
    assert stats.waiting_for == "2 half-open probe(s) in flight to report"
    probes[0].release()
    assert breaker.retry_after == 0.0
    assert breaker.stats().waiting_for is None
    probes[1].success()


def test_without_max_half_open_wait_lost_probes_wedge_half_open(
    make_breaker: MakeBreaker, clock: VirtualClock
) -> None:
    # Documents why max_half_open_wait exists.
    breaker = make_breaker()
    fail_times(breaker, 3)
    clock.advance(10)
    breaker.acquire()
    breaker.acquire()
    clock.advance(3600)
    with pytest.raises(CircuitOpenError):
        breaker.acquire()
    assert breaker.state is CircuitState.HALF_OPEN


def test_released_probe_frees_its_slot(make_breaker: MakeBreaker, clock: VirtualClock) -> None:
    breaker = make_breaker()
    fail_times(breaker, 3)
    clock.advance(10)
    first = breaker.acquire()
    breaker.acquire()
    first.release()
    third = breaker.acquire()
    assert breaker.stats().half_open_calls_in_flight == 2
    third.success()


# Rule 5: closing clears the window.


def test_closing_clears_the_window(make_breaker: MakeBreaker, clock: VirtualClock) -> None:
    breaker = make_breaker(failure_threshold=3, minimum_requests=1, failure_window=60)
    fail_times(breaker, 3)
    clock.advance(10)
    breaker.call(ok)
    breaker.call(ok)
    assert breaker.state is CircuitState.CLOSED
    fail_times(breaker, 2)  # old failures would make this 5 >= 3
    assert breaker.state is CircuitState.CLOSED
    assert breaker.stats().window_failures == 2


# Rule 6: outcomes of calls admitted in an earlier state are ignored.


def test_late_outcomes_are_counted_as_ignored(
    make_breaker: MakeBreaker, clock: VirtualClock
) -> None:
    breaker = make_breaker()
    late = [breaker.acquire() for _ in range(3)]
    fail_times(breaker, 3)
    late[0].success()
    late[1].failure(Boom("late"))
    late[2].release()  # no outcome: nothing to count
    stats = breaker.stats()
    assert (stats.success_count, stats.failure_count, stats.ignored_count) == (0, 3, 2)


def test_late_outcome_from_before_the_trip_is_ignored(
    make_breaker: MakeBreaker, clock: VirtualClock
) -> None:
    breaker = make_breaker()
    slow_call = breaker.acquire()  # admitted while closed
    fail_times(breaker, 3)
    clock.advance(10)
    probe = breaker.acquire()  # half-open now
    slow_call.failure(Boom("late"))  # must not count against half-open
    assert breaker.state is CircuitState.HALF_OPEN
    probe.success()
    breaker.call(ok)
    assert breaker.state is CircuitState.CLOSED
    stale_success = breaker.acquire()
    fail_times(breaker, 3)
    clock.advance(10)
    breaker.call(ok)
    stale_success.success()  # admitted in the previous closed episode
    assert breaker.stats().half_open_calls_in_flight == 0
    assert breaker.state is CircuitState.HALF_OPEN


def test_late_success_from_previous_closed_episode_does_not_enter_new_window(
    make_breaker: MakeBreaker, clock: VirtualClock
) -> None:
    breaker = make_breaker(failure_threshold=2, minimum_requests=3)
    stale = breaker.acquire()
    fail_times(breaker, 1)
    breaker.force_open()
    breaker.force_close()
    stale.success()
    fail_times(breaker, 2)  # 2 outcomes in the new window: below minimum_requests 3
    assert breaker.state is CircuitState.CLOSED


# Reads are pure; control operations.


def test_reads_have_no_side_effects(make_breaker: MakeBreaker, clock: VirtualClock) -> None:
    breaker = make_breaker()
    fail_times(breaker, 3)
    clock.advance(100)
    for _ in range(3):
        assert breaker.state is CircuitState.OPEN
        stats = breaker.stats()
        assert breaker.retry_after == 0.0
        assert breaker.would_admit()
    assert stats.rejection_count == 0
    assert stats.state is CircuitState.OPEN
    assert stats.time_in_current_state == 100


def test_force_open_stays_open_until_closed(make_breaker: MakeBreaker, clock: VirtualClock) -> None:
    breaker = make_breaker()
    breaker.force_open("maintenance")
    clock.advance(10_000)
    with pytest.raises(CircuitOpenError) as info:
        breaker.call(ok)
    assert info.value.retry_after == math.inf
    assert "force_close" in str(info.value)
    assert breaker.stats().forced
    breaker.force_close()
    assert breaker.call(ok) == "ok"


def test_force_open_on_an_open_breaker_pins_it(
    make_breaker: MakeBreaker, clock: VirtualClock
) -> None:
    breaker = make_breaker()
    fail_times(breaker, 3)
    breaker.force_open()
    clock.advance(100)
    assert not breaker.would_admit()


def test_reset_restores_a_new_breakers_state(
    make_breaker: MakeBreaker, clock: VirtualClock
) -> None:
    breaker = make_breaker()
    fail_times(breaker, 3)
    with pytest.raises(CircuitOpenError):
        breaker.call(ok)
    breaker.reset()
    stats = breaker.stats()
    assert stats.state is CircuitState.CLOSED
    assert (stats.failure_count, stats.rejection_count, stats.window_requests) == (0, 0, 0)
    assert stats.last_failure_time is None


def test_stats_fields(make_breaker: MakeBreaker, clock: VirtualClock) -> None:
    breaker = make_breaker(failure_threshold=10)
    breaker.call(ok)
    fail_times(breaker, 2)
    with pytest.raises(TimeoutError):
        breaker.call(_timeout)
    clock.advance(2)
    stats = breaker.stats()
    assert stats.success_count == 1
    assert stats.failure_count == 3
    assert stats.timeout_count == 1
    assert stats.total_requests == 4
    assert stats.last_failure_time == 1000.0
    assert stats.time_in_current_state == 2
    data = stats.to_dict()
    assert data["state"] == "closed"
    for field in (
        "state",
        "failure_count",
        "success_count",
        "total_requests",
        "last_failure_time",
        "last_state_change",
        "time_in_current_state",
        "rejection_count",
        "window_requests",
        "window_failures",
        "window_failure_rate",
        "window_slow_calls",
    ):
        assert field in data


def _timeout() -> None:
    raise TimeoutError("too slow")


def test_tripping_call_raises_its_own_exception(make_breaker: MakeBreaker) -> None:
    breaker = make_breaker(failure_threshold=1, minimum_requests=1)
    with pytest.raises(Boom, match="dependency down"):
        breaker.call(fail)
    assert breaker.state is CircuitState.OPEN
