"""The circuit breaker: config, state machine, sliding window, events, triggers and manager."""

from synapse_core.breaker.breaker import CallPermit, CircuitBreaker
from synapse_core.breaker.config import CircuitBreakerConfig, ExceptionMatcher
from synapse_core.breaker.events import (
    CircuitClosed,
    CircuitEvent,
    CircuitHalfOpened,
    CircuitOpened,
    EventStream,
    ExternalTriggerActivated,
    RequestRejected,
    Unsubscribe,
)
from synapse_core.breaker.manager import (
    CircuitBreakerManager,
    CircuitManager,
    default_manager,
    get_breaker,
)
from synapse_core.breaker.metrics import TransportMetrics
from synapse_core.breaker.observers import TransitionWatcher, watch_transitions
from synapse_core.breaker.registry import live_breakers, watch_breakers
from synapse_core.breaker.state import CircuitState, RequestOutcome
from synapse_core.breaker.stats import CircuitStats
from synapse_core.breaker.triggers import (
    CircuitTrigger,
    LatencyTrigger,
    PacketLossTrigger,
    ReliabilityTrigger,
)

__all__ = [
    "CallPermit",
    "CircuitBreaker",
    "CircuitBreakerConfig",
    "CircuitBreakerManager",
    "CircuitClosed",
    "CircuitEvent",
    "CircuitHalfOpened",
    "CircuitManager",
    "CircuitOpened",
    "CircuitState",
    "CircuitStats",
    "CircuitTrigger",
    "EventStream",
    "ExceptionMatcher",
    "ExternalTriggerActivated",
    "LatencyTrigger",
    "PacketLossTrigger",
    "ReliabilityTrigger",
    "RequestOutcome",
    "RequestRejected",
    "TransitionWatcher",
    "TransportMetrics",
    "Unsubscribe",
    "default_manager",
    "get_breaker",
    "live_breakers",
    "watch_breakers",
    "watch_transitions",
]
