"""pybreaker and aiobreaker breakers, watched through their listeners.

Both libraries call a listener before each call they admit, after its success or failure, and on
every state change; the listener added here turns those into timeline events. A call they
reject raises before any listener is told, so rejections are seen only by the assertion that
makes the calls (:func:`pytest_synapse.assert_rejects_fast`): the breaker stayed open and let no
call through meanwhile.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Awaitable, Callable
from typing import Any

from synapse_core.breaker.events import Unsubscribe
from synapse_core.foreign.base import (
    ADMISSIONS,
    EVENT_OF_STATE,
    FAILURE_COUNT,
    PROBES,
    ForeignBreaker,
    ForeignEvent,
    Sink,
    opened_detail,
)


def _normal(state: object) -> str:
    """A pybreaker (``'half-open'``) or aiobreaker (``CircuitBreakerState.HALF_OPEN``) state."""
    text = getattr(state, "name", state)
    return str(text).lower().replace("-", "_")


class _ListenedBreaker(ForeignBreaker):
    """What pybreaker and aiobreaker share: the same listener protocol and state machine."""

    observes = frozenset({FAILURE_COUNT, PROBES, ADMISSIONS})
    module: str

    @property
    def rejection_error(self) -> type[BaseException]:
        error: type[BaseException] = importlib.import_module(self.module).CircuitBreakerError
        return error

    def state_of(self, name: str) -> str:
        return _normal(self.obj.current_state)  # type: ignore[attr-defined]

    def attach(self, sink: Sink) -> Unsubscribe:
        base = importlib.import_module(self.module).CircuitBreakerListener
        adapter = self

        class Listener(base):  # type: ignore[misc, valid-type]
            def before_call(self, cb: Any, func: Any, *args: Any, **kwargs: Any) -> None:
                adapter._started(adapter.state == "half_open")

            def success(self, cb: Any) -> None:
                adapter._ended()

            def failure(self, cb: Any, exc: BaseException) -> None:
                adapter._ended()

            def state_change(self, cb: Any, old: Any, new: Any) -> None:
                adapter._changed(sink, old, new)

        listener = Listener()
        self.obj.add_listener(listener)  # type: ignore[attr-defined]

        def stop() -> None:
            with contextlib.suppress(ValueError):  # the user removed it already
                self.obj.remove_listener(listener)  # type: ignore[attr-defined]

        return Unsubscribe(stop)

    def _changed(self, sink: Sink, old: Any, new: Any) -> None:
        target = _normal(getattr(new, "state", None) or getattr(new, "name", new))
        previous = None if old is None else _normal(getattr(old, "state", None) or old.name)
        if target == previous:
            return  # aiobreaker closes again for each probe that succeeds: not a transition
        detail: dict[str, Any] = {}
        if target == "open":
            failures = int(self.obj.fail_counter)  # type: ignore[attr-defined]
            detail = opened_detail(previous or "closed", failures)
        elif target == "closed":
            detail = {"reason": "trial call succeeded" if previous == "half_open" else "closed"}
        sink(ForeignEvent(self.name, EVENT_OF_STATE[target], detail))


class PybreakerBreaker(_ListenedBreaker):
    """A ``pybreaker.CircuitBreaker``. Its lock lets one call in at a time, probes included."""

    library = "pybreaker"
    module = "pybreaker"

    def call(self, fn: Callable[[], object]) -> object:
        return self.obj.call(fn)  # type: ignore[attr-defined]


class AiobreakerBreaker(_ListenedBreaker):
    """An ``aiobreaker.CircuitBreaker`` (its half-open state admits every call that comes)."""

    library = "aiobreaker"
    module = "aiobreaker"

    def call(self, fn: Callable[[], object]) -> object:
        return self.obj.call(fn)  # type: ignore[attr-defined]

    async def call_async(self, fn: Callable[[], Awaitable[object]]) -> object:
        return await self.obj.call_async(fn)  # type: ignore[attr-defined]
