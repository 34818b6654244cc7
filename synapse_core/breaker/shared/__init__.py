"""Breakers shared by every replica of a service, through Redis.

``CircuitBreaker(name, config, store=SharedBreakerStore(url))`` is the same breaker class with
the same API, events and stats; replicas that share a store (the same Redis and prefix) and a
breaker name share one breaker. redis-py is imported only when a store connects to a URL
(``pip install 'synapse-chaos[redis]'``).

How it works, and the rules (the local breaker's, see README "The circuit breaker"):

* **One window.** Every replica's closed-state outcomes go into one sliding window in Redis,
  cut into the same 100 slices of ``failure_window`` on Redis's clock, and judged with the
  local breaker's own trip rule (``TripRule``): thresholds, ``minimum_requests``, exact rates,
  slow calls, ageing. An outcome enters it when it is flushed, dated then. A flush is one
  change of the window: the rule is judged after each flush and as outcomes age out (applied
  at the next flush, dated when it happened), not between the outcomes of one flush.
* **Flushes.** Admission and closed-state successes stay local (no Redis command per call).
  A failure or slow call is sent at once when it could trip the fleet's window as last seen,
  when ``max_batch`` of them wait, or when nothing was sent for ``flush_interval``; otherwise
  within ``flush_interval``. Successes travel with them, and on their own every
  ``flush_interval`` only when a rate rule (or ``minimum_requests > failure_threshold``) makes
  them matter; else with the periodic sync.
* **Decisions, once, in Redis.** Tripping is committed by a compare-and-set on the fleet's
  epoch; probes are granted atomically (``half_open_max_calls`` across the fleet); closing
  and re-opening are taken by the script that counts the probe reports; ``max_half_open_wait``
  and the open-time backoff apply as locally. Every change is published; each replica
  applies it to its breaker with the usual events, whose ``replica`` names the replica that
  caused it.
* **Propagation bound.** A replica hears of a change by pub/sub (milliseconds), by the answer
  to its own next call, or at the latest at its next sync: ``sync_interval + timeout``.
* **When Redis is away** (a command failed or timed out after ``timeout``): the store's own
  breaker refuses further commands at once, and every shared breaker of the store follows
  its own window and rules with the same config (its window holds its own outcomes all
  along). Every ``reconnect_interval`` one command is tried; when Redis answers, each breaker
  rejoins: an open anywhere wins over closed (a replica that opened, or is probing, opens a
  closed fleet, for what remains of its own open time); otherwise it adopts the fleet's
  state, and when both are closed its unsent outcomes join the fleet's window. Control
  operations (``force_open``, ``force_close``, ``reset``) made meanwhile are sent first.
* **Redis lost its data** (restart, expiry): the next answer carries a new state; replicas
  rebuild it by the same rule.
* **Keys** ``<prefix>:v1:{<name>}:state|window|probes|replicas`` (one hash slot per breaker,
  so Redis Cluster works as a single server), channel ``<prefix>:v1:{<name>}:events``; every
  key expires ``ttl`` after its breaker last wrote it, the window keeps 100 slices, and
  replicas unheard of for ``10 x alive_for`` are dropped.
* External triggers: one that fires opens the fleet; a trigger holds probes only on the
  replica where it fired.
"""

from synapse_core.breaker.shared.store import SharedBreakerStore

__all__ = ["SharedBreakerStore"]
