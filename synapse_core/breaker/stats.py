"""A point-in-time snapshot of a breaker's counters."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from synapse_core.breaker.state import CircuitState


@dataclass(frozen=True, slots=True)
class FleetStats:
    """A shared breaker's fleet, as this replica last heard of it (``CircuitStats.fleet``).

    ``connected`` is whether the fleet decides now; while it is ``False`` (the store is
    unreachable) this replica judges its own outcomes with the same config (see
    ``synapse_core.breaker.shared``). ``state`` is the fleet's state as last seen (``None``
    before the first answer), ``caused_by`` the replica behind its last transition and
    ``replicas`` how many replicas were alive then. The ``window_*`` figures are the fleet's
    sliding window and the ``*_count`` ones the fleet's totals since its state was created
    (every replica's outcomes and rejections, as flushed). ``last_heard`` is how many seconds
    ago the store last answered or published (``None``: never), ``unsent_failures`` the
    failures and slow calls recorded here and not yet flushed, ``fallbacks`` how many times
    this replica fell back to its own rules, ``config_matches`` whether the fleet's state was
    created with the same config as this replica's.
    """

    replica: str
    connected: bool
    state: CircuitState | None
    caused_by: str | None
    replicas: int
    window_requests: int
    window_failures: int
    window_failure_rate: float
    window_slow_calls: int
    success_count: int
    failure_count: int
    rejection_count: int
    last_heard: float | None
    unsent_failures: int
    fallbacks: int
    config_matches: bool


@dataclass(frozen=True, slots=True)
class CircuitStats:
    """What a breaker has seen, read without side effects by ``breaker.stats()``.

    Lifetime counters (since creation or the last ``reset()``): ``failure_count`` (failures,
    timeouts included), ``success_count``, ``timeout_count``, ``ignored_count`` (outcomes that
    counted as neither: exceptions matching ``ignore_exceptions``, and late reports of calls
    admitted before the breaker last changed state), ``total_requests`` (calls that ran and were
    recorded: successes + failures), ``rejection_count``.

    Window figures describe the sliding ``failure_window`` ending now: ``window_requests``,
    ``window_failures``, ``window_failure_rate`` (0.0 when empty) and ``window_slow_calls``.

    ``max_half_open_in_flight`` is the most probes ever admitted at once in a half-open episode.

    ``retry_after`` is ``breaker.retry_after`` at the time of the snapshot: seconds until a call
    would be admitted, ``math.inf`` while forced open, ``None`` while only an event can admit
    one; ``waiting_for`` then says which (``None`` while time alone will do).

    Times are on the breaker's clock (monotonic seconds); ``last_failure_time`` is ``None``
    until a failure is recorded.

    For a breaker shared through a store, every figure above is this replica's own, except the
    state, ``consecutive_opens``, ``retry_after`` and the half-open figures, which follow the
    fleet; ``fleet`` holds the fleet's (``None`` for a local breaker).
    """

    name: str
    state: CircuitState
    failure_count: int
    success_count: int
    total_requests: int
    last_failure_time: float | None
    last_state_change: float
    time_in_current_state: float
    rejection_count: int
    timeout_count: int
    ignored_count: int
    window_requests: int
    window_failures: int
    window_failure_rate: float
    window_slow_calls: int
    half_open_calls_in_flight: int
    max_half_open_in_flight: int
    consecutive_opens: int
    retry_after: float | None
    forced: bool
    waiting_for: str | None = None
    fleet: FleetStats | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the state as its string value)."""
        data = asdict(self)
        data["state"] = self.state.value
        if self.fleet is None:
            del data["fleet"]  # a local breaker's figures are unchanged
        elif self.fleet.state is not None:
            data["fleet"]["state"] = self.fleet.state.value
        return data
