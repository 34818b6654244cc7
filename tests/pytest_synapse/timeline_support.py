"""Helpers for tests of breakers in another process: a fault span on the test's timeline."""

from __future__ import annotations

from typing import Any


class fault_span:
    """``with fault_span(breaker_timeline, "down", "backend"):`` a fault is active meanwhile.

    For tests whose dependency fails by other means than a chaos proxy: the assertions measure
    trips and recoveries from the faults on the timeline.
    """

    def __init__(self, view: Any, fault: str = "partition", proxy: str = "dependency") -> None:
        self.timeline = view.timeline
        self.fault = fault
        self.proxy = proxy

    def __enter__(self) -> None:
        self.span = self.timeline.fault_started(self.fault, self.proxy)

    def __exit__(self, *exc: object) -> None:
        self.timeline.fault_ended(self.span)
