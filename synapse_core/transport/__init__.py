"""Breaker-guarded message transports: TCP with framing and acks, mDNS discovery, failover.

Every send and probe goes through a circuit breaker (one per peer by default), so a sick peer
is rejected in microseconds instead of costing a timeout per call. See ``docs/transports.md``.
"""

from synapse_core.transport.auth import MessageAuthenticator
from synapse_core.transport.base import DeliveryReceipt, Transport, TransportStats
from synapse_core.transport.discovery import SERVICE_TYPE, MdnsConfig, PeerInfo, host_addresses
from synapse_core.transport.errors import (
    AuthenticationError,
    DeliveryError,
    DeliveryTimeoutError,
    DiscoveryError,
    DiscoveryTimeoutError,
    FrameError,
    FrameTooLargeError,
    MessageDecodeError,
    MessageRejectedError,
    NoRouteError,
    PeerUnknownError,
    TransportClosedError,
    TransportError,
)
from synapse_core.transport.estimator import LinkEstimator, LinkStats
from synapse_core.transport.framing import (
    DEFAULT_MAX_FRAME_SIZE,
    FrameDecoder,
    FrameKind,
    NackCode,
    encode_frame,
)
from synapse_core.transport.mdns import EnhancedMdnsTransport, MdnsTransport
from synapse_core.transport.message import WIRE_VERSION, Message, SecurityLevel
from synapse_core.transport.router import FailoverRouter, RouterStats, RouteSkipped
from synapse_core.transport.tcp import TcpTransport

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "SERVICE_TYPE",
    "WIRE_VERSION",
    "AuthenticationError",
    "DeliveryError",
    "DeliveryReceipt",
    "DeliveryTimeoutError",
    "DiscoveryError",
    "DiscoveryTimeoutError",
    "EnhancedMdnsTransport",
    "FailoverRouter",
    "FrameDecoder",
    "FrameError",
    "FrameKind",
    "FrameTooLargeError",
    "LinkEstimator",
    "LinkStats",
    "MdnsConfig",
    "MdnsTransport",
    "Message",
    "MessageAuthenticator",
    "MessageDecodeError",
    "MessageRejectedError",
    "NackCode",
    "NoRouteError",
    "PeerInfo",
    "PeerUnknownError",
    "RouteSkipped",
    "RouterStats",
    "SecurityLevel",
    "TcpTransport",
    "Transport",
    "TransportClosedError",
    "TransportError",
    "TransportStats",
    "encode_frame",
    "host_addresses",
]
