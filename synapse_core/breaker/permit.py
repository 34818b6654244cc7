"""The two-step call API: acquire a permit, run the call yourself, report how it went."""

from __future__ import annotations

from contextvars import ContextVar, Token
from typing import TYPE_CHECKING

from synapse_core.breaker.state import RequestOutcome

if TYPE_CHECKING:
    from synapse_core.breaker.breaker import CircuitBreaker

# One variable for every breaker: `with breaker:` blocks nest like a stack per thread/task.
current_permit: ContextVar[CallPermit | None] = ContextVar("synapse_current_permit", default=None)


class CallPermit:
    """Permission to make one call through a breaker; report its outcome exactly once.

    Returned by ``breaker.acquire()`` (and by ``with breaker as permit``). Report with
    :meth:`success`, :meth:`failure`, :meth:`timeout` or :meth:`record`, or give the permit back
    without an outcome with :meth:`release` (the call never happened or was cancelled).
    ``duration`` (seconds) feeds slow-call detection; when omitted it is measured from
    ``acquire()`` on the breaker's clock. An outcome reported after the breaker changed state
    is ignored: it describes a dependency the breaker has already judged.
    """

    __slots__ = ("_breaker", "_done", "_token", "epoch", "started_at")

    def __init__(self, breaker: CircuitBreaker, epoch: int, started_at: float) -> None:
        self._breaker = breaker
        self.epoch = epoch
        self.started_at = started_at
        self._done = False
        self._token: Token[CallPermit | None] | None = None

    @property
    def reported(self) -> bool:
        """Whether an outcome (or a release) was already reported."""
        return self._done

    def _finish(self) -> None:
        if self._done:
            raise RuntimeError(
                f"this permit of breaker {self._breaker.name!r} was already reported; "
                "acquire a new permit for each call"
            )
        self._done = True

    def _duration(self, duration: float | None) -> float | None:
        if duration is not None:
            return float(duration)
        if self._breaker._slow_after is None:
            return None  # nobody needs it: keep the lock-free path
        return self._breaker._clock() - self.started_at

    def success(self, duration: float | None = None) -> None:
        """The call succeeded."""
        self._finish()
        self._breaker._record_success(self.epoch, self._duration(duration))

    def failure(self, error: BaseException | None = None, duration: float | None = None) -> None:
        """The call failed (optionally with the exception, kept as ``last_failure``)."""
        self._finish()
        self._breaker._record_failure(
            self.epoch, error, RequestOutcome.FAILURE, self._duration(duration)
        )

    def timeout(self, duration: float | None = None) -> None:
        """The call timed out: a failure, also counted as a timeout."""
        self._finish()
        self._breaker._record_failure(
            self.epoch,
            TimeoutError("call timed out"),
            RequestOutcome.TIMEOUT,
            self._duration(duration),
        )

    def record(
        self,
        outcome: RequestOutcome,
        duration: float | None = None,
        error: BaseException | None = None,
    ) -> None:
        """Report *outcome* (a ``RequestOutcome``)."""
        if outcome is RequestOutcome.SUCCESS:
            self.success(duration)
        elif outcome is RequestOutcome.TIMEOUT:
            self._finish()
            self._breaker._record_failure(
                self.epoch,
                error or TimeoutError("call timed out"),
                RequestOutcome.TIMEOUT,
                self._duration(duration),
            )
        elif outcome is RequestOutcome.FAILURE:
            self.failure(error, duration)
        else:
            raise ValueError(f"outcome must be a RequestOutcome, got {outcome!r}")

    def error(self, error: BaseException, duration: float | None = None) -> None:
        """The call raised *error*: classify it as a guarded call would.

        Exceptions matching ``ignore_exceptions`` (and cancellations) release the permit; those
        not matching ``failure_exceptions`` count as successes; ``TimeoutError`` is a timeout;
        anything else is a failure.
        """
        self._finish()
        self._breaker._record_exception(self.epoch, error, self._duration(duration))

    def release(self) -> None:
        """Give the permit back without an outcome (frees a half-open probe slot)."""
        self._finish()
        self._breaker._release(self.epoch)

    def __repr__(self) -> str:
        status = "reported" if self._done else "pending"
        return f"<CallPermit breaker={self._breaker.name!r} epoch={self.epoch} {status}>"
