"""The JSON documents of the health endpoints: ``/health``, ``/breakers`` and the event stream.

Every number is finite (JSON has no infinity): a ``retry_after`` that is infinite (forced open)
or unknown is ``null``, and ``stats.forced`` says which.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from typing import Any

from synapse_core.breaker import CircuitBreaker, CircuitBreakerConfig, CircuitBreakerManager
from synapse_core.health.journal import TransitionJournal
from synapse_core.metrics import named_breakers as breakers_of

SCHEMA_VERSION = 1
"""Version of the ``/breakers`` document (``docs/health.md``); a breaking change bumps it."""

Critical = Callable[[str], bool]


def finite(value: float | None) -> float | None:
    """*value*, or ``None`` when it is missing, infinite or NaN."""
    if value is None or not math.isfinite(value):
        return None
    return value


def health_document(
    manager: CircuitBreakerManager, critical: Critical
) -> tuple[bool, dict[str, Any]]:
    """``(healthy, body)`` of ``GET /health``: unhealthy while a critical breaker is open."""
    states = {name: breaker.state.value for name, breaker in breakers_of(manager)}
    open_ = [name for name, state in states.items() if state == "open"]
    failing = [name for name in open_ if critical(name)]
    body = {
        "status": "unavailable" if failing else "ok",
        "breakers": states,
        "open": open_,
        "critical_open": failing,
    }
    return not failing, body


def breaker_document(
    name: str,
    breaker: CircuitBreaker,
    *,
    critical: bool,
    journal: TransitionJournal,
    now: float,
) -> dict[str, Any]:
    """One breaker's entry in ``/breakers``: state, stats, config and transitions."""
    stats = breaker.stats().to_dict()
    stats.pop("name", None)
    stats.pop("state", None)
    stats["retry_after"] = finite(stats["retry_after"])
    counts = breaker.transition_counts()
    return {
        "name": name,
        "state": breaker.state.value,
        "critical": critical,
        "stats": stats,
        "config": config_document(breaker.config),
        "transition_counts": [
            {"from_state": source.value, "to_state": target.value, "count": count}
            for (source, target), count in sorted(counts.items(), key=lambda kv: kv[0])
        ],
        "transitions_seen": journal.seq(breaker),
        "recent_transitions": [t.to_json(now) for t in journal.recent(breaker)],
    }


def breakers_document(
    manager: CircuitBreakerManager, critical: Critical, journal: TransitionJournal, instance: str
) -> dict[str, Any]:
    """``GET /breakers``: every breaker of *manager*, with a ``schema_version``."""
    now = time.monotonic()
    return {
        "schema_version": SCHEMA_VERSION,
        "instance": instance,
        "time": round(time.time(), 6),
        "breakers": {
            name: breaker_document(name, breaker, critical=critical(name), journal=journal, now=now)
            for name, breaker in breakers_of(manager)
        },
    }


def stats_document(
    manager: CircuitBreakerManager, critical: Critical, journal: TransitionJournal
) -> dict[str, Any]:
    """The periodic ``stats`` event: counters of every breaker (the page computes rates)."""
    breakers = {}
    for name, breaker in breakers_of(manager):
        stats = breaker.stats()
        breakers[name] = {
            "state": stats.state.value,
            "seq": journal.seq(breaker),
            "critical": critical(name),
            "success": stats.success_count,
            "failure": stats.failure_count,
            "rejected": stats.rejection_count,
            "failure_rate": stats.window_failure_rate,
            "retry_after": finite(stats.retry_after),
        }
    return {"time": round(time.time(), 6), "breakers": breakers}


def config_document(config: CircuitBreakerConfig) -> dict[str, Any]:
    """A config as JSON: numbers as they are, exception classes and predicates by name."""
    data: dict[str, Any] = {}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if isinstance(value, tuple):
            data[field.name] = [_callable_name(item) for item in value]
        elif callable(value):
            data[field.name] = _callable_name(value)
        elif isinstance(value, float):
            data[field.name] = finite(value)
        else:
            data[field.name] = value
    return data


def _callable_name(item: object) -> str:
    module = getattr(item, "__module__", None)
    name = getattr(item, "__qualname__", None) or type(item).__qualname__
    return name if module in (None, "builtins") else f"{module}.{name}"


def to_json_bytes(document: Any) -> bytes:
    """Compact JSON, strictly valid (no NaN or Infinity)."""
    return json.dumps(document, separators=(",", ":"), allow_nan=False).encode()
