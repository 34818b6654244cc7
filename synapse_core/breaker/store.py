"""The seam between a breaker and a store that shares it with other processes.

``CircuitBreaker(name, config, store=store)`` calls :meth:`BreakerStore.attach` once and then
talks to the returned :class:`StoreLink` at a few points, none of them on the closed-state hot
paths (admission and lock-free successes). ``synapse_core.breaker.shared`` implements both on
Redis.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from synapse_core.breaker.breaker import CircuitBreaker
    from synapse_core.breaker.rule import TripRule
    from synapse_core.breaker.stats import FleetStats

ProbeReport = Literal["success", "slow", "failure", "timeout", "release"]
"""How a half-open probe ended (``slow``: a success that took ``slow_call_duration`` or more)."""

Command = Literal["force_open", "force_close", "reset", "trip"]
"""A state change made on one replica that the others must follow."""


class StoreLink(Protocol):
    """One breaker's connection to its store, as the breaker sees it."""

    replica: str
    """Names this process among the replicas (carried by the events it causes)."""

    rule: TripRule
    """The trip rule the breaker judges its own window with (the store's decides while shared)."""

    def recorded(self, failed: bool, slow: bool) -> None:
        """A closed-state outcome was recorded under the breaker's lock (lock-free successes
        are not reported one by one: the store reads their count). Must not block."""

    def probe_done(self, report: ProbeReport) -> bool:
        """A half-open probe of the current episode ended (lock held; must not block).

        Returns ``False`` when the breaker's own rules must judge it (the store is away).
        """

    def admit(self) -> int | None:
        """Admission of a breaker that is not closed, outside its lock.

        Returns the epoch the call is admitted in, raises ``CircuitOpenError``, or returns
        ``None`` when the breaker's own rules must decide (the store is away, or closed).
        """

    def command(self, kind: Command, reason: str) -> None:
        """A control operation (or a trigger) changed the breaker's state; outside the lock."""

    def stats(self, now: float) -> FleetStats:
        """The fleet's figures for ``stats()`` (lock held; must not block)."""

    def start(self) -> None:
        """The breaker is built and announced: join the fleet (may wait on the store briefly)."""


class BreakerStore(Protocol):
    """Something breakers can be shared through (``SharedBreakerStore``)."""

    def attach(self, breaker: CircuitBreaker) -> StoreLink:
        """Share *breaker* (called once, from its constructor)."""
