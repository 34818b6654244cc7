"""A requests transport adapter that puts a breaker in front of every request.

``session.mount("http://", BreakerAdapter())`` (and ``"https://"``). Connection errors and
timeouts are failures (timeouts counted as such); answers count as
:mod:`synapse_core.http.guard` says.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from synapse_core.breaker.breaker import CircuitBreaker
from synapse_core.http.guard import HostBreakers, server_errors

_FAILURES: tuple[type[BaseException], ...] = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
)


class BreakerAdapter(HTTPAdapter):
    """An ``HTTPAdapter`` guarded by one breaker per host (or *breaker* for all).

    *failure_status* picks the statuses that are failures (5xx); *failure_exceptions* the
    errors that are (requests' ``ConnectionError`` and ``Timeout``); ``config=``, ``clock=``,
    ``name_prefix=`` shape the per-host breakers; *adapter_options* go to ``HTTPAdapter``
    (``max_retries``, ``pool_maxsize``...). Retries, if you configure them, happen inside one
    permit: the breaker judges the request as the caller sees it.
    """

    def __init__(
        self,
        *,
        breaker: CircuitBreaker | None = None,
        failure_status: Callable[[int], bool] = server_errors,
        failure_exceptions: tuple[type[BaseException], ...] | None = None,
        config: Any = None,
        clock: Any = None,
        name_prefix: str = "",
        **adapter_options: Any,
    ) -> None:
        super().__init__(**adapter_options)
        self.breakers = HostBreakers(
            breaker,
            config=config,
            clock=clock,
            name_prefix=name_prefix,
            failure_status=failure_status,
        )
        self._failures = _FAILURES if failure_exceptions is None else tuple(failure_exceptions)

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: float | tuple[float, float] | tuple[float, None] | None = None,
        verify: bool | str = True,
        cert: bytes | str | tuple[bytes | str, bytes | str] | None = None,
        proxies: Mapping[str, str] | None = None,
    ) -> requests.Response:
        parts = urlsplit(request.url or "")
        permit = self.breakers.admit(parts.scheme, parts.hostname or "", parts.port)
        try:
            response = super().send(request, stream, timeout, verify, cert, proxies)
        except BaseException as error:
            failure = isinstance(error, self._failures)
            timeout_hit = failure and isinstance(error, requests.exceptions.Timeout)
            self.breakers.raised(permit, error, failure=failure, timeout=timeout_hit)
            raise
        self.breakers.answered(permit, response.status_code)
        return response
