"""The fault objects :class:`chaos.Proxy` methods return, and how faults are named and cleaned.

A :class:`~chaos.Proxy` (:mod:`chaos.control.proxy`) is a handle on one proxy of a Toxiproxy server
(ours or the real one). Its fault methods return a :class:`Fault`, which does nothing until
started, either as a context manager or with :meth:`Fault.start` / :meth:`Fault.stop`::

    with proxy.latency(800, jitter=100):       # ~1.6 s more per round trip (both directions)
        call_the_service()
    outage = proxy.down().start()              # listener closed: connections cut and refused
    ...
    proxy.heal()                               # every fault this handle started is removed

Every fault is built from Toxiproxy's own primitives, so it behaves the same against the embedded
server and the real Toxiproxy 2.x:

==============  =============================================================================
fault           how
==============  =============================================================================
latency         ``latency`` toxic per stream (``stream="both"`` adds one in each direction)
bandwidth       ``bandwidth`` toxic (KB/s, 1 KB = 1000 B)
slow_close      ``slow_close`` toxic
blackhole       ``timeout`` toxic with timeout 0 per stream: data silently dropped
reset_peer      ``reset_peer`` toxic
down            the proxy is disabled (listener and open connections closed)
partition       ``mode="drop"``: a ``timeout`` 0 toxic in both directions, open and new
                connections alike; ``mode="reject"``: the proxy is disabled
slicer          ``slicer`` toxic
limit_data      ``limit_data`` toxic
flapping        a background timer disables and re-enables the proxy
==============  =============================================================================

Stale faults: how toxics are named after their owner, and how a process tells its live faults
from those a dead one left (:meth:`Proxy.remove_stale_faults`), is :mod:`chaos.control.livefaults`.

Faults are logged on the ``synapse.chaos`` logger at INFO, with stable messages (``fault
latency applied to proxy 'redis'``, ``fault latency healed on proxy 'redis'``) and ``extra``
fields ``synapse_event`` (``fault.applied`` / ``fault.healed``), ``fault``, ``proxy``,
``params`` and ``toxics``; a fault whose removal failed is logged at WARNING
(``fault.heal_failed``, with ``error``).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import secrets
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, Self

from chaos.control.faultspec import ToxicPlan
from chaos.control.livefaults import (
    MARKER_SUFFIX,
    any_marker,
    live_markers,
    other_owner_marker,
    proxy_gate,
    register,
    toxic_prefix,
    unregister,
)
from chaos.errors import ChaosError, FaultError, NotFound
from chaos.lifecycle import StartStop
from synapse_core.clock import Clock, monotonic_clock
from synapse_core.timeline import Timeline

if TYPE_CHECKING:
    from chaos.control.proxy import Proxy

# Toxic names must be unique on a server, across processes too: a random per-process token
# plus a counter. (Liveness is not read from the name: see _LIVE.)
_SESSION: Final = secrets.token_hex(3)
_COUNTER = itertools.count(1)

log = logging.getLogger("synapse.chaos")


def _log_fault(event: str, fault: Fault, error: BaseException | None = None) -> None:
    level = logging.INFO if error is None else logging.WARNING
    if not log.isEnabledFor(level):
        return
    extra = {
        "synapse_event": f"fault.{event}",
        "fault": fault.kind,
        "proxy": fault.proxy.name,
        "params": dict(fault.params),
        "toxics": fault.toxic_names,
    }
    if error is None:
        where = "to" if event == "applied" else "on"
        log.log(
            level,
            "fault %s %s %s proxy %r",
            fault.kind,
            event,
            where,
            fault.proxy.name,
            extra=extra,
        )
    else:
        extra["error"] = str(error)
        log.log(
            level,
            "fault %s could not be healed on proxy %r: %s",
            fault.kind,
            fault.proxy.name,
            error,
            extra=extra,
        )


# -- faults --------------------------------------------------------------------------------------


class Fault(StartStop):
    """One fault on one proxy; inactive until started.

    Use it as a context manager (the fault is removed on exit, also when the body raises) or call
    :meth:`start` and :meth:`stop`. A stopped fault can be started again. Each activation is
    recorded as a span on a :class:`synapse_core.Timeline` (the proxy's unless ``start`` is given
    another).

    Attributes:
        proxy: the :class:`Proxy` it applies to.
        kind: the fault kind (``"latency"``, ``"down"``...).
        params: its parameters, defaults filled in.
    """

    def __init__(self, proxy: Proxy, kind: str, params: Mapping[str, Any]) -> None:
        self.proxy = proxy
        self.kind = kind
        self.params: dict[str, Any] = dict(params)
        self._lock = threading.RLock()
        self._active = False
        self._timeline: Timeline | None = None
        self._span: int | None = None
        self._token = ""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        state = "active" if self._active else "inactive"
        return f"<Fault {self.kind}({args}) on {self.proxy.name!r} {state}>"

    @property
    def active(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._active

    @property
    def timeline(self) -> Timeline:
        """The timeline this fault records into (while active or after), else the proxy's."""
        return self._timeline or self.proxy.timeline

    @property
    def toxic_names(self) -> list[str]:
        """Names of the toxics (markers included) the fault holds on the server right now."""
        return []

    @property
    def span_id(self) -> int | None:
        """Id of the timeline span of the current (or last) activation."""
        return self._span

    def start(self, *, timeline: Timeline | None = None) -> Self:
        """Apply the fault now and return self.

        Args:
            timeline: record the span here instead of on the proxy's timeline (scenario runners
                pass their own, which may run on a virtual clock).

        Raises :class:`~chaos.errors.FaultError` if already active, and the client's errors
        (``NotFound``, ``ToxiproxyUnavailable``...) if the server refuses; nothing stays applied
        then.
        """
        with self._lock:
            if self._active:
                raise FaultError(f"{self!r} is already active; stop() it before starting it again")
            self._token = f"{_SESSION}-{next(_COUNTER)}"
            self._timeline = timeline or self.proxy.timeline
            self._apply()
            self._active = True
            self._span = self._timeline.fault_started(self.kind, self.proxy.name, **self.params)
            _log_fault("applied", self)
        self.proxy.note_started(self)
        try:
            self._after_start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Remove the fault (idempotent). The span ends even if the server cannot be reached.

        If removal failed part-way (server error, Ctrl-C), the fault is inactive but still lists
        what it left behind in :attr:`toxic_names`; calling stop() again retries removing it.
        (What is left is also stale for :meth:`Proxy.remove_stale_faults`.)
        """
        with self._lock:
            if not self._active:
                if self.toxic_names:
                    self._remove()  # a previous stop() failed part-way: try again
                return
            self._active = False
            try:
                self._remove()
            except BaseException as exc:
                _log_fault("heal_failed", self, exc)
                raise
            else:
                _log_fault("healed", self)
            finally:
                if self._span is not None and self._timeline is not None:
                    self._timeline.fault_ended(self._span)
                self.proxy.note_stopped(self)

    # -- subclass hooks ----------------------------------------------------------------------

    def _apply(self) -> None:
        raise NotImplementedError

    def _after_start(self) -> None:
        """Work that needs the span to exist already (the fault is active and recorded)."""

    def _remove(self) -> None:
        raise NotImplementedError

    def _toxic_name(self, part: str) -> str:
        return f"{toxic_prefix(self.proxy.owner)}{self.kind}:{self._token}:{part}"


class ToxicFault(Fault):
    """A fault made of toxics (latency, bandwidth, blackhole, partition drop...)."""

    def __init__(
        self, proxy: Proxy, kind: str, params: Mapping[str, Any], plans: tuple[ToxicPlan, ...]
    ) -> None:
        super().__init__(proxy, kind, params)
        self.plans = plans
        self._names: list[str] = []

    @property
    def toxic_names(self) -> list[str]:
        """Names of the toxics added by the current activation."""
        return list(self._names)

    def _apply(self) -> None:
        proxy = self.proxy
        self._names = []
        try:
            for plan in self.plans:
                name = self._toxic_name(plan.stream)
                register(proxy.client.url, proxy.name, name)
                self._names.append(name)
                proxy.client.add_toxic(
                    proxy.name,
                    plan.type,
                    name=name,
                    stream=plan.stream,
                    toxicity=plan.toxicity,
                    attributes=plan.attributes,
                )
        except BaseException:
            self._remove()
            raise

    def _remove(self) -> None:
        proxy = self.proxy
        names = list(self._names)
        left: list[str] = []  # not known to be removed: kept for a retry by stop()
        first_error: BaseException | None = None
        done = 0
        try:
            for name in names:
                try:
                    proxy.client.remove_toxic(proxy.name, name)
                except NotFound:
                    pass  # already gone (proxy deleted, server reset): the goal is reached
                except ChaosError as exc:
                    first_error = first_error or exc
                    left.append(name)
                done += 1
        except BaseException:
            left.extend(names[done:])  # interrupted (Ctrl-C): the current one and the rest
            raise
        finally:
            # Whatever happened, none of them is held by a live fault any more: a toxic that
            # stays behind is stale, so remove_stale_faults() (in this process too) removes it.
            for name in names:
                unregister(proxy.client.url, proxy.name, name)
            self._names = left
        if first_error is not None:
            raise first_error


class _Disable:
    """Disables a proxy while held; a ``noop`` marker toxic tells later runs it was us."""

    def __init__(self, proxy: Proxy, marker: str) -> None:
        self.proxy = proxy
        self.marker = marker
        self.held = False

    def acquire(self) -> None:
        proxy, client = self.proxy, self.proxy.client
        with proxy_gate(client.url, proxy.name):
            register(client.url, proxy.name, self.marker)
            disabling = False
            try:
                # Marker first: if we die after disabling, the marker is there to be found.
                client.add_toxic(proxy.name, "noop", name=self.marker)
                disabling = True
                client.disable(proxy.name)
            except BaseException:
                unregister(client.url, proxy.name, self.marker)
                # The disable may have reached the server even though it raised (a lost
                # response, Ctrl-C): undo it unless another live fault keeps the proxy down.
                # The marker goes only once the proxy is known to be enabled, so a stale
                # cleanup can still re-enable it otherwise.
                if not disabling or self._enable_quietly():
                    with contextlib.suppress(ChaosError):  # best effort: the error is raised
                        client.discard_toxic(proxy.name, self.marker)
                raise
            self.held = True

    def _enable_quietly(self) -> bool:
        """Best effort: enable the proxy if no live marker wants it down; True if it is done."""
        proxy, client = self.proxy, self.proxy.client
        try:
            if live_markers(client.url, proxy.name) == 0 and not self._held_by_other_owner():
                client.enable(proxy.name)
        except NotFound:
            return True  # the proxy is gone: nothing is left disabled
        except Exception:
            return False
        return True

    def _held_by_other_owner(self) -> bool:
        # The live-marker registry only knows this process; another process sharing the server
        # under another owner shows its hold only as a marker toxic on the server.
        proxy = self.proxy
        return other_owner_marker(proxy.client.toxics(proxy.name), proxy.owner) is not None

    def release(self) -> None:
        """Enable the proxy (unless another live marker holds it) and remove the marker.

        Another owner's marker on the proxy (another process sharing the server) holds it too:
        the proxy stays disabled for that owner's fault to end.

        If it raises, the fault stays held (but no longer live) so it can be retried.
        """
        if not self.held:
            return
        proxy, client = self.proxy, self.proxy.client
        with proxy_gate(client.url, proxy.name):
            unregister(client.url, proxy.name, self.marker)
            last_here = live_markers(client.url, proxy.name) == 0
            enabled = False
            try:
                # Enable before removing the marker: dying in between leaves a marker on an
                # enabled proxy (harmless, cleaned later), never a disabled proxy without one.
                if last_here and not self._held_by_other_owner():
                    client.enable(proxy.name)
                    enabled = True
            except NotFound:
                self.held = False
                return
            client.discard_toxic(proxy.name, self.marker)
            self.held = False
            if last_here and not enabled:
                # Another owner's release may have run at the same moment, seen our marker and
                # left the proxy down too: whoever removes the last marker enables it.
                with contextlib.suppress(NotFound):
                    if not any_marker(client.toxics(proxy.name)):
                        client.enable(proxy.name)


class DisableFault(Fault):
    """A fault that disables the proxy: ``down()`` and ``partition(mode="reject")``."""

    def __init__(self, proxy: Proxy, kind: str, params: Mapping[str, Any]) -> None:
        super().__init__(proxy, kind, params)
        self._disable: _Disable | None = None

    @property
    def toxic_names(self) -> list[str]:
        """The marker toxic while the proxy is held disabled."""
        return [self._disable.marker] if self._disable is not None else []

    def _apply(self) -> None:
        self._disable = _Disable(self.proxy, self._toxic_name("marker"))
        self._disable.acquire()

    def _remove(self) -> None:
        if self._disable is not None:
            self._disable.release()
            self._disable = None


class FlappingFault(Fault):
    """The proxy goes down and up repeatedly: down for ``period * down_fraction`` seconds first.

    By default a background thread does the switching; it is joined by :meth:`stop`. It follows
    real (monotonic) time whatever the timeline's clock: it switches a real proxy, and a virtual
    clock that nobody advances would otherwise hold the proxy down for good. A scenario runner
    starts it with ``background=False`` and calls :meth:`sync` instead; the schedule then follows
    the clock of the timeline the fault records into (virtual time included). Spans always use
    the timeline's clock. Each down phase is also recorded as a ``down`` span with
    ``via="flapping"``.
    """

    def __init__(self, proxy: Proxy, params: Mapping[str, Any]) -> None:
        super().__init__(proxy, "flapping", params)
        self.period: float = params["period"]
        self.down_fraction: float = params["down_fraction"]
        self._down_seconds = self.period * self.down_fraction
        self._is_down = False
        self._next_change = 0.0
        self._disable: _Disable | None = None
        self._phase_span: int | None = None
        self._phases = 0
        self._thread: threading.Thread | None = None
        self._wakeup = threading.Event()
        self._background = True
        self._schedule_clock: Clock = monotonic_clock
        self.error: BaseException | None = None
        """The error that stopped the background switching, if any (raised again by stop())."""

    @property
    def toxic_names(self) -> list[str]:
        """The marker toxic of the current down phase, if any."""
        disable = self._disable
        return [disable.marker] if disable is not None else []

    @property
    def is_down(self) -> bool:
        """True while in a down phase."""
        return self._is_down

    @property
    def next_change(self) -> float | None:
        """Time of the next switch, or ``None`` when inactive.

        On the schedule's clock: ``time.monotonic`` with background switching, else the clock of
        the fault's timeline.
        """
        return self._next_change if self._active else None

    def start(self, *, timeline: Timeline | None = None, background: bool = True) -> Self:
        """Start flapping (down at once); ``background=False`` leaves the switching to sync()."""
        self._background = background
        return super().start(timeline=timeline)

    def _apply(self) -> None:
        self.error = None
        self._phases = 0
        # Monotonic for the thread whatever the timeline's clock (see the class docstring).
        self._schedule_clock = monotonic_clock if self._background else self.timeline.clock

    def _after_start(self) -> None:
        # Here rather than in _apply so the flapping span starts before its first down phase.
        with self._lock:
            self._go_down()
            self._next_change = self._schedule_clock() + self._down_seconds
        if self._background:
            self._wakeup.clear()
            self._thread = threading.Thread(
                target=self._run, name=f"synapse-flapping-{self.proxy.name}", daemon=True
            )
            self._thread.start()

    def skip_periods(self, now: float) -> int:
        """Drop the whole periods that ended by *now* without switching; return how many.

        The phase (down or up) stays what it was, and the next switch is the one a punctual
        switcher would make after *now*: at most two switches remain due by *now*. Real-time
        switchers call it when late, so a long stall costs two API requests, not one per missed
        switch. (No span is recorded for the phases skipped: they never happened.)
        """
        with self._lock:
            if not self._active or self._next_change > now:
                return 0
            periods = math.floor((now - self._next_change) / self.period)
            if periods > 0:
                self._next_change += periods * self.period
            return max(periods, 0)

    def sync(self, now: float | None = None, *, catch_up: bool = False) -> int:
        """Make every switch due by *now* (default: the schedule's clock); return how many happened.

        With *catch_up*, whole periods missed are skipped first (see :meth:`skip_periods`).
        """
        with self._lock:
            if not self._active:
                return 0
            when = self._schedule_clock() if now is None else now
            if catch_up:
                self.skip_periods(when)
            switches = 0
            while self._next_change <= when:
                if self._is_down:
                    self._go_up()
                    self._next_change += self.period - self._down_seconds
                else:
                    self._go_down()
                    self._next_change += self._down_seconds
                switches += 1
            return switches

    def _run(self) -> None:
        clock = self._schedule_clock
        while True:
            delay = max(0.0, self._next_change - clock())
            if self._wakeup.wait(delay):
                return
            try:
                self.sync(catch_up=True)
            except BaseException as exc:  # reported by stop(); a thread must not die loudly
                self.error = exc
                return

    def _go_down(self) -> None:
        self._phases += 1
        # One marker per phase: "<n>:marker", so a later run recognises it like any marker.
        self._disable = _Disable(self.proxy, self._toxic_name(f"{self._phases}{MARKER_SUFFIX}"))
        self._disable.acquire()
        self._is_down = True
        self._phase_span = self.timeline.fault_started("down", self.proxy.name, via="flapping")

    def _go_up(self) -> None:
        disable = self._disable
        self._is_down = False
        try:
            if disable is not None:
                disable.release()
            self._disable = None  # kept if release() failed, so stop() can retry it
        finally:
            if self._phase_span is not None:
                self.timeline.fault_ended(self._phase_span)
                self._phase_span = None

    def stop(self) -> None:
        """Stop switching (the thread is joined) and leave the proxy up."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._wakeup.set()
            thread.join(60.0)
        super().stop()
        error, self.error = self.error, None
        if error is not None:
            raise FaultError(
                f"flapping on proxy {self.proxy.name!r} stopped switching early: {error}"
            ) from error

    def _remove(self) -> None:
        if self._is_down:
            self._go_up()
        elif self._disable is not None:  # a release that failed before: retry it
            self._disable.release()
            self._disable = None
