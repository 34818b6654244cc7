"""assert_no_calls_while_open observes real traffic through a chaos proxy, or refuses.

It used to count only calls noted with ``upstream_call()`` and to accept a ``chaos.Proxy``
silently, so it passed while a fallback kept calling the dependency through the proxy.
"""

from __future__ import annotations

import socket
import socketserver
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from threaded_servers import serving, trip

from pytest_synapse import BreakerAssertionError, NotObservableError, assert_no_calls_while_open
from synapse_core import CircuitBreaker, CircuitOpenError


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(4096):
            self.request.sendall(data)


@pytest.fixture
def upstream() -> Iterator[str]:
    with serving(socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)) as address:
        yield address


def ask(proxy: Any, payload: bytes = b"GET stock") -> bytes:
    """One request/response through the proxy (what the service's client does)."""
    with socket.create_connection(proxy.address, timeout=5) as sock:
        sock.sendall(payload)
        return sock.recv(4096)


class Service:
    """A service calling its dependency through *proxy* behind *breaker*, with a fallback."""

    def __init__(self, proxy: Any, breaker: CircuitBreaker, *, leaky: bool = False) -> None:
        self.proxy, self.breaker, self.leaky = proxy, breaker, leaky

    def handle(self) -> str:
        try:
            return self.breaker.call(ask, self.proxy).decode()
        except CircuitOpenError:
            if self.leaky:  # the bug: the fallback still asks the dependency
                ask(self.proxy, b"GET stock (fallback)")
            return "cached"


def test_a_correct_fallback_passes(
    chaos_proxy: Callable[..., Any], upstream: str, circuit_breaker: Callable[..., Any]
) -> None:
    proxy = chaos_proxy(upstream)
    breaker = circuit_breaker("stock", failure_threshold=3)
    service = Service(proxy, breaker)
    assert service.handle() == "GET stock"  # traffic while closed is fine
    trip(breaker)
    assert [service.handle() for _ in range(3)] == ["cached"] * 3
    assert_no_calls_while_open(breaker, proxy)


def test_a_fallback_that_calls_the_dependency_fails_naming_it(
    chaos_proxy: Callable[..., Any], upstream: str, circuit_breaker: Callable[..., Any]
) -> None:
    proxy = chaos_proxy(upstream, name="stock-db")
    breaker = circuit_breaker("stock", failure_threshold=3)
    service = Service(proxy, breaker, leaky=True)
    trip(breaker)
    service.handle()
    with pytest.raises(BreakerAssertionError) as info:
        assert_no_calls_while_open(breaker, proxy)
    message = str(info.value)
    assert f"calls reached {upstream} through proxy 'stock-db' while breaker 'stock'" in message
    assert "1 new connection(s) and 20 byte(s)" in message


def test_probes_while_half_open_are_allowed(
    chaos_proxy: Callable[..., Any],
    upstream: str,
    circuit_breaker: Callable[..., Any],
    virtual_clock: Any,
) -> None:
    proxy = chaos_proxy(upstream)
    breaker = circuit_breaker("stock", failure_threshold=3, recovery_timeout=5)
    service = Service(proxy, breaker)
    trip(breaker)
    assert service.handle() == "cached"
    virtual_clock.advance(5)
    assert service.handle() == "GET stock"  # the probe reaches the dependency: allowed
    assert_no_calls_while_open(breaker, proxy)


def test_a_disabled_proxy_is_refused_not_passed(
    chaos_proxy: Callable[..., Any], upstream: str, circuit_breaker: Callable[..., Any]
) -> None:
    """Under down() connects are refused by the OS: a leak would be invisible."""
    proxy = chaos_proxy(upstream)
    breaker = circuit_breaker("stock", failure_threshold=3)
    with proxy.down():
        trip(breaker)
        with pytest.raises(NotObservableError, match=r"was disabled .*partition\(\)"):
            assert_no_calls_while_open(breaker, proxy)


def test_a_breaker_that_never_opened_fails(
    chaos_proxy: Callable[..., Any], upstream: str, circuit_breaker: Callable[..., Any]
) -> None:
    proxy = chaos_proxy(upstream)
    breaker = circuit_breaker("stock")
    with pytest.raises(BreakerAssertionError, match="never open during this test"):
        assert_no_calls_while_open(breaker, proxy)


def test_what_it_cannot_observe_is_refused(
    circuit_breaker: Callable[..., Any], breaker_timeline: Any
) -> None:
    breaker = circuit_breaker("stock")
    trip(breaker)
    with pytest.raises(TypeError, match=r"must be the chaos\.Proxy"):
        assert_no_calls_while_open(breaker, ("127.0.0.1", 6379))  # type: ignore[arg-type]
    with pytest.raises(NotObservableError, match=r"no call to '127\.0\.0\.1:6379' was noted"):
        breaker_timeline.assert_no_calls_while_open(breaker, "127.0.0.1:6379")


def test_grace_leaves_out_calls_already_under_way(
    chaos_proxy: Callable[..., Any], upstream: str, breaker_timeline: Any
) -> None:
    """A driver's cancel request right after the tripping timeout is not the service's call."""
    proxy = chaos_proxy(upstream)
    breaker = CircuitBreaker("stock")
    breaker_timeline.watch(breaker)
    trip(breaker)
    ask(proxy, b"CANCEL")  # sent at once by the client library of the timed-out call
    with pytest.raises(BreakerAssertionError):
        assert_no_calls_while_open(breaker, proxy)
    assert_no_calls_while_open(breaker, proxy, grace=5.0)


def test_a_remote_probe_between_two_polls_is_allowed_when_transitions_are_reported(
    chaos_proxy: Callable[..., Any], upstream: str, breaker_timeline: Any
) -> None:
    """A service that reports its transitions (watch_remote's) dates a probe that started and
    failed between two polls: its traffic is not a call made while open; later traffic is."""
    import time

    from pytest_synapse.poller import PolledState, PolledTransition

    proxy = chaos_proxy(upstream)
    reported: list[PolledState] = [PolledState("closed")]
    poller = breaker_timeline.poll(lambda: {"remote": reported[-1]}, interval=60)
    reported.append(PolledState("open", (PolledTransition("closed", "open"),)))
    poller.poll_once()
    time.sleep(0.05)
    probe_started = time.monotonic()
    ask(proxy, b"probe")  # the remote breaker's half-open probe, between two polls
    probe_failed = time.monotonic()
    time.sleep(0.05)
    now = time.monotonic()
    reported.append(
        PolledState(
            "open",
            (
                PolledTransition("open", "half_open", age=now - probe_started + 0.001),
                PolledTransition("half_open", "open", age=now - probe_failed),
            ),
        )
    )
    poller.poll_once()
    assert_no_calls_while_open("remote", proxy)
    ask(proxy, b"leak")  # while open again, no probe due
    with pytest.raises(BreakerAssertionError, match="1 new connection"):
        assert_no_calls_while_open("remote", proxy)


def test_leak_in_the_same_virtual_instant_is_caught(synapse_pytester: pytest.Pytester) -> None:
    synapse_pytester.makepyfile(
        """
        import pytest
        from synapse_core import CircuitOpenError

        def test_fallback_leak(circuit_breaker, breaker_timeline):
            b = circuit_breaker("dep")
            def upstream():
                breaker_timeline.upstream_call("dep")
                raise ConnectionError("down")
            for _ in range(4):
                try:
                    b.call(upstream)
                except CircuitOpenError:
                    breaker_timeline.upstream_call("dep")   # the bug: a fallback call
                except ConnectionError:
                    pass
            breaker_timeline.assert_no_calls_while_open(b, "dep")
        """
    )
    result = synapse_pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*1 call(s) reached dep while breaker 'dep' was open*"])
    assert "assertions.py" not in result.stdout.str()  # the plugin's frames are hidden
