"""Clocks: the monotonic clock used in production and a virtual clock for tests.

Every timing rule in Synapse reads time through a *clock*: any zero-argument callable returning
monotonic seconds as a float. Production code uses :func:`monotonic_clock` (``time.monotonic``);
tests pass a :class:`VirtualClock` and move time forward explicitly, so a 30 second window is
checked in microseconds and without sleeping.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import TypeAlias

Clock: TypeAlias = Callable[[], float]
"""A zero-argument callable returning monotonic seconds."""

monotonic_clock: Clock = time.monotonic
"""The real monotonic clock (``time.monotonic``)."""


def to_seconds(value: float | timedelta, field: str) -> float:
    """Convert a duration given as seconds or a ``timedelta`` to float seconds.

    Raises ``TypeError`` naming *field* for anything else (``bool`` included).
    """
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(
            f"{field} must be a number of seconds or a datetime.timedelta, "
            f"got {type(value).__name__} {value!r}"
        )
    try:
        return float(value)
    except OverflowError:  # an int beyond any float (10**400)
        # bit_length, not str(): str() of an int this big may itself exceed the digit limit.
        digits = int(abs(int(value)).bit_length() * 0.30103)
        raise ValueError(
            f"{field} is too large to be a number of seconds (about 10**{digits})"
        ) from None


def _finite_time(seconds: float, given: object) -> float:
    if not math.isfinite(seconds):
        raise ValueError(f"a clock's time must be a finite number, got {given!r}")
    return seconds


def check_clock(clock: object) -> Clock:
    """Return *clock* if it is usable as a clock, else raise ``TypeError`` saying why."""
    if not callable(clock):
        raise TypeError(
            "clock must be a zero-argument callable returning monotonic seconds "
            f"(e.g. time.monotonic or synapse_core.VirtualClock()), got {type(clock).__name__}"
        )
    return clock


class VirtualClock:
    """A clock that only moves when told to: deterministic time for tests.

    Call it to read the time; :meth:`advance` moves it forward. Safe to share between threads.

    >>> clock = VirtualClock()
    >>> clock()
    0.0
    >>> clock.advance(10.5)
    10.5
    """

    __slots__ = ("_lock", "_now")

    def __init__(self, start: float | timedelta = 0.0) -> None:
        self._now = _finite_time(to_seconds(start, "start"), start)
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self._now

    @property
    def now(self) -> float:
        """The current virtual time in seconds."""
        return self._now

    def advance(self, seconds: float | timedelta) -> float:
        """Move time forward by *seconds* (>= 0) and return the new time."""
        delta = to_seconds(seconds, "seconds")
        if not 0 <= delta < math.inf:  # also false for NaN
            raise ValueError(
                f"a clock only moves forward by a finite amount: seconds must be >= 0, got {delta}"
            )
        with self._lock:
            # Two finite steps can still add up to infinity, after which every later reading
            # and deadline comparison would be meaningless.
            target = self._now + delta
            if target == math.inf:
                raise ValueError(
                    f"advancing {self._now} by {delta} seconds would make the time {target}: "
                    "a clock's time must stay a finite number"
                )
            self._now = target
            return self._now

    def advance_to(self, when: float | timedelta) -> float:
        """Move time forward to the absolute time *when*; moving backwards raises ``ValueError``.

        *when* is seconds or a ``timedelta``, like the start time (``TypeError`` for anything
        else). It must be finite: NaN or infinity would break every later reading.
        """
        target = _finite_time(to_seconds(when, "when"), when)
        with self._lock:
            if target < self._now:
                raise ValueError(
                    f"a clock only moves forward: cannot go back from {self._now} to {target}"
                )
            self._now = target
            return self._now

    async def sleep(self, seconds: float | timedelta) -> None:
        """Advance by *seconds* without waiting: a drop-in for ``asyncio.sleep`` in tests."""
        self.advance(seconds)

    def __repr__(self) -> str:
        return f"VirtualClock(now={self._now!r})"
