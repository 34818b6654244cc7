"""What the breaker-guarded HTTP clients share: one breaker per host, and how answers count.

Every request first asks its host's breaker for a permit: an open breaker raises
``CircuitOpenError`` before the client touches a socket. The answer is then reported: a
connection error or timeout is a failure (a timeout counted as such), a status that
*failure_status* picks (5xx by default) is a failure, any other answer a success: the
dependency answered. An error that is neither (say, a bad URL) gives the permit back unjudged.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from synapse_core.breaker.breaker import CircuitBreaker
from synapse_core.breaker.config import CircuitBreakerConfig
from synapse_core.clock import Clock

if TYPE_CHECKING:
    from synapse_core.breaker.breaker import CallPermit

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def server_errors(status: int) -> bool:
    """The default failure rule: 5xx answers are failures, every other answer a success."""
    return status >= 500


class HostBreakers:
    """The breakers in front of a client's requests: one per ``host:port``, or one for all.

    *breaker*: guard every request with this one breaker. Otherwise a ``CircuitBreaker`` named
    ``f"{name_prefix}{host}:{port}"`` is made for each host on its first request, with *config*
    (and *clock*); being ordinary breakers, the pytest plugin records them like any other.
    *failure_status* says which answers are failures.
    """

    def __init__(
        self,
        breaker: CircuitBreaker | None = None,
        *,
        config: CircuitBreakerConfig | None = None,
        clock: Clock | None = None,
        name_prefix: str = "",
        failure_status: Callable[[int], bool] = server_errors,
    ) -> None:
        if breaker is not None and not isinstance(breaker, CircuitBreaker):
            raise TypeError(f"breaker must be a synapse_core.CircuitBreaker, got {breaker!r}")
        if breaker is not None and config is not None:
            raise TypeError("give breaker= or config=, not both: config= shapes per-host breakers")
        if config is not None and not isinstance(config, CircuitBreakerConfig):
            raise TypeError(f"config must be a CircuitBreakerConfig, got {config!r}")
        if not callable(failure_status):
            raise TypeError(
                f"failure_status must be a callable(status) -> bool, got {failure_status!r}"
            )
        self._shared = breaker
        self._config = config
        self._clock = clock
        self._prefix = name_prefix
        self.failure_status = failure_status
        self._lock = threading.Lock()
        self._by_host: dict[str, CircuitBreaker] = {}

    @property
    def breakers(self) -> dict[str, CircuitBreaker]:
        """The breakers made so far, by ``host:port`` (the given breaker under ``*``)."""
        if self._shared is not None:
            return {"*": self._shared}
        with self._lock:
            return dict(self._by_host)

    def breaker_for(self, scheme: str, host: str, port: int | None) -> CircuitBreaker:
        """The breaker guarding requests to *host* (made on first use)."""
        if self._shared is not None:
            return self._shared
        key = f"{host}:{port if port is not None else _DEFAULT_PORTS.get(scheme.lower(), 0)}"
        with self._lock:
            breaker = self._by_host.get(key)
            if breaker is None:
                breaker = CircuitBreaker(f"{self._prefix}{key}", self._config, clock=self._clock)
                self._by_host[key] = breaker
            return breaker

    def admit(self, scheme: str, host: str, port: int | None) -> CallPermit:
        """A permit for one request, or ``CircuitOpenError`` (nothing was sent)."""
        return self.breaker_for(scheme, host, port).acquire()

    def answered(self, permit: CallPermit, status: int) -> None:
        """Report an answer: a failure if *failure_status* says so, else a success."""
        if self.failure_status(status):
            permit.failure(HttpStatusFailure(status))
        else:
            permit.success()

    @staticmethod
    def raised(permit: CallPermit, error: BaseException, *, failure: bool, timeout: bool) -> None:
        """Report a request that raised *error*: a timeout, a failure, or neither (released)."""
        if timeout:
            permit.timeout()
        elif failure:
            permit.failure(error)
        else:
            permit.release()


class HttpStatusFailure(Exception):
    """An answer whose status counts as a failure (kept as the breaker's ``last_failure``)."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
