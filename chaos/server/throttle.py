"""Log lines about repeated failures at most once per interval, with a count of the rest.

Running out of descriptors or connecting to an unreachable upstream happens once per
connection: logged each time, a few seconds of it filled tens of megabytes of log.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

LOGGER = logging.getLogger("chaos.server")


class ThrottledLog:
    """Warnings keyed by kind: the first is logged, then at most one per *interval* seconds,
    saying how many of that kind were left out since."""

    __slots__ = ("_clock", "_interval", "_kinds", "_logger")

    def __init__(
        self, clock: Callable[[], float], interval: float, logger: logging.Logger = LOGGER
    ) -> None:
        self._clock = clock
        self._interval = interval
        self._logger = logger
        self._kinds: dict[str, tuple[float, int]] = {}  # kind -> (last logged at, left out)

    def warning(self, kind: str, message: str) -> None:
        """Log *message* unless a *kind* line was logged less than an interval ago."""
        now = self._clock()
        last, skipped = self._kinds.get(kind, (float("-inf"), 0))
        if now - last < self._interval:
            self._kinds[kind] = (last, skipped + 1)
            return
        self._kinds[kind] = (now, 0)
        if skipped:
            message += f" ({skipped} more like it in the last {now - last:.0f} s)"
        self._logger.warning("%s", message)
