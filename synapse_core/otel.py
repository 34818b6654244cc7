"""OpenTelemetry: breaker transitions as span events, breaker figures as metrics.

Needs ``opentelemetry-api`` (the ``otel`` extra: ``pip install 'synapse-chaos[otel]'``); your
application brings the SDK and exporters. Nothing happens, and nothing is imported, until
:func:`instrument` is called::

    from synapse_core.otel import instrument

    otel = instrument()  # the global tracer and meter providers; otel.close() stops it

Then, while instrumented:

* every transition adds an event to the span current in the thread that caused it (the request
  whose failure tripped the breaker, say): ``synapse.breaker.opened``,
  ``synapse.breaker.half_opened`` or ``synapse.breaker.closed``, with attributes
  ``synapse.breaker.name``, ``.from_state``, ``.to_state``, ``.reason`` and, for openings,
  ``.failure_count``;
* the counter ``synapse.circuit_breaker.transitions`` (attributes ``breaker``, ``from_state``,
  ``to_state``) counts them;
* observable instruments read the breakers of *manager* when the SDK collects (nothing per
  call): ``synapse.circuit_breaker.state`` (gauge, 1 for the current ``state``, 0 for the
  others), ``synapse.circuit_breaker.calls`` (counter, by ``outcome``) and
  ``synapse.circuit_breaker.rejected_calls`` (counter).

Transitions are those of every breaker in the process unless *manager* is given.
"""

from __future__ import annotations

from typing import Any

from synapse_core.breaker import (
    CircuitBreaker,
    CircuitBreakerManager,
    CircuitEvent,
    CircuitState,
    default_manager,
    watch_transitions,
)
from synapse_core.breaker.observers import transition_fields
from synapse_core.metrics import named_breakers, outcome_counts

try:
    from opentelemetry import metrics, trace
except ImportError as exc:  # pragma: no cover - exercised by the message only
    raise ImportError(
        "synapse_core.otel needs opentelemetry-api: pip install 'synapse-chaos[otel]'"
    ) from exc

__all__ = ["OtelInstrumentation", "instrument"]

SCOPE = "synapse_core"
_ATTRIBUTE = {"breaker": "synapse.breaker.name"}


class OtelInstrumentation:
    """What :func:`instrument` set up; :meth:`close` stops recording transitions."""

    def __init__(
        self,
        manager: CircuitBreakerManager | None,
        meter_provider: Any = None,
    ) -> None:
        if manager is not None and not isinstance(manager, CircuitBreakerManager):
            raise TypeError(f"manager must be a CircuitBreakerManager, got {manager!r}")
        self._manager = manager
        figures = default_manager if manager is None else manager
        meter = metrics.get_meter(SCOPE, meter_provider=meter_provider)
        self._transitions = meter.create_counter(
            "synapse.circuit_breaker.transitions",
            unit="{transition}",
            description="State changes of a circuit breaker.",
        )
        meter.create_observable_gauge(
            "synapse.circuit_breaker.state",
            callbacks=[lambda options: _states(figures)],
            description="1 for the state a circuit breaker is in, 0 for the others.",
        )
        meter.create_observable_counter(
            "synapse.circuit_breaker.calls",
            callbacks=[lambda options: _calls(figures)],
            unit="{call}",
            description="Calls a circuit breaker admitted, by recorded outcome.",
        )
        meter.create_observable_counter(
            "synapse.circuit_breaker.rejected_calls",
            callbacks=[lambda options: _rejections(figures)],
            unit="{call}",
            description="Calls a circuit breaker rejected without running them.",
        )
        self._stop = watch_transitions(self._transition)

    def _transition(self, breaker: CircuitBreaker, event: CircuitEvent) -> None:
        manager = self._manager
        if manager is not None and manager.get_breaker(event.breaker_name) is not breaker:
            return
        fields = transition_fields(event)
        self._transitions.add(
            1, {key: fields[key] for key in ("breaker", "from_state", "to_state")}
        )
        span = trace.get_current_span()
        if span.is_recording():
            span.add_event(
                f"synapse.breaker.{event.kind}",
                {_ATTRIBUTE.get(key, f"synapse.breaker.{key}"): v for key, v in fields.items()},
            )

    def close(self) -> None:
        """Stop adding transitions (the observable instruments stay with their meter)."""
        self._stop()


def instrument(
    manager: CircuitBreakerManager | None = None, *, meter_provider: Any = None
) -> OtelInstrumentation:
    """Start recording breaker transitions and figures through OpenTelemetry (see the module).

    *meter_provider* defaults to the global one; span events go to the current span of the
    global tracer provider's context.
    """
    return OtelInstrumentation(manager, meter_provider)


def _states(manager: CircuitBreakerManager) -> list[metrics.Observation]:
    observations = []
    for name, breaker in named_breakers(manager):
        current = breaker.state
        for state in CircuitState:
            observations.append(
                metrics.Observation(
                    1 if state is current else 0, {"breaker": name, "state": state.value}
                )
            )
    return observations


def _calls(manager: CircuitBreakerManager) -> list[metrics.Observation]:
    observations = []
    for name, breaker in named_breakers(manager):
        for outcome, value in outcome_counts(breaker.stats()):
            observations.append(metrics.Observation(value, {"breaker": name, "outcome": outcome}))
    return observations


def _rejections(manager: CircuitBreakerManager) -> list[metrics.Observation]:
    return [
        metrics.Observation(breaker.stats().rejection_count, {"breaker": name})
        for name, breaker in named_breakers(manager)
    ]
