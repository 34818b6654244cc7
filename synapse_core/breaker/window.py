"""The sliding time window of call outcomes that decides when a closed breaker trips."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from itertools import count

WINDOW_BUCKETS = 100
"""The window is kept as this many time buckets: it is exact to 1% of ``failure_window``."""


def count_value(counter: count[int]) -> int:
    """How many times an ``itertools.count()`` started at 0 has been advanced."""
    # itertools.count is the one counter CPython advances atomically without a Python-level
    # lock; its repr is the only stable way to read it ("count(5)").
    return int(repr(counter)[6:-1])


class _Bucket:
    __slots__ = ("closed", "failures", "index", "slow", "successes")

    def __init__(self, index: float) -> None:
        self.index = index
        self.successes: count[int] = count()
        self.closed = -1  # successes, fixed when the bucket stops being the current one
        self.failures = 0
        self.slow = 0

    def live_successes(self) -> int:
        return count_value(self.successes)


class SlidingWindow:
    """Counts outcomes, failures and slow calls over the last ``length`` seconds.

    Outcomes are aggregated into ``WINDOW_BUCKETS`` buckets of ``length / WINDOW_BUCKETS``
    seconds each, aligned on the clock (bucket ``k`` covers ``[k*width, (k+1)*width)``). An
    outcome counts while its bucket is one of the newest ``WINDOW_BUCKETS`` buckets, so it leaves
    the window between ``length - width`` and ``length`` seconds after it was recorded. Memory is
    bounded by the bucket count whatever the call rate.

    Successes in the current bucket are counted lock-free: a caller reads :attr:`current`
    (``(bucket end time, counter, tag)``) and, if *now* is before the end and the tag is the one
    it expects, advances the counter with ``next()``, which CPython does atomically. The tag is
    whatever the owner last set with :meth:`allow_lock_free` (the breaker sets its epoch while
    a success cannot change its verdict, -1 otherwise), and -1 in a new bucket until then.
    Everything else runs under the breaker's lock.
    :attr:`lifetime_successes` and :meth:`counts_at` read every counter live and are exact;
    :attr:`total`, used for trip decisions, fixes a bucket's successes when the bucket stops
    being current, so a success racing that roll is missed there (not in the other figures).
    """

    __slots__ = (
        "_buckets",
        "_closed_successes",
        "_lifetime_closed",
        "current",
        "failures",
        "generation",
        "slow",
        "width",
    )

    def __init__(self, length: float) -> None:
        self.width = length / WINDOW_BUCKETS
        self._buckets: deque[_Bucket] = deque()
        self.current: tuple[float, count[int], int] = (-math.inf, count(), -1)
        self._closed_successes = 0
        self._lifetime_closed = 0
        self.failures = 0
        self.slow = 0
        # Bumped whenever the closed (older) buckets change: a cache key for suffixes().
        self.generation = 0

    def add(self, now: float, failed: bool, slow: bool) -> None:
        """Record one outcome at time *now* (caller holds the breaker's lock).

        A new bucket starts with the lock-free path closed (see :meth:`allow_lock_free`).
        """
        index = now // self.width
        if not self._buckets or self._buckets[-1].index != index:
            self._roll(index)
        bucket = self._buckets[-1]
        if failed:
            bucket.failures += 1
            self.failures += 1
        else:
            next(bucket.successes)
        if slow:
            bucket.slow += 1
            self.slow += 1

    @classmethod
    def restore(
        cls, length: float, buckets: Iterable[tuple[float, int, int, int]]
    ) -> SlidingWindow:
        """A window holding *buckets*, ``(index, successes, failures, slow)`` oldest first.

        How a shared breaker judges the fleet's window (kept in a store, by bucket index on
        the store's clock) with the very rule a local breaker applies to its own.
        """
        window = cls(length)
        for index, successes, failures, slow in buckets:
            window.add_counts(index, successes, failures, slow)
        return window

    def add_counts(self, index: float, successes: int, failures: int, slow: int) -> None:
        """Record several outcomes at once in bucket *index* (``now // width``) as one change.

        *slow* counts slow calls among them, successes or failures. Not for a window whose
        successes are counted lock-free (a breaker's own): it replaces the bucket's counter.
        """
        if not self._buckets or self._buckets[-1].index < index:
            self._roll(index)
        bucket = self._buckets[-1]
        if successes:
            bucket.successes = count(bucket.live_successes() + successes)
            self.current = (self.current[0], bucket.successes, -1)
        bucket.failures += failures
        self.failures += failures
        bucket.slow += slow
        self.slow += slow

    def allow_lock_free(self, tag: int) -> None:
        """Let callers holding *tag* count successes lock-free in the current bucket (-1: none)."""
        current = self.current
        if current[2] != tag and self._buckets:
            self.current = (current[0], current[1], tag)

    def _roll(self, index: float) -> None:
        buckets = self._buckets
        if buckets:
            newest = buckets[-1]
            if newest.index > index:
                # The injected clock went backwards: keep counting in the newest bucket.
                self.current = (self.current[0], self.current[1], -1)
                return
            newest.closed = count_value(newest.successes)
            self._closed_successes += newest.closed
        oldest_kept = index - WINDOW_BUCKETS
        while buckets and buckets[0].index <= oldest_kept:
            expired = buckets.popleft()
            self._closed_successes -= expired.closed
            # Read live: a success that raced the roll still reached this counter.
            self._lifetime_closed += expired.live_successes()
            self.failures -= expired.failures
            self.slow -= expired.slow
        bucket = _Bucket(index)
        buckets.append(bucket)
        self.generation += 1
        self.current = ((index + 1) * self.width, bucket.successes, -1)

    @property
    def lifetime_successes(self) -> int:
        """Successes recorded since creation (or ``clear(forget=True)``), window or not."""
        return self._lifetime_closed + sum(b.live_successes() for b in self._buckets)

    @property
    def total(self) -> int:
        """Outcomes in the window as of the last :meth:`add` or :meth:`roll_to`."""
        if not self._buckets:
            return 0
        return self._closed_successes + self._buckets[-1].live_successes() + self.failures

    def counts_at(self, now: float) -> tuple[int, int, int]:
        """``(outcomes, failures, slow)`` in the window ending at *now*; changes nothing."""
        oldest_kept = now // self.width - WINDOW_BUCKETS
        total = failures = slow = 0
        for bucket in self._buckets:
            if bucket.index > oldest_kept:
                total += bucket.live_successes() + bucket.failures
                failures += bucket.failures
                slow += bucket.slow
        return total, failures, slow

    def clear(self, *, forget: bool = False) -> None:
        """Empty the window; *forget* also zeroes :attr:`lifetime_successes`.

        Successes counted concurrently land in the discarded buckets.
        """
        if forget:
            self._lifetime_closed = 0
        else:
            self._lifetime_closed += sum(b.live_successes() for b in self._buckets)
        self._buckets.clear()
        self.generation += 1
        self.current = (-math.inf, count(), -1)
        self._closed_successes = self.failures = self.slow = 0

    def suffixes(self) -> tuple[list[float], list[int], list[int], list[int]]:
        """What the window loses as time passes, if nothing new is recorded.

        Returns ``(indexes, outcomes, failures, slow)``: ``indexes[k]`` is the bucket index at
        which the ``k + 1`` oldest buckets have all left the window, and the three count lists
        hold what those ``k + 1`` buckets contain in total (cumulative, oldest first). The
        newest bucket is never included: it is the last to leave, and by then the window is
        empty. Only closed buckets are summed, so the result changes with :attr:`generation`.
        """
        indexes: list[float] = []
        outcomes: list[int] = []
        failures: list[int] = []
        slow: list[int] = []
        total = bad = late = 0
        for bucket in list(self._buckets)[:-1]:
            total += bucket.closed + bucket.failures
            bad += bucket.failures
            late += bucket.slow
            indexes.append(bucket.index + WINDOW_BUCKETS)
            outcomes.append(total)
            failures.append(bad)
            slow.append(late)
        return indexes, outcomes, failures, slow
