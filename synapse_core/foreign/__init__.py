"""Breakers of other libraries (pybreaker, aiobreaker, purgatory, circuitbreaker) on a timeline.

``Timeline.watch(obj)`` hands any object that is not a Synapse breaker to :func:`adapt`, which
picks the adapter for its library. The libraries stay optional: nothing here imports one
unless an object of it is given (and then it is imported already).
"""

from __future__ import annotations

import sys

from synapse_core.foreign.base import (
    ADMISSIONS,
    FAILURE_COUNT,
    PROBES,
    REJECTIONS,
    ForeignBreaker,
    ForeignEvent,
    Sink,
)

LIBRARIES = ("pybreaker", "aiobreaker", "purgatory", "circuitbreaker")
"""The libraries whose breakers can be watched."""


def library_of(obj: object) -> str | None:
    """The library *obj* is a breaker of, or ``None`` (imports nothing)."""
    for cls in type(obj).__mro__:
        root = cls.__module__.partition(".")[0]
        if root not in LIBRARIES:
            continue
        module = sys.modules.get(root)
        names: tuple[str, ...] = ("CircuitBreaker",)
        if root == "purgatory":
            names = ("SyncCircuitBreakerFactory", "AsyncCircuitBreakerFactory")
        if module is not None and any(getattr(module, n, None) is cls for n in names):
            return root
    return None


def adapt(obj: object, name: str | None = None) -> ForeignBreaker:
    """The adapter that watches *obj*, a breaker of one of :data:`LIBRARIES`.

    *name* names its records (a pybreaker breaker may have none); for a purgatory factory it
    keeps only that circuit. ``TypeError`` says what is accepted for anything else.
    """
    if name is not None and (not isinstance(name, str) or not name):
        raise TypeError(f"name must be a non-empty str, got {name!r}")
    library = library_of(obj)
    if library == "pybreaker":
        from synapse_core.foreign.listened import PybreakerBreaker

        return PybreakerBreaker(obj, name)
    if library == "aiobreaker":
        from synapse_core.foreign.listened import AiobreakerBreaker

        return AiobreakerBreaker(obj, name)
    if library == "purgatory":
        from synapse_core.foreign.purgatory import PurgatoryBreakers

        return PurgatoryBreakers(obj, name)
    if library == "circuitbreaker":
        from synapse_core.foreign.polled import CircuitbreakerBreaker

        return CircuitbreakerBreaker(obj, name)
    hint = ""
    if type(obj).__module__.startswith("purgatory"):
        hint = (
            "; for purgatory, watch the factory (SyncCircuitBreakerFactory or "
            "AsyncCircuitBreakerFactory), with name='circuit' to keep one circuit"
        )
    raise TypeError(
        f"cannot watch {type(obj).__module__}.{type(obj).__qualname__}: pass a "
        "synapse_core.CircuitBreaker, a pybreaker.CircuitBreaker, an aiobreaker.CircuitBreaker, "
        f"a purgatory circuit breaker factory or a circuitbreaker.CircuitBreaker{hint}"
    )


__all__ = [
    "ADMISSIONS",
    "FAILURE_COUNT",
    "LIBRARIES",
    "PROBES",
    "REJECTIONS",
    "ForeignBreaker",
    "ForeignEvent",
    "Sink",
    "adapt",
    "library_of",
]
