"""Bugs users hit in the plugin: each test is the user's case, passing now."""

from __future__ import annotations

import json
import textwrap
import xml.etree.ElementTree as ET

import pytest


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


def test_rejects_fast_refuses_an_async_call_and_has_an_async_form(
    synapse_pytester: pytest.Pytester,
) -> None:
    synapse_pytester.makepyfile(
        """
        import asyncio
        import pytest
        from synapse_core import CircuitOpenError

        async def slow_service():
            await asyncio.sleep(1.0)

        def test_sync_form_refuses_a_coroutine(circuit_breaker, breaker_timeline):
            b = circuit_breaker("svc")
            b.force_open()
            with pytest.raises(TypeError, match="assert_rejects_fast_async"):
                breaker_timeline.assert_rejects_fast(b, slow_service, max_ms=50, expect=None)
            b.force_close()

        @pytest.mark.asyncio
        async def test_async_form_times_the_awaited_call(circuit_breaker, breaker_timeline):
            b = circuit_breaker("svc")
            b.force_open()
            ms = await breaker_timeline.assert_rejects_fast_async(b, max_ms=50, calls=5)
            assert 0 < ms < 50

            async def guarded():
                return await b.call_async(slow_service)

            await breaker_timeline.assert_rejects_fast_async(b, guarded, max_ms=50)
            b.force_close()
            with pytest.raises(AssertionError, match="rejected none of the"):
                await breaker_timeline.assert_rejects_fast_async(
                    b, lambda: asyncio.sleep(0), max_ms=50, calls=1
                )
        """
    )
    synapse_pytester.runpytest().assert_outcomes(passed=2)


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


def test_junit_trips_count_every_trip_not_only_those_under_a_fault(
    synapse_pytester: pytest.Pytester,
) -> None:
    synapse_pytester.makepyfile(
        """
        def test_trips_without_a_fault(circuit_breaker):
            b = circuit_breaker("db")
            b.force_open()
            b.force_close()
        """
    )
    synapse_pytester.runpytest("--junitxml=junit.xml", "-o", "junit_family=xunit1").assert_outcomes(
        passed=1
    )
    props = {
        p.get("name"): p.get("value")
        for p in ET.parse(synapse_pytester.path / "junit.xml").iter("property")
    }
    assert props["synapse_breaker_db_trips"] == "1"


def test_a_polled_breaker_already_open_when_polling_starts_is_not_a_trip(
    synapse_pytester: pytest.Pytester,
) -> None:
    synapse_pytester.makepyfile(
        """
        def test_already_open(breaker_timeline):
            states = {"svc": "open", "other": "closed"}
            poller = breaker_timeline.poll(lambda: dict(states), interval=60)
            assert poller.initial_states == {"svc": "open", "other": "closed"}
            states["other"] = "open"   # this one does trip during the test
            poller.poll_once()
            poller.stop()
        """
    )
    result = synapse_pytester.runpytest("--synapse-report=r.json")
    result.assert_outcomes(passed=1)
    report = json.loads((synapse_pytester.path / "r.json").read_text())
    by_name = {b["name"]: b for b in report["tests"][0]["breakers"]}
    svc, other = by_name["svc"], by_name["other"]
    assert (svc["initial_state"], svc["left_closed"], svc["trips"]) == ("open", False, 0)
    assert (other["initial_state"], other["left_closed"], other["trips"]) == ("closed", True, 1)


def test_gates_on_breaker_health_fail_when_no_breaker_was_seen(
    synapse_pytester: pytest.Pytester,
) -> None:
    synapse_pytester.makepyfile(
        """
        import pytest

        @pytest.mark.chaos
        def test_skipped_without_the_flag(circuit_breaker):
            circuit_breaker("db")
        """
    )
    result = synapse_pytester.runpytest(
        "--synapse-gate=all_recovered", "--synapse-gate=unrecovered==0"
    )
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        ["gate FAIL: all_recovered  -> no data*no breaker was seen*", "gate FAIL: unrecovered*"]
    )


def test_a_scenario_marker_takes_a_path_relative_to_the_test_file(
    synapse_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    sub = synapse_pytester.mkdir("suite")
    (sub / "my.yaml").write_text(
        "name: mine\nproxies: [svc]\nsteps:\n"
        "  - {at: 0, proxy: svc, fault: latency, ms: 5, duration: 1}\n"
    )
    (sub / "test_paths.py").write_text(
        textwrap.dedent(
            """
            from pathlib import Path
            import pytest

            @pytest.mark.chaos(scenario="my.yaml")
            def test_relative(chaos_scenario):
                with pytest.raises(Exception, match="no proxy given for 'svc'"):
                    chaos_scenario()

            @pytest.mark.chaos(scenario=Path(__file__).parent / "my.yaml")
            def test_path_object(chaos_scenario):
                with pytest.raises(Exception, match="no proxy given for 'svc'"):
                    chaos_scenario()
            """
        )
    )
    monkeypatch.chdir(synapse_pytester.path)  # started one level above the test file
    result = synapse_pytester.runpytest("--synapse-chaos", "suite/test_paths.py")
    result.assert_outcomes(passed=2)


def test_an_unreachable_server_is_reported_once_without_a_traceback(
    synapse_pytester: pytest.Pytester,
) -> None:
    synapse_pytester.makepyfile("def test_x(toxiproxy):\n    pass\n")
    result = synapse_pytester.runpytest("--synapse-toxiproxy=http://127.0.0.1:1")
    result.assert_outcomes(errors=1)
    out = result.stdout.str()
    assert "During handling of the above exception" not in out
    assert out.count("http://127.0.0.1:1") >= 1
    assert "Traceback" not in out


SHARED_SERVER_SUITE = """
import socket
import pytest

@pytest.fixture
def upstream():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    yield "127.0.0.1:%d" % listener.getsockname()[1]
    listener.close()

@pytest.mark.parametrize("i", range(4))
def test_named_proxy(chaos_proxy, upstream, i):
    proxy = chaos_proxy(upstream, name="inventory")
    assert proxy.name.startswith("inventory")
    with proxy.down():
        pass
"""


def test_named_proxies_on_a_shared_server_do_not_collide_across_xdist_workers(
    synapse_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chaos import EmbeddedToxiproxy

    with EmbeddedToxiproxy() as server:
        monkeypatch.setenv("SYNAPSE_TOXIPROXY", server.url)
        synapse_pytester.makepyfile(SHARED_SERVER_SUITE)
        result = synapse_pytester.runpytest("-n", "2", "-p", "no:cacheprovider")
        result.assert_outcomes(passed=4)
        assert server.client().proxies() == {}  # every proxy deleted at teardown


def test_a_named_proxy_already_on_a_shared_server_is_an_error_saying_how_to_remove_it(
    synapse_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chaos import EmbeddedToxiproxy

    with EmbeddedToxiproxy() as server:
        client = server.client()
        # Another session's proxy, or one a killed session left: nothing tells them apart, so
        # it is never taken over (that would strip a live session's faults and delete its proxy).
        client.create_proxy("inventory", "127.0.0.1:9")
        client.add_toxic("inventory", "latency", name="synapse:default:latency:live-1:downstream")
        monkeypatch.setenv("SYNAPSE_TOXIPROXY", server.url)
        synapse_pytester.makepyfile(
            """
            def test_again(chaos_proxy):
                chaos_proxy("127.0.0.1:9", name="inventory")
            """
        )
        result = synapse_pytester.runpytest("-p", "no:cacheprovider")
        result.assert_outcomes(failed=1)
        result.stdout.fnmatch_lines([f"*curl -X DELETE {server.url}/proxies/inventory*"])
        info = client.proxy_info("inventory")  # untouched
        assert [t.name for t in info.toxics] == ["synapse:default:latency:live-1:downstream"]


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


def test_collect_only_prints_no_resilience_summary(synapse_pytester: pytest.Pytester) -> None:
    synapse_pytester.makepyfile("def test_x(): pass")
    result = synapse_pytester.runpytest("--co", "--synapse-report=out/co.json")
    assert result.ret == 0
    assert "synapse resilience" not in result.stdout.str()
    assert not (synapse_pytester.path / "out" / "co.json").exists()


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
