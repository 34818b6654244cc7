"""Breakers shared by every replica of a service, through Redis.

``CircuitBreaker(name, config, store=SharedBreakerStore(url))`` is the same breaker class with
the same API, events and stats; replicas that share a store (the same Redis and prefix) and a
breaker name share one breaker: one sliding window of everyone's outcomes, judged by the local
breaker's own rule; probes limited fleet-wide; each transition decided once, in Redis (a Lua
script), and published to the others. Admission and successes stay local; outcomes are sent
in the background. While Redis is unreachable every replica follows its own rules with the
same config, and rejoins when it answers (an open anywhere wins over closed).

redis-py is imported only when a store is made (``pip install 'synapse-chaos[redis]'``).
The rules, the failure modes, the keys and the figures: ``docs/shared-breakers.md``.

Modules: ``store`` (``SharedBreakerStore``: the client, its breaker, its two threads),
``link`` (one breaker's link: what it sends, what it adopts, when it falls back), ``fleet``
(key names, the script, the fleet's state), ``verdict`` (``TripRule`` on the fleet's window)
and ``fleet.lua`` (every decision on the fleet's state).
"""

from synapse_core.breaker.shared.store import SharedBreakerStore

__all__ = ["SharedBreakerStore"]
