"""Hypothesis strategies for breaker configs and fault schedules, and a stateful chaos machine.

Subclass :class:`BreakerChaosMachine`, implement :meth:`~BreakerChaosMachine.build` to wire your
service to the simulated dependency, and run ``MyMachine.TestCase``. Hypothesis explores
schedules of faults, heals, clock advances and calls; when an invariant breaks, it shrinks the
schedule to a minimal one and prints it as code (``state.inject(fault='down')`` ...).

Built-in invariants, checked after every call:

* no call reaches the dependency while the guarding breaker is open (and not yet due a probe);
* a rejected call takes no time;

and once the schedule ends: after healing every fault, the breaker closes again within
``recovery_budget()`` seconds of virtual time.

This module imports Hypothesis; the plugin only imports it when you do.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule

from pytest_synapse.run import current_run
from pytest_synapse.simulated import SIMULATED_FAULTS, SimulatedDependency
from synapse_core import (
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitState,
    Timeline,
    VirtualClock,
    watch_breakers,
)
from synapse_core.clock import to_seconds

_RECOVERY_TIMEOUTS = (0.5, 1.0, 5.0, 10.0, 30.0)


def breaker_configs(**fixed: Any) -> st.SearchStrategy[CircuitBreakerConfig]:
    """Valid ``CircuitBreakerConfig`` values; keyword arguments pin fields.

    A pinned value is a value, or a Hypothesis strategy the field is drawn from
    (``breaker_configs(failure_threshold=st.integers(1, 3))``). Fields that must agree with a
    pinned one are drawn to agree: ``recovery_timeout`` stays within a pinned
    ``max_recovery_timeout``, and pinning one of ``slow_call_duration`` /
    ``slow_call_rate_threshold`` draws the other.
    """
    settable = {f.name for f in dataclasses.fields(CircuitBreakerConfig) if f.init}
    for name in fixed:
        if name not in settable:
            if name in CircuitBreakerConfig.__dataclass_fields__:
                raise TypeError(
                    f"breaker_configs: {name!r} is computed by CircuitBreakerConfig and cannot "
                    "be pinned"
                )
            raise TypeError(f"breaker_configs: unknown CircuitBreakerConfig field {name!r}")
    cap = fixed.get("max_recovery_timeout")
    if cap is not None and not isinstance(cap, st.SearchStrategy):
        _recovery_cap(cap)  # a bad value is refused now, not at the first example
    return _configs(fixed)


def _recovery_cap(cap: Any) -> float:
    seconds = to_seconds(cap, "max_recovery_timeout")
    if not seconds > 0:  # also true for NaN
        raise ValueError(f"max_recovery_timeout must be > 0 seconds, got {cap!r}")
    return seconds


@st.composite
def _configs(draw: st.DrawFn, fixed: dict[str, Any]) -> CircuitBreakerConfig:
    pinned = {
        name: draw(value) if isinstance(value, st.SearchStrategy) else value
        for name, value in fixed.items()
    }
    fields: dict[str, st.SearchStrategy[Any]] = {
        "failure_threshold": st.integers(1, 10),
        "minimum_requests": st.integers(1, 10),
        "failure_window": st.sampled_from([1.0, 5.0, 10.0, 30.0, 60.0]),
        "recovery_timeout": st.sampled_from(_RECOVERY_TIMEOUTS),
        "half_open_max_calls": st.integers(1, 5),
        "success_threshold": st.sampled_from([0.1, 0.5, 0.7, 1.0]),
        "failure_rate_threshold": st.none() | st.sampled_from([0.25, 0.5, 0.9]),
        "max_half_open_wait": st.none() | st.sampled_from([5.0, 30.0]),
        "open_backoff_multiplier": st.sampled_from([1.0, 1.5, 2.0]),
    }
    cap = pinned.get("max_recovery_timeout")
    if cap is not None and "recovery_timeout" not in pinned:
        seconds = _recovery_cap(cap)
        fields["recovery_timeout"] = st.sampled_from(
            [t for t in _RECOVERY_TIMEOUTS if t <= seconds] or [seconds]
        )
    # The config refuses one of the pair without the other.
    slow = ("slow_call_duration", st.sampled_from([0.5, 1.0, 2.0, 5.0]))
    slow_rate = ("slow_call_rate_threshold", st.sampled_from([0.25, 0.5, 1.0]))
    for (name, _), (other, strategy) in ((slow, slow_rate), (slow_rate, slow)):
        if pinned.get(name) is not None and other not in pinned:
            fields[other] = strategy
    drawn = {name: draw(strategy) for name, strategy in fields.items() if name not in pinned}
    return CircuitBreakerConfig(**drawn, **pinned)


@dataclass(frozen=True, order=True)
class FaultStep:
    """At ``at`` seconds, ``action`` (``"inject"`` or ``"heal"``) ``fault`` on ``proxy``."""

    at: float
    action: str
    fault: str
    proxy: str
    params: dict[str, Any] = field(default_factory=dict, compare=False)


@st.composite
def _schedule(
    draw: st.DrawFn,
    proxies: Sequence[str],
    faults: Sequence[str],
    max_faults: int,
    horizon: float,
) -> list[FaultStep]:
    steps: list[FaultStep] = []
    count = draw(st.integers(0, max_faults))
    busy: dict[str, list[tuple[float, float]]] = {}
    # At least one start time (0), so a horizon under 0.1 s still draws faults.
    starts = max(1, int(horizon * 10))
    for _ in range(count):
        proxy = draw(st.sampled_from(list(proxies)))
        fault = draw(st.sampled_from(list(faults)))
        start = draw(st.integers(0, starts - 1)) / 10
        length = draw(st.integers(1, max(1, int((horizon - start) * 10)))) / 10
        end = min(horizon, start + length)
        # One fault at a time per proxy: overlapping faults on one proxy conflict.
        if any(a < end and start < b for a, b in busy.get(proxy, [])):
            continue
        busy.setdefault(proxy, []).append((start, end))
        steps.append(FaultStep(start, "inject", fault, proxy))
        steps.append(FaultStep(end, "heal", fault, proxy))
    return sorted(steps)


def _known_faults() -> tuple[str, ...]:
    # Schedules may drive real proxies too; chaos (and aiohttp with it) is imported only here.
    from chaos.control.faultspec import FAULT_KINDS

    return tuple(dict.fromkeys((*SIMULATED_FAULTS, *FAULT_KINDS)))


def fault_schedules(
    proxies: Sequence[str] = ("dependency",),
    faults: Sequence[str] = SIMULATED_FAULTS,
    *,
    max_faults: int = 4,
    horizon: float = 60.0,
) -> st.SearchStrategy[list[FaultStep]]:
    """Time-ordered inject/heal steps, at most one fault at a time per proxy.

    Start times are multiples of 0.1 s before ``horizon``; each injected fault is healed by
    ``horizon`` at the latest. *faults* are names of :class:`SimulatedDependency` faults or of
    :class:`chaos.Proxy` faults. Shrinks towards fewer, earlier, shorter faults.
    """
    if isinstance(proxies, str) or not proxies:
        raise ValueError(f"fault_schedules needs a sequence of proxy names, got {proxies!r}")
    if isinstance(faults, str) or not faults:
        raise ValueError(
            f"fault_schedules needs a non-empty sequence of fault names, got {faults!r}; "
            f"the faults are: {', '.join(_known_faults())}"
        )
    if any(f not in SIMULATED_FAULTS for f in faults):
        known = _known_faults()
        unknown = [repr(f) for f in faults if f not in known]
        if unknown:
            raise ValueError(
                f"fault_schedules: unknown fault(s) {', '.join(unknown)}; "
                f"the faults are: {', '.join(known)}"
            )
    if isinstance(max_faults, bool) or not isinstance(max_faults, int) or max_faults < 0:
        raise ValueError(f"max_faults must be an int >= 0, got {max_faults!r}")
    if isinstance(horizon, bool) or not isinstance(horizon, int | float):
        raise TypeError(f"horizon must be a number of seconds, got {horizon!r}")
    if not 0 < horizon < math.inf:  # also false for NaN
        raise ValueError(f"horizon must be a finite number of seconds > 0, got {horizon!r}")
    return _schedule(list(proxies), list(faults), max_faults, float(horizon))


class BreakerChaosMachine(RuleBasedStateMachine):
    """A Hypothesis state machine whose rules are faults, heals, clock advances and calls.

    Implement :meth:`build`: create your service (its breakers must use *clock*) so that it
    calls *dependency* and return the zero-argument callable that makes one service request.
    The breaker guarding the dependency is found automatically when the service creates
    exactly one; otherwise override :meth:`guarding_breaker`.
    """

    faults: Sequence[str] = SIMULATED_FAULTS

    def __init__(self) -> None:
        super().__init__()
        self.clock = VirtualClock()
        self.timeline = Timeline(self.clock)
        created: list[CircuitBreaker] = []
        with watch_breakers(created.append):
            self.dependency = SimulatedDependency(self.clock, timeline=self.timeline)
            self.service = self._checked_service(self.build(self.dependency, self.clock))
        self.created_breakers = created
        run = current_run()
        for breaker in created:
            # Each example's breakers live on the machine's own virtual clock: they belong to
            # the machine's timeline, not to the surrounding test's report.
            if run is not None:
                run.untrack(breaker)
        self.timeline.watch_all(created)
        self.breaker = self.guarding_breaker()

    def build(self, dependency: SimulatedDependency, clock: VirtualClock) -> Callable[[], Any]:
        """Wire the service to *dependency*; return the callable making one request."""
        raise NotImplementedError("subclass BreakerChaosMachine and implement build()")

    def _checked_service(self, service: object) -> Callable[[], Any]:
        # The rules swallow the service's exceptions (a failing dependency makes it fail), so a
        # service that cannot be called at all would fail every call silently and the machine
        # would pass having checked nothing.
        where = f"{type(self).__name__}.build()"
        if not callable(service):
            hint = " (missing `return request`?)" if service is None else ""
            raise TypeError(
                f"{where} must return the zero-argument callable that makes one request, "
                f"got {type(service).__name__} {service!r}{hint}"
            )
        if inspect.iscoroutinefunction(service):
            raise TypeError(
                f"{where} returned the coroutine function {service!r}; BreakerChaosMachine "
                "calls the service synchronously: return a plain function"
            )
        try:
            signature = inspect.signature(service)
        except (TypeError, ValueError):
            return service  # no signature to check (some builtins)
        try:
            signature.bind()
        except TypeError as exc:
            raise TypeError(
                f"{where} must return a callable taking no arguments; calling {service!r} "
                f"with none fails: {exc}"
            ) from None
        return service

    def _request(self) -> None:
        """Make one service request; the service's own errors are expected and ignored."""
        try:
            result = self.service()
        except Exception:
            return
        if inspect.isawaitable(result):
            if inspect.iscoroutine(result):
                result.close()  # else it warns about being left unawaited, hiding the real error
            raise TypeError(
                f"the request callable from {type(self).__name__}.build() returned an awaitable "
                f"({type(result).__name__}); BreakerChaosMachine calls the service "
                "synchronously, so nothing was called"
            )

    def guarding_breaker(self) -> CircuitBreaker:
        """The breaker in front of the dependency."""
        if len(self.created_breakers) != 1:
            names = [b.name for b in self.created_breakers]
            raise TypeError(
                f"build() created {len(names)} breakers ({names}); override guarding_breaker() "
                "to say which one guards the dependency"
            )
        return self.created_breakers[0]

    def recovery_budget(self) -> float:
        """Virtual seconds the breaker may take to close once every fault is healed."""
        config = self.breaker.config
        longest_open = min(config.open_duration(64), 24 * 3600.0)
        return longest_open * 4 + (config.max_half_open_wait or 0.0) + 1.0

    @rule(fault=st.sampled_from(SIMULATED_FAULTS))
    def inject(self, fault: str) -> None:
        if fault in self.faults:
            self.dependency.inject(fault)

    @precondition(lambda self: bool(self.dependency.active_faults))
    @rule()
    def heal(self) -> None:
        self.dependency.heal()

    @rule(seconds=st.sampled_from([0.1, 0.5, 1.0, 5.0, 10.0, 30.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule()
    def call(self) -> None:
        must_reject = not self.breaker.would_admit()
        calls_before = self.dependency.calls
        started = self.clock()
        self._request()
        if must_reject:
            assert self.dependency.calls == calls_before, (
                f"a call reached the dependency while breaker {self.breaker.name!r} was open "
                f"(t={self.clock():.1f}s)\n{self.timeline.render()}"
            )
            assert self.clock() == started, (
                f"a call rejected by {self.breaker.name!r} took {self.clock() - started:.3f}s "
                "of (virtual) time instead of returning at once"
            )

    def teardown(self) -> None:
        """Heal everything and check the breaker closes within the recovery budget."""
        self.dependency.heal()
        deadline = self.clock() + self.recovery_budget()
        for _ in range(1000):  # bounded even when a bug keeps the breaker open
            if self.breaker.state is CircuitState.CLOSED or self.clock() > deadline:
                break
            wait = self.breaker.retry_after  # None: probes in flight (none here), or a trigger
            self.clock.advance(min(max(wait or 0.0, 0.1), 3600.0))
            for _ in range(self.breaker.config.half_open_max_calls):
                self._request()
        assert self.breaker.state is CircuitState.CLOSED, (
            f"breaker {self.breaker.name!r} did not close within {self.recovery_budget():g}s "
            f"after every fault was healed (state: {self.breaker.state.value})\n"
            f"{self.timeline.render()}"
        )
        self.timeline.close()
