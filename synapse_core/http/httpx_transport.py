"""httpx transports that put a breaker in front of every request (sync and async).

``httpx.Client(transport=BreakerTransport())`` or
``httpx.AsyncClient(transport=AsyncBreakerTransport())``; wrap your own transport with
``transport=``. Connection errors and timeouts (``httpx.TransportError``) are failures, and
timeouts are counted as timeouts; answers count as :mod:`synapse_core.http.guard` says.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from synapse_core.breaker.breaker import CircuitBreaker
from synapse_core.http.guard import HostBreakers, server_errors

_FAILURES: tuple[type[BaseException], ...] = (httpx.TransportError,)
_NOT_SENT: tuple[type[BaseException], ...] = (httpx.UnsupportedProtocol,)


class _Guard:
    def __init__(
        self,
        breaker: CircuitBreaker | None,
        failure_status: Callable[[int], bool],
        failure_exceptions: tuple[type[BaseException], ...] | None,
        kwargs: dict[str, Any],
    ) -> None:
        self.breakers = HostBreakers(breaker, failure_status=failure_status, **kwargs)
        self.failures = _FAILURES if failure_exceptions is None else tuple(failure_exceptions)

    def raised(self, permit: Any, error: BaseException) -> None:
        failure = isinstance(error, self.failures) and not isinstance(error, _NOT_SENT)
        timeout = failure and isinstance(error, httpx.TimeoutException)
        self.breakers.raised(permit, error, failure=failure, timeout=timeout)


class BreakerTransport(httpx.BaseTransport):
    """A sync httpx transport guarded by one breaker per host (or *breaker* for all).

    *transport* is the transport that sends (default ``httpx.HTTPTransport()``);
    *failure_status* picks the statuses that are failures (5xx); *failure_exceptions* the
    errors that are (``httpx.TransportError``); ``config=``, ``clock=``, ``name_prefix=`` shape
    the per-host breakers (:class:`~synapse_core.http.HostBreakers`), listed in
    :attr:`breakers`.
    """

    def __init__(
        self,
        transport: httpx.BaseTransport | None = None,
        *,
        breaker: CircuitBreaker | None = None,
        failure_status: Callable[[int], bool] = server_errors,
        failure_exceptions: tuple[type[BaseException], ...] | None = None,
        **breaker_options: Any,
    ) -> None:
        self._inner = transport if transport is not None else httpx.HTTPTransport()
        self._guard = _Guard(breaker, failure_status, failure_exceptions, breaker_options)

    @property
    def breakers(self) -> HostBreakers:
        """The breakers guarding this transport's requests."""
        return self._guard.breakers

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        permit = self._guard.breakers.admit(url.scheme, url.host, url.port)
        try:
            response = self._inner.handle_request(request)
        except BaseException as error:
            self._guard.raised(permit, error)
            raise
        self._guard.breakers.answered(permit, response.status_code)
        return response

    def close(self) -> None:
        self._inner.close()


class AsyncBreakerTransport(httpx.AsyncBaseTransport):
    """:class:`BreakerTransport` for ``httpx.AsyncClient`` (default inner transport:
    ``httpx.AsyncHTTPTransport()``)."""

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        breaker: CircuitBreaker | None = None,
        failure_status: Callable[[int], bool] = server_errors,
        failure_exceptions: tuple[type[BaseException], ...] | None = None,
        **breaker_options: Any,
    ) -> None:
        self._inner = transport if transport is not None else httpx.AsyncHTTPTransport()
        self._guard = _Guard(breaker, failure_status, failure_exceptions, breaker_options)

    @property
    def breakers(self) -> HostBreakers:
        """The breakers guarding this transport's requests."""
        return self._guard.breakers

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        permit = self._guard.breakers.admit(url.scheme, url.host, url.port)
        try:
            response = await self._inner.handle_async_request(request)
        except BaseException as error:
            self._guard.raised(permit, error)
            raise
        self._guard.breakers.answered(permit, response.status_code)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()
