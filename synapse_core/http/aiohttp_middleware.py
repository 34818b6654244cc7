"""An aiohttp client middleware that puts a breaker in front of every request (aiohttp >= 3.12).

``aiohttp.ClientSession(middlewares=(BreakerMiddleware(),))``. The middleware runs before the
session connects, so an open breaker raises ``CircuitOpenError`` before any socket is opened.
Connection errors and timeouts are failures (timeouts counted as such); answers count as
:mod:`synapse_core.http.guard` says.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp

from synapse_core.breaker.breaker import CircuitBreaker
from synapse_core.http.guard import HostBreakers, server_errors

if not hasattr(aiohttp, "ClientMiddlewareType"):
    raise ImportError(
        f"synapse_core.http.BreakerMiddleware needs aiohttp >= 3.12 (client middlewares); "
        f"this is aiohttp {aiohttp.__version__}: pip install 'synapse-chaos[aiohttp]'"
    )

_FAILURES: tuple[type[BaseException], ...] = (
    aiohttp.ClientConnectionError,
    asyncio.TimeoutError,
)


class BreakerMiddleware:
    """A client middleware guarding requests with one breaker per host (or *breaker* for all).

    *failure_status* picks the statuses that are failures (5xx); *failure_exceptions* the
    errors that are (``aiohttp.ClientConnectionError`` and timeouts); ``config=``, ``clock=``,
    ``name_prefix=`` shape the per-host breakers, listed in :attr:`breakers`.
    """

    def __init__(
        self,
        *,
        breaker: CircuitBreaker | None = None,
        failure_status: Callable[[int], bool] = server_errors,
        failure_exceptions: tuple[type[BaseException], ...] | None = None,
        **breaker_options: Any,
    ) -> None:
        self.breakers = HostBreakers(breaker, failure_status=failure_status, **breaker_options)
        self._failures = _FAILURES if failure_exceptions is None else tuple(failure_exceptions)

    async def __call__(
        self, request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
    ) -> aiohttp.ClientResponse:
        url = request.url
        permit = self.breakers.admit(url.scheme, url.host or "", url.port)
        try:
            response = await handler(request)
        except BaseException as error:
            failure = isinstance(error, self._failures)
            timeout = failure and isinstance(error, asyncio.TimeoutError)
            self.breakers.raised(permit, error, failure=failure, timeout=timeout)
            raise
        self.breakers.answered(permit, response.status)
        return response
