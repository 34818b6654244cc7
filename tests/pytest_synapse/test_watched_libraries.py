"""Breakers of pybreaker, aiobreaker, purgatory and circuitbreaker on the test's timeline.

Each library's real package guards a small service that asks an echo dependency through the
embedded chaos proxy; ``breaker_timeline.watch`` records the breaker, and the assertions judge it
as they judge a Synapse breaker (and catch a bug planted in the service).
"""

from __future__ import annotations

import socketserver
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from library_services import LIBRARIES, RECOVERY, Echo, Service
from threaded_servers import serving

from pytest_synapse import (
    BreakerAssertionError,
    NotObservableError,
    assert_closes_within,
    assert_half_open_probes_at_most,
    assert_no_calls_while_open,
    assert_rejects_fast,
    assert_trips_within,
)


@pytest.fixture
def upstream() -> Iterator[str]:
    with serving(socketserver.ThreadingTCPServer(("127.0.0.1", 0), Echo)) as address:
        yield address


def trip(service: Service, calls: int = 3) -> None:
    for _ in range(calls):
        with pytest.raises((OSError, service.rejection)):
            service.ask()


def recover(service: Service) -> None:
    """Wait for the probe to be due, then make it (bounded: a few recovery timeouts)."""
    deadline = time.monotonic() + 4 * RECOVERY[service.library] + 2
    time.sleep(RECOVERY[service.library])
    while True:
        try:
            assert service.ask() == b"stock?"
            return
        except service.rejection:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.mark.parametrize("library", LIBRARIES)
def test_trip_rejections_and_recovery_are_recorded_and_asserted(
    library: str, chaos_proxy: Callable[..., Any], upstream: str, breaker_timeline: Any
) -> None:
    proxy = chaos_proxy(upstream)
    service = Service(library, proxy.address)
    breaker_timeline.watch(service.breaker, name="inventory" if library == "purgatory" else None)
    assert service.ask() == b"stock?"
    fault = proxy.down().start()
    trip(service)
    assert_trips_within(service.breaker, failures=3, seconds=2)
    slowest = assert_rejects_fast(service.breaker, service.ask, max_ms=100, calls=10)
    assert 0 < slowest <= 100
    fault.stop()
    recover(service)
    assert_closes_within(service.breaker, RECOVERY[library] + 2)
    assert breaker_timeline.states(service.breaker) == ["open", "half_open", "closed"]
    rejected = breaker_timeline.events(service.breaker, "request_rejected")
    assert len(rejected) == 10
    assert rejected[0].detail["library"] == library
    # By name too, as for any breaker.
    assert breaker_timeline.states("inventory") == ["open", "half_open", "closed"]


@pytest.mark.parametrize("library", LIBRARIES)
def test_a_breaker_that_waits_too_long_to_probe_fails_closes_within(
    library: str, chaos_proxy: Callable[..., Any], upstream: str, breaker_timeline: Any
) -> None:
    """The planted bug: a 30 s recovery timeout where the requirement is 1 s."""
    proxy = chaos_proxy(upstream)
    service = Service(library, proxy.address, recovery=30)
    breaker_timeline.watch(service.breaker, name="inventory" if library == "purgatory" else None)
    fault = proxy.down().start()
    trip(service)
    fault.stop()
    with pytest.raises(service.rejection):
        service.ask()  # still open: no probe is due
    with pytest.raises(
        BreakerAssertionError, match=r"breaker 'inventory' did not close after the heal .*open"
    ):
        assert_closes_within(service.breaker, 1)


@pytest.mark.parametrize("library", LIBRARIES)
def test_a_service_that_hides_failures_from_its_breaker_fails_the_trip_assertion(
    library: str, chaos_proxy: Callable[..., Any], upstream: str, breaker_timeline: Any
) -> None:
    proxy = chaos_proxy(upstream)
    service = Service(library, proxy.address, swallow_errors=True)
    breaker_timeline.watch(service.breaker, name="inventory" if library == "purgatory" else None)
    proxy.down().start()
    for _ in range(5):
        assert service.ask() == b"cached"
    with pytest.raises(BreakerAssertionError, match="breaker 'inventory' never opened"):
        assert_trips_within(service.breaker, seconds=2)


@pytest.mark.parametrize("library", LIBRARIES)
def test_too_lenient_a_threshold_fails_naming_the_failure_count(
    library: str, chaos_proxy: Callable[..., Any], upstream: str, breaker_timeline: Any
) -> None:
    proxy = chaos_proxy(upstream)
    service = Service(library, proxy.address, failures=5)
    breaker_timeline.watch(service.breaker, name="inventory" if library == "purgatory" else None)
    proxy.down().start()
    trip(service, 5)
    with pytest.raises(BreakerAssertionError, match="opened after 5 failures; required within 3"):
        assert_trips_within(service.breaker, failures=3)


@pytest.mark.parametrize("library", LIBRARIES)
def test_a_slow_fallback_fails_rejects_fast(
    library: str, chaos_proxy: Callable[..., Any], upstream: str, breaker_timeline: Any
) -> None:
    proxy = chaos_proxy(upstream)
    service = Service(library, proxy.address, fallback_delay=0.3, recovery=5)
    breaker_timeline.watch(service.breaker, name="inventory" if library == "purgatory" else None)
    proxy.down().start()
    trip(service)
    with pytest.raises(BreakerAssertionError, match=r"slowest rejected call took \d+"):
        assert_rejects_fast(service.breaker, service.ask, max_ms=100, calls=3)


@pytest.mark.parametrize("library", LIBRARIES)
def test_a_rejection_is_the_libraries_own_error_by_default(
    library: str, chaos_proxy: Callable[..., Any], upstream: str, breaker_timeline: Any
) -> None:
    """With no call= the assertion makes no-op calls through the breaker, as the library
    guards them, and expects the library's own error; a service turning it into another error
    must say so with expect=."""
    proxy = chaos_proxy(upstream)
    service = Service(library, proxy.address)
    breaker_timeline.watch(service.breaker, name="inventory" if library == "purgatory" else None)
    proxy.down().start()
    trip(service)
    assert_rejects_fast(service.breaker, max_ms=100, calls=5)

    def translated() -> None:
        try:
            service.ask()
        except service.rejection:
            raise RuntimeError("503 inventory unavailable") from None

    with pytest.raises(BreakerAssertionError, match=r"raised RuntimeError: 503 inventory"):
        assert_rejects_fast(service.breaker, translated, max_ms=100, calls=2)
    assert_rejects_fast(service.breaker, translated, max_ms=100, calls=2, expect=RuntimeError)


@pytest.mark.parametrize("library", LIBRARIES)
def test_a_fallback_calling_the_dependency_fails_no_calls_while_open(
    library: str, chaos_proxy: Callable[..., Any], upstream: str, breaker_timeline: Any
) -> None:
    proxy = chaos_proxy(upstream, name=f"inventory-{library}")
    service = Service(library, proxy.address)
    breaker_timeline.watch(service.breaker, name="inventory" if library == "purgatory" else None)
    fault = proxy.blackhole().start()
    trip(service)
    fault.stop()
    assert_no_calls_while_open(
        service.breaker,
        proxy,
    )
    # The bug: on rejection, the fallback asks the dependency anyway.
    with pytest.raises(service.rejection):
        service.ask()
    from library_services import fetch

    fetch(proxy.address)
    with pytest.raises(BreakerAssertionError, match="while breaker 'inventory' was open"):
        assert_no_calls_while_open(
            service.breaker,
            proxy,
        )


def test_pybreaker_probes_one_at_a_time(
    chaos_proxy: Callable[..., Any], upstream: str, breaker_timeline: Any
) -> None:
    proxy = chaos_proxy(upstream)
    service = Service("pybreaker", proxy.address)
    breaker_timeline.watch(service.breaker)
    fault = proxy.down().start()
    trip(service)
    fault.stop()
    recover(service)
    assert assert_half_open_probes_at_most(service.breaker, 1) == 1
    with pytest.raises(BreakerAssertionError, match="admitted 1 half-open probes at once"):
        assert_half_open_probes_at_most(service.breaker, 0)


@pytest.mark.asyncio
async def test_aiobreaker_lets_every_concurrent_call_probe(
    chaos_proxy: Callable[..., Any], upstream: str, breaker_timeline: Any
) -> None:
    """aiobreaker's half-open state admits every call that comes: four at once are four
    probes, which the assertion reports."""
    import asyncio
    from datetime import timedelta

    import aiobreaker
    from library_services import fetch

    proxy = chaos_proxy(upstream)
    breaker = aiobreaker.CircuitBreaker(
        fail_max=2, timeout_duration=timedelta(seconds=0.2), name="inventory"
    )
    breaker_timeline.watch(breaker)

    async def ask() -> bytes:
        return await asyncio.to_thread(fetch, proxy.address)

    fault = proxy.down().start()
    for _ in range(2):
        with pytest.raises((OSError, aiobreaker.CircuitBreakerError)):
            await breaker.call_async(ask)
    fault.stop()
    await asyncio.sleep(0.25)
    answers = await asyncio.gather(*(breaker.call_async(ask) for _ in range(4)))
    assert answers == [b"stock?"] * 4
    with pytest.raises(BreakerAssertionError, match="admitted 4 half-open probes at once"):
        assert_half_open_probes_at_most(breaker, 1)
    assert breaker_timeline.states(breaker) == ["open", "half_open", "closed"]


@pytest.mark.parametrize("library", ["purgatory", "circuitbreaker"])
def test_probe_counts_are_refused_where_the_library_cannot_show_them(
    library: str, chaos_proxy: Callable[..., Any], upstream: str, breaker_timeline: Any
) -> None:
    proxy = chaos_proxy(upstream)
    service = Service(library, proxy.address)
    breaker_timeline.watch(service.breaker, name="inventory" if library == "purgatory" else None)
    with pytest.raises(NotObservableError, match=f"{library} does not tell when a call starts"):
        assert_half_open_probes_at_most(service.breaker, 1)


def test_a_purgatory_factory_is_watched_circuit_by_circuit(
    chaos_proxy: Callable[..., Any], upstream: str, breaker_timeline: Any
) -> None:
    import purgatory
    from library_services import fetch

    proxy = chaos_proxy(upstream)
    factory = purgatory.SyncCircuitBreakerFactory(default_threshold=2, default_ttl=30)
    breaker_timeline.watch(factory)
    proxy.down().start()
    for circuit in ("stock", "prices"):
        for _ in range(2):
            with pytest.raises(OSError), factory.get_breaker(circuit):
                fetch(proxy.address)
    assert breaker_timeline.states("stock") == ["open"]
    assert breaker_timeline.states("prices") == ["open"]
    assert_trips_within("prices", failures=2)
    with pytest.raises(TypeError, match=r"several circuits \(prices, stock\)"):
        assert_trips_within(factory, failures=2)


def test_watching_something_else_says_what_is_accepted(breaker_timeline: Any) -> None:
    with pytest.raises(TypeError, match=r"cannot watch builtins\.object: pass a synapse_core"):
        breaker_timeline.watch(object())


def test_an_unwatched_library_breaker_is_named_in_the_error(breaker_timeline: Any) -> None:
    import pybreaker

    breaker = pybreaker.CircuitBreaker(name="inventory")
    with pytest.raises(ValueError, match="this pybreaker breaker is not recorded"):
        assert_trips_within(breaker, failures=1)


REPORTED = """
import socketserver
import time

import pytest
from library_services import Echo, Service
from threaded_servers import serving

from pytest_synapse import assert_rejects_fast


@pytest.fixture
def upstream():
    with serving(socketserver.ThreadingTCPServer(("127.0.0.1", 0), Echo)) as address:
        yield address


def outage(library, chaos_proxy, upstream, breaker_timeline, **service_args):
    proxy = chaos_proxy(upstream)
    service = Service(library, proxy.address, **service_args)
    breaker_timeline.watch(service.breaker)
    fault = proxy.down().start()
    for _ in range(3):
        with pytest.raises((OSError, service.rejection)):
            service.ask()
    assert_rejects_fast(service.breaker, service.ask, max_ms=100, calls=4)
    fault.stop()
    return service


def test_recovers(chaos_proxy, upstream, breaker_timeline):
    service = outage("pybreaker", chaos_proxy, upstream, breaker_timeline)
    time.sleep(0.35)
    assert service.ask() == b"stock?"


def test_never_probes(chaos_proxy, upstream, breaker_timeline):
    # The planted bug: a service that never calls its dependency again after an outage.
    outage("circuitbreaker", chaos_proxy, upstream, breaker_timeline)
"""


def test_reports_and_gates_include_watched_breakers(
    synapse_pytester: pytest.Pytester,
) -> None:
    from pathlib import Path

    synapse_pytester.syspathinsert(Path(__file__).parent)
    synapse_pytester.syspathinsert(Path(__file__).parents[1])
    synapse_pytester.makepyfile(test_reported=REPORTED)
    result = synapse_pytester.runpytest(
        "--synapse-report=report.json",
        "--synapse-html=report.html",
        "--synapse-gate=all_recovered",
        "--synapse-gate=max_trip_seconds<=2",
        "--synapse-gate=max_rejected_call_ms<=100",
    )
    result.assert_outcomes(passed=2)
    assert result.ret == 1  # the all_recovered gate
    result.stdout.fnmatch_lines(["*all_recovered*not closed: inventory*test_never_probes*"])
    import json

    report = json.loads((synapse_pytester.path / "report.json").read_text())
    tests = {t["nodeid"].split("::")[1]: t for t in report["tests"]}
    (recovered,) = tests["test_recovers"]["breakers"]
    assert (recovered["library"], recovered["origin"]) == ("pybreaker", "watched")
    import re

    assert re.fullmatch(r"main:inventory#\d+", recovered["key"])  # as the schema documents
    assert recovered["trips"] == 1
    assert len(recovered["recovery_seconds"]) == 1
    assert 0.3 <= recovered["recovery_seconds"][0] < 2
    assert recovered["rejections"] == 4
    (left_open,) = tests["test_never_probes"]["breakers"]
    assert (left_open["library"], left_open["final_state"]) == ("circuitbreaker", "open")
    assert left_open["unrecovered"] == 1
    assert report["metrics"]["trips"] == 2
    assert report["metrics"]["max_trip_seconds"] < 2
    assert report["metrics"]["max_rejected_call_ms"] < 100
    assert "inventory (pybreaker)" in (synapse_pytester.path / "report.html").read_text()


def test_a_timeline_watches_without_the_plugin_and_stops_on_close() -> None:
    """``synapse_core.Timeline.watch`` is the same outside pytest; ``close`` removes the
    listener it added and stops the poller thread."""
    import threading

    import circuitbreaker
    import pybreaker

    from synapse_core import Timeline

    timeline = Timeline()
    listened = pybreaker.CircuitBreaker(fail_max=1, name="a")
    polled = circuitbreaker.CircuitBreaker(failure_threshold=1, name="b")
    timeline.watch(listened)
    timeline.watch(polled)
    timeline.watch(listened)  # twice: still one listener
    assert len(listened.listeners) == 1
    with pytest.raises(pybreaker.CircuitBreakerError):
        listened.call(_fail)
    with pytest.raises(ZeroDivisionError):
        polled.call(_fail)
    timeline.refresh()
    assert [(r.breaker, r.kind) for r in timeline.breaker_events] == [
        ("a", "opened"),
        ("b", "opened"),
    ]
    assert timeline.breaker_events[1].detail["failure_count"] == 1
    timeline.close()
    assert listened.listeners == ()
    assert not any(t.name.startswith("synapse-poll-circuitbreaker") for t in threading.enumerate())


def _fail() -> None:
    raise ZeroDivisionError


AUTO = """
import aiobreaker
import circuitbreaker
import purgatory
import pybreaker
import pytest

from pytest_synapse import assert_trips_within

MADE_BEFORE = pybreaker.CircuitBreaker(fail_max=1, name="made-before")


def fail():
    raise ConnectionError("down")


def trip_all():
    inside = pybreaker.CircuitBreaker(fail_max=1, name="inside")
    aio = aiobreaker.CircuitBreaker(fail_max=1, name="aio")
    factory = purgatory.SyncCircuitBreakerFactory(default_threshold=1)
    decorated = circuitbreaker.circuit(failure_threshold=1, name="decorated")(fail)
    errors = (ConnectionError, pybreaker.CircuitBreakerError, aiobreaker.CircuitBreakerError)
    for breaker in (inside, aio, MADE_BEFORE):
        with pytest.raises(errors):
            breaker.call(fail)
    with pytest.raises(ConnectionError), factory.get_breaker("circuit"):
        fail()
    with pytest.raises(ConnectionError):
        decorated()
    return inside


@pytest.mark.synapse_watch_breakers
def test_marked():
    inside = trip_all()
    assert_trips_within(inside, failures=1)
    assert_trips_within("decorated", failures=1)


def test_unmarked(breaker_timeline):
    trip_all()
    assert breaker_timeline.timeline.breaker_events == [] or AUTO_ON


AUTO_ON = False
"""


@pytest.mark.parametrize("how", ["marker", "ini"])
def test_auto_watch_records_breakers_made_in_the_test_and_none_made_before(
    synapse_pytester: pytest.Pytester, how: str
) -> None:
    import json

    import pybreaker

    original_init = pybreaker.CircuitBreaker.__init__
    source = AUTO if how == "marker" else AUTO.replace("AUTO_ON = False", "AUTO_ON = True")
    synapse_pytester.makepyfile(test_auto=source)
    args = ["--synapse-report=report.json"]
    if how == "ini":
        args += ["-o", "synapse_watch_breakers=true"]
    result = synapse_pytester.runpytest(*args)
    result.assert_outcomes(passed=2)
    assert pybreaker.CircuitBreaker.__init__ is original_init  # the wrapper is gone
    report = json.loads((synapse_pytester.path / "report.json").read_text())
    seen = {
        t["nodeid"].split("::")[1]: sorted(
            (b["name"], b["library"], b["origin"]) for b in t["breakers"]
        )
        for t in report["tests"]
    }
    recorded = [
        ("aio", "aiobreaker", "auto"),
        ("circuit", "purgatory", "auto"),
        ("decorated", "circuitbreaker", "auto"),
        ("inside", "pybreaker", "auto"),
    ]
    # circuitbreaker's monitor is process-wide: breakers decorated by earlier tests in this
    # process are found too (and reported if they did something meanwhile).
    assert set(recorded) <= set(seen["test_marked"])
    assert "made-before" not in {name for name, _, _ in seen["test_marked"]}
    if how == "marker":
        assert seen.get("test_unmarked", []) == []
    else:
        assert set(recorded) <= set(seen["test_unmarked"])


@pytest.mark.asyncio
@pytest.mark.parametrize("library", ["aiobreaker", "purgatory"])
async def test_async_breakers_reject_fast_through_the_async_assertion(
    library: str, breaker_timeline: Any
) -> None:
    """Without call=, the async assertion calls through the breaker as the library does
    (aiobreaker's call_async, purgatory's ``async with await factory.get_breaker(name)``)."""
    from datetime import timedelta

    from pytest_synapse import assert_rejects_fast_async

    async def fail() -> None:
        raise ConnectionError("down")

    if library == "aiobreaker":
        import aiobreaker

        breaker: Any = aiobreaker.CircuitBreaker(
            fail_max=2, timeout_duration=timedelta(seconds=30), name="inventory"
        )
        breaker_timeline.watch(breaker)
        for _ in range(2):
            with pytest.raises((ConnectionError, aiobreaker.CircuitBreakerError)):
                await breaker.call_async(fail)
    else:
        import purgatory

        breaker = purgatory.AsyncCircuitBreakerFactory(default_threshold=2, default_ttl=30)
        breaker_timeline.watch(breaker, name="inventory")
        for _ in range(2):
            with pytest.raises(ConnectionError):
                async with await breaker.get_breaker("inventory"):
                    await fail()
    assert breaker_timeline.states("inventory") == ["open"]
    await assert_rejects_fast_async(breaker, max_ms=100, calls=5)
    assert len(breaker_timeline.events("inventory", "request_rejected")) == 5


def test_nothing_imports_a_breaker_or_http_library_it_was_not_given() -> None:
    """The libraries stay optional: the plugin, the timeline (watching a Synapse breaker), the
    foreign adapters' package, the auto-watch module and synapse_core.http import none of them."""
    import subprocess
    import sys

    code = """
import sys
import pytest_synapse.plugin, pytest_synapse.autowatch, synapse_core.foreign, synapse_core.http
from synapse_core import CircuitBreaker, Timeline
Timeline().watch(CircuitBreaker("x"))
libraries = ("pybreaker", "aiobreaker", "purgatory", "circuitbreaker", "httpx", "requests")
print(sorted(name for name in libraries if name in sys.modules))
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]", result.stdout + result.stderr
