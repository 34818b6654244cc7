"""Watch other libraries' breakers without ``watch`` calls (``synapse_watch_breakers``).

For a test marked ``@pytest.mark.synapse_watch_breakers`` (or every test, with the ini option
``synapse_watch_breakers = true`` / ``--synapse-watch-breakers``), every pybreaker or aiobreaker
breaker and every purgatory factory *created during the test* is watched as it is made, and so
is every circuitbreaker breaker in circuitbreaker's monitor (its registry of decorated
functions), found at the start or registered later. Breakers made before the test are left
alone (watch them with ``breaker_timeline.watch``).

It works by wrapping the libraries' constructors for the duration of the test, and only of the
libraries already imported: nothing is imported, nor patched, when the option is off.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Callable
from typing import Any

MARKER = "synapse_watch_breakers"

# (module, class) whose construction makes a breaker to watch.
_CONSTRUCTORS = (
    ("pybreaker", "CircuitBreaker"),
    ("aiobreaker", "CircuitBreaker"),
    ("purgatory", "SyncCircuitBreakerFactory"),
    ("purgatory", "AsyncCircuitBreakerFactory"),
)


class AutoWatch:
    """The wrappers installed for one test; :meth:`stop` puts the originals back.

    *track* records one breaker (``TestRun.track_foreign(obj, "auto")``).
    """

    def __init__(self, track: Callable[[object], None]) -> None:
        self._track = track
        self._undo: list[Callable[[], None]] = []

    def start(self) -> AutoWatch:
        for module_name, class_name in _CONSTRUCTORS:
            cls = getattr(sys.modules.get(module_name), class_name, None)
            if isinstance(cls, type):
                self._wrap_init(cls)
        monitor = getattr(sys.modules.get("circuitbreaker"), "CircuitBreakerMonitor", None)
        if monitor is not None:
            for breaker in list(monitor.get_circuits()):
                self._watch(breaker)
            self._wrap_register(monitor)
        return self

    def _watch(self, breaker: object) -> None:
        with contextlib.suppress(TypeError):  # a subclass the adapters do not know: not ours
            self._track(breaker)

    def _wrap_init(self, cls: type) -> None:
        original = cls.__dict__.get("__init__")
        if original is None:
            return
        watch = self._watch

        @functools.wraps(original)
        def __init__(obj: Any, *args: Any, **kwargs: Any) -> None:
            original(obj, *args, **kwargs)
            watch(obj)

        type.__setattr__(cls, "__init__", __init__)

        def undo() -> None:
            if cls.__dict__.get("__init__") is __init__:
                type.__setattr__(cls, "__init__", original)

        self._undo.append(undo)

    def _wrap_register(self, monitor: type) -> None:
        original = monitor.__dict__.get("register")
        if not isinstance(original, classmethod):
            return
        watch = self._watch
        registered = original.__func__

        @functools.wraps(registered)
        def register(cls: type, circuit_breaker: object) -> None:
            registered(cls, circuit_breaker)
            watch(circuit_breaker)

        wrapper: classmethod[Any, Any, None] = classmethod(register)
        type.__setattr__(monitor, "register", wrapper)

        def undo() -> None:
            if monitor.__dict__.get("register") is wrapper:
                type.__setattr__(monitor, "register", original)

        self._undo.append(undo)

    def stop(self) -> None:
        while self._undo:
            self._undo.pop()()
