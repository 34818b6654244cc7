"""Disabling faults of two owners on one shared server, and a killed subprocess server."""

from __future__ import annotations

import os
import signal
import time

import pytest

from chaos import EmbeddedToxiproxy, ToxiproxyClient

# A marker as another process would hold it: the in-process live-fault registry does not know
# it, exactly as it does not know the faults of another process sharing the server.
OTHER_MARKER = "synapse:alice:down:0badf0-1:marker"


@pytest.fixture
def shared(client: ToxiproxyClient) -> str:
    client.create_proxy("shared", upstream="127.0.0.1:9")
    return "shared"


def _other_owner_takes_it_down(client: ToxiproxyClient, proxy: str) -> None:
    # What alice's down() does in her process: marker first, then disable.
    client.add_toxic(proxy, "noop", name=OTHER_MARKER)
    client.disable(proxy)


def test_ending_a_down_leaves_the_proxy_down_while_another_owner_holds_it(
    client: ToxiproxyClient, shared: str
) -> None:
    bob = client.get_proxy(shared, owner="bob")
    _other_owner_takes_it_down(client, shared)
    with bob.down():
        assert not client.proxy_info(shared).enabled
    info = client.proxy_info(shared)
    assert not info.enabled, "bob's down() ending re-enabled a proxy alice still holds down"
    assert [t.name for t in info.toxics] == [OTHER_MARKER]  # bob's own marker is gone


def test_flapping_up_phase_does_not_enable_a_proxy_another_owner_holds(
    client: ToxiproxyClient, shared: str
) -> None:
    bob = client.get_proxy(shared, owner="bob")
    flapping = bob.flapping(period=10.0)
    flapping.start(background=False)
    try:
        _other_owner_takes_it_down(client, shared)
        assert flapping.sync(flapping.next_change) == 1  # down -> up
        assert not flapping.is_down
        assert not client.proxy_info(shared).enabled
    finally:
        flapping.stop()
    assert not client.proxy_info(shared).enabled


def test_without_another_owners_marker_the_proxy_comes_back(
    client: ToxiproxyClient, shared: str
) -> None:
    bob = client.get_proxy(shared, owner="bob")
    alice = client.get_proxy(shared, owner="alice")
    outage = alice.down().start()
    with bob.down():
        pass
    assert not client.proxy_info(shared).enabled  # alice's live fault in this process holds it
    outage.stop()
    info = client.proxy_info(shared)
    assert info.enabled
    assert not info.toxics


def test_stale_cleanup_leaves_the_proxy_down_while_another_owner_holds_it(
    client: ToxiproxyClient, shared: str
) -> None:
    # bob's process died while its down() held the proxy; alice's process still holds it down.
    stale = "synapse:bob:down:dead00-1:marker"
    client.add_toxic(shared, "noop", name=stale)
    _other_owner_takes_it_down(client, shared)
    bob = client.get_proxy(shared, owner="bob")
    assert bob.remove_stale_faults() == [stale]
    info = client.proxy_info(shared)
    assert not info.enabled
    assert [t.name for t in info.toxics] == [OTHER_MARKER]
    # Once alice's marker is the stale one (her process gone), her cleanup brings the proxy back.
    alice = client.get_proxy(shared, owner="alice")
    assert alice.remove_stale_faults() == [OTHER_MARKER]
    assert client.proxy_info(shared).enabled


# -- a subprocess server that died ----------------------------------------------------------------


def _stops_within(server: EmbeddedToxiproxy, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while server.running and time.monotonic() < deadline:
        time.sleep(0.02)
    return not server.running


def test_a_killed_subprocess_server_is_not_running_and_start_replaces_it() -> None:
    server = EmbeddedToxiproxy(mode="subprocess").start()
    try:
        first = server.pid
        assert first is not None
        assert server.running
        os.kill(first, signal.SIGKILL)
        assert _stops_within(server, 10.0)
        assert server.start() is server
        assert server.running
        assert server.pid not in (None, first)
        assert server.client(timeout=5.0).version() == "2.12.0"
    finally:
        server.stop()
    assert server.pid is None


def test_thread_mode_has_no_pid_and_start_is_idempotent() -> None:
    with EmbeddedToxiproxy() as server:
        assert server.pid is None
        url = server.url
        assert server.start().url == url  # alive: start() keeps the running server


def test_two_owners_releasing_at_once_leave_the_proxy_up(
    client: ToxiproxyClient, shared: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chaos.faults import _Disable

    bob = client.get_proxy(shared, owner="bob")
    _other_owner_takes_it_down(client, shared)
    seen = _Disable._held_by_other_owner

    def alice_leaves_meanwhile(self: _Disable) -> bool:
        held = seen(self)  # bob sees alice's marker...
        # ...and alice, releasing at the same moment, saw bob's and removed hers without
        # enabling: the race that left the proxy down with no marker at all.
        client.remove_toxic(shared, OTHER_MARKER)
        return held

    with bob.down():
        monkeypatch.setattr(_Disable, "_held_by_other_owner", alice_leaves_meanwhile)
    info = client.proxy_info(shared)
    assert not info.toxics
    assert info.enabled, "the last marker went but nobody enabled the proxy"
