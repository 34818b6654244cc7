"""Exceptions raised by the circuit breaker."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from synapse_core.breaker.state import CircuitState


class CircuitBreakerError(Exception):
    """Base class of every error the circuit breaker raises itself."""


class CircuitOpenError(CircuitBreakerError):
    """The breaker rejected a call without running it, because it is open (or its probes are busy).

    Attributes:
        breaker_name: the breaker that rejected the call.
        state: the breaker's state at the time (``OPEN`` or ``HALF_OPEN``).
        retry_after: seconds until the breaker will admit a call if nothing else happens;
            ``math.inf`` when it was forced open and stays open until
            ``force_close()``/``reset()``; ``None`` when waiting alone will not do: probes in
            flight must report, or an external trigger must recover (see
            ``breaker.stats().waiting_for``).
        last_failure: the last exception recorded as a failure, or ``None``.

    A new instance is raised on every rejection; its message is only built when read.
    """

    # Rejection is a hot path: the fields live in ``args`` (set in C by Exception.__new__) and
    # the message is formatted lazily in __str__.
    args: tuple[str, CircuitState, float | None, BaseException | None]

    @property
    def breaker_name(self) -> str:
        """The breaker that rejected the call."""
        return self.args[0]

    @property
    def state(self) -> CircuitState:
        """The breaker's state when it rejected the call."""
        return self.args[1]

    @property
    def retry_after(self) -> float | None:
        """Seconds until a call will be admitted (``math.inf`` while forced open, ``None``:
        not by time alone)."""
        return self.args[2]

    @property
    def last_failure(self) -> BaseException | None:
        """The last exception the breaker recorded as a failure, or ``None``."""
        return self.args[3]

    def __str__(self) -> str:
        if self.retry_after is None:
            when = (
                "no retry time: it waits for probes in flight to report or for an external "
                "trigger to recover; see breaker.stats().waiting_for"
            )
        elif self.retry_after == float("inf"):
            when = "it was forced open; call force_close() or reset() to admit calls again"
        else:
            when = f"retry after {self.retry_after:.3f}s"
        msg = f"circuit breaker {self.breaker_name!r} is {self.state.value}: call rejected ({when})"
        if self.last_failure is not None:
            msg += f"; last failure: {type(self.last_failure).__name__}: {self.last_failure}"
        return msg

    def __repr__(self) -> str:
        return (
            f"CircuitOpenError(breaker_name={self.breaker_name!r}, state={self.state!r}, "
            f"retry_after={self.retry_after!r})"
        )
