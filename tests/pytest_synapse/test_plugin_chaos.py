"""chaos fixtures through the embedded server: cleanup on failure, scenarios on virtual time."""

from __future__ import annotations

import textwrap

import pytest

UPSTREAM = """
import socket
import socketserver
import threading

import pytest


class _Echo(socketserver.StreamRequestHandler):
    def handle(self):
        for line in self.rfile:
            self.wfile.write(line)


@pytest.fixture
def echo():
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield "%s:%d" % server.server_address
    server.shutdown()
    server.server_close()
    thread.join(5)


def ask(proxy, timeout=0.3):
    with socket.create_connection((proxy.host, proxy.port), timeout=timeout) as conn:
        conn.sendall(b"ping\\n")
        data = conn.recv(16)
        if not data:
            raise ConnectionError("closed")
        return data
"""


def test_faults_are_removed_when_the_test_fails(synapse_pytester: pytest.Pytester) -> None:
    synapse_pytester.makeconftest(UPSTREAM)
    synapse_pytester.makepyfile(
        """
        def test_fails_with_faults_on(chaos_proxy, echo, toxiproxy):
            proxy = chaos_proxy(echo, name="leaky")
            proxy.latency(ms=100).start()
            proxy.down().start()
            assert len(toxiproxy.proxies()) == 1
            raise AssertionError("the test fails with its faults still on")

        def test_nothing_is_left_behind(toxiproxy):
            assert toxiproxy.proxies() == {}
        """
    )
    result = synapse_pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=1, failed=1)


def test_chaos_proxy_records_faults_on_the_timeline(synapse_pytester: pytest.Pytester) -> None:
    synapse_pytester.makeconftest(UPSTREAM)
    synapse_pytester.makepyfile(
        """
        from conftest import ask

        def test_latency(chaos_proxy, echo, breaker_timeline):
            proxy = chaos_proxy(echo)
            assert ask(proxy) == b"ping\\n"
            with proxy.latency(ms=50):
                pass
            (span,) = breaker_timeline.timeline.faults
            assert span.fault == "latency"
            assert span.proxy == proxy.name
            assert span.end is not None
        """
    )
    result = synapse_pytester.runpytest()
    result.assert_outcomes(passed=1)


def test_scenario_steps_on_virtual_time_against_real_proxies(
    synapse_pytester: pytest.Pytester,
) -> None:
    synapse_pytester.makeconftest(UPSTREAM)
    synapse_pytester.makepyfile(
        """
        import pytest
        from conftest import ask

        @pytest.mark.chaos(scenario="partition-heal")
        def test_partition_heal(chaos_scenario, echo, circuit_breaker, virtual_clock,
                                breaker_timeline):
            runner = chaos_scenario(proxies={"service": echo})
            proxy = runner.proxies["service"]
            breaker = circuit_breaker("service", recovery_timeout=5.0)

            def call():
                try:
                    breaker.call(ask, proxy)
                except Exception:
                    pass

            runner.start()
            call()
            assert breaker.state.value == "closed"
            runner.advance(5)          # t=5: the partition starts (real toxics)
            for _ in range(3):
                call()                 # real timeouts through the real proxy
            assert breaker.state.value == "open"
            runner.advance(20)         # t=25: healed
            runner.advance(1)
            call(); call()
            assert breaker.state.value == "closed"
            runner.advance(runner.scenario.duration - virtual_clock())
            assert runner.finished
            breaker_timeline.assert_trips_within(breaker, seconds=1)
            breaker_timeline.assert_closes_within(breaker, seconds=2)
            assert virtual_clock() == 40
        """
    )
    result = synapse_pytester.runpytest("--synapse-chaos", "--synapse-report=r.json")
    result.assert_outcomes(passed=1)


def test_chaos_scenario_without_a_scenario_says_how(synapse_pytester: pytest.Pytester) -> None:
    synapse_pytester.makepyfile(
        """
        def test_x(chaos_scenario):
            chaos_scenario()
        """
    )
    result = synapse_pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*chaos_scenario() needs a scenario*"])


def test_scenario_proxies_take_an_address_or_a_proxy_and_a_name_is_explained(
    synapse_pytester: pytest.Pytester,
) -> None:
    """A proxies= value is an upstream address (a proxy is made in front of it) or an existing
    chaos.Proxy; a bare name used to go to the server as an upstream and fail obscurely."""
    synapse_pytester.makeconftest(UPSTREAM)
    synapse_pytester.makepyfile(
        """
        import pytest

        def test_existing_proxy(chaos_scenario, chaos_proxy, echo):
            mine = chaos_proxy(echo, name="mine")
            runner = chaos_scenario("blackhole", proxies={"service": mine})
            assert runner.proxies["service"] is mine

        def test_address(chaos_scenario, echo):
            runner = chaos_scenario("blackhole", proxies={"service": echo})
            assert runner.proxies["service"].upstream == echo

        def test_a_name(chaos_scenario):
            with pytest.raises(TypeError, match="'mine' is not an upstream address"):
                chaos_scenario("blackhole", proxies={"service": "mine"})
        """
    )
    result = synapse_pytester.runpytest()
    result.assert_outcomes(passed=3)


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
