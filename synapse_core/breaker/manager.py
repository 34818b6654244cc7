"""A named collection of breakers, and the process-wide default one."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping

from synapse_core.breaker.breaker import CircuitBreaker
from synapse_core.breaker.config import CircuitBreakerConfig
from synapse_core.breaker.events import Listener, Unsubscribe
from synapse_core.breaker.metrics import TransportMetrics
from synapse_core.breaker.stats import CircuitStats
from synapse_core.clock import Clock, check_clock


class CircuitBreakerManager:
    """Breakers by name: one per dependency, created on first use.

    ``default_config`` and ``clock`` apply to the breakers the manager creates. Listeners added
    with :meth:`subscribe` hear every breaker in the manager, present and future. Iterating
    yields the breakers; ``manager["name"]`` raises ``KeyError`` for an unknown name.
    """

    def __init__(
        self, default_config: CircuitBreakerConfig | None = None, *, clock: Clock | None = None
    ) -> None:
        self.default_config = default_config or CircuitBreakerConfig()
        self._clock = None if clock is None else check_clock(clock)
        self._breakers: dict[str, CircuitBreaker] = {}
        # Each manager-level listener with its per-breaker handles (by breaker identity).
        self._subscriptions: list[tuple[Listener, dict[int, Unsubscribe]]] = []
        self._lock = threading.Lock()

    def get_or_create(
        self, name: str, config: CircuitBreakerConfig | None = None
    ) -> CircuitBreaker:
        """The breaker called *name*, created with *config* (or the default) if it is new.

        Asking again with a different *config* raises ``ValueError``: one name, one config.
        """
        with self._lock:
            breaker = self._breakers.get(name)
            if breaker is None:
                breaker = CircuitBreaker(name, config or self.default_config, clock=self._clock)
                self._add(name, breaker)
            elif config is not None and config != breaker.config:
                raise ValueError(
                    f"breaker {name!r} already exists with a different config; "
                    "use get_breaker(name) to fetch it, or remove_breaker(name) first"
                )
            return breaker

    def add_breaker(self, name: str, breaker: CircuitBreaker) -> CircuitBreaker:
        """Register an existing breaker under *name*; a name already taken raises ``ValueError``."""
        if not isinstance(breaker, CircuitBreaker):
            raise TypeError(f"expected a CircuitBreaker, got {type(breaker).__name__}")
        with self._lock:
            existing = self._breakers.get(name)
            if existing is breaker:
                return breaker
            if existing is not None:
                raise ValueError(f"a breaker named {name!r} is already registered")
            self._add(name, breaker)
            return breaker

    def _add(self, name: str, breaker: CircuitBreaker) -> None:
        self._breakers[name] = breaker
        # One subscription per breaker, however many names it has: an alias must not make
        # listeners hear each event twice.
        for listener, handles in self._subscriptions:
            if id(breaker) not in handles:
                handles[id(breaker)] = breaker.subscribe(listener)

    def get_breaker(self, name: str) -> CircuitBreaker | None:
        """The breaker called *name*, or ``None``."""
        return self._breakers.get(name)

    def remove_breaker(self, name: str) -> CircuitBreaker | None:
        """Forget the breaker called *name* and return it (``None`` if there was none).

        The manager's listeners stop hearing from it.
        """
        with self._lock:
            breaker = self._breakers.pop(name, None)
            still_named = breaker is not None and any(b is breaker for b in self._breakers.values())
            handles = (
                [h.pop(id(breaker), None) for _, h in self._subscriptions]
                if breaker is not None and not still_named
                else []
            )
        for handle in handles:
            if handle is not None:
                handle()
        return breaker

    def __getitem__(self, name: str) -> CircuitBreaker:
        try:
            return self._breakers[name]
        except KeyError:
            known = ", ".join(sorted(self._breakers)) or "none"
            raise KeyError(f"no breaker named {name!r} (known: {known})") from None

    def __contains__(self, name: object) -> bool:
        return name in self._breakers

    def __iter__(self) -> Iterator[CircuitBreaker]:
        return iter(list(self._breakers.values()))

    def __len__(self) -> int:
        return len(self._breakers)

    def names(self) -> list[str]:
        """The registered names, in registration order."""
        return list(self._breakers)

    def get_all_stats(self) -> dict[str, CircuitStats]:
        """``{name: breaker.stats()}`` for every breaker (pure reads)."""
        return {name: breaker.stats() for name, breaker in list(self._breakers.items())}

    def check_all_breakers(self, metrics_by_name: Mapping[str, TransportMetrics]) -> list[str]:
        """Run each named breaker's external triggers on its metrics; return the names that opened.

        Names without a breaker are ignored.
        """
        opened = []
        for name, metrics in metrics_by_name.items():
            breaker = self._breakers.get(name)
            if breaker is not None and breaker.check_external_triggers(metrics):
                opened.append(name)
        return opened

    def reset_all(self) -> None:
        """``reset()`` every breaker."""
        for breaker in self:
            breaker.reset()

    def subscribe(self, listener: Listener) -> Unsubscribe:
        """Listen to the events of every breaker in the manager, present and future."""
        with self._lock:
            unique = {id(b): b for b in self._breakers.values()}  # aliases: one subscription
            entry = (listener, {key: b.subscribe(listener) for key, b in unique.items()})
            self._subscriptions.append(entry)

        def stop() -> None:
            with self._lock:
                if entry in self._subscriptions:
                    self._subscriptions.remove(entry)
                handles = list(entry[1].values())
            for handle in handles:
                handle()

        return Unsubscribe(stop)

    def __repr__(self) -> str:
        return f"<CircuitBreakerManager {len(self)} breakers>"


CircuitManager = CircuitBreakerManager
"""The original Synapse design's name for :class:`CircuitBreakerManager`."""

default_manager = CircuitBreakerManager()
"""The process-wide manager: services that create breakers through it are found by test tools."""


def get_breaker(name: str, config: CircuitBreakerConfig | None = None) -> CircuitBreaker:
    """``default_manager.get_or_create(name, config)``."""
    return default_manager.get_or_create(name, config)
