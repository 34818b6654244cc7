"""What every adapter of another library's breaker gives the timeline.

An adapter wraps one breaker object of pybreaker, aiobreaker, purgatory or circuitbreaker (the
*watched object*) and reports what it sees as :class:`ForeignEvent`\\ s to a sink, through the
library's own public hooks where it has them and by polling where it has none. It never changes
how the breaker behaves.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, ClassVar

from synapse_core.breaker.events import Unsubscribe

STATES = ("closed", "open", "half_open")

FAILURE_COUNT = "failure_count"
"""Capability: the failures that tripped it are known (``assert_trips_within(failures=)``)."""
PROBES = "probes"
"""Capability: half-open calls in flight are seen (``assert_half_open_probes_at_most``)."""
REJECTIONS = "rejections"
"""Capability: each rejected call is reported as it happens (not only when asserted)."""
ADMISSIONS = "admissions"
"""Capability: each call the breaker lets through is seen as it starts."""


EVENT_OF_STATE = {"open": "opened", "half_open": "half_opened", "closed": "closed"}
"""The event a move into each state is recorded as."""


def opened_detail(previous: str, failures: int) -> dict[str, Any]:
    """What an opening records, in the words of Synapse's own breaker: why (a failed trial
    call from half-open, or the failure threshold), how many failures, and the state it left."""
    return {
        "reason": "trial call failed" if previous == "half_open" else "failure threshold reached",
        "failure_count": failures,
        "previous_state": previous,
    }


@dataclass(frozen=True, slots=True)
class ForeignEvent:
    """One thing a watched breaker did.

    ``kind``: ``opened``, ``half_opened``, ``closed`` or ``request_rejected``. ``ago``: how many
    real seconds before it was reported it happened (a polled library dates its transitions
    itself); ``breaker_time``: its time on the library's own clock, when known.
    """

    breaker: str
    kind: str
    detail: dict[str, Any] = field(default_factory=dict)
    ago: float = 0.0
    breaker_time: float | None = None


Sink = Callable[[ForeignEvent], None]

# The adapters (by id) for which the call running in this thread or task counts as a probe.
_probing: ContextVar[frozenset[int]] = ContextVar("synapse_foreign_probing", default=frozenset())


class ForeignBreaker(ABC):
    """The common face of a watched breaker of another library.

    ``library`` names it; ``rejection_error`` is the exception the library raises for a call it
    rejects; ``observes`` lists the capabilities above that the library lets Synapse see.
    """

    library: ClassVar[str]
    observes: ClassVar[frozenset[str]]
    polled: ClassVar[bool] = False

    def __init__(self, obj: object, name: str | None) -> None:
        self.obj = obj
        self._given_name = name
        self._lock = threading.Lock()
        self._admitted = 0
        self._half_open_in_flight = 0
        self.max_half_open_in_flight = 0
        """Most calls in flight at once while half-open, since watching began (``PROBES``)."""

    # -- identity --------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The name its records carry (``name=`` given to ``watch``, else the library's)."""
        return self._given_name or self._library_name() or f"{self.library}-{id(self.obj):x}"

    def _library_name(self) -> str | None:
        found = getattr(self.obj, "name", None)
        return found if isinstance(found, str) and found else None

    def names(self) -> list[str]:
        """Every breaker name this adapter records (one, except for a purgatory factory)."""
        return [self.name]

    @property
    @abstractmethod
    def rejection_error(self) -> type[BaseException]:
        """The library's exception for a rejected call."""

    # -- state -----------------------------------------------------------------------------

    @abstractmethod
    def state_of(self, name: str) -> str:
        """``closed``, ``open`` or ``half_open`` now (``half_open`` once a probe is due)."""

    @property
    def state(self) -> str:
        """The state of :attr:`name` now."""
        return self.state_of(self.name)

    def open_episode(self, name: str) -> object | None:
        """A token naming the current open spell of *name*, ``None`` unless it is open.

        The same token before and after a call means the breaker stayed open and admitted
        nothing meanwhile: the call was rejected.
        """
        return ("open", self.admitted) if self.state_of(name) == "open" else None

    @property
    def admitted(self) -> int:
        """Calls the breaker let through since watching began (``ADMISSIONS``)."""
        return self._admitted

    # -- reporting -------------------------------------------------------------------------

    @abstractmethod
    def attach(self, sink: Sink) -> Unsubscribe:
        """Start reporting to *sink*; the handle stops it."""

    def poll(self) -> None:  # noqa: B027 - only polled libraries have anything to do
        """Report what changed since the last poll now (polled libraries only)."""

    # -- the call ``assert_rejects_fast`` makes when none is given -----------------------------

    @abstractmethod
    def call(self, fn: Callable[[], object]) -> object:
        """Call *fn* through the breaker, as the library does."""

    async def call_async(self, fn: Callable[[], Awaitable[object]]) -> object:
        """Await *fn* through the breaker, as the library does."""
        raise TypeError(f"{self.library} breakers guard plain calls; use assert_rejects_fast")

    # -- half-open probes, for the libraries whose hooks see each call start and end ----------

    def _started(self, half_open: bool) -> None:
        with self._lock:
            self._admitted += 1
            if half_open:
                self._half_open_in_flight += 1
                self.max_half_open_in_flight = max(
                    self.max_half_open_in_flight, self._half_open_in_flight
                )
        if half_open:
            # The library tells the end of a call in the same thread or task that started it:
            # only a call counted as a probe uncounts itself.
            _probing.set(_probing.get() | {id(self)})

    def _ended(self) -> None:
        mine = _probing.get()
        if id(self) not in mine:
            return
        _probing.set(mine - {id(self)})
        with self._lock:
            self._half_open_in_flight -= 1

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.library} {self.name!r}>"
