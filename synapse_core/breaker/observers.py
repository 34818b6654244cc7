"""Process-wide observers of breaker state changes: structured logs, dashboards, tracing.

Every breaker reports its transitions (``opened``, ``half_opened``, ``closed``) here, after its
lock is released, in the order they happened. Nothing here runs per call: a breaker only asks
:func:`observed` when it changes state, so rejected and admitted calls cost the same whether
anyone observes or not.

Transitions are logged on the ``synapse.breaker`` logger: ``opened`` at WARNING, ``half_opened``
and ``closed`` at INFO, with a stable message and these ``extra`` fields on the record:
``synapse_event`` (``"breaker.opened"``...), ``breaker``, ``from_state``, ``to_state``,
``reason`` and, for ``opened``, ``failure_count`` and ``retry_after`` (seconds until it probes,
``None`` when forced open). The ``synapse`` logger has a ``NullHandler``, so nothing is printed
until the application configures logging.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from synapse_core.breaker.events import (
    CircuitClosed,
    CircuitEvent,
    CircuitHalfOpened,
    CircuitOpened,
    Unsubscribe,
    Watchers,
)
from synapse_core.breaker.state import CircuitState

if TYPE_CHECKING:
    from synapse_core.breaker.breaker import CircuitBreaker

TransitionWatcher = Callable[["CircuitBreaker", CircuitEvent], object]
"""``watcher(breaker, event)``: *event* is a ``CircuitOpened``, ``CircuitHalfOpened`` or
``CircuitClosed``."""

TRANSITION_EVENTS = (CircuitOpened, CircuitHalfOpened, CircuitClosed)

logging.getLogger("synapse").addHandler(logging.NullHandler())
log = logging.getLogger("synapse.breaker")
_errors = logging.getLogger("synapse_core.breaker")

_watchers: Watchers[TransitionWatcher] = Watchers()


def observed() -> bool:
    """Whether a transition must be reported (someone watches, or the log would keep it)."""
    return bool(_watchers.current) or log.isEnabledFor(logging.WARNING)


def watch_transitions(watcher: TransitionWatcher) -> Unsubscribe:
    """Call ``watcher(breaker, event)`` for every state change of every breaker in the process.

    The watcher runs in the thread that caused the change, after the breaker's lock is released
    (it may read the breaker), and must be quick: a slow watcher slows that caller. One that
    raises is logged and the others still run. Returns a handle that stops watching.
    """
    return _watchers.add(watcher)


def notify(breaker: CircuitBreaker, event: CircuitEvent) -> None:
    """Log a transition and hand it to the watchers (called by the breaker, outside its lock)."""
    if not isinstance(event, TRANSITION_EVENTS):
        return
    _log_transition(event)
    for watcher in _watchers.current:
        try:
            watcher(breaker, event)
        except Exception:
            _errors.exception("transition watcher %r failed on %r", watcher, event)


def transition_of(event: CircuitEvent) -> tuple[CircuitState, CircuitState, str]:
    """``(from_state, to_state, reason)`` of a transition event."""
    if isinstance(event, CircuitOpened):
        return event.previous_state, CircuitState.OPEN, event.reason
    if isinstance(event, CircuitClosed):
        return event.previous_state, CircuitState.CLOSED, event.reason
    return CircuitState.OPEN, CircuitState.HALF_OPEN, "recovery timeout elapsed"


def transition_fields(event: CircuitEvent) -> dict[str, Any]:
    """``breaker``, ``from_state``, ``to_state``, ``reason`` (and ``failure_count`` for an
    opening, ``replica`` for a breaker shared through a store) of a transition event, as the
    logs, the health endpoints and tracing report it."""
    source, target, reason = transition_of(event)
    fields: dict[str, Any] = {
        "breaker": event.breaker_name,
        "from_state": source.value,
        "to_state": target.value,
        "reason": reason,
    }
    if isinstance(event, CircuitOpened):
        fields["failure_count"] = event.failure_count
    replica = getattr(event, "replica", None)
    if replica is not None:
        fields["replica"] = replica
    return fields


def _log_transition(event: CircuitEvent) -> None:
    level = logging.WARNING if isinstance(event, CircuitOpened) else logging.INFO
    if not log.isEnabledFor(level):
        return
    fields = transition_fields(event)
    extra = {"synapse_event": f"breaker.{event.kind}", **fields}
    if isinstance(event, CircuitOpened):
        wait = event.retry_at - event.timestamp
        extra["retry_after"] = None if math.isinf(wait) else round(wait, 6)
    log.log(
        level,
        "circuit breaker %r %s -> %s: %s",
        fields["breaker"],
        fields["from_state"],
        fields["to_state"],
        fields["reason"],
        extra=extra,
    )
