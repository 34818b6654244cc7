"""purgatory circuit breakers, watched through their factory's listeners.

purgatory keeps its breakers in a factory (``SyncCircuitBreakerFactory`` or
``AsyncCircuitBreakerFactory``), one per circuit name; a listener added to the factory hears
every circuit's failures and state changes when each guarded block ends. Watching the factory
records all of its circuits, each under its circuit name (``name=`` keeps one). A block it
rejects raises ``OpenedState`` from its entry, before any listener is told, so rejections are
seen only by the assertion that makes the calls; nor does purgatory tell when a block starts,
so half-open probes cannot be counted.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from synapse_core.breaker.events import Unsubscribe
from synapse_core.foreign.base import (
    EVENT_OF_STATE,
    FAILURE_COUNT,
    ForeignBreaker,
    ForeignEvent,
    Sink,
    opened_detail,
)

_STATE = {"opened": "open", "half-opened": "half_open", "closed": "closed"}


class PurgatoryBreakers(ForeignBreaker):
    """The circuits of a purgatory factory (or the one named by ``name=``)."""

    library = "purgatory"
    observes = frozenset({FAILURE_COUNT})

    def __init__(self, obj: object, name: str | None) -> None:
        super().__init__(obj, name)
        self._states: dict[str, str] = {}
        self._opened_at: dict[str, float | None] = {}
        self._failures: dict[str, int] = {}

    @property
    def rejection_error(self) -> type[BaseException]:
        from purgatory.domain.model import OpenedState

        error: type[BaseException] = OpenedState
        return error

    # -- names -----------------------------------------------------------------------------

    def _contexts(self) -> dict[str, Any]:
        """The circuits an in-memory factory holds (a Redis one keeps them on the server)."""
        repository = getattr(getattr(self.obj, "uow", None), "contexts", None)
        found = getattr(repository, "breakers", None)
        return dict(found) if isinstance(found, dict) else {}

    def names(self) -> list[str]:
        if self._given_name is not None:
            return [self._given_name]
        return sorted(set(self._contexts()) | set(self._states))

    @property
    def name(self) -> str:
        if self._given_name is not None:
            return self._given_name
        names = self.names()
        if len(names) == 1:
            return names[0]
        raise TypeError(
            "a purgatory factory holds several circuits"
            f" ({', '.join(names) or 'none yet'}): name the one you mean, by its circuit name "
            "(assert_trips_within('inventory', ...)), or watch(factory, name='inventory')"
        )

    # -- state -----------------------------------------------------------------------------

    def state_of(self, name: str) -> str:
        context = self._contexts().get(name)
        if context is not None:
            return _STATE.get(str(context.state), "closed")
        return self._states.get(name, "closed")

    def open_episode(self, name: str) -> object | None:
        context = self._contexts().get(name)
        if context is not None:
            return ("open", context.opened_at) if context.state == "opened" else None
        if self._states.get(name) == "open":
            return ("open", self._opened_at.get(name))
        return None

    # -- reporting -------------------------------------------------------------------------

    def attach(self, sink: Sink) -> Unsubscribe:
        def hook(circuit: str, what: str, event: Any) -> None:
            if self._given_name is not None and circuit != self._given_name:
                return
            if what == "failed":
                self._failures[circuit] = int(event.failure_count)
            elif what == "recovered":
                self._failures[circuit] = 0
            elif what == "state_changed":
                self._changed(sink, circuit, event)

        self.obj.add_listener(hook)  # type: ignore[attr-defined]

        def stop() -> None:
            with contextlib.suppress(RuntimeError):  # removed already
                self.obj.remove_listener(hook)  # type: ignore[attr-defined]

        return Unsubscribe(stop)

    def _changed(self, sink: Sink, circuit: str, event: Any) -> None:
        target = _STATE.get(str(event.state))
        if target is None:
            return
        previous = self._states.get(circuit, "closed")
        self._states[circuit] = target
        self._opened_at[circuit] = event.opened_at
        detail: dict[str, Any] = {}
        if target == "open":
            detail = opened_detail(previous, self._failures.get(circuit, 0))
        elif target == "closed":
            detail = {"reason": "trial call succeeded"}
        sink(ForeignEvent(circuit, EVENT_OF_STATE[target], detail, breaker_time=event.opened_at))

    # -- calls -----------------------------------------------------------------------------

    def call(self, fn: Callable[[], object]) -> object:
        if type(self.obj).__name__.startswith("Async"):
            raise TypeError(
                "an AsyncCircuitBreakerFactory guards async blocks: use "
                "assert_rejects_fast_async (or give call=)"
            )
        with self.obj.get_breaker(self.name):  # type: ignore[attr-defined]
            return fn()

    async def call_async(self, fn: Callable[[], Awaitable[object]]) -> object:
        if not type(self.obj).__name__.startswith("Async"):
            raise TypeError(
                "a SyncCircuitBreakerFactory guards plain blocks: use assert_rejects_fast"
            )
        async with await self.obj.get_breaker(self.name):  # type: ignore[attr-defined]
            return await fn()
