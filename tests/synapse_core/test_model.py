"""The breaker against a small reference model, driven by Hypothesis under a virtual clock."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    rule,
)

import synapse_core.breaker.breaker as breaker_module
from synapse_core import (
    CallPermit,
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitOpenError,
    CircuitState,
    VirtualClock,
)
from synapse_core.breaker.window import WINDOW_BUCKETS


class Failure(Exception):
    pass


@dataclass
class Model:
    """The rules written as plainly as possible: every outcome kept, nothing aggregated."""

    config: CircuitBreakerConfig
    state: CircuitState = CircuitState.CLOSED
    epoch: int = 0
    forced: bool = False
    open_until: float = 0.0
    consecutive_opens: int = 0
    outcomes: list[tuple[float, bool, bool]] = field(default_factory=list)  # (time, failed, slow)
    half_open_since: float = 0.0
    admitted: int = 0
    successes: int = 0
    failures: int = 0
    rejections: int = 0
    total_successes: int = 0
    total_failures: int = 0

    def in_window(self, now: float) -> list[tuple[float, bool, bool]]:
        width = self.config.failure_window / WINDOW_BUCKETS
        newest = now // width
        return [o for o in self.outcomes if o[0] // width > newest - WINDOW_BUCKETS]

    def to_open(self, now: float, forced: bool = False) -> None:
        if self.state is CircuitState.HALF_OPEN:
            self.consecutive_opens += 1
        elif self.state is CircuitState.CLOSED:
            self.consecutive_opens = 0
        self.state = CircuitState.OPEN
        self.forced = forced
        self.open_until = (
            math.inf if forced else now + self.config.open_duration(self.consecutive_opens)
        )
        self.epoch += 1
        self.outcomes = []

    def to_closed(self) -> None:
        self.state = CircuitState.CLOSED
        self.forced = False
        self.consecutive_opens = 0
        self.epoch += 1
        self.outcomes = []

    def admit(self, now: float) -> bool:
        if self.state is CircuitState.CLOSED:
            return True
        if self.state is CircuitState.OPEN:
            if not self.forced and now >= self.open_until:
                self.state = CircuitState.HALF_OPEN
                self.epoch += 1
                self.half_open_since = now
                self.admitted, self.successes, self.failures = 1, 0, 0
                return True
        else:
            wait = self.config.max_half_open_wait
            if wait is not None and now - self.half_open_since >= wait:
                self.to_open(now)
            elif self.admitted < self.config.half_open_max_calls:
                self.admitted += 1
                return True
        self.rejections += 1
        return False

    def record(self, epoch: int, now: float, failed: bool, duration: float) -> None:
        if epoch != self.epoch:
            return
        c = self.config
        slow = c.slow_call_duration is not None and duration >= c.slow_call_duration
        if failed:
            self.total_failures += 1
        else:
            self.total_successes += 1
        if self.state is CircuitState.CLOSED:
            self.outcomes.append((now, failed, slow))
            if not (failed or slow):
                return
            window = self.in_window(now)
            total = len(window)
            bad = sum(o[1] for o in window)
            slow_count = sum(o[2] for o in window)
            if total >= c.minimum_requests and (
                bad >= c.failure_threshold
                or (
                    c.failure_rate_threshold is not None and bad >= c.failure_rate_threshold * total
                )
                or (
                    c.slow_call_rate_threshold is not None
                    and slow_count >= c.slow_call_rate_threshold * total
                )
            ):
                self.to_open(now)
        elif self.state is CircuitState.HALF_OPEN:
            target = math.ceil(c.success_threshold * c.half_open_max_calls - 1e-9)
            if failed or slow:
                self.failures += 1
                if self.failures > c.half_open_max_calls - target:
                    self.to_open(now)
            else:
                self.successes += 1
                if self.successes >= target:
                    self.to_closed()


configs = st.builds(
    CircuitBreakerConfig,
    failure_threshold=st.integers(1, 4),
    minimum_requests=st.integers(1, 4),
    failure_window=st.sampled_from([1.0, 10.0, 30.0]),
    recovery_timeout=st.sampled_from([0.5, 5.0, 10.0]),
    half_open_max_calls=st.integers(1, 4),
    success_threshold=st.sampled_from([0.25, 0.5, 0.7, 1.0]),
    failure_rate_threshold=st.none() | st.sampled_from([0.3, 0.5, 1.0]),
    max_half_open_wait=st.none() | st.sampled_from([1.0, 20.0]),
    open_backoff_multiplier=st.sampled_from([1.0, 2.0]),
).flatmap(
    lambda c: st.sampled_from([c, c.replace(slow_call_duration=1.0, slow_call_rate_threshold=0.5)])
)


class BreakerMachine(RuleBasedStateMachine):
    held = Bundle("held")

    @initialize(config=configs)
    def setup(self, config: CircuitBreakerConfig) -> None:
        self.clock = VirtualClock(100.0)
        self.breaker = CircuitBreaker("model", config, clock=self.clock)
        self.model = Model(config)

    def _call(self, failed: bool, duration: float) -> None:
        admitted = self.model.admit(self.clock())
        epoch = self.model.epoch

        def work() -> str:
            self.clock.advance(duration)
            if failed:
                raise Failure()
            return "ok"

        try:
            self.breaker.call(work)
        except CircuitOpenError:
            assert not admitted, "breaker rejected a call the model admits"
            return
        except Failure:
            pass
        assert admitted, "breaker admitted a call the model rejects"
        self.model.record(epoch, self.clock(), failed, duration)

    @rule()
    def succeed(self) -> None:
        self._call(False, 0.0)

    @rule()
    def fail(self) -> None:
        self._call(True, 0.0)

    @rule(failed=st.booleans())
    def slow_call(self, failed: bool) -> None:
        self._call(failed, 1.5)

    @rule(seconds=st.sampled_from([0.01, 0.1, 0.5, 1.0, 4.9, 5.0, 10.0, 29.0, 31.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule(target=held)
    def start_call(self) -> tuple[CallPermit | None, int]:
        """Acquire a permit and keep it: a call in flight across later rules."""
        admitted = self.model.admit(self.clock())
        try:
            permit = self.breaker.acquire()
        except CircuitOpenError:
            assert not admitted
            return None, -1
        assert admitted
        return permit, self.model.epoch

    @rule(call=consumes(held), failed=st.booleans())
    def finish_call(self, call: tuple[CallPermit | None, int], failed: bool) -> None:
        permit, epoch = call
        if permit is None:
            return
        duration = self.clock() - permit.started_at
        if failed:
            permit.failure(Failure())
        else:
            permit.success()
        self.model.record(epoch, self.clock(), failed, duration)

    @rule()
    def force_open(self) -> None:
        self.breaker.force_open()
        if self.model.state is CircuitState.OPEN:
            self.model.forced, self.model.open_until = True, math.inf
        else:
            self.model.to_open(self.clock(), forced=True)

    @rule()
    def force_close(self) -> None:
        self.breaker.force_close()
        if self.model.state is CircuitState.CLOSED:
            self.model.outcomes = []
        else:
            self.model.to_closed()

    @invariant()
    def agrees_with_model(self) -> None:
        if not hasattr(self, "breaker"):
            return
        stats = self.breaker.stats()
        model = self.model
        now = self.clock()
        assert stats.state is model.state
        assert stats.rejection_count == model.rejections
        assert stats.success_count == model.total_successes
        assert stats.failure_count == model.total_failures
        if model.state is CircuitState.CLOSED:
            window = model.in_window(now)
            assert stats.window_requests == len(window)
            assert stats.window_failures == sum(o[1] for o in window)
        if model.state is CircuitState.OPEN and not model.forced:
            assert stats.retry_after == max(0.0, model.open_until - now)
        assert self.breaker.would_admit() == _model_would_admit(model, now)


def _model_would_admit(model: Model, now: float) -> bool:
    if model.state is CircuitState.CLOSED:
        return True
    if model.state is CircuitState.OPEN:
        return not model.forced and now >= model.open_until
    wait = model.config.max_half_open_wait
    if wait is not None and now - model.half_open_since >= wait:
        return False
    return model.admitted < model.config.half_open_max_calls


BreakerMachine.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestBreakerAgainstModel = BreakerMachine.TestCase


class LockedPathMachine(BreakerMachine):
    """The same comparison on the locked path a free-threaded (no-GIL) build uses."""

    @initialize(config=configs)
    def setup(self, config: CircuitBreakerConfig) -> None:
        self._saved = breaker_module._LOCK_FREE
        breaker_module._LOCK_FREE = False
        super().setup(config)

    def teardown(self) -> None:
        breaker_module._LOCK_FREE = self._saved


LockedPathMachine.TestCase.settings = settings(
    max_examples=50,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestLockedPathAgainstModel = LockedPathMachine.TestCase
