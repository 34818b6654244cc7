"""Breaker fixtures, the timeline, and the assertions passing and failing readably."""

from __future__ import annotations

import json

import pytest

SCENARIO = """
import pytest
from synapse_core import CircuitOpenError, CircuitState, get_breaker, default_manager
from pytest_synapse import assert_trips_within, assert_closes_within

def fail():
    raise ConnectionError("down")

def trip(breaker, n=3):
    for _ in range(n):
        with pytest.raises(ConnectionError):
            breaker.call(fail)
"""


def test_breaker_fixtures_and_passing_assertions(synapse_pytester: pytest.Pytester) -> None:
    synapse_pytester.makepyfile(
        SCENARIO
        + """
def test_cycle(circuit_breaker, virtual_clock, breaker_timeline):
    db = circuit_breaker("db", failure_threshold=3)
    assert circuit_breaker("db", failure_threshold=3) is db
    with pytest.raises(ValueError, match="another config"):
        circuit_breaker("db", failure_threshold=4)
    assert virtual_clock() == 0.0
    span = breaker_timeline.timeline.fault_started("blackhole", "db-proxy")
    virtual_clock.advance(0.5)
    breaker_timeline.upstream_call("db")  # calls reached db before it tripped: none after
    trip(db)
    assert breaker_timeline.assert_trips_within(db, failures=3, seconds=1) == 0.5
    breaker_timeline.assert_rejects_fast(db, max_ms=50)
    breaker_timeline.assert_no_calls_while_open(db, "db")
    breaker_timeline.timeline.fault_ended(span)
    virtual_clock.advance(10)
    db.call(lambda: 1)
    db.call(lambda: 1)
    assert breaker_timeline.assert_closes_within(db, seconds=10.5) == 10.0
    breaker_timeline.assert_half_open_probes_at_most(db, 2)
    assert breaker_timeline.states(db) == ["open", "half_open", "closed"]

def test_names_are_scoped_to_the_test(circuit_breaker):
    assert circuit_breaker("db").state is CircuitState.CLOSED

def test_default_manager_breakers_are_recorded(breaker_timeline):
    service = get_breaker("payments-svc")
    service.force_open("maintenance")
    assert [e.kind for e in breaker_timeline.events("payments-svc")] == ["opened"]
    service.force_close()
    default_manager.remove_breaker("payments-svc")
"""
    )
    result = synapse_pytester.runpytest("--synapse-report=r.json")
    result.assert_outcomes(passed=3)


def test_failing_assertions_show_both_timelines(synapse_pytester: pytest.Pytester) -> None:
    synapse_pytester.makepyfile(
        SCENARIO
        + """
def test_slow_trip(circuit_breaker, virtual_clock, breaker_timeline):
    db = circuit_breaker("db")
    breaker_timeline.timeline.fault_started("latency", "db-proxy", ms=800)
    virtual_clock.advance(5)
    trip(db)
    assert_trips_within(db, seconds=2)

def test_never_closes(circuit_breaker, virtual_clock, breaker_timeline):
    db = circuit_breaker("db")
    span = breaker_timeline.timeline.fault_started("blackhole", "db-proxy")
    trip(db)
    breaker_timeline.timeline.fault_ended(span)
    assert_closes_within(db, 5)

def test_leak(circuit_breaker, virtual_clock, breaker_timeline):
    db = circuit_breaker("db")
    trip(db)
    virtual_clock.advance(1)
    breaker_timeline.upstream_call("db")
    breaker_timeline.assert_no_calls_while_open(db, "db")

def test_not_open(circuit_breaker, breaker_timeline):
    breaker_timeline.assert_rejects_fast(circuit_breaker("db"), max_ms=5)
"""
    )
    result = synapse_pytester.runpytest()
    result.assert_outcomes(failed=4)
    result.stdout.fnmatch_lines(
        [
            "*BreakerAssertionError: breaker 'db' opened 5.000s after fault onset; "
            "required within 2s*",
            "*faults and breaker 'db', side by side:*",
            "*t (s)*faults*breaker*",
            "*0.000*+ latency(ms=800) on db-proxy*",
            "*5.000*db: opened -> open (3 failures in 3 calls*",
        ]
    )
    result.stdout.fnmatch_lines(["*breaker 'db' did not close after the heal at t=0.000s*"])
    result.stdout.fnmatch_lines(["*1 call(s) reached db while breaker 'db' was open (t=1.000s)*"])
    result.stdout.fnmatch_lines(["*breaker 'db' rejected none of the 20 calls*state now: closed*"])


def test_states_polled_from_another_process(synapse_pytester: pytest.Pytester) -> None:
    # The service runs in a subprocess and publishes its breaker states in a file; the test
    # polls them and asserts on the recorded timeline as for an in-process breaker.
    synapse_pytester.makepyfile(
        service="""
import json, sys, time
from synapse_core import CircuitBreaker, CircuitBreakerConfig

out = sys.argv[1]
breaker = CircuitBreaker("orders", CircuitBreakerConfig(recovery_timeout=0.3))

def publish():
    with open(out + ".tmp", "w") as f:
        json.dump({"orders": breaker.state.value}, f)
    import os; os.replace(out + ".tmp", out)

publish()
time.sleep(0.3)
for _ in range(3):
    try:
        breaker.call(lambda: 1 / 0)
    except ZeroDivisionError:
        pass
publish()
time.sleep(0.5)
breaker.call(lambda: 1); breaker.call(lambda: 1)
publish()
time.sleep(0.3)
""",
        test_remote="""
import json, subprocess, sys, time
from pytest_synapse import assert_closes_within

def test_remote(breaker_timeline, tmp_path):
    state_file = tmp_path / "states.json"
    proc = subprocess.Popen([sys.executable, "service.py", str(state_file)])
    try:
        deadline = time.monotonic() + 20
        while not state_file.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        poller = breaker_timeline.poll(lambda: json.loads(state_file.read_text()), interval=0.02)
        span = breaker_timeline.timeline.fault_started("blackhole", "orders-db")
        deadline = time.monotonic() + 20
        while poller.states.get("orders") != "open" and time.monotonic() < deadline:
            time.sleep(0.01)
        breaker_timeline.timeline.fault_ended(span)
        assert proc.wait(timeout=30) == 0
        poller.stop()
    finally:
        proc.kill()
    assert breaker_timeline.states("orders")[0] == "open"
    assert breaker_timeline.states("orders")[-1] == "closed"
    breaker_timeline.assert_trips_within("orders", seconds=10)
    assert_closes_within("orders", 10)
""",
    )
    result = synapse_pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_circuit_breaker_fields_override_single_values_of_a_config(circuit_breaker) -> None:  # type: ignore[no-untyped-def]
    """``circuit_breaker(name, config, **fields)`` used to refuse the combination."""
    from synapse_core import CircuitBreakerConfig

    base = CircuitBreakerConfig(failure_threshold=5, recovery_timeout=30)
    db = circuit_breaker("db", base, recovery_timeout=1)
    assert (db.config.failure_threshold, db.config.recovery_timeout) == (5, 1)
    assert circuit_breaker("db", base, recovery_timeout=1) is db
    with pytest.raises(ValueError, match="another config"):
        circuit_breaker("db", base)
    with pytest.raises(TypeError, match="must be a CircuitBreakerConfig"):
        circuit_breaker("cache", {"failure_threshold": 3})


def test_closes_within_says_when_it_closed_before_the_heal_and_when_a_probe_is_due(
    circuit_breaker, virtual_clock, breaker_timeline
) -> None:  # type: ignore[no-untyped-def]
    """'did not close after the heal (state now: closed)' read as a contradiction."""
    from pytest_synapse import BreakerAssertionError

    db = circuit_breaker("db", recovery_timeout=5)
    outage = breaker_timeline.timeline.fault_started("partition", "db-proxy")
    for _ in range(3):
        with pytest.raises(ZeroDivisionError):
            db.call(lambda: 1 / 0)
    breaker_timeline.timeline.fault_ended(outage)
    with pytest.raises(BreakerAssertionError, match=r"next probe is not due for 5\.0s"):
        breaker_timeline.assert_closes_within(db, seconds=1)
    slow = breaker_timeline.timeline.fault_started("latency", "db-proxy")
    virtual_clock.advance(5)
    db.call(lambda: 1)
    db.call(lambda: 1)
    virtual_clock.advance(1)
    breaker_timeline.timeline.fault_ended(slow)
    with pytest.raises(BreakerAssertionError, match=r"it closed at t=5\.000s, before that heal"):
        breaker_timeline.assert_closes_within(db, seconds=1)
    assert breaker_timeline.assert_closes_within(db, seconds=5, after=0.0) == 5.0


def test_trip_time_counts_from_the_fault_active_at_the_trip(
    synapse_pytester: pytest.Pytester,
) -> None:
    synapse_pytester.makepyfile(
        """
        import pytest

        def test_late_trip(circuit_breaker, virtual_clock, breaker_timeline):
            b = circuit_breaker("dep")
            old = breaker_timeline.timeline.fault_started("latency", "p")
            virtual_clock.advance(10)
            breaker_timeline.timeline.fault_ended(old)
            virtual_clock.advance(90)
            breaker_timeline.timeline.fault_started("blackhole", "p")
            virtual_clock.advance(1)
            for _ in range(3):
                with pytest.raises(ZeroDivisionError):
                    b.call(lambda: 1 / 0)
            assert breaker_timeline.assert_trips_within(b, seconds=2) == 1.0
        """
    )
    synapse_pytester.runpytest().assert_outcomes(passed=1)


def test_a_nested_in_process_run_keeps_the_outer_tests_timeline(
    synapse_pytester: pytest.Pytester,
) -> None:
    synapse_pytester.makepyfile(
        """
        pytest_plugins = ["pytester"]

        def test_outer(circuit_breaker, pytester):
            b = circuit_breaker("outer")
            pytester.makepyfile("def test_inner(circuit_breaker): circuit_breaker('inner')")
            pytester.runpytest_inprocess().assert_outcomes(passed=1)
            b.force_open()
            from pytest_synapse.run import current_run
            assert current_run() is not None
            assert current_run().nodeid.endswith("test_outer")
        """
    )
    synapse_pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_an_assertion_on_a_breaker_ignores_another_breaker_of_the_same_name(
    synapse_pytester: pytest.Pytester,
) -> None:
    synapse_pytester.makepyfile(
        """
        import pytest
        from synapse_core import CircuitBreaker, CircuitBreakerConfig
        from pytest_synapse import BreakerAssertionError

        def boom():
            raise ConnectionError("down")

        def test_same_name(circuit_breaker, breaker_timeline, virtual_clock):
            mine = circuit_breaker("inv", failure_threshold=1, minimum_requests=1)
            other = CircuitBreaker(
                "inv", CircuitBreakerConfig(failure_threshold=1, minimum_requests=1),
                clock=virtual_clock,
            )
            with pytest.raises(ConnectionError):
                other.call(boom)
            with pytest.raises(BreakerAssertionError, match="never opened"):
                breaker_timeline.assert_trips_within(mine, failures=1)
            breaker_timeline.assert_trips_within(other, failures=1)
            assert breaker_timeline.events(mine) == []
            assert [e.kind for e in breaker_timeline.events("inv")] == ["opened"]
        """
    )
    synapse_pytester.runpytest().assert_outcomes(passed=1)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ("assert_trips_within(b, failures=-1)", "failures must be an integer >= 1"),
        ("assert_trips_within(b, seconds='5')", "seconds must be a finite number >= 0"),
        ("assert_rejects_fast(b, max_ms=50, calls=0)", "calls must be an integer >= 1"),
        ("assert_rejects_fast(b, max_ms=float('nan'))", "max_ms must be a finite number > 0"),
        ("assert_closes_within(b, seconds=-2)", "seconds must be a finite number >= 0"),
    ],
)
def test_assertion_arguments_are_validated(
    synapse_pytester: pytest.Pytester, call: str, message: str
) -> None:
    synapse_pytester.makepyfile(
        f"""
        import pytest

        def test_bad_argument(circuit_breaker, breaker_timeline):
            b = circuit_breaker("svc")
            with pytest.raises(ValueError, match={message!r}):
                breaker_timeline.{call}
        """
    )
    synapse_pytester.runpytest().assert_outcomes(passed=1)


def test_fixtures_asked_for_late_record_on_the_virtual_clock(
    synapse_pytester: pytest.Pytester,
) -> None:
    synapse_pytester.makepyfile(
        """
        import pytest

        @pytest.mark.parametrize("fx", ["circuit_breaker"])
        def test_dynamic(request, fx):
            make = request.getfixturevalue(fx)
            clock = request.getfixturevalue("virtual_clock")
            b = make("dyn", failure_threshold=1, minimum_requests=1, recovery_timeout=30,
                     half_open_max_calls=1)
            with pytest.raises(ZeroDivisionError):
                b.call(lambda: 1 / 0)
            clock.advance(30)
            b.call(lambda: 1)
            assert make("dyn") is b   # fetched again by name alone
        """
    )
    for args in ([], ["--synapse-report=r.json"]):
        synapse_pytester.runpytest(*args).assert_outcomes(passed=1)
    report = json.loads((synapse_pytester.path / "r.json").read_text())
    (test,) = report["tests"]
    assert test["clock"] == "virtual"
    assert test["breakers"][0]["open_seconds"] == 30.0


def test_an_assertion_with_a_timeline_that_never_watched_the_breaker_says_so() -> None:
    from pytest_synapse import assert_trips_within
    from synapse_core import CircuitBreaker, Timeline, VirtualClock

    clock = VirtualClock()
    timeline = Timeline(clock)
    watched = CircuitBreaker("svc", clock=clock)
    other = CircuitBreaker("svc", clock=clock)
    timeline.watch(watched)
    watched.force_open()
    with pytest.raises(ValueError, match="not recorded on this timeline"):
        assert_trips_within(other, failures=3, timeline=timeline)


def test_a_virtual_clock_asked_for_after_events_were_recorded_is_an_error(
    synapse_pytester: pytest.Pytester,
) -> None:
    synapse_pytester.makepyfile(
        """
        import pytest
        from synapse_core import CircuitBreaker

        def test_late(request, breaker_timeline):
            CircuitBreaker("svc").force_open()   # recorded on the real clock
            with pytest.raises(RuntimeError, match="asked for after this test's timeline"):
                request.getfixturevalue("virtual_clock")
        """
    )
    synapse_pytester.runpytest().assert_outcomes(passed=1)
