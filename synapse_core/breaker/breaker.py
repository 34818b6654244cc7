"""The circuit breaker state machine, and the permits of its two-step call API.

:class:`CallPermit` lives here because it reports straight into the breaker's state machine.
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
import sys
import threading
import types
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from contextvars import ContextVar, Token
from itertools import count
from typing import Any, Final, ParamSpec, TypeVar, cast, overload

from synapse_core.breaker.config import CircuitBreakerConfig, ExceptionMatcher
from synapse_core.breaker.events import (
    CircuitClosed,
    CircuitEvent,
    CircuitHalfOpened,
    CircuitOpened,
    EventStream,
    ExternalTriggerActivated,
    Listener,
    RequestRejected,
    Unsubscribe,
    dispatch,
)
from synapse_core.breaker.metrics import TransportMetrics
from synapse_core.breaker.observers import notify as _notify
from synapse_core.breaker.observers import observed as _observed
from synapse_core.breaker.registry import announce
from synapse_core.breaker.rule import TripRule
from synapse_core.breaker.state import CircuitState, RequestOutcome
from synapse_core.breaker.stats import CircuitStats
from synapse_core.breaker.store import BreakerStore, StoreLink
from synapse_core.breaker.triggers import CircuitTrigger
from synapse_core.breaker.window import SlidingWindow, count_value
from synapse_core.clock import Clock, check_clock, monotonic_clock
from synapse_core.errors import CircuitOpenError

P = ParamSpec("P")
R = TypeVar("R")

logger = logging.getLogger("synapse_core.breaker")

# The lock-free paths rely on the GIL making itertools.count's next() atomic. On a
# free-threaded build (PEP 703) every count is taken under the breaker's lock instead.
_LOCK_FREE: bool = getattr(sys, "_is_gil_enabled", lambda: True)()

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


# Bound once: `with breaker:` sets and resets the current permit on every block.
_set_permit = current_permit.set
_get_permit = current_permit.get
_reset_permit = current_permit.reset

_CLOSED = CircuitState.CLOSED
_OPEN = CircuitState.OPEN
_HALF_OPEN = CircuitState.HALF_OPEN
_SUCCESS = RequestOutcome.SUCCESS
_FAILURE = RequestOutcome.FAILURE
_TIMEOUT = RequestOutcome.TIMEOUT
_IGNORED: Final = object()  # _classify: the exception matches ignore_exceptions


class CircuitBreaker:
    """A thread-safe, asyncio-safe circuit breaker.

    One breaker guards one dependency and is shared by every thread and task that calls it.
    Guard calls with any of::

        breaker.call(fn, *args, **kwargs)
        await breaker.call_async(fn, *args, **kwargs)
        @breaker                      # sync or async function
        with breaker: ...             # or: async with breaker: ...
        permit = breaker.acquire(); ...; permit.success()   # two-step, for transports

    While open, each call raises a new :class:`~synapse_core.CircuitOpenError` without running.
    The call whose failure trips the breaker raises its own exception. No lock is held while the
    guarded code runs. ``clock`` is any zero-argument callable returning monotonic seconds
    (``time.monotonic`` by default; pass a :class:`~synapse_core.VirtualClock` in tests).
    ``store`` shares the breaker with the other replicas of a service that use the same store
    and name (``synapse_core.breaker.shared.SharedBreakerStore``; docs/shared-breakers.md).
    """

    __slots__ = (
        "__weakref__",
        "_clock",
        "_consecutive_opens",
        "_delivering",
        "_due",
        "_epoch",
        "_failure_exceptions",
        "_failures",
        "_fast_epoch",
        "_forced",
        "_half_open_admitted",
        "_half_open_failures",
        "_half_open_since",
        "_half_open_success_total",
        "_half_open_successes",
        "_ignore_exceptions",
        "_ignored",
        "_last_failure",
        "_last_failure_time",
        "_last_state_change",
        "_listeners",
        "_lock",
        "_open_until",
        "_pending",
        "_plain",
        "_probes_high",
        "_rejections",
        "_replica",
        "_result_check",
        "_rule",
        "_shared",
        "_slow_after",
        "_state",
        "_timeouts",
        "_transitions",
        "_triggers",
        "_tripped_by",
        "_window",
        "config",
        "name",
    )

    def __init__(
        self,
        name: str,
        config: CircuitBreakerConfig | None = None,
        *,
        clock: Clock | None = None,
        store: BreakerStore | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError(f"name must be a non-empty str, got {name!r}")
        if config is None:
            config = CircuitBreakerConfig()
        elif not isinstance(config, CircuitBreakerConfig):
            raise TypeError(
                f"config must be a CircuitBreakerConfig, got {type(config).__name__}; "
                "build one with CircuitBreakerConfig(failure_threshold=..., ...)"
            )
        self.name = name
        self.config = config
        self._clock: Clock = monotonic_clock if clock is None else check_clock(clock)
        self._lock = threading.Lock()
        self._listeners: tuple[Listener, ...] = ()
        # Events wait here (appended under the lock, so in the order things happened) until
        # one thread at a time delivers them: listeners never see them out of order.
        self._pending: deque[CircuitEvent] = deque()
        self._delivering = False
        self._triggers: tuple[CircuitTrigger, ...] = ()
        self._failure_exceptions: tuple[ExceptionMatcher, ...] = config.failure_exceptions
        self._ignore_exceptions: tuple[ExceptionMatcher, ...] = config.ignore_exceptions
        self._result_check = config.is_failure_result
        self._slow_after = config.slow_call_duration
        self._window = SlidingWindow(config.failure_window)
        self._rule = TripRule(config)
        # Neither slow-call timing nor result inspection: successes take the lock-free path.
        self._plain = self._slow_after is None and self._result_check is None and _LOCK_FREE
        # (from, to) -> how many times; only transitions touch it, and reset() keeps it.
        self._transitions: dict[tuple[CircuitState, CircuitState], int] = {}
        self._reset_counters(self._clock())
        # A store shares this breaker with the other replicas of a service: the seam is the
        # few calls on self._shared below, all off the closed-state hot paths.
        self._shared: StoreLink | None = None
        self._replica: str | None = None
        if store is not None:
            if not callable(getattr(store, "attach", None)):
                raise TypeError(
                    "store must be a SharedBreakerStore (synapse_core.breaker.shared), got "
                    f"{type(store).__name__} {store!r}; make one per process with "
                    "SharedBreakerStore('redis://host:6379/0') and pass it to every breaker"
                )
            self._shared = store.attach(self)
            self._replica = self._shared.replica
            self._rule = self._shared.rule
        announce(self)
        if self._shared is not None:
            self._shared.start()

    def _reset_counters(self, now: float) -> None:
        self._state = _CLOSED
        self._epoch = 0
        # The epoch when calls may take the lock-free path (closed, untimed), else -1.
        self._fast_epoch = 0 if self._plain else -1
        self._forced = False
        # When ageing alone will trip the closed breaker: (bucket index, outcomes, failures,
        # slow calls) of the window then, or None. See TripRule.assess.
        self._due: tuple[float, int, int, int] | None = None
        self._tripped_by: tuple[CircuitTrigger, ...] = ()
        self._open_until = 0.0
        self._consecutive_opens = 0
        self._half_open_admitted = self._half_open_successes = self._half_open_failures = 0
        self._half_open_since = 0.0
        # Successes and rejections are counted lock-free (itertools.count advances atomically).
        self._half_open_success_total = 0
        self._probes_high = 0
        self._rejections: count[int] = count()
        self._failures = self._timeouts = self._ignored = 0
        self._last_failure: BaseException | None = None
        self._last_failure_time: float | None = None
        self._last_state_change = now
        self._window.clear(forget=True)

    # ----------------------------------------------------------------- reads (no side effects)

    @property
    def clock(self) -> Clock:
        """The clock its times are on (``timestamp`` of its events, ``retry_at``...)."""
        return self._clock

    @property
    def state(self) -> CircuitState:
        """The current state. A pure read: open -> half-open happens on the next admission."""
        return self._state

    @property
    def retry_after(self) -> float | None:
        """Seconds until the next call would be admitted, if nothing else happens. A pure read.

        ``0.0`` when a call made now would be admitted (``would_admit()``), ``math.inf`` while
        forced open, and ``None`` when no amount of waiting will do by itself: probes in flight
        must report first, or an external trigger must recover (``stats().waiting_for`` says
        which). Probe reports and trigger metrics can make the wait shorter.
        """
        with self._lock:
            return self._retry_after(self._clock())

    def _ahead(self, now: float) -> tuple[CircuitState, float]:
        """The state a call made at *now* would find, with its ``open_until``.

        Time-driven changes (ageing out of the window, the half-open deadline) are applied at
        the next call, dated when they happened; this computes their effect without applying it.
        """
        state = self._state
        config = self.config
        if state is _CLOSED:
            due = self._due
            if due is not None and now // self._window.width >= due[0]:
                return _OPEN, min(due[0] * self._window.width, now) + config.open_duration(0)
        elif state is _HALF_OPEN:
            wait = config.max_half_open_wait
            if wait is not None and now - self._half_open_since >= wait:
                reopen = self._half_open_since + wait
                return _OPEN, reopen + config.open_duration(self._consecutive_opens + 1)
        return state, self._open_until

    def _retry_after(self, now: float) -> float | None:
        state, open_until = self._ahead(now)
        if state is _CLOSED:
            return 0.0
        if state is _OPEN:
            if self._forced:
                return math.inf
            if now < open_until:
                return open_until - now
            return None if self._holding() else 0.0
        config = self.config
        if self._half_open_admitted < config.half_open_max_calls:
            return 0.0
        wait = config.max_half_open_wait
        if wait is None:
            return None  # only a probe's report can free a slot or end the episode
        # Unless a probe reports, the episode ends at the deadline and re-opens from then.
        reopen = self._half_open_since + wait
        return reopen + config.open_duration(self._consecutive_opens + 1) - now

    def _waiting_for(self, now: float, retry_after: float | None) -> str | None:
        if retry_after == math.inf:
            return "force_close() or reset(): it was forced open"
        if retry_after is not None:
            return None
        if self._ahead(now)[0] is _OPEN:
            names = ", ".join(repr(t.description) for t in self._holding())
            return f"external trigger {names} to recover"
        in_flight = self._half_open_admitted - self._half_open_successes - self._half_open_failures
        return f"{in_flight} half-open probe(s) in flight to report"

    def _holding(self) -> tuple[CircuitTrigger, ...]:
        """The triggers that opened the breaker and have not recovered yet."""
        held = []
        for trigger in self._tripped_by:
            try:
                if not trigger.should_recover(_HALF_OPEN):
                    held.append(trigger)
            except Exception:
                logger.exception("trigger %r failed in should_recover", trigger)
                held.append(trigger)
        return tuple(held)

    @property
    def held_by(self) -> tuple[CircuitTrigger, ...]:
        """External triggers that opened this (open) breaker and have not recovered yet.

        While this is not empty, the breaker admits no probe even after its recovery timeout
        (``retry_after`` is then ``None``): feed the triggers metrics until they recover.
        Empty unless a call made now would find the breaker open. A pure read.
        """
        with self._lock:
            if self._ahead(self._clock())[0] is not _OPEN:
                return ()
            return self._holding()

    def stats(self) -> CircuitStats:
        """A consistent snapshot of the counters. A pure read."""
        with self._lock:
            now = self._clock()
            total, failures, slow = self._window.counts_at(now)
            retry_after = self._retry_after(now)
            return CircuitStats(
                name=self.name,
                state=self._state,
                failure_count=self._failures,
                success_count=self._window.lifetime_successes + self._half_open_success_total,
                total_requests=(
                    self._window.lifetime_successes + self._half_open_success_total + self._failures
                ),
                last_failure_time=self._last_failure_time,
                last_state_change=self._last_state_change,
                time_in_current_state=max(0.0, now - self._last_state_change),
                rejection_count=count_value(self._rejections),
                timeout_count=self._timeouts,
                ignored_count=self._ignored,
                window_requests=total,
                window_failures=failures,
                window_failure_rate=failures / total if total else 0.0,
                window_slow_calls=slow,
                half_open_calls_in_flight=(
                    self._half_open_admitted - self._half_open_successes - self._half_open_failures
                    if self._state is _HALF_OPEN
                    else 0
                ),
                max_half_open_in_flight=self._probes_high,
                consecutive_opens=self._consecutive_opens,
                retry_after=retry_after,
                forced=self._forced,
                waiting_for=self._waiting_for(now, retry_after),
                fleet=None if self._shared is None else self._shared.stats(now),
            )

    def transition_counts(self) -> dict[tuple[CircuitState, CircuitState], int]:
        """How often it went from one state to another, by ``(from, to)``. A pure read.

        Counted since the breaker was created; ``reset()`` does not clear it (a reset from open
        or half-open counts as a transition to closed). What ``synapse_core.metrics`` exports
        as ``synapse_circuit_breaker_transitions_total``.
        """
        with self._lock:
            return dict(self._transitions)

    @property
    def last_failure(self) -> BaseException | None:
        """The last exception recorded as a failure, or ``None``."""
        return self._last_failure

    def would_admit(self) -> bool:
        """Whether a call made now would be admitted. A pure read: nothing is counted.

        The same as ``retry_after == 0.0``.
        """
        with self._lock:
            return self._retry_after(self._clock()) == 0.0

    # ------------------------------------------------------------------------ call forms

    def call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run ``fn(*args, **kwargs)`` through the breaker and return its result."""
        # The hottest path, kept to a handful of attribute reads; see docs/ARCHITECTURE.md.
        epoch = self._fast_epoch
        if epoch < 0:
            epoch = self._epoch
            state = self._state
            if state is _OPEN:
                now = self._clock()
                if now < self._open_until:
                    raise self._rejection(now)
            if state is not _CLOSED or self._due is not None:
                epoch = self._admit()  # raises CircuitOpenError when rejected
            return self._call_general(epoch, fn, *args, **kwargs)
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            self._record_exception(epoch, exc, None)
            raise
        if type(result) is _COROUTINE:
            raise _not_for_call(result)  # closed: no probe slot to give back
        end, counter, tag = self._window.current
        if tag == epoch and self._clock() < end:
            next(counter)
        else:
            self._record_success(epoch, None)
        return result

    def _call_general(
        self, epoch: int, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs
    ) -> R:
        """``call`` after admission when not closed, or when timed or inspecting results."""
        start = self._clock() if self._slow_after is not None else None
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            self._record_exception(epoch, exc, None if start is None else self._clock() - start)
            raise
        if type(result) is _COROUTINE:
            self._release(epoch)
            raise _not_for_call(result)
        self._record_result(epoch, result, None if start is None else self._clock() - start)
        return result

    async def call_async(
        self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> R:
        """Await ``fn(*args, **kwargs)`` through the breaker and return its result."""
        epoch = self._fast_epoch
        if epoch < 0:
            epoch = self._epoch
            state = self._state
            if state is _OPEN:
                now = self._clock()
                if now < self._open_until:
                    raise self._rejection(now)
            if state is not _CLOSED or self._due is not None:
                epoch = self._admit()
            start = self._clock() if self._slow_after is not None else None
            try:
                pending = fn(*args, **kwargs)
                if type(pending) is not _COROUTINE and not inspect.isawaitable(pending):
                    raise _not_awaitable(pending)
                result = await pending
            except _NotAwaitable:
                self._release(epoch)  # a misuse, not the dependency's doing: no verdict
                raise
            except BaseException as exc:
                duration = None if start is None else self._clock() - start
                self._record_exception(epoch, exc, duration)
                raise
            self._record_result(epoch, result, None if start is None else self._clock() - start)
            return result
        try:
            pending = fn(*args, **kwargs)
            if type(pending) is not _COROUTINE and not inspect.isawaitable(pending):
                raise _not_awaitable(pending)
            result = await pending
        except _NotAwaitable:
            raise  # closed: no probe slot to give back, and no verdict on the dependency
        except BaseException as exc:
            self._record_exception(epoch, exc, None)
            raise
        end, counter, tag = self._window.current
        if tag == epoch and self._clock() < end:
            next(counter)
        else:
            self._record_success(epoch, None)
        return result

    @overload
    def __call__(self, fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]: ...
    @overload
    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]: ...

    def __call__(self, fn: Callable[P, Any]) -> Callable[P, Any]:
        """Decorate a sync or async function so every call goes through the breaker.

        The wrapper keeps ``__wrapped__``, the signature, and the sync/async nature of *fn*.
        """
        if not callable(fn):
            raise TypeError(f"@{type(self).__name__} decorates a function, got {fn!r}")
        call, call_async = self.call, self.call_async
        is_async = inspect.iscoroutinefunction(fn)
        if type(self) is not CircuitBreaker:
            # A subclass may override call()/call_async(): go through them.
            if is_async:

                @functools.wraps(fn)
                async def delegating_async(*args: P.args, **kwargs: P.kwargs) -> Any:
                    return await call_async(fn, *args, **kwargs)

                return delegating_async

            @functools.wraps(fn)
            def delegating(*args: P.args, **kwargs: P.kwargs) -> Any:
                return call(fn, *args, **kwargs)

            return delegating

        # The same lock-free fast path as call(), inlined: a decorated function is usually
        # the hottest call site, and one less Python frame per call is measurable.
        breaker, window, clock = self, self._window, self._clock
        record_exception, record_success = self._record_exception, self._record_success
        if is_async:

            @functools.wraps(fn)
            async def guarded_async(*args: P.args, **kwargs: P.kwargs) -> Any:
                epoch = breaker._fast_epoch
                if epoch < 0:
                    return await call_async(fn, *args, **kwargs)
                try:
                    result = await fn(*args, **kwargs)
                except BaseException as exc:
                    record_exception(epoch, exc, None)
                    raise
                end, counter, tag = window.current
                if tag == epoch and clock() < end:
                    next(counter)
                else:
                    record_success(epoch, None)
                return result

            return guarded_async

        @functools.wraps(fn)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> Any:
            epoch = breaker._fast_epoch
            if epoch < 0:
                return call(fn, *args, **kwargs)
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                record_exception(epoch, exc, None)
                raise
            if type(result) is _COROUTINE:
                raise _not_for_call(result)  # as call() does in every state
            end, counter, tag = window.current
            if tag == epoch and clock() < end:
                next(counter)
            else:
                record_success(epoch, None)
            return result

        return guarded

    def acquire(self) -> CallPermit:
        """Ask to make one call; returns a :class:`CallPermit` or raises ``CircuitOpenError``."""
        epoch = self._epoch
        if self._state is not _CLOSED or self._due is not None:
            epoch = self._admit()
        return CallPermit(self, epoch, self._clock())

    def try_acquire(self) -> CallPermit | None:
        """Like :meth:`acquire`, but returns ``None`` instead of raising when rejected."""
        try:
            return self.acquire()
        except CircuitOpenError:
            return None

    def __enter__(self) -> CallPermit:
        epoch = self._fast_epoch
        if epoch < 0:
            epoch = self._epoch
            if self._state is not _CLOSED or self._due is not None:
                epoch = self._admit()
            # The block's start time only matters to slow-call detection: skip the clock else.
            started = self._clock() if self._slow_after is not None else 0.0
            permit = CallPermit(self, epoch, started)
        else:
            permit = CallPermit(self, epoch, 0.0)
        permit._token = _set_permit(permit)
        return permit

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        permit = _get_permit()
        if permit is None or permit._breaker is not self:
            raise RuntimeError(f"__exit__ of breaker {self.name!r} without a matching __enter__")
        token = permit._token
        if token is not None:
            _reset_permit(token)
            permit._token = None
        if permit._done:
            return  # reported by hand inside the block
        permit._done = True
        if self._slow_after is None:
            if exc is None:
                self._record_success(permit.epoch, None)  # lock-free when closed
            else:
                self._record_exception(permit.epoch, exc, None)
            return
        duration = self._clock() - permit.started_at
        if exc is None:
            self._record_success(permit.epoch, duration)
        else:
            self._record_exception(permit.epoch, exc, duration)

    async def __aenter__(self) -> CallPermit:
        return self.__enter__()

    async def __aexit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        self.__exit__(exc_type, exc, tb)

    # ------------------------------------------------------------------------ admission

    def _admit(self) -> int:
        """Admission for a breaker that was not closed, or had ageing due, at the first check."""
        now = self._clock()
        state = self._state
        if state is _OPEN:
            if now < self._open_until:
                raise self._rejection(now)
        elif state is _CLOSED:
            epoch = self._epoch
            due = self._due
            if due is None or now // self._window.width < due[0]:
                return epoch
        return self._admit_locked()

    def _rejection(self, now: float) -> CircuitOpenError:
        """Count a plain rejection (open, no probe due) and build its error; takes no lock.

        Returned rather than raised, so the caller raises it from its own frame: one frame
        less to unwind on the path every rejected caller takes.
        """
        if _LOCK_FREE:
            next(self._rejections)
        else:
            with self._lock:
                next(self._rejections)
        retry_after = math.inf if self._forced else self._open_until - now
        if self._listeners:
            with self._lock:
                self._pending.append(RequestRejected(self.name, now, _OPEN, retry_after))
            self._deliver()
        return CircuitOpenError(self.name, _OPEN, retry_after, self._last_failure)

    def _admit_locked(self) -> int:
        if self._shared is not None:
            shared = self._shared.admit()  # the fleet's probe grant; None: local rules decide
            if shared is not None:
                return shared
        admitted: int | None = None
        error: CircuitOpenError | None = None
        with self._lock:
            now = self._clock()
            self._catch_up(now, admitting=True)
            state = self._state
            if state is _CLOSED:
                admitted = self._epoch
            elif state is _OPEN:
                if not self._forced and now >= self._open_until and not self._holding():
                    self._to_half_open(now)
                    self._half_open_admitted = 1
                    self._probes_high = max(self._probes_high, 1)
                    admitted = self._epoch
            elif self._half_open_admitted < self.config.half_open_max_calls:
                self._half_open_admitted += 1
                self._probes_high = max(self._probes_high, self._half_open_admitted)
                admitted = self._epoch
            if admitted is None:
                error = self._reject_locked(now)
        if self._pending:
            self._deliver()
        if error is not None:
            raise error
        return admitted  # type: ignore[return-value]

    def _reject_locked(self, now: float) -> CircuitOpenError:
        """Count a rejection decided under the lock and build its error (lock held)."""
        next(self._rejections)
        state = self._state
        retry_after = self._retry_after(now)
        if self._listeners:
            self._pending.append(RequestRejected(self.name, now, state, retry_after))
        return CircuitOpenError(self.name, state, retry_after, self._last_failure)

    def _catch_up(self, now: float, *, admitting: bool) -> None:
        """Apply the time-driven changes due by *now*, dated when they happened (lock held).

        Ageing out of the window is applied before anything else is recorded; the half-open
        deadline only at an admission attempt (a probe that reports before it still counts).
        """
        state = self._state
        if state is _CLOSED:
            due = self._due
            if due is not None and now // self._window.width >= due[0]:
                index, outcomes, failures, slow = due
                reason = self._rule.reason(outcomes, failures, slow)
                self._to_open(
                    min(index * self._window.width, now),
                    f"{reason} (as older calls left the window)",
                    failures,
                )
        elif admitting and state is _HALF_OPEN:
            wait = self.config.max_half_open_wait
            if wait is not None and now - self._half_open_since >= wait:
                self._to_open(
                    self._half_open_since + wait,
                    f"half-open probes gave no verdict within max_half_open_wait={wait:g}s",
                    self._half_open_failures,
                )

    # ------------------------------------------------------------------------ outcomes

    def _record_result(self, epoch: int, result: object, duration: float | None) -> None:
        check = self._result_check
        if check is not None:
            try:
                failed = check(result)
            except Exception:
                # As for exception predicates (_matches): a broken predicate is logged and the
                # value is not a failure. Raising here would lose the caller's result and leave
                # a half-open probe in flight forever.
                logger.exception("is_failure_result %r failed on %r", check, result)
                failed = False
            except BaseException:
                self._release(epoch)  # interrupted while judging: free the slot, no verdict
                raise
            if failed:
                self._record_failure(epoch, None, _FAILURE, duration)
                return
        self._record_success(epoch, duration)

    def _record_exception(self, epoch: int, exc: BaseException, duration: float | None) -> None:
        try:
            outcome = self._classify(exc)
        except BaseException:
            self._release(epoch)  # interrupted inside a predicate: free the slot, no verdict
            raise
        if outcome is None:
            self._release(epoch)
        elif outcome is _IGNORED:
            self._release(epoch, ignored=True)
        elif outcome is _SUCCESS:
            self._record_success(epoch, duration)
        else:
            self._record_failure(epoch, exc, cast(RequestOutcome, outcome), duration)

    def _classify(self, exc: BaseException) -> RequestOutcome | object | None:
        """``_IGNORED`` (matches ignore_exceptions), ``None`` (no verdict) or an outcome."""
        if not isinstance(exc, Exception):
            # CancelledError, KeyboardInterrupt, SystemExit, GeneratorExit, a BaseException of
            # the user's: the call was stopped, the dependency did not answer. Neither success
            # nor failure, unless its class is listed (predicates are not asked: they expect
            # the dependency's errors, not a cancellation).
            if _lists(self._ignore_exceptions, exc):
                return _IGNORED
            if _lists(self._failure_exceptions, exc):
                return _FAILURE
            return None
        if self._ignore_exceptions and _matches(self._ignore_exceptions, exc):
            return _IGNORED
        if _matches(self._failure_exceptions, exc):
            return _TIMEOUT if isinstance(exc, TimeoutError) else _FAILURE
        return _SUCCESS

    def _record_success(self, epoch: int, duration: float | None) -> None:
        if duration is None and _LOCK_FREE:
            # Lock-free fast path. The current bucket carries the epoch only while a success
            # cannot change the verdict (see _assess), and a transition bumps the epoch before
            # it replaces the window, so a success that passes the check lands in its own
            # epoch's window or in a discarded one, never a later one.
            end, counter, tag = self._window.current
            if tag == epoch and self._clock() < end:
                next(counter)
                return
        slow = (
            duration is not None and self._slow_after is not None and (duration >= self._slow_after)
        )
        now = self._clock()
        with self._lock:
            if self._due is not None:
                self._catch_up(now, admitting=False)
            if epoch != self._epoch:
                self._ignored += 1  # admitted in an earlier state: says nothing about this one
            elif self._state is _CLOSED:
                self._window.add(now, False, slow)
                if self._shared is not None:
                    self._shared.recorded(False, slow)
                self._assess(now)
            elif self._state is _HALF_OPEN:
                self._half_open_success_total += 1
                shared = self._shared
                if shared is None or not shared.probe_done("slow" if slow else "success"):
                    if slow:
                        self._probe_failed(now, "slow probe call")
                    else:
                        self._probe_succeeded(now)
        if self._pending:
            self._deliver()

    def _record_failure(
        self, epoch: int, exc: BaseException | None, outcome: RequestOutcome, duration: float | None
    ) -> None:
        slow = (
            duration is not None and self._slow_after is not None and (duration >= self._slow_after)
        )
        now = self._clock()
        with self._lock:
            if self._due is not None:
                self._catch_up(now, admitting=False)
            if epoch != self._epoch:
                self._ignored += 1  # admitted in an earlier state: says nothing about this one
            else:
                self._failures += 1
                if outcome is _TIMEOUT:
                    self._timeouts += 1
                self._last_failure = exc
                self._last_failure_time = now
                if self._state is _CLOSED:
                    self._window.add(now, True, slow)
                    if self._shared is not None:
                        self._shared.recorded(True, slow)
                    self._assess(now)
                elif self._state is _HALF_OPEN and (
                    self._shared is None or not self._shared.probe_done(outcome.value)
                ):
                    self._probe_failed(now, f"probe call failed ({outcome.value})")
        if self._pending:
            self._deliver()

    def _release(self, epoch: int, ignored: bool = False) -> None:
        with self._lock:
            if ignored:
                self._ignored += 1
            if (
                epoch == self._epoch
                and self._state is _HALF_OPEN
                and (self._shared is None or not self._shared.probe_done("release"))
            ):
                self._half_open_admitted -= 1

    def _assess(self, now: float) -> None:
        """The window changed: trip now, or note when ageing will trip it (lock held).

        Successes stay lock-free only while one more success cannot change that verdict;
        admissions stay lock-free only while ageing cannot trip the breaker.
        """
        window = self._window
        reason, due, armed = self._rule.assess(window)
        if reason is not None:
            self._to_open(now, reason, window.failures)
            return
        self._due = due
        if due is None:
            self._fast_epoch = self._epoch if self._plain else -1
            window.allow_lock_free(-1 if armed else self._epoch)
        else:
            self._fast_epoch = -1
            window.allow_lock_free(-1)

    def _probe_succeeded(self, now: float) -> None:
        self._half_open_successes += 1
        if self._half_open_successes >= self.config.half_open_success_target:
            self._to_closed(now, f"{self._half_open_successes} probe calls succeeded")

    def _probe_failed(self, now: float, why: str) -> None:
        self._half_open_failures += 1
        config = self.config
        allowed = config.half_open_max_calls - config.half_open_success_target
        if self._half_open_failures > allowed:
            self._to_open(now, f"half-open: {why}", self._half_open_failures)

    # ------------------------------------------------------------------------ transitions
    # Called with the lock held. Each one starts a new epoch so late outcomes are ignored.

    def _to_open(
        self,
        now: float,
        reason: str,
        failure_count: int,
        *,
        forced: bool = False,
        open_until: float | None = None,
        replica: str | None = None,
    ) -> None:
        previous = self._state
        if previous is _HALF_OPEN:
            self._consecutive_opens += 1
        elif previous is _CLOSED:
            self._consecutive_opens = 0
        self._forced = forced
        if open_until is None:
            open_until = (
                math.inf if forced else now + self.config.open_duration(self._consecutive_opens)
            )
        self._open_until = open_until
        self._state = _OPEN
        self._epoch += 1
        self._fast_epoch = -1
        self._due = None
        self._last_state_change = now
        self._window.clear()
        self._count_transition(previous, _OPEN)
        if self._listeners or _observed():
            self._pending.append(
                CircuitOpened(
                    self.name,
                    now,
                    reason,
                    failure_count,
                    previous,
                    open_until,
                    replica or self._replica,
                )
            )

    def _to_half_open(self, now: float, replica: str | None = None) -> None:
        self._state = _HALF_OPEN
        self._epoch += 1
        self._fast_epoch = -1
        self._last_state_change = now
        self._half_open_since = now
        self._half_open_admitted = self._half_open_successes = self._half_open_failures = 0
        self._count_transition(_OPEN, _HALF_OPEN)
        if self._listeners or _observed():
            self._pending.append(CircuitHalfOpened(self.name, now, replica or self._replica))

    def _to_closed(self, now: float, reason: str, replica: str | None = None) -> None:
        previous = self._state
        self._state = _CLOSED
        self._epoch += 1
        self._fast_epoch = self._epoch if self._plain else -1
        self._due = None
        self._last_state_change = now
        self._forced = False
        self._tripped_by = ()
        self._consecutive_opens = 0
        self._window.clear()  # rule: a call right after recovery never re-trips on old failures
        self._count_transition(previous, _CLOSED)
        if self._listeners or _observed():
            self._pending.append(
                CircuitClosed(self.name, now, previous, reason, replica or self._replica)
            )

    def _count_transition(self, source: CircuitState, target: CircuitState) -> None:
        key = (source, target)
        self._transitions[key] = self._transitions.get(key, 0) + 1

    def _deliver(self) -> None:
        """Hand queued events to the listeners, in order, outside the lock.

        Only one thread delivers at a time; others leave their events to it. A listener that
        triggers more events (or raises) cannot reorder or lose them.
        """
        while True:
            with self._lock:
                if self._delivering or not self._pending:
                    return
                self._delivering = True
                batch = list(self._pending)
                self._pending.clear()
            try:
                listeners = self._listeners
                for event in batch:
                    dispatch(listeners, event)
                    _notify(self, event)
            finally:
                with self._lock:
                    self._delivering = False

    # ------------------------------------------------------------------------ control

    def force_open(self, reason: str = "forced open") -> None:
        """Open now and stay open (no probes) until :meth:`force_close` or :meth:`reset`."""
        with self._lock:
            now = self._clock()
            self._catch_up(now, admitting=False)
            if self._state is _OPEN:
                self._forced = True
                self._open_until = math.inf
            else:
                self._to_open(now, reason, self._window.failures, forced=True)
        self._deliver()
        if self._shared is not None:
            self._shared.command("force_open", reason)

    def force_close(self) -> None:
        """Close now, forgetting the window; the breaker then trips again on new failures."""
        with self._lock:
            now = self._clock()
            self._catch_up(now, admitting=False)
            if self._state is _CLOSED:
                self._window.clear()
                self._due = None
                self._fast_epoch = self._epoch if self._plain else -1
            else:
                self._to_closed(now, "forced closed")
        self._deliver()
        if self._shared is not None:
            self._shared.command("force_close", "forced closed")

    def reset(self) -> None:
        """Back to a new breaker's state: closed, every counter and the window cleared."""
        with self._lock:
            now = self._clock()
            self._catch_up(now, admitting=False)
            previous = self._state
            epoch = self._epoch
            self._reset_counters(now)
            self._epoch = epoch + 1
            self._fast_epoch = self._epoch if self._plain else -1
            if previous is not _CLOSED:
                self._count_transition(previous, _CLOSED)
                if self._listeners or _observed():
                    self._pending.append(
                        CircuitClosed(self.name, now, previous, "reset", self._replica)
                    )
        self._deliver()
        if self._shared is not None:
            self._shared.command("reset", "reset")

    # ------------------------------------------------------------------------ triggers

    def add_trigger(self, trigger: CircuitTrigger) -> None:
        """Add an external trigger; takes effect at the next ``check_external_triggers``."""
        if not isinstance(trigger, CircuitTrigger):
            raise TypeError(
                "a trigger needs should_trip(metrics, state), should_recover(state) and "
                f"description; got {trigger!r}"
            )
        with self._lock:
            self._triggers = (*self._triggers, trigger)

    def remove_trigger(self, trigger: CircuitTrigger) -> None:
        """Remove a trigger added with :meth:`add_trigger` (no error if absent).

        If it opened the breaker, recovery no longer waits for it: it gets no more samples, so
        it could never say it recovered.
        """
        with self._lock:
            self._triggers = tuple(t for t in self._triggers if t is not trigger)
            self._tripped_by = tuple(t for t in self._tripped_by if t is not trigger)

    @property
    def triggers(self) -> tuple[CircuitTrigger, ...]:
        """The external triggers, in the order they were added."""
        return self._triggers

    def check_external_triggers(self, metrics: TransportMetrics) -> bool:
        """Ask every trigger about *metrics*; open a closed breaker if one says so.

        Returns whether this call opened the breaker. Every trigger sees every sample (so
        moving averages stay current) in every state, but only a CLOSED breaker trips on them:
        while half-open the probes decide, and an open breaker that a trigger opened waits for
        that trigger's ``should_recover`` before probing.
        """
        state = self._state
        fired: list[CircuitTrigger] = []
        for trigger in self._triggers:
            try:
                if trigger.should_trip(metrics, state):
                    fired.append(trigger)
            except Exception:
                logger.exception("trigger %r failed in should_trip", trigger)
        if not fired:
            return False
        with self._lock:
            now = self._clock()
            self._catch_up(now, admitting=False)
            opened = self._state is _CLOSED
            reason = "external trigger: " + ", ".join(t.description for t in fired)
            if opened:
                if self._listeners:
                    for trigger in fired:
                        self._pending.append(
                            ExternalTriggerActivated(self.name, now, trigger.description)
                        )
                self._to_open(now, reason, self._window.failures)
                self._tripped_by = tuple(fired)
        self._deliver()
        if opened and self._shared is not None:
            self._shared.command("trip", reason)
        return opened

    # ------------------------------------------------------------------------ events

    def subscribe(self, listener: Listener) -> Unsubscribe:
        """Call ``listener(event)`` for every event; returns a handle that unsubscribes.

        Listeners run synchronously after the breaker's lock is released (so a listener may use
        the breaker), in the order the events happened: in the thread that caused the event, or
        in a thread already delivering earlier ones. A listener that raises is logged.
        """
        if not callable(listener):
            raise TypeError(f"listener must be callable, got {listener!r}")

        def remove() -> None:
            with self._lock:
                items = list(self._listeners)
                if listener in items:
                    items.remove(listener)
                self._listeners = tuple(items)

        with self._lock:
            self._listeners = (*self._listeners, listener)
        return Unsubscribe(remove)

    def events(self, maxsize: int = 1024) -> EventStream:
        """An async iterator over events from now on, with a bounded buffer (see EventStream).

        Must be called with an event loop running.
        """
        return EventStream(maxsize, self.subscribe)

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self.name!r} state={self._state.value}>"


def _lists(matchers: tuple[ExceptionMatcher, ...], exc: BaseException) -> bool:
    """Whether one of the exception classes among *matchers* matches (predicates not asked)."""
    return any(isinstance(m, type) and isinstance(exc, m) for m in matchers)


def _matches(matchers: tuple[ExceptionMatcher, ...], exc: BaseException) -> bool:
    for matcher in matchers:
        if isinstance(matcher, type):
            if isinstance(exc, matcher):
                return True
        else:
            try:
                if matcher(exc):
                    return True
            except Exception:
                logger.exception("exception predicate %r failed on %r", matcher, exc)
    return False


_COROUTINE: Final = types.CoroutineType


class _NotAwaitable(TypeError):
    """``call_async`` was given a function whose result cannot be awaited."""


def _not_for_call(coro: object) -> TypeError:
    if isinstance(coro, Coroutine):
        coro.close()  # never awaited: close it rather than leave a "never awaited" warning behind
    return TypeError(
        "breaker.call() got a coroutine function: nothing was awaited, so no outcome can be "
        "recorded; use `await breaker.call_async(fn, ...)` or decorate it with @breaker"
    )


def _not_awaitable(value: object) -> _NotAwaitable:
    return _NotAwaitable(
        "breaker.call_async() needs a function that returns an awaitable, got "
        f"{type(value).__name__}; use breaker.call(fn, ...) for plain functions"
    )
