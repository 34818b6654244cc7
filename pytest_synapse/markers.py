"""The ``chaos`` marker: validation and merging of its arguments across levels."""

from __future__ import annotations

import os
from typing import Any

import pytest

CHAOS_MARKER_ARGS = frozenset({"scenario", "proxies", "reason"})


def chaos_settings(item: pytest.Item) -> dict[str, Any]:
    """The ``chaos`` marker's arguments for *item*, merged from test, class and module markers.

    The closest marker wins for each argument; a positional argument is the scenario.
    """
    merged: dict[str, Any] = {}
    for marker in item.iter_markers("chaos"):  # closest first
        kwargs = dict(marker.kwargs)
        if marker.args:
            kwargs.setdefault("scenario", marker.args[0])
        for key, value in kwargs.items():
            merged.setdefault(key, value)
    return merged


def validate_chaos_markers(item: pytest.Item) -> None:
    """Check every ``chaos`` marker on *item*; ``pytest.UsageError`` names the marker and test."""
    where = f"@pytest.mark.chaos on {item.nodeid}"
    for marker in item.iter_markers("chaos"):
        if len(marker.args) > 1:
            raise pytest.UsageError(
                f"{where}: takes at most one positional argument (the scenario)"
            )
        unknown = set(marker.kwargs) - CHAOS_MARKER_ARGS
        if unknown:
            raise pytest.UsageError(
                f"{where}: unknown argument(s) {', '.join(sorted(unknown))}; "
                f"allowed: {', '.join(sorted(CHAOS_MARKER_ARGS))}"
            )
        scenario = marker.args[0] if marker.args else marker.kwargs.get("scenario")
        if (
            scenario is not None
            and not isinstance(scenario, str | os.PathLike)
            and not hasattr(scenario, "steps")
        ):
            raise pytest.UsageError(
                f"{where}: scenario must be a library name, a file path or a chaos.Scenario, "
                f"got {scenario!r}"
            )
        proxies = marker.kwargs.get("proxies")
        if proxies is not None and (
            not isinstance(proxies, dict)
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in proxies.items())
        ):
            raise pytest.UsageError(
                f"{where}: proxies must map proxy names to 'host:port' upstreams, got {proxies!r}"
            )
        reason = marker.kwargs.get("reason")
        if reason is not None and not isinstance(reason, str):
            raise pytest.UsageError(f"{where}: reason must be a string, got {reason!r}")
