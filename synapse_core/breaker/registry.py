"""Process-wide observation of breaker creation, so test tooling can find every breaker."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

from synapse_core.breaker.events import Unsubscribe, Watchers

if TYPE_CHECKING:
    from synapse_core.breaker.breaker import CircuitBreaker

BreakerWatcher = Callable[["CircuitBreaker"], object]

_lock = threading.Lock()
_watchers: Watchers[BreakerWatcher] = Watchers()
_live: weakref.WeakSet[CircuitBreaker] = weakref.WeakSet()


def announce(breaker: CircuitBreaker) -> None:
    """Called by every new breaker: remember it weakly and tell the watchers."""
    with _lock:
        _live.add(breaker)
    for watcher in _watchers.current:
        watcher(breaker)


def watch_breakers(watcher: BreakerWatcher) -> Unsubscribe:
    """Call ``watcher(breaker)`` for every breaker created from now on, in any thread.

    Returns a handle that stops watching. Used by the pytest plugin to record the state changes
    of breakers a service creates during a test.
    """
    return _watchers.add(watcher)


def live_breakers() -> list[CircuitBreaker]:
    """Every breaker that still exists in this process (held weakly; creation order not kept)."""
    with _lock:
        return list(_live)
