"""The ``chaos`` marker: validation and merging of its arguments across levels."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
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
        if proxies is not None:
            problem = proxies_problem(proxies)
            if problem:
                raise pytest.UsageError(f"{where}: {problem}")
        reason = marker.kwargs.get("reason")
        if reason is not None and not isinstance(reason, str):
            raise pytest.UsageError(f"{where}: reason must be a string, got {reason!r}")


PROXIES_MEANING = (
    "proxies= maps each proxy name of the scenario to the upstream 'host:port' a new chaos "
    "proxy forwards to (made with chaos_proxy, deleted at teardown), or to an existing "
    "chaos.Proxy"
)


def is_upstream_address(value: str) -> bool:
    """Whether *value* reads as ``host:port`` (an upstream for a new proxy)."""
    host, colon, port = value.rpartition(":")
    return bool(colon and host and port.isdigit() and 0 < int(port) <= 65535)


def proxies_problem(proxies: object) -> str:
    """What is wrong with a ``proxies=`` value (marker or ``chaos_scenario``), or ``""``."""
    if not isinstance(proxies, Mapping):
        return f"{PROXIES_MEANING}; got {proxies!r}"
    proxy_type = getattr(sys.modules.get("chaos.control.proxy"), "Proxy", None)
    for name, target in proxies.items():
        if not isinstance(name, str):
            return f"{PROXIES_MEANING}; the name {name!r} is not a string"
        if proxy_type is not None and isinstance(target, proxy_type):
            continue
        if isinstance(target, str) and is_upstream_address(target):
            continue
        if isinstance(target, str):
            return (
                f"{PROXIES_MEANING}; {name!r}: {target!r} is not an upstream address "
                f"(expected 'host:port', e.g. {name}='127.0.0.1:6379'; to use a proxy that "
                "already exists, pass its chaos.Proxy)"
            )
        return f"{PROXIES_MEANING}; {name!r}: got {target!r}"
    return ""
