"""Synapse core: a full circuit breaker, clocks, and breaker-guarded message transports.

Everything a service imports at run time lives here; it never imports ``chaos`` or
``pytest_synapse``.
"""

from synapse_core.breaker import (
    CallPermit,
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitBreakerManager,
    CircuitClosed,
    CircuitEvent,
    CircuitHalfOpened,
    CircuitManager,
    CircuitOpened,
    CircuitState,
    CircuitStats,
    CircuitTrigger,
    EventStream,
    ExternalTriggerActivated,
    LatencyTrigger,
    PacketLossTrigger,
    ReliabilityTrigger,
    RequestOutcome,
    RequestRejected,
    TransportMetrics,
    Unsubscribe,
    default_manager,
    get_breaker,
    live_breakers,
    watch_breakers,
)
from synapse_core.clock import Clock, VirtualClock, monotonic_clock
from synapse_core.errors import CircuitBreakerError, CircuitOpenError
from synapse_core.timeline import BreakerRecord, FaultSpan, Timeline

__version__ = "0.1.0"

__all__ = [
    "BreakerRecord",
    "CallPermit",
    "CircuitBreaker",
    "CircuitBreakerConfig",
    "CircuitBreakerError",
    "CircuitBreakerManager",
    "CircuitClosed",
    "CircuitEvent",
    "CircuitHalfOpened",
    "CircuitManager",
    "CircuitOpenError",
    "CircuitOpened",
    "CircuitState",
    "CircuitStats",
    "CircuitTrigger",
    "Clock",
    "EventStream",
    "ExternalTriggerActivated",
    "FaultSpan",
    "LatencyTrigger",
    "PacketLossTrigger",
    "ReliabilityTrigger",
    "RequestOutcome",
    "RequestRejected",
    "Timeline",
    "TransportMetrics",
    "Unsubscribe",
    "VirtualClock",
    "default_manager",
    "get_breaker",
    "live_breakers",
    "monotonic_clock",
    "watch_breakers",
]
