"""Play a :class:`~chaos.Scenario` against proxies, in real time or on a virtual clock.

Real time (blocks; every fault is removed on return, on an exception and on Ctrl-C)::

    runner = ScenarioRunner(load_scenario("partition-heal"), {"service": proxy})
    runner.run(progress=ConsoleProgress(sys.stderr))
    print(runner.timeline.render())

Virtual time (the caller moves a :class:`synapse_core.VirtualClock`; nothing sleeps)::

    clock = VirtualClock()
    with ScenarioRunner(scenario, {"service": proxy}, clock=clock) as runner:
        runner.advance(12.5)   # the clock stops at every step due on the way: exact timestamps
        clock.advance(1.0)
        runner.step()          # or move the clock yourself and apply what became due

The same agenda drives both modes: steps, fault durations, heal steps, the switches of a
``flapping`` fault and the scenario's end. The runner drives flapping itself (no background
thread), so flapping is exact under a virtual clock too. What happened is in :attr:`~
ScenarioRunner.log` (events) and :attr:`~ScenarioRunner.timeline` (fault spans on the runner's
clock).
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, Self, TextIO

from chaos.control.faults import Fault, FlappingFault
from chaos.control.proxy import Proxy
from chaos.errors import ScenarioBindingError, ScenarioError
from chaos.scenarios.scenario import Scenario
from synapse_core.clock import Clock, VirtualClock, monotonic_clock
from synapse_core.timeline import Timeline

if TYPE_CHECKING:
    from chaos.docker.faults import ContainerFault

TICK: Final = 0.1
"""Longest real-time wait between two progress updates, seconds."""

RunnerAction = Literal[
    "begin",
    "stale",
    "apply",
    "heal",
    "expire",
    "down",
    "up",
    "end",
    "cleanup",
    "error",
    "interrupted",
]
"""What a :class:`RunnerEvent` records (see its ``action``)."""

_AgendaAction = Literal["expire", "heal", "apply", "end"]

# Order of agenda items due at the same instant: faults end before new ones start.
_ORDER: Final[dict[_AgendaAction, int]] = {"expire": 0, "heal": 0, "apply": 1, "end": 2}


@dataclasses.dataclass(frozen=True, slots=True)
class RunnerEvent:
    """One entry of a runner's event log.

    Attributes:
        at: seconds since the scenario started.
        time: the runner's clock at that moment.
        action: ``begin``, ``stale`` (leftover faults removed), ``apply``, ``heal`` (a heal step),
            ``expire`` (a step's duration ran out), ``down``/``up`` (a flapping switch),
            ``end``, ``cleanup`` (faults removed because the run stopped early), ``error``,
            ``interrupted`` (Ctrl-C).
        proxy: the scenario's proxy name, if any.
        fault: the fault kind, if any.
        step: 1-based step number, if any.
        params: the fault's parameters (``apply``).
        message: free text (error messages, stale toxic names...).
    """

    at: float
    time: float
    action: RunnerAction
    proxy: str = ""
    fault: str = ""
    step: int | None = None
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    message: str = ""

    def describe(self) -> str:
        """One human-readable line."""
        parts = [f"{self.at:8.3f}s", f"{self.action:<8}"]
        if self.fault:
            args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
            parts.append(f"{self.fault}({args})" if self.action == "apply" else self.fault)
        if self.proxy:
            parts.append(f"on {self.proxy}")
        if self.step is not None:
            parts.append(f"[step {self.step}]")
        if self.message:
            parts.append(self.message)
        return " ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        data = dataclasses.asdict(self)
        data["params"] = dict(self.params)
        return data


class Progress(Protocol):
    """What :meth:`ScenarioRunner.run` reports to: each event, and a tick every <= 0.1 s."""

    def event(self, event: RunnerEvent) -> None:
        """An event was logged."""

    def tick(self, runner: ScenarioRunner) -> None:
        """Time passed; redraw if you like."""

    def close(self) -> None:
        """The run is over."""


@dataclasses.dataclass(order=True, frozen=True, slots=True)
class _Item:
    offset: float
    order: int
    step: int
    action: _AgendaAction


class ScenarioRunner:
    """Applies a scenario's steps to proxies as their time comes.

    Args:
        scenario: what to play.
        proxies: a :class:`chaos.Proxy` for each proxy name the scenario declares (more are
            ignored).
        clock: monotonic seconds (default ``time.monotonic``; the timeline's clock if only a
            timeline is given). With a :class:`~synapse_core.VirtualClock`, :meth:`run` and
            :meth:`advance` move it instead of sleeping.
        timeline: where fault spans go (default: a new one on *clock*); it must use *clock*.
        on_event: called with every :class:`RunnerEvent` as it is logged.
        sleep: how :meth:`run` waits in real time (``time.sleep``; naps are <= 0.1 s).
        containers: a container for each container name the scenario declares (a
            :class:`chaos.docker.Container`, a docker SDK or testcontainers container, or a
            container name), for steps with ``container:``.

    Raises :class:`~chaos.errors.ScenarioBindingError` if a declared proxy or container is
    missing.
    """

    def __init__(
        self,
        scenario: Scenario,
        proxies: Mapping[str, Proxy],
        clock: Clock | None = None,
        timeline: Timeline | None = None,
        *,
        on_event: Callable[[RunnerEvent], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        containers: Mapping[str, object] | None = None,
    ) -> None:
        given_containers = containers or {}
        for kind, declared, bound in (
            ("proxy", scenario.proxies, proxies),
            ("container", scenario.containers, given_containers),
        ):
            missing = [name for name in declared if name not in bound]
            if missing:
                given = ", ".join(sorted(bound)) or "none"
                raise ScenarioBindingError(
                    f"no {kind} given for {', '.join(repr(m) for m in missing)} (given: "
                    f"{given}); the scenario uses {', '.join(declared)}",
                    scenario=scenario.name,
                )
        if clock is None:
            clock = timeline.clock if timeline is not None else monotonic_clock
        if timeline is None:
            timeline = Timeline(clock)
        elif timeline.clock is not clock:
            raise ValueError(
                "timeline must use the runner's clock (pass Timeline(clock) or omit one of them)"
            )
        self.scenario = scenario
        self.containers: dict[str, Any] = {}
        if scenario.containers:
            from chaos.docker.container import Container  # docker only for container steps

            self.containers = {
                name: Container.of(given_containers[name], timeline=timeline)
                for name in scenario.containers
            }
        self.proxies = {name: proxies[name] for name in scenario.proxies}
        self.clock: Clock = clock
        self.timeline = timeline
        self.log: list[RunnerEvent] = []
        self._on_event = on_event
        self._agenda = self._build_agenda(scenario)
        self._position = 0
        self._started_at: float | None = None
        self._finished = False
        self._active: dict[int, Fault | ContainerFault] = {}
        # A plain flag, not a threading.Event: cancel() is called from signal handlers, and an
        # Event's lock may be held by the very code the signal interrupted.
        self._cancelled = False
        self._sleep = sleep
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        state = "finished" if self._finished else "running" if self.started else "not started"
        return f"<ScenarioRunner {self.scenario.name!r} {state}>"

    @staticmethod
    def _build_agenda(scenario: Scenario) -> list[_Item]:
        items = []
        for index, step in enumerate(scenario.steps):
            if step.is_heal:
                items.append(_Item(step.at, _ORDER["heal"], index, "heal"))
                continue
            items.append(_Item(step.at, _ORDER["apply"], index, "apply"))
            end = scenario.step_end(index)
            if step.duration is not None and end == step.at + step.duration:
                items.append(_Item(end, _ORDER["expire"], index, "expire"))
        items.append(_Item(scenario.duration, _ORDER["end"], len(scenario.steps), "end"))
        return sorted(items)

    # -- state -----------------------------------------------------------------------------------

    @property
    def started(self) -> bool:
        """True once :meth:`start` ran (directly or through step/advance/run)."""
        return self._started_at is not None

    @property
    def finished(self) -> bool:
        """True once the scenario ended, run() returned, or the started runner was stopped."""
        return self._finished

    @property
    def started_at(self) -> float | None:
        """Clock time the scenario started."""
        return self._started_at

    @property
    def elapsed(self) -> float:
        """Seconds since the start (0 before), capped at the scenario's duration once finished."""
        if self._started_at is None:
            return 0.0
        return min(self.clock() - self._started_at, self.scenario.duration)

    @property
    def active_faults(self) -> dict[int, Fault | ContainerFault]:
        """The faults active now (proxy and container faults), by 0-based step index."""
        with self._lock:
            return dict(self._active)

    def next_due(self) -> float | None:
        """Clock time of the next thing to do, or ``None`` when finished."""
        with self._lock:
            if self._finished:
                return None
            base = self.clock() if self._started_at is None else self._started_at
            due = base + self._agenda[self._position].offset
            for fault in self._active.values():
                if isinstance(fault, FlappingFault) and fault.next_change is not None:
                    due = min(due, fault.next_change)
            return due

    # -- driving ---------------------------------------------------------------------------------

    def start(self) -> Self:
        """Begin: remove stale faults of the proxies' owners, then apply the steps due at 0."""
        with self._lock:
            if self._started_at is not None:
                return self
            self._started_at = self.clock()
            self._emit("begin", message=f"scenario {self.scenario.name}")
            for name, proxy in self.proxies.items():
                stale = proxy.remove_stale_faults()
                if stale:
                    self._emit("stale", proxy=name, message=", ".join(stale))
            self._process(self.clock())
        return self

    def step(self) -> list[RunnerEvent]:
        """Apply everything due by the clock's current time; return the events logged."""
        with self._lock:
            before = len(self.log)
            if self._started_at is None:
                self.start()
            else:
                self._process(self.clock())
            return self.log[before:]

    def advance(self, seconds: float) -> list[RunnerEvent]:
        """Move the virtual clock *seconds* forward, stopping at each due item on the way.

        Every step, expiry and flapping switch is applied at its exact time, so the timeline's
        spans are exact. Needs a :class:`~synapse_core.VirtualClock`.
        """
        clock = self._virtual_clock("advance()")
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, int | float)
            or not 0 <= seconds < math.inf
        ):
            raise ValueError(f"seconds must be a finite number >= 0, got {seconds!r}")
        with self._lock:
            before = len(self.log)
            if self._started_at is None:
                self.start()
            target = clock() + seconds
            while not self._cancelled:
                due = self.next_due()
                if due is None or due > target:
                    break
                clock.advance_to(max(due, clock()))
                self._process(clock())
            clock.advance_to(max(target, clock()))
            self._process(clock())
            return self.log[before:]

    def run(self, *, progress: Progress | None = None) -> Timeline:
        """Play the whole scenario and return the timeline; blocks for its duration.

        With a virtual clock it completes at once. Faults are removed when it returns, when
        it raises and on ``KeyboardInterrupt``; :meth:`cancel` (from another thread) ends it
        early the same way.
        """
        listener = self._on_event
        if progress is not None:
            self._on_event = _chain(listener, progress.event)
        try:
            if isinstance(self.clock, VirtualClock):
                self.advance(max(0.0, self.scenario.duration - self.elapsed))
            else:
                self._run_real_time(progress)
            self.stop()
            self._finished = True  # also when cancelled before it began (stop() was a no-op)
        except KeyboardInterrupt:
            self._emit("interrupted", message="Ctrl-C: removing the faults")
            self.stop(raise_errors=False)
            raise
        except BaseException as exc:
            self._emit("error", message=f"{type(exc).__name__}: {exc}")
            self.stop(raise_errors=False)
            raise
        finally:
            self._on_event = listener
            if progress is not None:
                progress.close()
        return self.timeline

    def _run_real_time(self, progress: Progress | None) -> None:
        if self._cancelled:
            return  # cancelled before it began: apply nothing
        self.start()
        while not self._finished and not self._cancelled:
            if progress is not None:
                progress.tick(self)
            due = self.next_due()
            if due is None:
                break
            wait = due - self.clock()
            if wait > 0:
                # Short naps: progress redraws and cancel() take effect within TICK seconds.
                self._sleep(min(wait, TICK))
                continue
            self.step()

    def cancel(self) -> None:
        """Ask :meth:`run` to stop early (thread-safe, signal-safe); it removes the faults.

        Cancelling before run() begins makes it apply nothing.
        """
        self._cancelled = True

    def stop(self, *, raise_errors: bool = True) -> None:
        """Remove every fault still active and finish (idempotent).

        Removal goes on past errors (each is logged); the first is raised if *raise_errors*.
        Before :meth:`start` it does nothing: the runner can still be started or run.
        """
        with self._lock:
            if self._started_at is None:
                # Nothing applied, nothing to remove; finishing here would make a later run()
                # return at once having played nothing.
                return
            early = not self._finished
            first_error: BaseException | None = None
            for index in sorted(self._active, reverse=True):
                try:
                    self._end_fault(index, "cleanup")
                except Exception as exc:
                    first_error = first_error or exc
                    self._emit("error", step=index + 1, message=f"could not remove fault: {exc}")
            self._finished = True
            if early:
                self._emit("end", message="stopped early")
            if first_error is not None and raise_errors:
                raise first_error

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop(raise_errors=exc is None)

    # -- internals -------------------------------------------------------------------------------

    def _virtual_clock(self, what: str) -> VirtualClock:
        if not isinstance(self.clock, VirtualClock):
            raise ScenarioError(
                f"{what} needs a VirtualClock (ScenarioRunner(..., clock=VirtualClock())); "
                "with a real clock use run() or step()",
                scenario=self.scenario.name,
            )
        return self.clock

    def _process(self, now: float) -> None:
        """Apply every agenda item and flapping switch due by *now*, in time order."""
        assert self._started_at is not None
        real_time = not isinstance(self.clock, VirtualClock)
        # cancel() (Ctrl-C, SIGTERM) is honoured between two actions, however many are due.
        while not self._finished and not self._cancelled:
            item = self._agenda[self._position]
            item_time = self._started_at + item.offset
            flapper = self._next_flapper()
            if flapper is not None:
                index, fault = flapper
                change = fault.next_change
                assert change is not None
                if change < item_time and change <= now and real_time:
                    # Late (a busy or suspended process): skip the whole periods missed, to the
                    # current phase, instead of replaying every switch against the server.
                    fault.skip_periods(min(now, item_time))
                    change = fault.next_change
                    assert change is not None
                if change < item_time and change <= now:
                    fault.sync(change)
                    self._emit(
                        "down" if fault.is_down else "up",
                        proxy=self.scenario.steps[index].proxy,
                        fault="flapping",
                        step=index + 1,
                    )
                    continue
            if item_time > now:
                return
            self._position += 1
            self._do(item)

    def _next_flapper(self) -> tuple[int, FlappingFault] | None:
        candidates = [
            (fault.next_change, index, fault)
            for index, fault in self._active.items()
            if isinstance(fault, FlappingFault) and fault.next_change is not None
        ]
        if not candidates:
            return None
        _, index, fault = min(candidates, key=lambda c: (c[0], c[1]))
        return index, fault

    def _do(self, item: _Item) -> None:
        if item.action == "end":
            for index in sorted(self._active, reverse=True):
                self._end_fault(index, "expire")
            self._finished = True
            self._emit("end", message=f"scenario {self.scenario.name} complete")
            return
        step = self.scenario.steps[item.step]
        if item.action == "apply":
            fault: Any
            if step.on_container:
                from chaos.docker.steps import step_fault

                fault = step_fault(self.containers, step.proxy, step.fault, step.params)
            else:
                fault = self.proxies[step.proxy].fault(step.fault, **step.params)
            if isinstance(fault, FlappingFault):
                fault.start(timeline=self.timeline, background=False)
            else:
                fault.start(timeline=self.timeline)
            self._active[item.step] = fault
            self._emit(
                "apply",
                proxy=step.proxy,
                fault=step.fault,
                step=item.step + 1,
                params=fault.params,
            )
        elif item.action == "expire":
            if item.step in self._active:
                self._end_fault(item.step, "expire")
        else:  # heal
            healed = [
                i
                for i in self._active
                if (self.scenario.steps[i].proxy, self.scenario.steps[i].on_container)
                == (step.proxy, step.on_container)
            ]
            for index in sorted(healed, reverse=True):
                self._active.pop(index).stop()
            self._emit(
                "heal",
                proxy=step.proxy,
                step=item.step + 1,
                message=f"{len(healed)} fault(s) removed",
            )

    def _end_fault(self, index: int, action: Literal["expire", "cleanup"]) -> None:
        fault = self._active.pop(index)
        try:
            fault.stop()
        finally:
            self._emit(
                action, proxy=self.scenario.steps[index].proxy, fault=fault.kind, step=index + 1
            )

    def _emit(
        self,
        action: RunnerAction,
        *,
        proxy: str = "",
        fault: str = "",
        step: int | None = None,
        params: Mapping[str, Any] | None = None,
        message: str = "",
    ) -> None:
        now = self.clock()
        base = self._started_at if self._started_at is not None else now
        event = RunnerEvent(
            now - base, now, action, proxy, fault, step, dict(params or {}), message
        )
        self.log.append(event)
        if self._on_event is not None:
            self._on_event(event)


def _chain(
    first: Callable[[RunnerEvent], None] | None, second: Callable[[RunnerEvent], None]
) -> Callable[[RunnerEvent], None]:
    if first is None:
        return second

    def both(event: RunnerEvent) -> None:
        first(event)
        second(event)

    return both


class ConsoleProgress:
    """Prints each event on its own line; on a terminal, also a live progress bar.

    Args:
        stream: where to write (e.g. ``sys.stderr``).
        live: draw the bar (default: when *stream* is a terminal).
        width: bar width in characters.
    """

    def __init__(self, stream: TextIO, *, live: bool | None = None, width: int = 30) -> None:
        self.stream = stream
        self.live = stream.isatty() if live is None else live
        self.width = width
        self._drawn = False

    def _clear(self) -> None:
        if self._drawn:
            self.stream.write("\r\x1b[K")
            self._drawn = False

    def event(self, event: RunnerEvent) -> None:
        """Print the event above the bar."""
        self._clear()
        self.stream.write(event.describe() + "\n")
        self.stream.flush()

    def tick(self, runner: ScenarioRunner) -> None:
        """Redraw the bar (terminals only)."""
        if not self.live:
            return
        total = runner.scenario.duration or 1.0
        done = min(1.0, runner.elapsed / total)
        filled = round(done * self.width)
        active = ", ".join(
            f"{runner.scenario.steps[i].fault} on {runner.scenario.steps[i].proxy}"
            for i in sorted(runner.active_faults)
        )
        bar = "#" * filled + "-" * (self.width - filled)
        line = f"[{bar}] {runner.elapsed:6.1f}/{total:.1f} s  {active or 'no fault'}"
        self.stream.write("\r\x1b[K" + line)
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        """Finish the bar's line."""
        self._clear()
        self.stream.flush()
