"""Breaker-guarded HTTP clients: an httpx transport, a requests adapter, an aiohttp middleware.

Each puts one Synapse breaker per host (or one given breaker) in front of every request; an open
breaker raises ``CircuitOpenError`` before any socket is touched. httpx, requests and aiohttp
stay optional (extras ``synapse-chaos[httpx]``, ``[requests]``, ``[aiohttp]``): each adapter is
imported on first use, and a missing library is an ``ImportError`` naming the extra.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from synapse_core.http.guard import HostBreakers, HttpStatusFailure, server_errors

if TYPE_CHECKING:
    from synapse_core.http.aiohttp_middleware import BreakerMiddleware
    from synapse_core.http.httpx_transport import AsyncBreakerTransport, BreakerTransport
    from synapse_core.http.requests_adapter import BreakerAdapter

_LAZY = {
    "BreakerTransport": ("synapse_core.http.httpx_transport", "httpx"),
    "AsyncBreakerTransport": ("synapse_core.http.httpx_transport", "httpx"),
    "BreakerAdapter": ("synapse_core.http.requests_adapter", "requests"),
    "BreakerMiddleware": ("synapse_core.http.aiohttp_middleware", "aiohttp"),
}


def __getattr__(name: str) -> object:
    found = _LAZY.get(name)
    if found is None:
        raise AttributeError(f"module 'synapse_core.http' has no attribute {name!r}")
    module, library = found
    try:
        return getattr(importlib.import_module(module), name)
    except ModuleNotFoundError as exc:
        if exc.name != library:
            raise
        raise ImportError(
            f"synapse_core.http.{name} needs {library}: pip install 'synapse-chaos[{library}]'"
        ) from None


__all__ = [
    "AsyncBreakerTransport",
    "BreakerAdapter",
    "BreakerMiddleware",
    "BreakerTransport",
    "HostBreakers",
    "HttpStatusFailure",
    "server_errors",
]
