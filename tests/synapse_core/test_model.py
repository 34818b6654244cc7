"""The breaker in lock-step with a reference model of the README's rules, driven by Hypothesis.

The model keeps every outcome and re-reads the rules literally at every step: no buckets of
counters, no epochs cached, no fast paths. Hypothesis drives both with random valid configs on a
virtual clock, with calls, two-step permits held across steps, triggers and the control
operations, and every step compares states, counters, window figures, ``retry_after`` and
``would_admit``. A rule written in the README and implemented differently fails here.

Times are dyadic (0.25, 3.125, ...) so clock arithmetic is exact and ``retry_after`` can be
checked to the last bit by waiting exactly that long.

``SYNAPSE_MODEL_EXAMPLES=20000 pytest tests/synapse_core/test_model.py`` runs a deep search.
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass, field
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
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
    TransportMetrics,
    VirtualClock,
)
from synapse_core.breaker.rule import TripRule

EXAMPLES = int(os.environ.get("SYNAPSE_MODEL_EXAMPLES", "0")) or None
pytestmark = [pytest.mark.timeout(0)] if EXAMPLES else []  # a deep search takes its time

CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN
SLICES = 100  # README: the window is kept as 100 slices of failure_window / 100


class Failure(ConnectionError):
    """The dependency failed."""


class BadInput(ValueError):
    """The dependency answered that the caller's input was wrong."""


class Skip(Exception):
    """Listed in ignore_exceptions by some configs."""


class Halt(BaseException):
    """A BaseException that is not an Exception; listed in failure_exceptions by some configs."""


RAISES: dict[str, BaseException] = {
    "failure": Failure("down"),
    "timeout": TimeoutError("slow"),
    "bad input": BadInput("no such item"),
    "skip": Skip("not the dependency's business"),
    "halt": Halt(),
}


class Switch:
    """An external trigger the state machine flips by hand."""

    description = "switch"

    def __init__(self) -> None:
        self.tripping = False
        self.recovered = True

    def should_trip(self, metrics: TransportMetrics, state: CircuitState) -> bool:
        return self.tripping

    def should_recover(self, state: CircuitState) -> bool:
        return self.recovered


@dataclass
class Model:
    """The README's rules, read literally."""

    config: CircuitBreakerConfig
    switch: Switch
    state: CircuitState = CLOSED
    epoch: int = 0
    forced: bool = False
    open_until: float = 0.0
    consecutive_opens: int = 0
    tripped_by_switch: bool = False
    outcomes: list[tuple[float, bool, bool]] = field(default_factory=list)  # slice, failed, slow
    checked: float = -math.inf  # the slice up to which the closed window has been judged
    half_open_since: float = 0.0
    admitted: int = 0
    successes: int = 0
    failures: int = 0
    rejections: int = 0
    total_successes: int = 0
    total_failures: int = 0
    timeouts: int = 0
    ignored: int = 0
    events: list[tuple[str, float]] = field(default_factory=list)

    @property
    def width(self) -> float:
        return self.config.failure_window / SLICES

    def window(self, slice_: float) -> list[tuple[float, bool, bool]]:
        """The outcomes in the window while the clock is in *slice_*."""
        return [o for o in self.outcomes if o[0] > slice_ - SLICES]

    def trips(self, window: list[tuple[float, bool, bool]]) -> bool:
        c = self.config
        total = len(window)
        failed = sum(o[1] for o in window)
        slow = sum(o[2] for o in window)
        if total < c.minimum_requests:
            return False
        if failed >= c.failure_threshold:
            return True
        if c.failure_rate_threshold is not None and Fraction(failed, total) >= Fraction(
            str(c.failure_rate_threshold)
        ):
            return True
        return c.slow_call_rate_threshold is not None and Fraction(slow, total) >= Fraction(
            str(c.slow_call_rate_threshold)
        )

    def held(self) -> bool:
        return self.tripped_by_switch and not self.switch.recovered

    # -------------------------------------------------------------- transitions

    def to_open(self, at: float, forced: bool = False) -> None:
        if self.state is HALF_OPEN:
            self.consecutive_opens += 1
        elif self.state is CLOSED:
            self.consecutive_opens = 0
        self.state = OPEN
        self.forced = forced
        self.open_until = (
            math.inf if forced else at + self.config.open_duration(self.consecutive_opens)
        )
        self.epoch += 1
        self.outcomes = []  # the window clears on opening
        self.events.append(("opened", at))

    def to_closed(self, at: float) -> None:
        self.state = CLOSED
        self.forced = False
        self.tripped_by_switch = False
        self.consecutive_opens = 0
        self.epoch += 1
        self.outcomes = []
        self.checked = -math.inf
        self.events.append(("closed", at))

    def age(self, now: float, admitting: bool) -> None:
        """Apply what time alone did since the last step (README: dated when it happened)."""
        if self.state is CLOSED:
            current = now // self.width
            # The window changes when an outcome's slice becomes SLICES slices old.
            for leaves in sorted({o[0] + SLICES for o in self.outcomes}):
                if self.checked < leaves <= current and self.trips(self.window(leaves)):
                    self.to_open(min(leaves * self.width, now))
                    return
            self.checked = current
        elif admitting and self.state is HALF_OPEN:
            wait = self.config.max_half_open_wait
            if wait is not None and now - self.half_open_since >= wait:
                self.to_open(self.half_open_since + wait)

    # -------------------------------------------------------------- calls

    def admit(self, now: float) -> bool:
        self.age(now, admitting=True)
        if self.state is CLOSED:
            return True
        if self.state is OPEN:
            if not self.forced and now >= self.open_until and not self.held():
                self.state = HALF_OPEN
                self.epoch += 1
                self.half_open_since = now
                self.admitted, self.successes, self.failures = 1, 0, 0
                self.events.append(("half_opened", now))
                return True
        elif self.admitted < self.config.half_open_max_calls:
            self.admitted += 1
            return True
        self.rejections += 1
        return False

    def classify(self, kind: str) -> str:
        """'success', 'failure', 'timeout', 'ignored' or 'none' (README: classification)."""
        c = self.config
        if kind == "ok":
            return "success"
        exc = RAISES[kind]
        if not isinstance(exc, Exception):
            if any(isinstance(exc, m) for m in c.ignore_exceptions if isinstance(m, type)):
                return "ignored"
            if any(isinstance(exc, m) for m in c.failure_exceptions if isinstance(m, type)):
                return "failure"
            return "none"
        if any(isinstance(exc, m) for m in c.ignore_exceptions if isinstance(m, type)):
            return "ignored"
        if any(isinstance(exc, m) for m in c.failure_exceptions if isinstance(m, type)):
            return "timeout" if isinstance(exc, TimeoutError) else "failure"
        return "success"

    def report(self, epoch: int, now: float, kind: str, duration: float) -> None:
        verdict = self.classify(kind)
        if verdict in ("ignored", "none"):
            self.release(epoch, ignored=verdict == "ignored")
            return
        self.age(now, admitting=False)
        if epoch != self.epoch:
            self.ignored += 1  # a late report from an earlier state
            return
        c = self.config
        failed = verdict != "success"
        slow = c.slow_call_duration is not None and duration >= c.slow_call_duration
        if failed:
            self.total_failures += 1
            self.timeouts += verdict == "timeout"
        else:
            self.total_successes += 1
        if self.state is CLOSED:
            slice_ = now // self.width
            self.outcomes.append((slice_, failed, slow))
            self.checked = slice_
            if self.trips(self.window(slice_)):
                self.to_open(now)
        elif self.state is HALF_OPEN:
            target = math.ceil(Fraction(str(c.success_threshold)) * c.half_open_max_calls)
            target = max(1, target)
            if failed or slow:  # a slow success counts against the verdict
                self.failures += 1
                if self.failures > c.half_open_max_calls - target:
                    self.to_open(now)
            else:
                self.successes += 1
                if self.successes >= target:
                    self.to_closed(now)

    def release(self, epoch: int, ignored: bool = False) -> None:
        self.ignored += ignored
        if epoch == self.epoch and self.state is HALF_OPEN:
            self.admitted -= 1

    # -------------------------------------------------------------- reads

    def ahead(self) -> Model:
        """A copy to try things on (the config and the trigger are shared, never changed)."""
        twin = copy.copy(self)
        twin.outcomes, twin.events = list(self.outcomes), list(self.events)
        return twin

    def would_admit(self, now: float) -> bool:
        return self.ahead().admit(now)

    def retry_after(self, now: float) -> float | None:
        ahead = self.ahead()
        ahead.age(now, admitting=True)
        c = self.config
        if ahead.state is CLOSED:
            return 0.0
        if ahead.state is OPEN:
            if ahead.forced:
                return math.inf
            if now < ahead.open_until:
                return ahead.open_until - now
            return None if ahead.held() else 0.0
        if ahead.admitted < c.half_open_max_calls:
            return 0.0
        if c.max_half_open_wait is None:
            return None
        reopen = ahead.half_open_since + c.max_half_open_wait
        return reopen + c.open_duration(ahead.consecutive_opens + 1) - now


@st.composite
def configs(draw: st.DrawFn, rates: bool = False) -> CircuitBreakerConfig:
    """Random valid configs; with *rates*, the failure rate decides (no count threshold)."""
    recovery = draw(st.sampled_from([0.5, 5.0, 10.0]))
    slow = draw(st.booleans())
    rate_choices = [0.07, 0.28, 0.3, 1 / 3, 0.5, 0.56, 1.0]
    return CircuitBreakerConfig(
        # 1000: only the rates can trip; 25 outcomes make 0.28 and 0.56 exact boundaries.
        failure_threshold=1000 if rates else draw(st.sampled_from([1, 2, 3, 5, 1000])),
        minimum_requests=draw(st.sampled_from([1, 2, 3, 4, 6, 25])),
        failure_window=draw(st.sampled_from([3.125, 6.25, 25.0])),
        recovery_timeout=recovery,
        half_open_max_calls=draw(st.integers(1, 4)),
        success_threshold=draw(st.sampled_from([0.25, 0.3, 0.5, 0.7, 1 / 3, 1.0])),
        failure_rate_threshold=draw(
            st.sampled_from(rate_choices if rates else [None, *rate_choices])
        ),
        slow_call_duration=1.0 if slow else None,
        slow_call_rate_threshold=(
            draw(st.sampled_from([0.07, 1 / 3, 0.5, 0.55, 1.0])) if slow else None
        ),
        failure_exceptions=draw(
            st.sampled_from([(Exception,), (Failure, TimeoutError), (Failure, TimeoutError, Halt)])
        ),
        ignore_exceptions=draw(st.sampled_from([(), (Skip,)])),
        max_half_open_wait=draw(st.none() | st.sampled_from([0.75, 1.0, 20.0])),
        open_backoff_multiplier=draw(st.sampled_from([1.0, 2.0])),
        max_recovery_timeout=draw(st.none() | st.sampled_from([recovery * 4])),
    )


KINDS = st.sampled_from(["ok", "failure", "timeout", "bad input", "skip", "halt"])
FORMS = st.sampled_from(["call", "decorator", "with"])
DURATIONS = st.sampled_from([0.0, 0.0, 1.5])
STEPS = st.sampled_from([0.03125, 0.125, 0.5, 1.0, 4.875, 5.0, 10.0, 24.75, 31.0])


class BreakerMachine(RuleBasedStateMachine):
    held = Bundle("held")

    @initialize(config=configs())
    def setup(self, config: CircuitBreakerConfig) -> None:
        self.clock = VirtualClock(100.0)
        self.breaker = CircuitBreaker("model", config, clock=self.clock)
        self.switch = Switch()
        self.breaker.add_trigger(self.switch)
        self.model = Model(config, self.switch)
        self.events: list[tuple[str, float]] = []
        self.breaker.subscribe(self._heard)

    def _heard(self, event: object) -> None:
        kind = getattr(event, "kind", "")
        if kind in ("opened", "half_opened", "closed"):
            self.events.append((kind, event.timestamp))  # type: ignore[attr-defined]

    # -------------------------------------------------------------- calls

    @rule(form=FORMS)
    def succeed(self, form: str) -> None:
        self.call("ok", 0.0, form)

    @rule(form=FORMS)
    def fail(self, form: str) -> None:
        self.call("failure", 0.0, form)

    @rule(steps=st.lists(st.sampled_from(["ok", "failure", "tick"]), min_size=2, max_size=30))
    def burst(self, steps: list[str]) -> None:
        """Many calls, a quarter of the window apart at each tick: windows big enough for exact
        rate boundaries, and old outcomes ageing out under newer ones."""
        for step in steps:
            if step == "tick":
                self.clock.advance(self.breaker.config.failure_window / 4)
            else:
                self.call(step, 0.0, "call")

    @rule(kind=KINDS, duration=DURATIONS, form=FORMS)
    def call(self, kind: str, duration: float, form: str) -> None:
        admitted = self.model.admit(self.clock())
        epoch = self.model.epoch
        clock = self.clock

        def work() -> str:
            clock.advance(duration)
            if kind != "ok":
                raise RAISES[kind]
            return "ok"

        try:
            if form == "call":
                self.breaker.call(work)
            elif form == "decorator":
                self.breaker(work)()
            else:
                with self.breaker:
                    work()
        except CircuitOpenError:
            assert not admitted, "the breaker rejected a call the rules admit"
            return
        except (Exception, Halt):
            assert kind != "ok"
        assert admitted, "the breaker admitted a call the rules reject"
        self.model.report(epoch, self.clock(), kind, duration)

    @rule(target=held)
    def start_call(self) -> tuple[CallPermit | None, int, float]:
        """Acquire a permit and keep it: a call in flight across later steps."""
        admitted = self.model.admit(self.clock())
        try:
            permit = self.breaker.acquire()
        except CircuitOpenError:
            assert not admitted, "the breaker rejected a call the rules admit"
            return None, -1, 0.0
        assert admitted, "the breaker admitted a call the rules reject"
        return permit, self.model.epoch, self.clock()

    @rule(call=consumes(held), kind=KINDS | st.just("release"))
    def finish_call(self, call: tuple[CallPermit | None, int, float], kind: str) -> None:
        permit, epoch, started = call
        if permit is None:
            return
        if kind == "release":
            permit.release()
            self.model.release(epoch)
            return
        if kind == "ok":
            permit.success()
        elif kind == "failure":
            permit.failure(RAISES[kind])
        elif kind == "timeout":
            permit.timeout()
        else:
            permit.error(RAISES[kind])
        self.model.report(epoch, self.clock(), kind, self.clock() - started)

    # -------------------------------------------------------------- time

    @rule(seconds=STEPS)
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule()
    def wait_as_told(self) -> None:
        """Wait exactly ``retry_after``: a call is admitted then, and not a moment before.

        Unless an external trigger that has not recovered holds the breaker: then
        ``retry_after`` is when the breaker will next look, and it says so when it does.
        """
        wait = self.breaker.retry_after
        if wait is None or wait == math.inf or wait == 0.0:
            return
        now = self.clock()
        before = math.nextafter(now + wait, -math.inf)
        assert not self.model.would_admit(before), f"the rules admit a call before {wait}"
        self.clock.advance(wait)
        if self.breaker.held_by:
            assert self.breaker.retry_after is None
            assert "'switch' to recover" in str(self.breaker.stats().waiting_for)
        else:
            assert self.breaker.would_admit(), f"retry_after said {wait}, no call is admitted"
        self.call("ok", 0.0, "call")

    # -------------------------------------------------------------- triggers and control

    @rule(
        action=st.sampled_from(
            ["trigger fires", "trigger recovers", "trigger sulks", "force open", "force close"]
        )
    )
    def control(self, action: str) -> None:
        """One rule for all of them: each wipes the window, so they are drawn less often."""
        if action == "trigger fires":
            self.trigger_fires()
        elif action.startswith("trigger"):
            self.switch.recovered = action == "trigger recovers"
        elif action == "force open":
            self.force_open()
        else:
            self.force_close()

    def trigger_fires(self) -> None:
        self.switch.tripping = True
        opened = self.breaker.check_external_triggers(TransportMetrics())
        self.switch.tripping = False
        self.model.age(self.clock(), admitting=False)
        expected = self.model.state is CLOSED
        if expected:
            self.model.to_open(self.clock())
            self.model.tripped_by_switch = True
        assert opened == expected

    def force_open(self) -> None:
        self.breaker.force_open()
        self.model.age(self.clock(), admitting=False)
        if self.model.state is OPEN:
            self.model.forced, self.model.open_until = True, math.inf
        else:
            self.model.to_open(self.clock(), forced=True)

    def force_close(self) -> None:
        self.breaker.force_close()
        self.model.age(self.clock(), admitting=False)
        if self.model.state is CLOSED:
            self.model.outcomes = []
        else:
            self.model.to_closed(self.clock())

    # -------------------------------------------------------------- the comparison

    @invariant()
    def agrees_with_the_rules(self) -> None:
        if not hasattr(self, "breaker"):
            return
        model, now = self.model, self.clock()
        stats = self.breaker.stats()
        assert stats.state is model.state
        assert stats.rejection_count == model.rejections
        assert stats.success_count == model.total_successes
        assert stats.failure_count == model.total_failures
        assert stats.timeout_count == model.timeouts
        assert stats.ignored_count == model.ignored
        assert self.events == model.events, "transitions or their times differ"
        if model.state is CLOSED:
            window = model.window(now // model.width)
            assert stats.window_requests == len(window)
            assert stats.window_failures == sum(o[1] for o in window)
            assert stats.window_slow_calls == sum(o[2] for o in window)
        if model.state is HALF_OPEN:
            in_flight = model.admitted - model.successes - model.failures
            assert stats.half_open_calls_in_flight == in_flight
        expected = model.retry_after(now)
        assert stats.retry_after == expected, f"retry_after {stats.retry_after} != {expected}"
        assert (stats.waiting_for is not None) == (expected is None or expected == math.inf)
        admits = model.would_admit(now)
        assert self.breaker.would_admit() == admits
        assert admits == (expected == 0.0)


BreakerMachine.TestCase.settings = settings(
    max_examples=EXAMPLES or 120,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestBreakerAgainstModel = BreakerMachine.TestCase


@settings(
    max_examples=EXAMPLES or 150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    config=configs(rates=True),
    schedule=st.lists(
        st.tuples(st.sampled_from([0, 0, 0, 1, 10, 25, 50, 99, 100]), st.booleans()), max_size=60
    ),
)
def test_the_window_against_the_model(
    config: CircuitBreakerConfig, schedule: list[tuple[int, bool]]
) -> None:
    """The closed state alone, where the window and its rates decide: calls a whole number of
    window slices apart, so outcomes age out of the window between (and under) newer ones."""
    machine = BreakerMachine()
    machine.setup(config)
    width = config.failure_window / SLICES
    for slices, failed in schedule:
        machine.advance(slices * width)
        machine.call("failure" if failed else "ok", 0.0, "call")
        machine.agrees_with_the_rules()


class LockedPathMachine(BreakerMachine):
    """The same comparison on the locked path a free-threaded (no-GIL) build uses."""

    @initialize(config=configs())
    def setup(self, config: CircuitBreakerConfig) -> None:
        self._saved = breaker_module._LOCK_FREE
        breaker_module._LOCK_FREE = False
        super().setup(config)

    def teardown(self) -> None:
        if hasattr(self, "_saved"):
            breaker_module._LOCK_FREE = self._saved


LockedPathMachine.TestCase.settings = settings(
    max_examples=EXAMPLES or 40,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestLockedPathAgainstModel = LockedPathMachine.TestCase


# (percent, outcomes) where percent / 100 * outcomes lands above the exact count in floats.
FLOAT_TRAPS = [
    (p, n)
    for p in range(1, 101)
    for n in range(1, 401)
    if p * n % 100 == 0 and p / 100 * n > p * n // 100
]


@settings(max_examples=EXAMPLES or 200, deadline=None)
@given(
    case=st.sampled_from(FLOAT_TRAPS) | st.tuples(st.integers(1, 100), st.integers(1, 400)),
    data=st.data(),
)
def test_rates_compare_exactly_like_the_model(case: tuple[int, int], data: st.DataObject) -> None:
    """failures / outcomes >= threshold, exactly: 7 of 25 meets 0.28 (0.28 * 25 is
    7.000000000000001 in floats), for failure and slow-call rates alike."""
    percent, outcomes = case
    boundary = Fraction(percent * outcomes, 100)
    near = {math.floor(boundary) + d for d in (-1, 0, 1)} | {math.ceil(boundary)}
    counts = st.sampled_from(sorted(n for n in near if 0 <= n <= outcomes))
    failures = data.draw(counts | st.integers(0, outcomes))
    slow = data.draw(counts | st.integers(0, outcomes))
    threshold = percent / 100
    config = CircuitBreakerConfig(
        failure_threshold=1000,
        minimum_requests=1,
        failure_rate_threshold=threshold,
        slow_call_duration=1.0,
        slow_call_rate_threshold=threshold,
    )
    window = [(0.0, i < failures, i < slow) for i in range(outcomes)]
    reason = TripRule(config).reason(outcomes, failures, slow)
    assert (reason is not None) == Model(config, Switch()).trips(window)
