"""Timelines: faults and breaker events recorded on one clock, side by side.

The chaos harness records each fault it applies as a :class:`FaultSpan`; the pytest plugin records
breaker state changes and rejections as :class:`BreakerRecord`. Both are stamped with the
timeline's clock (monotonic by default, a ``VirtualClock`` when a scenario is stepped), so
"the breaker opened 1.2 s after the partition started" is a subtraction.
"""

from __future__ import annotations

import itertools
import threading
import weakref
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from synapse_core.breaker.breaker import CircuitBreaker
from synapse_core.breaker.events import (
    CircuitClosed,
    CircuitEvent,
    CircuitOpened,
    ExternalTriggerActivated,
    RequestRejected,
    Unsubscribe,
)
from synapse_core.clock import Clock, check_clock, monotonic_clock

if TYPE_CHECKING:
    from synapse_core.foreign import ForeignBreaker, ForeignEvent


@dataclass(frozen=True, slots=True)
class FaultSpan:
    """A fault applied to a proxy from ``start`` until ``end`` (``None`` while still active).

    ``seq`` and ``end_seq`` place its start and end among the timeline's other records (as
    :attr:`BreakerRecord.seq` does) when times tie; they stay out of :meth:`to_dict`.
    """

    id: int
    fault: str
    proxy: str
    start: float
    end: float | None = None
    params: dict[str, Any] = field(default_factory=dict)
    seq: int = 0
    end_seq: int | None = None

    @property
    def active(self) -> bool:
        """Whether the fault has not been removed yet."""
        return self.end is None

    def duration(self, now: float | None = None) -> float | None:
        """Seconds the fault lasted (up to *now* if still active and *now* is given)."""
        end = self.end if self.end is not None else now
        return None if end is None else end - self.start

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (without the sequence numbers)."""
        data = asdict(self)
        del data["seq"], data["end_seq"]
        return data


@dataclass(frozen=True, slots=True)
class BreakerRecord:
    """One breaker event on the timeline's clock.

    ``kind`` is the event kind (``opened``, ``half_opened``, ``closed``, ``request_rejected``,
    ``external_trigger_activated``); ``state`` the breaker state right after it; ``breaker_time``
    the event's own timestamp on the breaker's clock. ``seq`` orders every record and upstream
    call of the timeline (times can tie on a virtual clock); ``source`` tells apart breakers
    that share a name. ``real_at`` is when it was recorded on the timeline's *real* clock
    (``time.monotonic`` unless told otherwise), also on a virtual-clock timeline: it places the
    event among things that happened in real time, such as traffic through a chaos proxy. It
    stays out of :meth:`to_dict` (``at`` is the time reports show).
    """

    breaker: str
    kind: str
    state: str
    at: float
    breaker_time: float
    detail: dict[str, Any] = field(default_factory=dict)
    seq: int = 0
    source: str = ""
    real_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (without ``real_at``)."""
        data = asdict(self)
        del data["real_at"]
        return data


_STATE_AFTER = {
    "opened": "open",
    "half_opened": "half_open",
    "closed": "closed",
}


class Timeline:
    """A thread-safe record of fault spans and breaker events on one clock.

    *real_clock* stamps each breaker record's ``real_at`` as well (see :class:`BreakerRecord`).
    """

    def __init__(self, clock: Clock | None = None, *, real_clock: Clock = monotonic_clock) -> None:
        self.clock: Clock = monotonic_clock if clock is None else check_clock(clock)
        self.real_clock: Clock = check_clock(real_clock)
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._spans: dict[int, FaultSpan] = {}
        self._records: list[BreakerRecord] = []
        self._watches: list[Unsubscribe] = []
        self._sources: weakref.WeakKeyDictionary[object, str] = weakref.WeakKeyDictionary()
        self._foreign: list[tuple[weakref.ref[object], ForeignBreaker]] = []
        self._upstream_calls: list[tuple[str, float, int]] = []
        self._seq = itertools.count(1)
        self._closed = False
        self.started_at = self.clock()
        self.real_started_at = self.real_clock()

    # ------------------------------------------------------------------ faults

    def fault_started(
        self, fault: str, proxy: str, *, at: float | None = None, **params: Any
    ) -> int:
        """Record that *fault* began on *proxy* (now, or at time *at*); returns the span id."""
        start = self.clock() if at is None else at
        with self._lock:
            span_id = next(self._ids)
            self._spans[span_id] = FaultSpan(
                span_id, fault, proxy, start, None, params, seq=next(self._seq)
            )
            return span_id

    def fault_ended(self, span_id: int) -> FaultSpan:
        """Record that the fault *span_id* was removed now (idempotent); returns the span."""
        with self._lock:
            span = self._spans[span_id]
            if span.end is None:
                span = replace(span, end=self.clock(), end_seq=next(self._seq))
                self._spans[span_id] = span
            return span

    @property
    def faults(self) -> list[FaultSpan]:
        """Every fault span, in start order."""
        with self._lock:
            return sorted(self._spans.values(), key=lambda s: (s.start, s.id))

    # ------------------------------------------------------------------ breakers

    def record(
        self,
        event: CircuitEvent,
        state: str | None = None,
        *,
        source: str = "",
        at: float | None = None,
    ) -> BreakerRecord:
        """Add a breaker event at *at* on this timeline's clock (default: now).

        :meth:`watch` passes when the event happened, which may be earlier than its delivery
        (a transition that fell due is applied at the breaker's next call, dated when it was due).
        """
        detail: dict[str, Any] = {}
        if isinstance(event, CircuitOpened):
            detail = {
                "reason": event.reason,
                "failure_count": event.failure_count,
                "previous_state": event.previous_state.value,
            }
        elif isinstance(event, CircuitClosed):
            detail = {"reason": event.reason}
        elif isinstance(event, RequestRejected):
            detail = {"retry_after": event.retry_after}
            state = state or event.state.value
        elif isinstance(event, ExternalTriggerActivated):
            detail = {"trigger": event.trigger_name}
        replica = getattr(event, "replica", None)
        if replica is not None:  # a shared breaker: the replica that caused the transition
            detail["replica"] = replica
        record = BreakerRecord(
            breaker=event.breaker_name,
            kind=event.kind,
            state=state or _STATE_AFTER.get(event.kind, ""),
            at=self.clock() if at is None else at,
            breaker_time=event.timestamp,
            detail=detail,
            source=source,
        )
        return self.add(record)

    def add(self, record: BreakerRecord) -> BreakerRecord:
        """Add a ready-made record (e.g. a state change polled from another process).

        Its ``seq`` (and ``real_at``, unless set) is assigned here; the stored record is returned.
        """
        real_at = self.real_clock() if record.real_at is None else record.real_at
        with self._lock:
            record = replace(record, seq=next(self._seq), real_at=real_at)
            self._records.append(record)
        return record

    def upstream_call(self, upstream: str) -> float:
        """Note that a call reached *upstream* now (see ``assert_no_calls_while_open``)."""
        at = self.clock()
        with self._lock:
            self._upstream_calls.append((upstream, at, next(self._seq)))
        return at

    def upstream_calls(self, upstream: str | None = None) -> list[float]:
        """Times at which calls reached *upstream* (any upstream when ``None``)."""
        return [at for at, _ in self.upstream_call_marks(upstream)]

    def upstream_call_marks(self, upstream: str | None = None) -> list[tuple[float, int]]:
        """``(time, seq)`` of each call that reached *upstream* (any when ``None``)."""
        with self._lock:
            return [(at, seq) for name, at, seq in self._upstream_calls if upstream in (None, name)]

    def watch(
        self, breaker: object, *, source: str | None = None, name: str | None = None
    ) -> Unsubscribe:
        """Record every event of *breaker* from now on; :meth:`close` stops all watches.

        *breaker* is a Synapse ``CircuitBreaker``, or a breaker of pybreaker, aiobreaker,
        purgatory (its factory) or circuitbreaker, recorded through that library's hooks or by
        polling it (see ``synapse_core.foreign``); *name* names such a breaker's records
        (for a purgatory factory: keeps only that circuit). Its records carry *source*
        (default: the breaker's name and identity), which tells apart breakers that share a
        name. Watching after :meth:`close`, or watching a breaker twice, does nothing.
        """
        if not isinstance(breaker, CircuitBreaker):
            return self._watch_foreign(breaker, source, name)
        if name is not None:
            raise TypeError("name= names breakers of other libraries; a CircuitBreaker has one")
        tag = source if source is not None else f"{breaker.name}#{id(breaker):x}"
        with self._lock:
            if self._closed:
                return Unsubscribe(lambda: None)
            clock = breaker.clock
            handle = breaker.subscribe(
                lambda event: self.record(event, source=tag, at=self._happened(event, clock))
            )
            self._watches.append(handle)
            self._sources[breaker] = tag
        return handle

    def _happened(self, event: CircuitEvent, clock: Clock) -> float:
        """When *event* (stamped on *clock*) happened, on this timeline's clock."""
        if clock is self.clock:
            return event.timestamp
        # Another clock: the event is as old on ours as it is on the breaker's.
        return self.clock() - max(0.0, clock() - event.timestamp)

    def _watch_foreign(self, obj: object, source: str | None, name: str | None) -> Unsubscribe:
        from synapse_core.foreign import adapt

        adapter = adapt(obj, name)
        with self._lock:
            if self._closed or any(
                ref() is obj and a._given_name == name for ref, a in self._foreign
            ):
                return Unsubscribe(lambda: None)
            tag = self._sources.get(obj) or source or f"{adapter.library}#{id(obj):x}"
            self._sources[obj] = tag
            self._foreign.append((weakref.ref(obj), adapter))
        handle = adapter.attach(lambda event: self._record_foreign(event, tag))
        with self._lock:
            self._watches.append(handle)
        return handle

    def _record_foreign(self, event: ForeignEvent, source: str) -> None:
        """A foreign breaker's event, dated *ago* real seconds back when its library knows."""
        now = self.clock()
        real_now = self.real_clock()
        at = now - event.ago if self.clock is self.real_clock else now
        self.add(
            BreakerRecord(
                breaker=event.breaker,
                kind=event.kind,
                state=_STATE_AFTER.get(event.kind, ""),
                at=at,
                breaker_time=real_now - event.ago
                if event.breaker_time is None
                else event.breaker_time,
                detail=dict(event.detail),
                source=source,
                real_at=real_now - event.ago,
            )
        )

    def foreign_of(self, breaker: object) -> list[ForeignBreaker]:
        """The adapters watching *breaker* (another library's), or those recording a name."""
        with self._lock:
            pairs = list(self._foreign)
        if isinstance(breaker, str):
            found = []
            for _, adapter in pairs:
                try:
                    names = adapter.names()
                except Exception:  # a library failing to list its breakers: not this one
                    continue
                if breaker in names:
                    found.append(adapter)
            return found
        return [adapter for ref, adapter in pairs if ref() is breaker]

    def refresh(self) -> None:
        """Poll the watched breakers that have no hooks, so what they did is recorded now."""
        with self._lock:
            polled = [adapter for _, adapter in self._foreign if adapter.polled]
        for adapter in polled:
            adapter.poll()

    def source_of(self, breaker: object) -> str | None:
        """The ``source`` tag of *breaker*'s records, or ``None`` if this timeline never watched it.

        Tells a breaker's records apart from those of another breaker with the same name.
        """
        with self._lock:
            try:
                return self._sources.get(breaker)
            except TypeError:  # not weakly referenceable: never watched
                return None

    def watch_all(self, breakers: Iterable[CircuitBreaker]) -> None:
        """:meth:`watch` each breaker."""
        for breaker in breakers:
            self.watch(breaker)

    @property
    def breaker_events(self) -> list[BreakerRecord]:
        """Every breaker record, in the order recorded."""
        with self._lock:
            return list(self._records)

    def events_of(
        self, breaker: str, kinds: Iterable[str] | None = None, *, source: str | None = None
    ) -> list[BreakerRecord]:
        """The records of the breaker(s) named *breaker*, optionally only some kinds.

        *source* (see :meth:`source_of`) keeps one breaker's records when several share a name.
        """
        wanted = None if kinds is None else set(kinds)
        return [
            r
            for r in self.breaker_events
            if r.breaker == breaker
            and (wanted is None or r.kind in wanted)
            and (source is None or r.source == source)
        ]

    def close(self) -> None:
        """Stop watching every breaker (recorded data stays)."""
        with self._lock:
            self._closed = True
            watches, self._watches = self._watches, []
        for handle in watches:
            handle()

    def to_dict(self) -> dict[str, Any]:
        """``{"faults": [...], "breaker_events": [...]}``, JSON-ready."""
        return {
            "faults": [s.to_dict() for s in self.faults],
            "breaker_events": [r.to_dict() for r in self.breaker_events],
        }

    def render(self, origin: float | None = None) -> str:
        """A plain-text listing of faults and breaker events merged in time order.

        Things recorded at the same instant keep the order they were recorded in.
        """
        base = self.started_at if origin is None else origin
        rows: list[tuple[float, int, str]] = []
        for span in self.faults:
            rows.append(
                (span.start, span.seq, f"fault {span.fault} on {span.proxy} started {span.params}")
            )
            if span.end is not None:
                rows.append(
                    (span.end, span.end_seq or 0, f"fault {span.fault} on {span.proxy} healed")
                )
        for rec in self.breaker_events:
            rows.append((rec.at, rec.seq, f"breaker {rec.breaker}: {rec.kind} -> {rec.state}"))
        rows.sort(key=lambda r: (r[0], r[1]))
        return "\n".join(f"  {at - base:9.3f}s  {text}" for at, _, text in rows)
