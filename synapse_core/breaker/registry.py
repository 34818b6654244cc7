"""Process-wide observation of breaker creation, so test tooling can find every breaker."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

from synapse_core.breaker.events import Unsubscribe

if TYPE_CHECKING:
    from synapse_core.breaker.breaker import CircuitBreaker

BreakerWatcher = Callable[["CircuitBreaker"], object]

_lock = threading.Lock()
_watchers: tuple[BreakerWatcher, ...] = ()
_live: weakref.WeakSet[CircuitBreaker] = weakref.WeakSet()


def announce(breaker: CircuitBreaker) -> None:
    """Called by every new breaker: remember it weakly and tell the watchers."""
    with _lock:
        _live.add(breaker)
        watchers = _watchers
    for watcher in watchers:
        watcher(breaker)


def watch_breakers(watcher: BreakerWatcher) -> Unsubscribe:
    """Call ``watcher(breaker)`` for every breaker created from now on, in any thread.

    Returns a handle that stops watching. Used by the pytest plugin to record the state changes
    of breakers a service creates during a test.
    """
    global _watchers
    if not callable(watcher):
        raise TypeError(f"watcher must be callable, got {watcher!r}")

    def stop() -> None:
        global _watchers
        with _lock:
            _watchers = tuple(w for w in _watchers if w is not watcher)

    with _lock:
        _watchers = (*_watchers, watcher)
    return Unsubscribe(stop)


def live_breakers() -> list[CircuitBreaker]:
    """Every breaker that still exists in this process (held weakly; creation order not kept)."""
    with _lock:
        return list(_live)
