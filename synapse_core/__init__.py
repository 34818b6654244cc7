"""Synapse core: a full circuit breaker, clocks, and breaker-guarded message transports.

Everything a service imports at run time lives here; it never imports ``chaos`` or
``pytest_synapse``.
"""

from typing import TYPE_CHECKING

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
    TransitionWatcher,
    TransportMetrics,
    Unsubscribe,
    default_manager,
    get_breaker,
    live_breakers,
    watch_breakers,
    watch_transitions,
)
from synapse_core.clock import Clock, VirtualClock, monotonic_clock
from synapse_core.errors import CircuitBreakerError, CircuitOpenError
from synapse_core.timeline import BreakerRecord, FaultSpan, Timeline

if TYPE_CHECKING:
    from synapse_core.transport import (
        DeliveryError,
        DeliveryReceipt,
        DeliveryTimeoutError,
        EnhancedMdnsTransport,
        FailoverRouter,
        MdnsConfig,
        MdnsTransport,
        Message,
        MessageAuthenticator,
        MessageRejectedError,
        NoRouteError,
        PeerInfo,
        PeerUnknownError,
        SecurityLevel,
        TcpTransport,
        Transport,
        TransportError,
        TransportStats,
    )

__version__ = "0.1.0"

# Transports pull in zeroconf and asyncio networking; load them on first use so that
# `import synapse_core` stays cheap for breaker-only users (and for the pytest plugin).
_TRANSPORT_NAMES = frozenset(
    {
        "DeliveryError",
        "DeliveryReceipt",
        "DeliveryTimeoutError",
        "EnhancedMdnsTransport",
        "FailoverRouter",
        "MdnsConfig",
        "MdnsTransport",
        "Message",
        "MessageAuthenticator",
        "MessageRejectedError",
        "NoRouteError",
        "PeerInfo",
        "PeerUnknownError",
        "SecurityLevel",
        "TcpTransport",
        "Transport",
        "TransportError",
        "TransportStats",
    }
)


def __getattr__(name: str) -> object:
    if name in _TRANSPORT_NAMES:
        from synapse_core import transport

        return getattr(transport, name)
    raise AttributeError(f"module 'synapse_core' has no attribute {name!r}")


def __dir__() -> list[str]:
    # The lazily loaded transport names are attributes too (tab completion, dir(), inspect).
    return sorted({*globals(), *_TRANSPORT_NAMES})


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
    "DeliveryError",
    "DeliveryReceipt",
    "DeliveryTimeoutError",
    "EnhancedMdnsTransport",
    "EventStream",
    "ExternalTriggerActivated",
    "FailoverRouter",
    "FaultSpan",
    "LatencyTrigger",
    "MdnsConfig",
    "MdnsTransport",
    "Message",
    "MessageAuthenticator",
    "MessageRejectedError",
    "NoRouteError",
    "PacketLossTrigger",
    "PeerInfo",
    "PeerUnknownError",
    "ReliabilityTrigger",
    "RequestOutcome",
    "RequestRejected",
    "SecurityLevel",
    "TcpTransport",
    "Timeline",
    "Transport",
    "TransitionWatcher",
    "TransportError",
    "TransportMetrics",
    "TransportStats",
    "Unsubscribe",
    "VirtualClock",
    "default_manager",
    "get_breaker",
    "live_breakers",
    "monotonic_clock",
    "watch_breakers",
    "watch_transitions",
]
