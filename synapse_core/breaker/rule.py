"""The closed -> open rule: an exact verdict on the window, now and as it ages."""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from typing import TypeAlias

from synapse_core.breaker.config import CircuitBreakerConfig, exact_fraction
from synapse_core.breaker.window import SlidingWindow

Due: TypeAlias = tuple[float, int, int, int]
"""When ageing alone will trip the window: ``(bucket index, outcomes, failures, slow calls)`` of
the window at that moment (the breaker trips once the clock reaches that bucket index)."""

Assessment: TypeAlias = tuple[str | None, Due | None, bool]
"""``(reason, due, armed)``: why the window trips now (or ``None``); when ageing alone would trip
it (or ``None``); whether one more success could change either, so that successes must be
recorded under the lock, one by one, each assessed."""


class TripRule:
    """``minimum_requests`` outcomes and any of: failures >= ``failure_threshold``, failures /
    outcomes >= ``failure_rate_threshold``, slow / outcomes >= ``slow_call_rate_threshold``.

    Rates compare exactly, in integers, against the decimal the threshold was written as: 7
    failures in 25 outcomes meet 0.28. The rule is a property of the window, so it is assessed
    whenever the window changes: after every recorded outcome (success included) and at every
    moment outcomes age out of it. :meth:`assess` gives both: the verdict now, and the first
    moment ageing alone would trip the breaker.
    """

    __slots__ = (
        "_cache",
        "_cache_key",
        "failure_rate",
        "failure_threshold",
        "minimum",
        "slow_rate",
        "slow_text",
        "window_text",
    )

    def __init__(self, config: CircuitBreakerConfig) -> None:
        self.failure_threshold = config.failure_threshold
        self.minimum = config.minimum_requests
        self.failure_rate = _ratio(config.failure_rate_threshold)
        self.slow_rate = _ratio(config.slow_call_rate_threshold)
        self.window_text = f"{config.failure_window:g}s"
        self.slow_text = f"calls >= {config.slow_call_duration or 0:g}s"
        self._cache_key = -1
        self._cache: _Suffixes | None = None

    def holds(self, outcomes: int, failures: int, slow: int) -> bool:
        """Whether a window with these counts trips the breaker."""
        if outcomes < self.minimum:
            return False
        if failures >= self.failure_threshold:
            return True
        rate = self.failure_rate
        if rate is not None and failures * rate[1] >= rate[0] * outcomes:
            return True
        rate = self.slow_rate
        return rate is not None and slow * rate[1] >= rate[0] * outcomes

    def reason(self, outcomes: int, failures: int, slow: int) -> str | None:
        """Why a window with these counts trips the breaker, or ``None`` if it does not."""
        if not self.holds(outcomes, failures, slow):
            return None
        if failures >= self.failure_threshold:
            return (
                f"{failures} failures in {outcomes} calls within {self.window_text} "
                f"(threshold {self.failure_threshold})"
            )
        rate = self.failure_rate
        if rate is not None and failures * rate[1] >= rate[0] * outcomes:
            return f"failure rate {failures}/{outcomes} >= {_text(rate)} within {self.window_text}"
        assert self.slow_rate is not None
        return (
            f"slow-call rate {slow}/{outcomes} >= {_text(self.slow_rate)} ({self.slow_text}) "
            f"within {self.window_text}"
        )

    def assess(self, window: SlidingWindow) -> Assessment:
        """The verdict on *window* now, when ageing would trip it, and whether it is armed.

        Called under the breaker's lock after every change it records; constant time unless
        rates are set and the window spans several buckets, then O(log buckets).
        """
        failures, slow = window.failures, window.slow
        if self.failure_rate is None and self.slow_rate is None:
            # Only the count rule: below failure_threshold nothing but a failure can trip the
            # window, and ageing only removes failures. (Reading the total costs more than the
            # rest together: the lock-free successes are counted in an itertools.count.)
            if failures < self.failure_threshold:
                return None, None, False
            total = window.total
            if total >= self.minimum:
                return self.reason(total, failures, slow), None, False
            return None, None, True  # the success that completes minimum_requests trips it
        total = window.total
        minimum = self.minimum
        if total < minimum:
            # Ageing only shrinks a window already too small; a run of successes can bring this
            # one up to minimum_requests with every failure and slow call still in it.
            return None, None, self.holds(minimum, failures, slow)
        if self.holds(total, failures, slow):
            return self.reason(total, failures, slow), None, False
        if not (failures or slow):
            return None, None, False  # rates of nothing: only a failure or a slow call can trip
        suffixes = self._suffixes(window)
        if not suffixes.indexes:
            return None, None, False  # one bucket: it leaves last, and the window is then empty
        # Suffix k (the k oldest buckets gone) has total - outcomes[k-1] outcomes; those with
        # at least minimum_requests are k <= last (outcomes is nondecreasing).
        last = bisect_right(suffixes.outcomes, total - minimum)
        due_k = min(
            suffixes.first(suffixes.failure_keys, self.failure_rate, failures, total),
            suffixes.first(suffixes.slow_keys, self.slow_rate, slow, total),
        )
        due = None
        if due_k <= last:
            i = due_k - 1
            due = (
                suffixes.indexes[i],
                total - suffixes.outcomes[i],
                failures - suffixes.failures[i],
                slow - suffixes.slow[i],
            )
        if last >= len(suffixes.indexes):
            return None, due, False  # even the newest bucket alone has minimum_requests
        # The largest suffix below minimum_requests: successes could bring it up to it with
        # the most failures and slow calls left in it.
        bad = failures - suffixes.failures[last]
        late = slow - suffixes.slow[last]
        return None, due, self.holds(minimum, bad, late)

    def _suffixes(self, window: SlidingWindow) -> _Suffixes:
        if self._cache is None or self._cache_key != window.generation:
            self._cache = _Suffixes(window, self.failure_rate, self.slow_rate)
            self._cache_key = window.generation
        return self._cache


class _Suffixes:
    """The window's suffixes (see ``SlidingWindow.suffixes``) with keys for an O(log n) search.

    Suffix k meets a rate a/b when b*(F - F_k) >= a*(T - T_k), that is when
    b*F - a*T >= b*F_k - a*T_k: the right side (the key) depends on the closed buckets only,
    so it is computed once per bucket, and a running minimum (kept negated, to sort upwards)
    turns "the first suffix that qualifies" into a binary search.
    """

    __slots__ = ("failure_keys", "failures", "indexes", "outcomes", "slow", "slow_keys")

    def __init__(
        self,
        window: SlidingWindow,
        failure_rate: tuple[int, int] | None,
        slow_rate: tuple[int, int] | None,
    ) -> None:
        self.indexes, self.outcomes, self.failures, self.slow = window.suffixes()
        self.failure_keys = _search_keys(failure_rate, self.failures, self.outcomes)
        self.slow_keys = _search_keys(slow_rate, self.slow, self.outcomes)

    def first(
        self, keys: list[int] | None, rate: tuple[int, int] | None, count: int, total: int
    ) -> int:
        """The first k (1-based) whose suffix meets *rate*; past the end when none does."""
        if keys is None or rate is None:
            return len(self.indexes) + 1
        # keys holds the running minimum of the suffixes' keys, negated (so nondecreasing);
        # suffix k meets the rate when its key is <= b*F - a*T.
        return bisect_left(keys, rate[0] * total - rate[1] * count) + 1


def _search_keys(
    rate: tuple[int, int] | None, counts: list[int], outcomes: list[int]
) -> list[int] | None:
    """The running minimum of the suffixes' keys, negated (see ``_Suffixes``)."""
    if rate is None:
        return None
    num, den = rate
    keys: list[int] = []
    high: int | None = None
    for count, total in zip(counts, outcomes, strict=True):
        key = num * total - den * count  # the suffix key, negated
        high = key if high is None or key > high else high
        keys.append(high)
    return keys


def _text(rate: tuple[int, int]) -> str:
    return f"{rate[0] / rate[1]:g}"


def _ratio(threshold: float | None) -> tuple[int, int] | None:
    if threshold is None:
        return None
    exact = exact_fraction(threshold)
    return exact.numerator, exact.denominator
