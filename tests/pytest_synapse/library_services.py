"""A small service guarded by each breaker library, written as that library's users write it.

Each service asks an echo dependency through a chaos proxy; ``Service.ask()`` returns its answer
or raises what the library raises. The breakers trip after ``failures`` failures and probe again
``recovery`` seconds after opening (circuitbreaker counts whole seconds).
"""

from __future__ import annotations

import asyncio
import socket
import socketserver
from collections.abc import Callable
from datetime import timedelta
from typing import Any

LIBRARIES = ("pybreaker", "aiobreaker", "purgatory", "circuitbreaker")
RECOVERY = {"pybreaker": 0.3, "aiobreaker": 0.3, "purgatory": 0.3, "circuitbreaker": 1.0}


class Echo(socketserver.BaseRequestHandler):
    """The dependency: answers each request with its bytes."""

    def handle(self) -> None:
        while data := self.request.recv(4096):
            self.request.sendall(data)


def fetch(address: tuple[str, int], timeout: float = 0.5) -> bytes:
    """One request/answer to the dependency (what the service's client does)."""
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(b"stock?")
        answer = sock.recv(4096)
    if not answer:
        raise ConnectionError("the dependency closed the connection")
    return answer


class Service:
    """``ask()``: the dependency's answer through the library's breaker.

    ``breaker`` is what a test watches; ``rejection`` is the library's error for an open
    breaker. *fallback_delay* plants a bug: a rejected call sleeps that long before raising.
    """

    def __init__(
        self,
        library: str,
        address: tuple[str, int],
        *,
        failures: int = 3,
        fallback_delay: float = 0.0,
        swallow_errors: bool = False,
        recovery: float | None = None,
    ) -> None:
        self.library = library
        self.address = address
        self.fallback_delay = fallback_delay
        self.swallow_errors = swallow_errors
        recovery = RECOVERY[library] if recovery is None else recovery
        self._ask: Callable[[], bytes]
        if library == "pybreaker":
            import pybreaker

            self.breaker: Any = pybreaker.CircuitBreaker(
                fail_max=failures, reset_timeout=recovery, name="inventory"
            )
            self.rejection: type[BaseException] = pybreaker.CircuitBreakerError
            self._ask = self.breaker(self._dependency)
        elif library == "aiobreaker":
            import aiobreaker

            self.breaker = aiobreaker.CircuitBreaker(
                fail_max=failures, timeout_duration=timedelta(seconds=recovery), name="inventory"
            )
            self.rejection = aiobreaker.CircuitBreakerError
            self._ask = lambda: asyncio.run(self.breaker.call_async(self._dependency_async))
        elif library == "purgatory":
            import purgatory
            from purgatory.domain.model import OpenedState

            self.breaker = purgatory.SyncCircuitBreakerFactory(
                default_threshold=failures, default_ttl=recovery
            )
            self.rejection = OpenedState
            self._ask = self.breaker("inventory")(self._dependency)
        else:
            import circuitbreaker

            self.breaker = circuitbreaker.CircuitBreaker(
                failure_threshold=failures, recovery_timeout=recovery, name="inventory"
            )
            self.rejection = circuitbreaker.CircuitBreakerError
            self._ask = self.breaker(self._dependency)

    def _dependency(self) -> bytes:
        try:
            return fetch(self.address)
        except OSError:
            if self.swallow_errors:  # the bug: the breaker never sees the failure
                return b"cached"
            raise

    async def _dependency_async(self) -> bytes:
        return await asyncio.to_thread(self._dependency)

    def ask(self) -> bytes:
        try:
            return self._ask()
        except self.rejection:
            if self.fallback_delay:
                import time

                time.sleep(self.fallback_delay)  # the bug: a "backoff" before failing
            raise
