"""Disable faults held on one proxy by several handles, owners, URLs and servers.

The bookkeeping of :mod:`chaos.control.livefaults`.

The proxy stays down while any holder holds it, whoever releases last brings it back, another
owner's marker (another process) is respected, and a hung server holds up no other server.
"""

from __future__ import annotations

import functools
import http.client
import json
import socket
import threading
import time
from collections.abc import Callable

import pytest
from chaos_helpers import (
    OTHER_MARKER,
    Answer,
    EchoServer,
    FakeApi,
    connect_state,
    echoes,
    other_owner_takes_it_down,
)

from chaos import EmbeddedToxiproxy, Proxy, ProxyInfo, ToxiproxyClient, ToxiproxyError
from chaos.control.livefaults import server_key


def test_ending_a_down_leaves_the_proxy_down_while_another_owner_holds_it(
    client: ToxiproxyClient, shared_proxy: str
) -> None:
    bob = client.get_proxy(shared_proxy, owner="bob")
    other_owner_takes_it_down(client, shared_proxy)
    with bob.down():
        assert not client.proxy_info(shared_proxy).enabled
    info = client.proxy_info(shared_proxy)
    assert not info.enabled, "bob's down() ending re-enabled a proxy alice still holds down"
    assert [t.name for t in info.toxics] == [OTHER_MARKER]  # bob's own marker is gone


def test_without_another_owners_marker_the_proxy_comes_back(
    client: ToxiproxyClient, shared_proxy: str
) -> None:
    bob = client.get_proxy(shared_proxy, owner="bob")
    alice = client.get_proxy(shared_proxy, owner="alice")
    outage = alice.down().start()
    with bob.down():
        pass
    assert not client.proxy_info(
        shared_proxy
    ).enabled  # alice's live fault in this process holds it
    outage.stop()
    info = client.proxy_info(shared_proxy)
    assert info.enabled
    assert not info.toxics


def test_stale_cleanup_leaves_the_proxy_down_while_another_owner_holds_it(
    client: ToxiproxyClient, shared_proxy: str
) -> None:
    # bob's process died while its down() held the proxy; alice's process still holds it down.
    stale = "synapse:bob:down:dead00-1:marker"
    client.add_toxic(shared_proxy, "noop", name=stale)
    other_owner_takes_it_down(client, shared_proxy)
    bob = client.get_proxy(shared_proxy, owner="bob")
    assert bob.remove_stale_faults() == [stale]
    info = client.proxy_info(shared_proxy)
    assert not info.enabled
    assert [t.name for t in info.toxics] == [OTHER_MARKER]
    # Once alice's marker is the stale one (her process gone), her cleanup brings the proxy back.
    alice = client.get_proxy(shared_proxy, owner="alice")
    assert alice.remove_stale_faults() == [OTHER_MARKER]
    assert client.proxy_info(shared_proxy).enabled


def test_two_owners_releasing_at_once_leave_the_proxy_up(
    client: ToxiproxyClient, shared_proxy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chaos.control.faults import _Disable

    bob = client.get_proxy(shared_proxy, owner="bob")
    other_owner_takes_it_down(client, shared_proxy)
    seen = _Disable._held_by_other_owner

    def alice_leaves_meanwhile(self: _Disable) -> bool:
        held = seen(self)  # bob sees alice's marker...
        # ...and alice, releasing at the same moment, saw bob's and removed hers without
        # enabling: the race that left the proxy down with no marker at all.
        client.remove_toxic(shared_proxy, OTHER_MARKER)
        return held

    with bob.down():
        monkeypatch.setattr(_Disable, "_held_by_other_owner", alice_leaves_meanwhile)
    info = client.proxy_info(shared_proxy)
    assert not info.toxics
    assert info.enabled, "the last marker went but nobody enabled the proxy"


def _unavailable(method: str, path: str, body: bytes) -> Answer:
    return 503, {"error": "test server gave up", "status": 503}


def _run_in_thread(target: Callable[[], object]) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def body() -> None:
        try:
            target()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread, errors


def test_a_hung_server_does_not_hold_up_faults_on_another_server(
    fake_api: Callable[..., FakeApi], echo_handle: Proxy
) -> None:
    hung = fake_api(_unavailable, hold=True)
    hung_proxy = Proxy(
        ToxiproxyClient(hung.url, timeout=30),
        ProxyInfo("elsewhere", "127.0.0.1:1", "127.0.0.1:2", True),
    )
    stuck, stuck_errors = _run_in_thread(lambda: hung_proxy.down().start())
    try:
        assert hung.requested.wait(10), "the hung server never got the request"

        def faults_on_the_healthy_server() -> None:
            with echo_handle.down():
                assert connect_state(echo_handle.address) == "refused"
            with echo_handle.partition("reject"):
                assert connect_state(echo_handle.address) == "refused"
            with echo_handle.latency(5):
                assert echoes(echo_handle.address)

        healthy, errors = _run_in_thread(faults_on_the_healthy_server)
        healthy.join(5)  # the hung request holds its server's proxy for up to 30 s
        assert not healthy.is_alive(), "faults on a healthy server waited for a hung one"
        assert errors == []
        assert stuck.is_alive()  # still waiting for its own server, as it should
        assert echo_handle.refresh().enabled
        assert echo_handle.toxics() == []
    finally:
        hung.release()
        stuck.join(10)
    assert not stuck.is_alive()
    assert len(stuck_errors) == 1
    assert isinstance(stuck_errors[0], ToxiproxyError)
    assert stuck_errors[0].status == 503


def _forward_to(url: str, delay_enable: float, seen: threading.Event) -> Callable[..., Answer]:
    """An answer that relays to the server at *url*, holding enable requests *delay_enable* s."""
    host, _, port = url.removeprefix("http://").partition(":")

    def answer(method: str, path: str, body: bytes) -> Answer:
        if method == "PATCH" and json.loads(body or b"{}").get("enabled") is True:
            seen.set()
            time.sleep(delay_enable)  # a slow network: the enable arrives late
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            headers = {"Content-Type": "application/json", "User-Agent": "tests"}
            conn.request(method, path, body=body or None, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        return response.status, json.loads(raw) if raw else None

    return answer


def test_an_acquire_racing_the_last_release_leaves_the_proxy_down(
    fake_api: Callable[..., FakeApi], toxiproxy: EmbeddedToxiproxy, echo_server: EchoServer
) -> None:
    direct = toxiproxy.client()
    direct.create_proxy("raced", upstream=echo_server.address)
    enabling = threading.Event()
    relay = fake_api(_forward_to(toxiproxy.url, 0.3, enabling))
    handle = ToxiproxyClient(relay.url, timeout=10).get_proxy("raced")
    first = handle.down().start()
    releasing, errors = _run_in_thread(first.stop)  # the last holder: it enables the proxy
    assert enabling.wait(5)
    # A new holder while that enable is on its way: its disable must land after the enable.
    second = handle.partition("reject").start()
    try:
        releasing.join(10)
        assert not releasing.is_alive()
        assert errors == []
        assert not direct.proxy_info("raced").enabled
        assert connect_state(handle.address) == "refused"
    finally:
        second.stop()
    assert direct.proxy_info("raced").enabled
    assert direct.toxics("raced") == []


def test_racing_disable_faults_keep_the_proxy_down_while_any_is_held(echo_handle: Proxy) -> None:
    problems: list[object] = []

    def hold_and_check(kind: str) -> None:
        for _ in range(10):
            fault = echo_handle.down() if kind == "down" else echo_handle.partition("reject")
            with fault:
                # While this fault holds the proxy, no other fault's release may enable it.
                if echo_handle.client.proxy_info(echo_handle.name).enabled:
                    problems.append(f"{kind}: proxy enabled while held")

    workers = [
        _run_in_thread(functools.partial(hold_and_check, kind)) for kind in ("down", "reject") * 2
    ]
    for thread, _ in workers:
        thread.join(60)
    assert [t for t, _ in workers if t.is_alive()] == []
    assert [e for _, errors in workers for e in errors] == []
    assert problems == []
    assert echo_handle.refresh().enabled  # the last release enabled it
    assert echo_handle.toxics() == []
    assert echoes(echo_handle.address)


def _localhost_is_only_ipv4_loopback() -> bool:
    try:
        infos = socket.getaddrinfo("localhost", None, type=socket.SOCK_STREAM)
    except OSError:
        return False
    return {info[4][0] for info in infos} == {"127.0.0.1"}


def test_server_key_treats_spellings_of_one_server_alike() -> None:
    same = [
        "http://127.0.0.1:8474",
        "http://127.0.0.1:8474/",
        "HTTP://127.0.0.1:8474//",
        " http://127.0.0.1:8474/ignored/path ",
    ]
    assert {server_key(url) for url in same} == {"http://127.0.0.1:8474"}
    assert server_key("http://Toxi.Example:80/") == server_key("http://toxi.example")
    assert server_key("http://toxi.example") == "http://toxi.example:80"
    assert server_key("http://[0:0:0:0:0:0:0:1]:8474") == "http://[::1]:8474"
    assert server_key("http://127.0.0.1:8475") != server_key("http://127.0.0.1:8474")
    assert server_key("http://127.0.0.2:8474") != server_key("http://127.0.0.1:8474")
    if _localhost_is_only_ipv4_loopback():
        assert server_key("http://LOCALHOST:8474/") == "http://127.0.0.1:8474"


def _spellings(url: str) -> list[str]:
    port = url.rpartition(":")[2]
    found = [f"{url}/", f"HTTP://127.0.0.1:{port}"]
    if _localhost_is_only_ipv4_loopback():
        found.append(f"http://localhost:{port}/")
    return found


def test_live_faults_are_recognised_through_any_spelling_of_the_url(
    toxiproxy: EmbeddedToxiproxy, echo_server: EchoServer
) -> None:
    created = toxiproxy.client().create_proxy("spelt", upstream=echo_server.address)
    first, *others = _spellings(toxiproxy.url)
    handle = ToxiproxyClient(first).get_proxy("spelt", owner="tests")
    with handle.latency(5) as latency, handle.down() as down:
        held = {*latency.toxic_names, *down.toxic_names}
        for spelling in others:
            other = ToxiproxyClient(spelling).get_proxy("spelt", owner="tests")
            assert other.remove_stale_faults() == []  # live in this process: not stale
            assert {t.name for t in other.toxics()} == held
            assert not other.refresh().enabled
            # Disables through two spellings still count as two holders of one proxy.
            with other.partition("reject"):
                pass
            assert not other.refresh().enabled
    assert created.refresh().enabled
    assert created.toxics() == []
