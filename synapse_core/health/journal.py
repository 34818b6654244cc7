"""The recent state changes of a manager's breakers, numbered, for ``/breakers`` and ``/events``."""

from __future__ import annotations

import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from synapse_core.breaker import (
    CircuitBreaker,
    CircuitBreakerManager,
    CircuitEvent,
    watch_transitions,
)
from synapse_core.breaker.observers import transition_fields


@dataclass(frozen=True, slots=True)
class Transition:
    """One state change of one breaker, as the endpoints report it.

    ``seq`` numbers the breaker's transitions seen by this journal (1, 2, ...); ``at`` is the
    event's time on the breaker's clock; ``observed`` is ``time.monotonic()`` and ``time`` the
    wall clock (Unix seconds) when the journal heard of it. ``replica`` names the replica that
    caused it, for a breaker shared through a store (``None`` otherwise, and left out of the
    JSON).
    """

    breaker: str
    seq: int
    from_state: str
    to_state: str
    reason: str
    failure_count: int | None
    at: float
    observed: float
    time: float
    replica: str | None = None

    def to_json(self, now: float | None = None) -> dict[str, Any]:
        """The JSON object; with *now* (``time.monotonic()``), its ``age_seconds`` then."""
        data: dict[str, Any] = {
            "seq": self.seq,
            "from_state": self.from_state,
            "to_state": self.to_state,
            "reason": self.reason,
            "failure_count": self.failure_count,
            "time": round(self.time, 6),
        }
        if now is not None:
            data["age_seconds"] = round(max(0.0, now - self.observed), 6)
        if self.replica is not None:
            data["replica"] = self.replica
        return data


class _History:
    __slots__ = ("recent", "seq")

    def __init__(self, keep: int) -> None:
        self.seq = 0
        self.recent: deque[Transition] = deque(maxlen=keep)


class TransitionJournal:
    """Keeps the last *keep* transitions of each breaker of *manager*, from creation on.

    It listens through :func:`synapse_core.watch_transitions` (nothing per call) and tells
    *on_transition* about each new one. :meth:`close` stops listening.
    """

    def __init__(
        self,
        manager: CircuitBreakerManager,
        *,
        keep: int = 20,
        on_transition: Callable[[Transition], object] | None = None,
    ) -> None:
        self._manager = manager
        self._keep = keep
        self._lock = threading.Lock()
        self._histories: weakref.WeakKeyDictionary[CircuitBreaker, _History] = (
            weakref.WeakKeyDictionary()
        )
        self._on_transition = on_transition
        self._stop = watch_transitions(self._heard)

    def _heard(self, breaker: CircuitBreaker, event: CircuitEvent) -> None:
        name = event.breaker_name
        if self._manager.get_breaker(name) is not breaker:
            return  # another manager's breaker, or not (or no longer) registered under its name
        fields = transition_fields(event)
        with self._lock:
            history = self._histories.get(breaker)
            if history is None:
                history = self._histories[breaker] = _History(self._keep)
            history.seq += 1
            entry = Transition(
                name,
                history.seq,
                fields["from_state"],
                fields["to_state"],
                fields["reason"],
                fields.get("failure_count"),
                event.timestamp,
                time.monotonic(),
                time.time(),
                fields.get("replica"),
            )
            history.recent.append(entry)
        if self._on_transition is not None:
            self._on_transition(entry)

    def seq(self, breaker: CircuitBreaker) -> int:
        """How many transitions of *breaker* this journal has seen."""
        with self._lock:
            history = self._histories.get(breaker)
            return 0 if history is None else history.seq

    def recent(self, breaker: CircuitBreaker) -> list[Transition]:
        """The last transitions of *breaker*, oldest first."""
        with self._lock:
            history = self._histories.get(breaker)
            return [] if history is None else list(history.recent)

    def close(self) -> None:
        """Stop listening."""
        self._stop()
