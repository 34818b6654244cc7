"""Fault injection for Synapse: a Toxiproxy-compatible server, its client, faults and scenarios."""

from chaos.client import ProxyInfo, ToxicInfo, ToxiproxyClient
from chaos.embedded import EmbeddedToxiproxy
from chaos.errors import (
    ChaosError,
    EmbeddedServerError,
    InvalidToxic,
    NotFound,
    ProxyExists,
    ToxiproxyError,
    ToxiproxyUnavailable,
)
from chaos.server import ChaosServer

__all__ = [
    "ChaosError",
    "ChaosServer",
    "EmbeddedServerError",
    "EmbeddedToxiproxy",
    "InvalidToxic",
    "NotFound",
    "ProxyExists",
    "ProxyInfo",
    "ToxicInfo",
    "ToxiproxyClient",
    "ToxiproxyError",
    "ToxiproxyUnavailable",
]
