"""One shared breaker's link to the fleet: what it sends, what it adopts, when it falls back."""

from __future__ import annotations

import logging
import math
from collections import deque
from typing import TYPE_CHECKING

from synapse_core.breaker.config import CircuitBreakerConfig
from synapse_core.breaker.rule import Assessment, TripRule
from synapse_core.breaker.shared.fleet import FleetState, Keys, config_args
from synapse_core.breaker.shared.verdict import judge, judge_totals, parse_buckets
from synapse_core.breaker.state import CircuitState
from synapse_core.breaker.stats import FleetStats
from synapse_core.breaker.store import Command, ProbeReport
from synapse_core.breaker.window import WINDOW_BUCKETS, SlidingWindow, count_value

if TYPE_CHECKING:
    from synapse_core.breaker.breaker import CircuitBreaker
    from synapse_core.breaker.shared.store import SharedBreakerStore

_CLOSED = CircuitState.CLOSED
_OPEN = CircuitState.OPEN
_HALF_OPEN = CircuitState.HALF_OPEN

log = logging.getLogger("synapse.breaker")


class FleetRule(TripRule):
    """The breaker's own trip rule, silent while the fleet decides.

    While the link is connected the fleet's window trips the breaker (every replica's
    outcomes, judged by :func:`~synapse_core.breaker.shared.verdict.judge` with this same
    rule), so the replica's own window never trips it; it is *armed* (successes go through the
    lock, one by one) while the fleet's is. While the store is unreachable the replica is a
    local breaker with the same config and this is exactly :class:`TripRule`.
    """

    __slots__ = ("_link",)

    def __init__(self, config: CircuitBreakerConfig, link: SharedLink) -> None:
        super().__init__(config)
        self._link = link

    def assess(self, window: SlidingWindow) -> Assessment:
        link = self._link
        if link.connected:
            return None, None, link.fleet_armed
        return super().assess(window)


class SharedLink:
    """The :class:`~synapse_core.breaker.store.StoreLink` of one breaker on a Redis store.

    Every field is guarded by the breaker's lock: the hooks run under it, and the store's
    threads take it to read a batch or adopt a state (never while waiting on Redis).

    The local breaker mirrors the fleet: :attr:`fleet` is the state last adopted and
    :attr:`synced_epoch` the breaker's epoch right after; a breaker whose epoch moved on
    since (its own rules while the store was away, a control operation not yet sent) has
    diverged and is reconciled with the fleet when it hears from it (see :meth:`_apply`).
    """

    def __init__(self, store: SharedBreakerStore, breaker: CircuitBreaker) -> None:
        self.store = store
        self.breaker = breaker
        self.replica = store.replica
        config = breaker.config
        self.config = config
        self.rule = FleetRule(config, self)
        self.keys = Keys.of(store.prefix, breaker.name)
        self.width = config.failure_window / WINDOW_BUCKETS
        self.args, self.fingerprint = config_args(config, ttl=store.ttl, alive_for=store.alive_for)
        # Without a rate rule the verdict depends on the window's totals only (and ageing
        # never trips it): the script need not send the window's buckets.
        self.by_bucket = (
            config.failure_rate_threshold is not None or config.slow_call_rate_threshold is not None
        )
        # Without a rate rule, and with minimum_requests <= failure_threshold, successes can
        # never change the fleet's verdict: they travel with failures and the periodic sync.
        self.successes_matter = (
            config.failure_rate_threshold is not None
            or config.slow_call_rate_threshold is not None
            or config.minimum_requests > config.failure_threshold
        )
        self.connected = False
        self.away = False  # this replica fell back to its own rules (and said so)
        self.closed = False
        self.fleet: FleetState | None = None
        self.synced_epoch = -1
        self.heard_at: float | None = None  # breaker clock: the store's last answer or message
        self.exchanged_at = -math.inf  # breaker clock: this link's last answered call
        self.fleet_armed = False
        self.fallbacks = 0
        # The closed-state outcomes not yet sent: failures and slow calls counted by the hook,
        # successes and rejections read from the breaker's counters (they are lock-free).
        self.base_epoch = breaker._epoch
        self.base_successes = 0
        self.base_rejections = 0
        self.failures = 0
        self.slow = 0
        self.urgent = False
        self.flushed_at = -math.inf
        self.reports: deque[tuple[str, int, ProbeReport]] = deque()
        self.own_probes = 0  # probes of the fleet's episode admitted here, not yet reported
        self.pending: tuple[Command, str] | None = None  # a control operation to send
        self.resync = True  # ask the fleet at the next pass (after a gap in its messages)
        self.warned_config = False

    # ------------------------------------------------------------ hooks (breaker lock held)

    def recorded(self, failed: bool, slow: bool) -> None:
        if self.breaker._epoch != self.base_epoch:
            self._rebase()
        if failed:
            self.failures += 1
        if slow:
            self.slow += 1
        if self.urgent or not self.connected:
            return  # a flush is already asked for, or nobody to send it to
        if not (failed or slow):
            if self.fleet_armed:  # this success may complete the fleet's minimum_requests
                self.urgent = True
                self.store.wake()
            return
        if (
            self.failures + self.slow >= self.store.max_batch
            or self.breaker._clock() - self.flushed_at >= self.store.flush_interval
            or self._could_trip()
        ):
            self.urgent = True
            self.store.wake()

    def probe_done(self, report: ProbeReport) -> bool:
        fleet = self.fleet
        if not self.connected or fleet is None or self.breaker._epoch != self.synced_epoch:
            return False
        self.reports.append((fleet.token, fleet.epoch, report))
        self.own_probes = max(0, self.own_probes - 1)
        self.store.wake()
        return True

    def stats(self, now: float) -> FleetStats:
        fleet = self.fleet
        window = (0, 0, 0) if fleet is None or fleet.window is None else fleet.window
        return FleetStats(
            replica=self.replica,
            connected=self.connected,
            state=None if fleet is None else fleet.state,
            caused_by=None if fleet is None else fleet.by,
            replicas=0 if fleet is None else fleet.replicas,
            window_requests=window[0],
            window_failures=window[1],
            window_failure_rate=window[1] / window[0] if window[0] else 0.0,
            window_slow_calls=window[2],
            success_count=0 if fleet is None else fleet.successes,
            failure_count=0 if fleet is None else fleet.failures,
            rejection_count=0 if fleet is None else fleet.rejections,
            last_heard=None if self.heard_at is None else max(0.0, now - self.heard_at),
            unsent_failures=self.failures + self.slow,
            fallbacks=self.fallbacks,
            config_matches=fleet is None or fleet.config == self.fingerprint,
        )

    # ------------------------------------------------------------ hooks (no lock held)

    def start(self) -> None:
        """The breaker is ready: sync with the fleet now (a failure leaves it local)."""
        self.store.listening()  # first hear changes, then read the state: none falls between
        self._reconnect()

    def close(self) -> None:
        """The store closed: from now on the breaker is a local one."""
        with self.breaker._lock:
            self.closed = True
        self.disconnect("the store was closed")

    def admit(self) -> int | None:
        """Ask the fleet for a half-open probe (see ``StoreLink.admit``)."""
        if self.store._forked:
            self.store.say_forked()  # where a forked child's breaker first protects it
        breaker = self.breaker
        with breaker._lock:
            if not self.connected or breaker._state is _CLOSED:
                return None
            if breaker._epoch != self.synced_epoch:
                return None  # diverged: its own rules until the fleet has heard of it
            now = breaker._clock()
            error = None
            if breaker._forced or (breaker._state is _OPEN and breaker._holding()):
                error = breaker._reject_locked(now)  # forced, or this replica's trigger holds
            elif breaker._state is _HALF_OPEN and self._slots_taken(now):
                error = breaker._reject_locked(now)  # every probe slot of the fleet is taken
        if error is not None:
            breaker._deliver()
            raise error
        fleet = self.store.call(self, "probe")
        if fleet is None:
            return None  # the store is away: the breaker's own rules decide
        admitted: int | None = None
        with breaker._lock:
            now = breaker._clock()
            push = self._apply(fleet, now)
            usable = breaker._epoch == self.synced_epoch
            if fleet.granted == 1 and usable and breaker._state is _HALF_OPEN:
                self.own_probes += 1
                admitted = breaker._epoch
            elif breaker._state is _CLOSED:
                admitted = breaker._epoch
            else:
                if fleet.granted == 1:  # a slot this replica cannot use: give it back
                    self.reports.append((fleet.token, fleet.epoch, "release"))
                error = breaker._reject_locked(now)
        breaker._deliver()
        if push or self.reports:
            self.store.wake()
        if error is not None:
            raise error
        return admitted

    def command(self, kind: Command, reason: str) -> None:
        with self.breaker._lock:
            if self.closed:
                return
            self.pending = (kind, reason)
        self.store.wake()

    # ------------------------------------------------------------ the store's thread

    def work(self, *, force: bool = False) -> bool:
        """Send what is due: a control operation, probe reports, outcomes, a periodic sync.

        Returns whether the fleet has everything (nothing left unsent, Redis answering).
        """
        if self.closed:
            return False
        if not self.connected:
            self._reconnect()
            return False
        if self.pending is not None and not self._send_command():
            return False
        breaker = self.breaker
        while True:
            with breaker._lock:  # disconnect() may clear them meanwhile
                if not self.reports:
                    break
                head = self.reports[0]
            token, epoch, report = head
            fleet = self.store.call(self, "report", token, str(epoch), report)
            if fleet is None:
                return False
            with breaker._lock:
                if self.reports and self.reports[0] is head:
                    self.reports.popleft()
            self._receive(fleet)
        return self._flush(force=force)

    def _flush(self, *, force: bool) -> bool:
        breaker = self.breaker
        with breaker._lock:
            batch = self._take(breaker._clock(), force=force)
        if batch is None:
            return self.connected
        fleet_epoch, token, successes, failures, slow, rejections = batch
        answer = self.store.call_raw(
            self,
            "flush",
            token,
            str(fleet_epoch),
            str(successes),
            str(failures),
            str(slow),
            str(rejections),
            "1" if self.by_bucket else "0",
        )
        if answer is None:
            with breaker._lock:  # sent nowhere: they go with the next flush
                self._give_back(successes, failures, slow, rejections)
            return False
        fleet, rest = answer
        if not fleet.applied and fleet.token != token:
            with breaker._lock:  # a new fleet state (the store lost its data): merge them
                self._give_back(successes, failures, slow, 0)
        verdict = None
        # The script sends the stored window back whenever the batch or the window holds a
        # failure or a slow call: nothing else can trip it.
        if not fleet.applied:
            pass
        elif not self.by_bucket:
            if fleet.window is not None and (fleet.window[1] or fleet.window[2]):
                verdict = judge_totals(self.config, fleet.window)
        elif failures or slow or len(rest) > 1:
            index = float(int(rest[0]))
            verdict = judge(
                self.config, parse_buckets(rest[1:]), index, (successes, failures, slow)
            )
        if verdict is not None and verdict.trip is not None:
            trip = verdict.trip
            at = -1.0 if trip.at_index is None else trip.at_index * self.width
            tripped = self.store.call(
                self,
                "trip",
                fleet.token,
                str(fleet.epoch),
                trip.reason,
                str(trip.failures),
                repr(at),
                "-1",
            )
            if tripped is not None:
                fleet = tripped
        armed = verdict is not None and verdict.armed
        with breaker._lock:
            if armed != self.fleet_armed:
                self.fleet_armed = armed
                if breaker._state is _CLOSED:
                    breaker._assess(breaker._clock())  # successes take the lock while armed
        self._receive(fleet)
        return self.connected

    def _take(self, now: float, *, force: bool) -> tuple[int, str, int, int, int, int] | None:
        """The batch to flush now, if one is due (lock held); its counts leave the tally."""
        breaker = self.breaker
        fleet = self.fleet
        if fleet is None:
            return None
        if breaker._epoch != self.base_epoch:
            self._rebase()
        rejections = count_value(breaker._rejections)
        if rejections < self.base_rejections:
            self.base_rejections = 0  # reset() started a new counter
        rejected = rejections - self.base_rejections
        in_sync = breaker._epoch == self.synced_epoch and breaker._state is _CLOSED
        successes = 0
        if in_sync and (self.successes_matter or self.failures or self.slow or force):
            successes = max(0, breaker._window.lifetime_successes - self.base_successes)
        bad = self.failures + self.slow
        quiet = now - self.flushed_at >= self.store.flush_interval
        due = (
            force
            or self.urgent
            or self.resync
            or now - self.exchanged_at >= self.store.sync_interval
            or (quiet and in_sync and (bad or (successes and self.successes_matter)))
        )
        if not due:
            return None
        self.urgent = self.resync = False
        self.flushed_at = now
        self.base_rejections = rejections
        if not in_sync:
            return fleet.epoch, fleet.token, 0, 0, 0, rejected
        self.base_successes += successes
        failures, slow = self.failures, self.slow
        self.failures = self.slow = 0
        return fleet.epoch, fleet.token, successes, failures, slow, rejected

    def _give_back(self, successes: int, failures: int, slow: int, rejections: int) -> None:
        self.base_successes -= successes
        self.failures += failures
        self.slow += slow
        self.base_rejections -= rejections

    def _rebase(self) -> None:
        """A new local epoch: outcomes of the last one that were not sent never will be."""
        breaker = self.breaker
        self.base_epoch = breaker._epoch
        self.base_successes = breaker._window.lifetime_successes
        self.failures = self.slow = 0

    def _send_command(self) -> bool:
        breaker = self.breaker
        with breaker._lock:
            pending = self.pending
            if pending is None:
                return True
            kind, reason = pending
        args: tuple[str, ...]
        if kind == "trip":
            args = ("trip", "*", "-1", reason, str(breaker._window.failures), "-1", "-1")
        else:
            what = {"force_open": "open", "force_close": "close", "reset": "reset"}[kind]
            args = ("force", what, reason)
        answer = self.store.call(self, *args)
        if answer is None:
            return False
        with breaker._lock:
            if self.pending == pending:
                self.pending = None
                # The fleet now holds what this replica did: the breaker is in sync again.
                self.synced_epoch = breaker._epoch
        self._receive(answer)
        return True

    def _reconnect(self) -> None:
        """The store answers again: send what was held back, then reconcile with the fleet."""
        if self.closed or not self.store.reachable():
            return
        if self.pending is not None and not self._send_command():
            return
        fleet = self.store.call(self, "sync")
        if fleet is None:
            return
        breaker = self.breaker
        with breaker._lock:
            self.connected = True
            self.away = False
            self.resync = False
            self.reports.clear()
            push = self._apply(fleet, breaker._clock(), rejoining=True)
            if breaker._state is _CLOSED:
                breaker._assess(breaker._clock())  # the fleet's rule judges from now on
        breaker._deliver()
        if self.fallbacks:  # joining at creation is not news
            log.info(
                "shared breaker %r: replica %s rejoined the fleet (fleet %s, here %s)",
                breaker.name,
                self.replica,
                fleet.state.value,
                breaker._state.value,
                extra={
                    "synapse_event": "breaker.store_rejoined",
                    "breaker": breaker.name,
                    "replica": self.replica,
                },
            )
        if push:
            self._push_open()

    def disconnect(self, why: str) -> None:
        """The store did not answer: this replica judges its own outcomes until it does."""
        breaker = self.breaker
        with breaker._lock:
            if self.away:
                return
            self.connected = False
            self.away = True
            if not self.closed:
                self.fallbacks += 1
            self.fleet_armed = False
            now = breaker._clock()
            if breaker._state is _HALF_OPEN and breaker._epoch == self.synced_epoch:
                # The episode goes on here, with this replica's own probes and limit.
                breaker._half_open_admitted = self.own_probes
                breaker._half_open_successes = breaker._half_open_failures = 0
            self.reports.clear()
            self.own_probes = 0
            if breaker._state is _CLOSED:
                breaker._assess(now)  # its own window may already trip it
        breaker._deliver()
        if not self.closed:
            log.warning(
                "shared breaker %r: the store is unreachable (%s); replica %s follows its own "
                "breaker until it answers",
                breaker.name,
                why,
                self.replica,
                extra={
                    "synapse_event": "breaker.store_unreachable",
                    "breaker": breaker.name,
                    "replica": self.replica,
                    "reason": why,
                },
            )

    def orphan(self) -> None:
        """The process was forked and this is the child: the store's threads are gone, so the
        breaker is a local one from now on. Runs in the fork handler, where the child has one
        thread: no lock is taken (one a parent's thread held at the fork stays held)."""
        breaker = self.breaker
        self.closed = True
        self.connected = False
        self.away = True
        self.fleet_armed = False
        self.reports.clear()
        self.own_probes = 0
        self.pending = None
        if breaker._state is _HALF_OPEN:
            # Probe slots of the fleet's episode granted to the parent are not this
            # process's: its own limit starts from none admitted.
            breaker._half_open_admitted = 0
            breaker._half_open_successes = breaker._half_open_failures = 0

    # ------------------------------------------------------------ adopting the fleet's state

    def receive(self, fleet: FleetState) -> None:
        """A state published by the fleet (the store's subscriber thread)."""
        if self.connected and not self.closed:
            self._receive(fleet)

    def _receive(self, fleet: FleetState) -> None:
        breaker = self.breaker
        with breaker._lock:
            push = self._apply(fleet, breaker._clock())
        breaker._deliver()
        if push:
            self._push_open()

    def _apply(self, fleet: FleetState, now: float, *, rejoining: bool = False) -> bool:
        """Take the fleet's state (lock held). Returns whether the fleet must be told to open.

        Rules: newer news only (a state of the same fleet with a smaller epoch is old); while
        a control operation waits to be sent, its answer brings the state. A breaker that
        diverged (it followed its own rules while the store was away) or whose fleet lost its
        state (a new token: the store restarted empty or the keys expired) is reconciled: an
        open anywhere wins over closed, so a breaker open or probing here opens a closed
        fleet; otherwise the fleet's state is adopted, and when both are closed this replica's
        unsent outcomes join the fleet's window.
        """
        breaker = self.breaker
        self.heard_at = now
        if self.pending is not None:
            return False
        known = self.fleet
        new_fleet = known is None or fleet.token != known.token
        if known is not None and not new_fleet and fleet.epoch < known.epoch:
            return False
        diverged = breaker._epoch != self.synced_epoch or rejoining
        local = breaker._state
        if (new_fleet and known is not None) or diverged:
            if local is not _CLOSED and fleet.state is _CLOSED:
                self.fleet = fleet
                return True
            if local is _CLOSED and fleet.state is _CLOSED:
                # Both closed: keep this epoch and its unsent outcomes, which join the fleet's.
                self._mirror(fleet)
                return False
        renew = known is not None and not new_fleet and fleet.epoch > known.epoch
        self._adopt(fleet, now, renew=renew or diverged)
        return False

    def _mirror(self, fleet: FleetState) -> None:
        breaker = self.breaker
        self.fleet = fleet
        self.synced_epoch = breaker._epoch
        if self.base_epoch != breaker._epoch:
            self._rebase()
        if fleet.config != self.fingerprint and not self.warned_config:
            self.warned_config = True
            log.warning(
                "shared breaker %r: replica %s has another config than the fleet's state "
                "(created by a replica with config %s, this one is %s); each replica applies "
                "its own thresholds to the shared window",
                breaker.name,
                self.replica,
                fleet.config,
                self.fingerprint,
                extra={"synapse_event": "breaker.config_mismatch", "breaker": breaker.name},
            )

    def _adopt(self, fleet: FleetState, now: float, *, renew: bool) -> None:
        """Make the breaker show *fleet*'s state (lock held), with the usual events."""
        breaker = self.breaker
        before = breaker._epoch
        at = now - fleet.age
        local = breaker._state
        target = fleet.state
        if target is _CLOSED:
            if local is not _CLOSED:
                breaker._to_closed(at, fleet.reason, fleet.by)
            elif renew:
                self._renew()
                breaker._fast_epoch = breaker._epoch if breaker._plain else -1
                breaker._window.clear()
                breaker._due = None
        elif target is _OPEN:
            open_until = math.inf if fleet.forced else now + fleet.remaining
            if local is not _OPEN:
                breaker._to_open(
                    at,
                    fleet.reason,
                    fleet.failure_count,
                    forced=fleet.forced,
                    open_until=open_until,
                    replica=fleet.by,
                )
            else:
                if renew:
                    self._renew()
                breaker._open_until = open_until
                breaker._forced = fleet.forced
            breaker._consecutive_opens = fleet.consecutive_opens
        else:
            if local is _CLOSED:
                breaker._to_open(
                    at,
                    "the fleet opened (this replica heard of it late)",
                    fleet.failure_count,
                    open_until=at,
                    replica=fleet.by,
                )
            if local is not _HALF_OPEN:
                breaker._to_half_open(at, fleet.by)
            elif renew:
                self._renew()
            breaker._half_open_since = now - fleet.half_open_age
            breaker._half_open_admitted = fleet.probes_admitted
            breaker._half_open_successes = fleet.probe_successes
            breaker._half_open_failures = fleet.probe_failures
            breaker._probes_high = max(breaker._probes_high, fleet.probes_high)
            breaker._consecutive_opens = fleet.consecutive_opens
        if breaker._epoch != before:
            self.own_probes = 0  # a new episode: the probes admitted here belong to the last
        if target is not _CLOSED:
            self.fleet_armed = False
        self._mirror(fleet)

    def _renew(self) -> None:
        """Same state, new epoch: calls admitted before report late (ignored)."""
        breaker = self.breaker
        breaker._epoch += 1
        if breaker._state is not _CLOSED:
            breaker._fast_epoch = -1

    def _push_open(self) -> None:
        """Open a closed fleet with this replica's open (an open anywhere wins over closed)."""
        breaker = self.breaker
        with breaker._lock:
            fleet = self.fleet
            if fleet is None or breaker._state is _CLOSED:
                return
            forced = breaker._forced
            remaining = max(0.0, breaker._open_until - breaker._clock())
        if forced:
            answer = self.store.call(self, "force", "open", "forced open (kept while rejoining)")
        else:
            answer = self.store.call(
                self,
                "trip",
                "*",
                "-1",
                f"replica {self.replica} was open when it rejoined the fleet "
                "(an open anywhere wins over closed)",
                str(breaker._failures),
                "-1",
                repr(remaining),
            )
        if answer is not None:
            with breaker._lock:
                self.synced_epoch = -1  # adopt the answer whatever the epochs say
            self._receive(answer)

    # ------------------------------------------------------------ helpers (lock held)

    def _slots_taken(self, now: float) -> bool:
        """Every probe slot of the fleet's episode is taken, as last heard, and no deadline
        has passed that would end the episode."""
        breaker = self.breaker
        config = self.config
        if breaker._half_open_admitted < config.half_open_max_calls:
            return False
        wait = config.max_half_open_wait
        return wait is None or now - breaker._half_open_since < wait

    def _could_trip(self) -> bool:
        """Whether the unsent failures could trip the fleet's window as last seen."""
        fleet = self.fleet
        if fleet is None or fleet.window is None:
            return True
        outcomes, failures, slow = fleet.window
        return self.rule.holds(
            outcomes + self.failures + self.slow, failures + self.failures, slow + self.slow
        )
