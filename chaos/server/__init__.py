"""Synapse's embedded Toxiproxy-compatible server: HTTP control API, asyncio TCP proxies, toxics.

Use :class:`ChaosServer` on a running event loop, :class:`chaos.EmbeddedToxiproxy` from
synchronous code, or ``synapse-chaos serve`` from a shell. See ``docs/server.md``.
"""

from chaos.server.api import API_VERSION
from chaos.server.apierror import ApiError
from chaos.server.limits import ServerLimits
from chaos.server.server import ChaosServer
from chaos.server.toxics import TOXIC_ATTRIBUTES, ToxicSpec

__all__ = [
    "API_VERSION",
    "TOXIC_ATTRIBUTES",
    "ApiError",
    "ChaosServer",
    "ServerLimits",
    "ToxicSpec",
]
