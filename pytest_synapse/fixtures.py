"""The Synapse fixtures. Heavy modules (chaos, aiohttp, hypothesis) are imported inside them."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_synapse import assertions
from pytest_synapse.poller import BreakerStatePoller, PolledState
from pytest_synapse.remote import RemoteBreakers
from pytest_synapse.render import side_by_side
from pytest_synapse.run import MeasuredBreaker, TestRun
from pytest_synapse.session import run_of, session_of, settings_of
from pytest_synapse.verdicts import name_of
from synapse_core import CircuitBreaker, CircuitBreakerConfig, Timeline, VirtualClock

if TYPE_CHECKING:
    from chaos import Proxy
    from chaos.backends import Backend
    from chaos.control.client import ToxiproxyClient
    from chaos.scenarios.runner import ScenarioRunner
    from chaos.scenarios.scenario import Scenario


@pytest.fixture
def virtual_clock(request: pytest.FixtureRequest) -> VirtualClock:
    """The test's virtual clock: starts at 0, moves only with ``advance()``.

    Breakers from ``circuit_breaker`` run on it, and the test's timeline uses it.
    """
    return run_of(request, virtual=True).virtual_clock


BreakerFactory = Callable[..., CircuitBreaker]


@pytest.fixture
def circuit_breaker(request: pytest.FixtureRequest, virtual_clock: VirtualClock) -> BreakerFactory:
    """Factory: ``circuit_breaker(name, config=None, **config_fields) -> CircuitBreaker``.

    The breaker runs on the test's ``virtual_clock``, is recorded for the resilience report,
    and times its rejected calls. *config_fields* override single values: of *config* when
    given (``circuit_breaker("db", base, recovery_timeout=1)``), else of the defaults. Names are
    scoped to the test; asking again for a name returns the same breaker (by name alone, or
    with the same settings; different settings raise ``ValueError``).
    """
    run = run_of(request)

    def make(
        name: str, config: CircuitBreakerConfig | None = None, **config_fields: Any
    ) -> CircuitBreaker:
        existing = run.fixture_breakers.get(name)
        if existing is not None and config is None and not config_fields:
            return existing  # fetched again by name alone
        if config is not None and not isinstance(config, CircuitBreakerConfig):
            raise TypeError(
                f"config must be a CircuitBreakerConfig, got {config!r}; pass single settings "
                "as keywords: circuit_breaker(name, failure_threshold=3)"
            )
        base = config or CircuitBreakerConfig()
        wanted = dataclasses.replace(base, **config_fields) if config_fields else base
        if existing is not None:
            if existing.config != wanted:
                raise ValueError(
                    f"circuit_breaker({name!r}) was already made in this test with another config"
                )
            return existing
        breaker = MeasuredBreaker(name, wanted, clock=virtual_clock)
        run.fixture_breakers[name] = breaker
        run.track(breaker, "fixture")
        return breaker

    return make


class BreakerTimeline:
    """The test's timeline of faults and breaker events, with the breaker assertions bound to it.

    Every breaker made by ``circuit_breaker``, every breaker in ``synapse_core.default_manager``
    and every breaker created during the test is recorded automatically; :meth:`watch` adds
    others. :meth:`watch_remote` records the breakers of a service in another process (its
    ``synapse_core.health`` endpoints); :meth:`poll` the states any ``fetch`` reads.
    """

    def __init__(self, run: TestRun) -> None:
        self._run = run
        self.timeline: Timeline = run.timeline
        self._pollers: list[BreakerStatePoller] = []

    def watch(self, breaker: object, name: str | None = None) -> None:
        """Record *breaker*'s events too.

        *breaker* is a Synapse ``CircuitBreaker``, a ``pybreaker.CircuitBreaker``, an
        ``aiobreaker.CircuitBreaker``, a purgatory factory (``SyncCircuitBreakerFactory`` or
        ``AsyncCircuitBreakerFactory``: all its circuits, each by its circuit name) or a
        ``circuitbreaker.CircuitBreaker`` (polled: it has no hooks). *name* names another
        library's breaker on the timeline (pybreaker's may have none); for a purgatory factory
        it keeps only that circuit. The assertions, reports and gates then take it like a
        Synapse breaker: pass the object, or its name.
        """
        if isinstance(breaker, CircuitBreaker):
            if name is not None:
                raise TypeError("name= names breakers of other libraries; a CircuitBreaker has one")
            self._run.track(breaker, "created")
        else:
            self._run.track_foreign(breaker, "watched", name)

    def events(self, breaker: object, *kinds: str) -> list[Any]:
        """The recorded events of one breaker (optionally only some kinds).

        A name selects every breaker of that name; a breaker object selects only its own (an
        error if this timeline never watched it).
        """
        return assertions.breaker_events(self.timeline, breaker, *kinds)

    def states(self, breaker: object) -> list[str]:
        """The states the breaker went through, in order."""
        return [r.state for r in self.events(breaker, "opened", "half_opened", "closed")]

    def upstream_call(self, upstream: str = "upstream") -> float:
        """Note that a call reached *upstream* now (for ``assert_no_calls_while_open``)."""
        return self.timeline.upstream_call(upstream)

    def poll(
        self, fetch: Callable[[], Mapping[str, str | PolledState]], *, interval: float = 0.05
    ) -> BreakerStatePoller:
        """Start recording breaker states polled from *fetch*; stopped when the test ends."""
        poller = BreakerStatePoller(
            fetch,
            self.timeline,
            interval=interval,
            on_new_breaker=lambda name: self._run.track_polled(
                name, lambda: poller.states.get(name), lambda: poller.initial_states.get(name)
            ),
        )
        self._pollers.append(poller)
        return poller.start()

    def watch_remote(
        self, url: str, *, interval: float = 0.05, timeout: float = 2.0
    ) -> RemoteBreakers:
        """Record every breaker of the service at *url*; stopped when the test ends.

        *url* is where the service serves ``synapse_core.health``'s endpoints
        (``http://127.0.0.1:8000``, or ``.../ops`` when mounted under a prefix); its
        ``/breakers`` is polled every *interval* seconds. Each transition is recorded once,
        dated, with the failures that tripped it, even several between two polls. The
        assertions then take those breakers by name (``assert_trips_within("inventory",
        failures=3)``, ``assert_half_open_probes_at_most("inventory", 1)``...), and the report
        and gates count them. A URL that does not answer like ``/breakers`` is an error now.
        """
        remote = RemoteBreakers(url, timeout=timeout)
        remote.document()  # a wrong URL fails here, with the reason
        remote.poller = self.poll(remote.fetch, interval=interval)
        return remote

    def render(self, breaker: object = None) -> str:
        """Faults and breaker events side by side, as text."""
        name = None if breaker is None else name_of(breaker, self.timeline)
        return side_by_side(self.timeline, name)

    def assert_trips_within(self, breaker: object, **kwargs: Any) -> float:
        """See :func:`pytest_synapse.assert_trips_within`."""
        __tracebackhide__ = True
        return assertions.assert_trips_within(breaker, timeline=self.timeline, **kwargs)

    def assert_rejects_fast(self, breaker: object, *args: Any, **kwargs: Any) -> float:
        """See :func:`pytest_synapse.assert_rejects_fast`."""
        __tracebackhide__ = True
        return assertions.assert_rejects_fast(breaker, *args, timeline=self.timeline, **kwargs)

    async def assert_rejects_fast_async(self, breaker: object, *args: Any, **kwargs: Any) -> float:
        """See :func:`pytest_synapse.assert_rejects_fast_async`."""
        __tracebackhide__ = True
        return await assertions.assert_rejects_fast_async(
            breaker, *args, timeline=self.timeline, **kwargs
        )

    def assert_half_open_probes_at_most(self, breaker: object, k: int) -> int:
        """See :func:`pytest_synapse.assert_half_open_probes_at_most`."""
        __tracebackhide__ = True
        return assertions.assert_half_open_probes_at_most(breaker, k)

    def assert_closes_within(self, breaker: object, seconds: float, **kwargs: Any) -> float:
        """See :func:`pytest_synapse.assert_closes_within`."""
        __tracebackhide__ = True
        return assertions.assert_closes_within(breaker, seconds, timeline=self.timeline, **kwargs)

    def assert_no_calls_while_open(
        self, breaker: object, upstream: Proxy | str | None = None, **kwargs: Any
    ) -> None:
        """See :func:`pytest_synapse.assert_no_calls_while_open`."""
        __tracebackhide__ = True
        assertions.assert_no_calls_while_open(breaker, upstream, timeline=self.timeline, **kwargs)

    def close(self) -> None:
        """Stop the pollers."""
        for poller in self._pollers:
            poller.stop()
        self._pollers.clear()


@pytest.fixture
def breaker_timeline(request: pytest.FixtureRequest) -> Iterator[BreakerTimeline]:
    """The test's :class:`BreakerTimeline`: breaker events next to the fault timeline."""
    view = BreakerTimeline(run_of(request))
    try:
        yield view
    finally:
        view.close()


RemoteFactory = Callable[..., RemoteBreakers]


@pytest.fixture
def remote_breakers(breaker_timeline: BreakerTimeline) -> RemoteFactory:
    """Factory: ``remote_breakers(url, interval=0.05, timeout=2.0) -> RemoteBreakers``.

    The same as ``breaker_timeline.watch_remote(url)``: the breakers of the service at *url*
    are recorded on the test's timeline (the breaker assertions take them by name) until the
    test ends. The handle reads them meanwhile: ``.states``, ``.stats(name)``, ``.poll()``,
    ``.wait_for_state(name, "closed", within=3)``.
    """
    return breaker_timeline.watch_remote


@pytest.fixture(scope="session")
def synapse_backend(pytestconfig: pytest.Config) -> Iterator[Backend]:
    """The session's Toxiproxy backend (``--synapse-toxiproxy``): one per xdist worker."""
    from chaos import ChaosError
    from chaos.backends import resolve_backend

    settings = settings_of(pytestconfig)
    problem = None
    try:
        backend = resolve_backend(settings.toxiproxy.value, seed=settings.seed.value)
        backend.start()
    except ChaosError as exc:
        problem = f"synapse: {settings.toxiproxy.source}: {exc}"
    if problem is not None:
        # Bad configuration or an unreachable server: one line, no traceback. Failed outside
        # the except block, or pytest would also print the ChaosError it was handling.
        pytest.fail(problem, pytrace=False)
    try:
        yield backend
    finally:
        backend.stop()


@pytest.fixture
def toxiproxy(synapse_backend: Backend) -> ToxiproxyClient:
    """A ``chaos.ToxiproxyClient`` bound to the session's server (embedded by default)."""
    return synapse_backend.client


ProxyFactory = Callable[..., "Proxy"]


@pytest.fixture
def chaos_proxy(request: pytest.FixtureRequest, synapse_backend: Backend) -> Iterator[ProxyFactory]:
    """Factory: ``chaos_proxy(upstream, name=None) -> chaos.Proxy`` in front of *upstream*.

    *upstream* is ``"host:port"``, or a container and its port (``(container, 6379)``, or the
    container alone if it exposes one port): a ``chaos.docker.Container``, a docker SDK or a
    testcontainers container. With the docker backend the proxy reaches it by name and
    ``proxy.network_address`` is where other containers reach the proxy.

    Faults it applies go on the test's timeline; at teardown each proxy is deleted with all of
    its faults, also when the test failed.

    On a shared (external) server a given *name* gets the xdist worker id appended
    (``inventory-gw0``), so workers do not collide. A proxy of that name already on the server
    (another session's, or one a killed session left) is an error that says how to remove it:
    nothing here can tell a live session's proxy from an abandoned one.
    """
    from chaos.errors import ProxyExists

    run = run_of(request)
    made: list[Proxy] = []
    shared = synapse_backend.kind != "embedded"  # embedded: one server per worker
    session = session_of(request.config)
    # xdist on a shared server: the controller removes what a worker that dies leaves here.
    ledger = session.ledger if shared and session is not None else None

    def make(upstream: object, name: str | None = None) -> Proxy:
        if name is not None and shared and run.worker != "main":
            name = f"{name}-{run.worker}"
        try:
            proxy = synapse_backend.create_proxy(upstream, name=name, timeline=run.timeline)
        except ProxyExists as exc:
            url = synapse_backend.client.url
            exc.message = (
                f"{exc.message}. If a killed test session left it, remove it with "
                f"`curl -X DELETE {url}/proxies/{name}` (or POST {url}/reset); if another "
                "session is using it, give this test's proxy another name"
            )
            raise
        made.append(proxy)
        if ledger is not None:
            ledger.created(synapse_backend.client.url, proxy.name)
        return proxy

    try:
        yield make
    finally:
        errors = []
        for proxy in reversed(made):
            try:
                proxy.delete()
            except Exception as exc:  # keep cleaning the others
                errors.append(f"{proxy.name}: {exc}")
            else:
                if ledger is not None:
                    ledger.deleted(synapse_backend.client.url, proxy.name)
        if errors:
            raise RuntimeError("chaos_proxy cleanup failed: " + "; ".join(errors))


ScenarioFactory = Callable[..., "ScenarioRunner"]


@pytest.fixture
def chaos_scenario(
    request: pytest.FixtureRequest, chaos_proxy: ProxyFactory
) -> Iterator[ScenarioFactory]:
    """Factory: ``chaos_scenario(scenario=None, proxies=None, containers=None) -> ScenarioRunner``.

    *scenario* is a library name (``"partition-heal"``), a YAML/JSON file (a relative path is
    looked up next to the test file, then in pytest's rootdir, then the current directory), or a
    ``chaos.Scenario``; it defaults to ``@pytest.mark.chaos(scenario=...)``. *proxies* maps the
    scenario's proxy names to a ``chaos.Proxy`` or to an upstream ``"host:port"`` (a proxy is
    then made with ``chaos_proxy``); it defaults to the marker's ``proxies=``. *containers*
    maps its container names to containers (``chaos.docker.Container``, docker SDK or
    testcontainers containers, or names) for steps with ``container:``.

    The runner records on the test's timeline. When the test uses ``virtual_clock``, the runner
    steps on it (``runner.advance(seconds)``, or ``runner.run()`` which moves the clock without
    sleeping); otherwise ``runner.run()`` plays in real time. Every fault it applied is removed
    at teardown, also when the test fails.
    """
    from chaos.scenarios.runner import ScenarioRunner
    from chaos.scenarios.scenario import Scenario, load_scenario

    run = run_of(request)
    from pytest_synapse.markers import chaos_settings, proxies_problem

    marked = chaos_settings(request.node)
    marker_scenario = marked.get("scenario")
    marker_proxies: Mapping[str, Proxy | str] = marked.get("proxies") or {}
    runners: list[ScenarioRunner] = []

    def make(
        scenario: str | os.PathLike[str] | Scenario | None = None,
        proxies: Mapping[str, Proxy | str] | None = None,
        containers: Mapping[str, object] | None = None,
    ) -> ScenarioRunner:
        chosen = scenario if scenario is not None else marker_scenario
        if chosen is None:
            raise TypeError(
                "chaos_scenario() needs a scenario: pass one, or mark the test "
                "@pytest.mark.chaos(scenario='partition-heal')"
            )
        loaded = (
            chosen
            if isinstance(chosen, Scenario)
            else load_scenario(_scenario_path(chosen, request))
        )
        wiring: Mapping[str, Proxy | str] = proxies if proxies is not None else marker_proxies
        problem = proxies_problem(wiring)
        if problem:
            raise TypeError(f"chaos_scenario(): {problem}")
        bound = {
            name: chaos_proxy(target, name=name) if isinstance(target, str) else target
            for name, target in wiring.items()
        }
        runner = ScenarioRunner(
            loaded, bound, clock=run.timeline.clock, timeline=run.timeline, containers=containers
        )
        runners.append(runner)
        return runner

    try:
        yield make
    finally:
        for runner in reversed(runners):
            runner.stop(raise_errors=False)


def _scenario_path(
    chosen: str | os.PathLike[str], request: pytest.FixtureRequest
) -> str | os.PathLike[str]:
    """A relative scenario file found next to the test file or in the rootdir, else as given.

    Relative to the current directory only, a marker's path would work or not depending on
    where pytest was started.
    """
    relative = Path(os.fspath(chosen))
    if relative.is_absolute():
        return chosen
    for base in (request.path.parent, request.config.rootpath):
        candidate = base / relative
        if candidate.is_file():
            return candidate
    return chosen
