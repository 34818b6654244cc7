"""Container faults on real containers: each one breaks what it says, and its heal repairs it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from docker_helpers import echo_command, probe, reaches

from chaos.docker import Container, ContainerFaultError, isolate, partition
from chaos.errors import FaultError, InvalidFault

pytestmark = pytest.mark.usefixtures("leftovers")


@pytest.fixture
def echo(container: Callable[..., Container], images: dict[str, str]) -> Callable[[], Container]:
    """Factory: a started echo server container (port 7000) on the session network."""
    return lambda: container(images["base"], command=echo_command(), ports=[7000])


def at(target: Container) -> str:
    return target.network_address(7000)


def test_pause_freezes_and_unpause_resumes(
    echo: Callable[[], Container], breaker_timeline: Any
) -> None:
    server, client = echo(), echo()
    assert reaches(client, at(server))
    with server.pause() as fault:
        assert server.status == "paused"
        # Frozen, not gone: the connect is accepted by nobody and nothing is refused.
        assert probe(client, at(server), timeout=0.5) == 1
        assert fault.active
        assert server.faults == [fault]
    assert server.status == "running"
    assert reaches(client, at(server))
    (span,) = breaker_timeline.timeline.faults
    assert (span.fault, span.proxy, span.end is not None) == ("pause", server.name, True)


@pytest.mark.parametrize(
    ("kind", "make"),
    [
        ("kill", lambda c: c.kill()),
        ("stop", lambda c: c.stop(timeout=0)),
        ("restart", lambda c: c.restart(timeout=0)),
    ],
)
def test_kill_stop_restart_then_start_recovers(
    echo: Callable[[], Container], kind: str, make: Callable[[Container], Any]
) -> None:
    server, client = echo(), echo()
    with make(server):
        if kind != "restart":
            assert server.status == "exited"
            assert not reaches(client, at(server), timeout=0.5)
    assert server.status == "running"
    server.wait_ready(7000)
    assert reaches(client, at(server))
    # Docker may give the published port a new host port on start: address() reads it again.
    assert server.address(7000).startswith("127.0.0.1:")


def test_kill_with_a_signal_the_process_ignores_keeps_it_running(
    echo: Callable[[], Container],
) -> None:
    server = echo()
    with server.kill("SIGWINCH"):  # ignored by default
        assert server.status == "running"
    assert server.status == "running"


def test_disconnect_cuts_off_and_reconnect_heals(
    echo: Callable[[], Container], docker_network: Any
) -> None:
    server, client = echo(), echo()
    with server.disconnect(docker_network):
        assert docker_network.name not in server.networks
        assert not reaches(client, at(server), timeout=0.5)
    assert docker_network.name in server.networks
    assert reaches(client, at(server))  # by name again: aliases are back


def test_disconnect_from_a_network_it_is_not_on_is_refused(
    echo: Callable[[], Container],
) -> None:
    server = echo()
    with pytest.raises(ContainerFaultError, match="is not on network no-such-net"):
        server.disconnect("no-such-net").start()
    assert server.faults == []


def test_partition_two_groups_while_both_still_reach_a_third(
    echo: Callable[[], Container], breaker_timeline: Any
) -> None:
    a, b, c = echo(), echo(), echo()
    with partition([[a], [b]]) as fault:
        assert not reaches(a, at(b), timeout=0.5)
        assert not reaches(b, at(a), timeout=0.5)
        assert reaches(a, at(c))
        assert reaches(b, at(c))
        assert reaches(c, at(a))
        assert reaches(c, at(b))
        assert fault.target == f"{a.name} | {b.name}"
    assert reaches(a, at(b))
    assert reaches(b, at(a))
    (span,) = breaker_timeline.timeline.faults
    assert span.fault == "partition"
    assert span.params == {"groups": [[a.name], [b.name]]}


def test_partition_of_groups_cuts_every_pair_across(echo: Callable[[], Container]) -> None:
    a1, a2, b1 = echo(), echo(), echo()
    with partition([[a1, a2], [b1]]):
        assert reaches(a1, at(a2))  # inside a group: untouched
        assert not reaches(a1, at(b1), timeout=0.5)
        assert not reaches(b1, at(a2), timeout=0.5)
    assert reaches(b1, at(a2))


def test_isolate_cuts_one_off_from_all(echo: Callable[[], Container]) -> None:
    lone, b, c = echo(), echo(), echo()
    with isolate(lone):
        assert not reaches(b, at(lone), timeout=0.5)
        assert not reaches(lone, at(c), timeout=0.5)
        assert reaches(b, at(c))
    assert reaches(b, at(lone))
    assert reaches(lone, at(c))


def test_flaky_loses_a_share_of_connects_within_bounds(echo: Callable[[], Container]) -> None:
    server, client = echo(), echo()
    assert probe(client, at(server), count=10, timeout=0.3, mode="connect") == 0
    with server.flaky(loss=0.5):
        # Each connect fails when the server's SYN-ACK is dropped (p = 0.5; TCP would only
        # retry after 1 s). 40 tries: P(failed outside 8..32) < 1e-4 for a fair coin, and a
        # rule that did nothing (0) or everything (40) is far outside.
        failed = probe(client, at(server), count=40, timeout=0.3, mode="connect")
        assert 8 <= failed <= 32, failed
    assert probe(client, at(server), count=10, timeout=0.3, mode="connect") == 0


def test_flaky_towards_one_peer_leaves_the_others_alone(echo: Callable[[], Container]) -> None:
    server, lossy_peer, other = echo(), echo(), echo()
    with server.flaky(loss=1.0, towards=[lossy_peer]):
        assert not reaches(lossy_peer, at(server), timeout=0.3)
        assert probe(other, at(server), count=5, timeout=0.3) == 0


def test_a_partition_that_fails_half_way_is_undone(echo: Callable[[], Container]) -> None:
    """All or none: a member that cannot take the rules leaves no rule on the others."""
    a, b = echo(), echo()
    b.sdk.stop(timeout=0)  # no network namespace: applying to it fails
    with pytest.raises(ContainerFaultError, match="not running"):
        partition([[a], [b]]).start()
    b.sdk.start()
    b.wait_ready(7000)
    assert reaches(a, at(b))
    assert reaches(b, at(a))
    assert "io.synapse.run" not in _rules(a)


def test_a_failed_heal_is_reported_and_retried(echo: Callable[[], Container]) -> None:
    server = echo()
    fault = server.pause().start()
    original = server.sdk.unpause
    calls = 0

    def broken() -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("engine hiccup")

    server.sdk.unpause = broken
    try:
        with pytest.raises(ContainerFaultError, match=r"could not heal pause .* call stop"):
            fault.stop()
        assert calls == 3  # tried three times
        assert fault.left_behind == [server.name]
        assert server.status == "paused"
    finally:
        server.sdk.unpause = original
    fault.stop()  # the retry heals it
    assert fault.left_behind == []
    assert server.status == "running"


def test_bad_arguments_are_refused_before_anything_happens(
    echo: Callable[[], Container],
) -> None:
    server = echo()
    with pytest.raises(InvalidFault, match="loss must be a number from 0 to 1"):
        server.flaky(loss=2)
    with pytest.raises(InvalidFault, match="at least two non-empty groups"):
        partition([[server]])
    with pytest.raises(InvalidFault, match="in two groups"):
        partition([[server], [server]])
    with pytest.raises(InvalidFault, match="signal must be"):
        server.kill("kill -9")
    with pytest.raises(InvalidFault, match="unknown container fault 'melt'"):
        server.fault("melt")
    fault = server.pause().start()
    with pytest.raises(FaultError, match="already active"):
        fault.start()
    fault.stop()


def _rules(target: Container) -> str:
    from chaos.docker import netfilter

    return "\n".join(netfilter.saved_rules(target.pid))


@pytest.fixture
def tc_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # testcontainers' reaper (Ryuk) is an image from a registry; none can be pulled here, and
    # the test stops what it starts.
    monkeypatch.setenv("TESTCONTAINERS_RYUK_DISABLED", "true")
    return


def test_a_testcontainers_container_gets_the_same_faults(
    tc_env: None,
    images: dict[str, str],
    container: Callable[..., Container],
    chaos_container: Callable[[object], Container],
    breaker_timeline: Any,
) -> None:
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.network import Network as TcNetwork

    with TcNetwork() as network:
        redis = (
            DockerContainer(images["redis"])
            .with_command("redis-server --protected-mode no --save ''")
            .with_exposed_ports(6379)
            .with_network(network)
            .with_network_aliases("redis")
        )
        with redis:
            handle = chaos_container(redis)
            handle.wait_ready(6379)
            client = container(images["base"], command=["sleep", "infinity"], network=network)
            ping = {"mode": "PING=+PONG", "timeout": 0.5}
            assert probe(client, "redis:6379", **ping) == 0
            with handle.pause():
                assert probe(client, "redis:6379", **ping) == 1
            with handle.disconnect(network):
                assert probe(client, "redis:6379", **ping) == 1
            with partition([[redis], [client]], timeline=breaker_timeline.timeline):
                assert probe(client, "redis:6379", **ping) == 1
            assert probe(client, "redis:6379", **ping) == 0
            # The host reaches it through its published port, as testcontainers set it up.
            assert handle.address(6379) == f"127.0.0.1:{redis.get_exposed_port(6379)}"
            client.remove()
    kinds = [span.fault for span in breaker_timeline.timeline.faults]
    assert kinds == ["pause", "disconnect", "partition"]
