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

import contextlib
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
    CircuitOpenError,
    CircuitState,
    Timeline,
    VirtualClock,
    watch_breakers,
)


def breaker_configs(**fixed: Any) -> st.SearchStrategy[CircuitBreakerConfig]:
    """Valid ``CircuitBreakerConfig`` values; keyword arguments pin fields."""
    fields: dict[str, st.SearchStrategy[Any]] = {
        "failure_threshold": st.integers(1, 10),
        "minimum_requests": st.integers(1, 10),
        "failure_window": st.sampled_from([1.0, 5.0, 10.0, 30.0, 60.0]),
        "recovery_timeout": st.sampled_from([0.5, 1.0, 5.0, 10.0, 30.0]),
        "half_open_max_calls": st.integers(1, 5),
        "success_threshold": st.sampled_from([0.1, 0.5, 0.7, 1.0]),
        "failure_rate_threshold": st.none() | st.sampled_from([0.25, 0.5, 0.9]),
        "max_half_open_wait": st.none() | st.sampled_from([5.0, 30.0]),
        "open_backoff_multiplier": st.sampled_from([1.0, 1.5, 2.0]),
    }
    for name, value in fixed.items():
        if name not in fields and name not in CircuitBreakerConfig.__dataclass_fields__:
            raise TypeError(f"breaker_configs: unknown CircuitBreakerConfig field {name!r}")
        fields[name] = st.just(value)
    return st.builds(CircuitBreakerConfig, **fields)


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
    for _ in range(count):
        proxy = draw(st.sampled_from(list(proxies)))
        fault = draw(st.sampled_from(list(faults)))
        start = draw(st.integers(0, int(horizon * 10) - 1)) / 10
        length = draw(st.integers(1, max(1, int((horizon - start) * 10)))) / 10
        end = min(horizon, start + length)
        # One fault at a time per proxy: overlapping faults on one proxy conflict.
        if any(a < end and start < b for a, b in busy.get(proxy, [])):
            continue
        busy.setdefault(proxy, []).append((start, end))
        steps.append(FaultStep(start, "inject", fault, proxy))
        steps.append(FaultStep(end, "heal", fault, proxy))
    return sorted(steps)


def fault_schedules(
    proxies: Sequence[str] = ("dependency",),
    faults: Sequence[str] = SIMULATED_FAULTS,
    *,
    max_faults: int = 4,
    horizon: float = 60.0,
) -> st.SearchStrategy[list[FaultStep]]:
    """Time-ordered inject/heal steps, at most one fault at a time per proxy.

    Times are multiples of 0.1 s within ``horizon``; each injected fault is healed by its end.
    Shrinks towards fewer, earlier, shorter faults.
    """
    if not proxies:
        raise ValueError("fault_schedules needs at least one proxy name")
    if horizon <= 0:
        raise ValueError(f"horizon must be > 0 seconds, got {horizon!r}")
    return _schedule(list(proxies), list(faults), max_faults, horizon)


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
            self.service = self.build(self.dependency, self.clock)
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
        try:
            self.service()
        except CircuitOpenError:
            pass
        except Exception:
            pass
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
            wait = self.breaker.retry_after
            self.clock.advance(min(max(wait, 0.1), 3600.0))
            for _ in range(self.breaker.config.half_open_max_calls):
                with contextlib.suppress(Exception):
                    self.service()
        assert self.breaker.state is CircuitState.CLOSED, (
            f"breaker {self.breaker.name!r} did not close within {self.recovery_budget():g}s "
            f"after every fault was healed (state: {self.breaker.state.value})\n"
            f"{self.timeline.render()}"
        )
        self.timeline.close()
