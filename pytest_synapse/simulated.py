"""A dependency whose failures follow injected faults on a virtual clock (for property tests).

Real faults need real time; Hypothesis needs hundreds of runs per second. A
:class:`SimulatedDependency` reproduces what each fault does to a caller, on a
``VirtualClock``, so fault schedules can be explored and shrunk in milliseconds:

* ``latency``: the call takes ``latency_ms`` longer (the clock advances) and then succeeds;
* ``blackhole``: nothing comes back; the call takes ``timeout`` and raises ``TimeoutError``;
* ``reset``: ``ConnectionResetError`` at once;
* ``down``: ``ConnectionRefusedError`` at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from synapse_core import Timeline, VirtualClock

SIMULATED_FAULTS = ("latency", "blackhole", "reset", "down")


class SimulatedDependency:
    """A callable dependency whose behaviour follows the active faults."""

    def __init__(
        self,
        clock: VirtualClock,
        *,
        name: str = "dependency",
        latency_ms: float = 800.0,
        timeout: float = 1.0,
        timeline: Timeline | None = None,
        respond: Callable[[], Any] = lambda: "ok",
    ) -> None:
        self.clock = clock
        self.name = name
        self.latency_ms = latency_ms
        self.timeout = timeout
        self.timeline = timeline or Timeline(clock)
        self._respond = respond
        self._active: dict[str, int] = {}
        self.calls = 0

    @property
    def active_faults(self) -> tuple[str, ...]:
        """The faults in effect, in the order they were injected."""
        return tuple(self._active)

    def inject(self, fault: str) -> None:
        """Start *fault* (no-op if already active)."""
        if fault not in SIMULATED_FAULTS:
            raise ValueError(f"unknown simulated fault {fault!r}; choose from {SIMULATED_FAULTS}")
        if fault not in self._active:
            self._active[fault] = self.timeline.fault_started(fault, self.name)

    def heal(self, fault: str | None = None) -> None:
        """End *fault*, or every fault."""
        for name in [fault] if fault is not None else list(self._active):
            span = self._active.pop(name, None)
            if span is not None:
                self.timeline.fault_ended(span)

    def __call__(self) -> Any:
        self.calls += 1
        self.timeline.upstream_call(self.name)
        if "down" in self._active:
            raise ConnectionRefusedError(f"{self.name}: connection refused (fault: down)")
        if "reset" in self._active:
            raise ConnectionResetError(f"{self.name}: connection reset by peer (fault: reset)")
        if "blackhole" in self._active:
            self.clock.advance(self.timeout)
            raise TimeoutError(f"{self.name}: no answer within {self.timeout}s (fault: blackhole)")
        if "latency" in self._active:
            self.clock.advance(self.latency_ms / 1000.0)
        return self._respond()
