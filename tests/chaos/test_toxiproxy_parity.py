"""Behaviour the embedded server shares with Shopify's Toxiproxy 2.12, checked on real sockets.

Each test pins one thing a Toxiproxy user relies on and that the server once did differently:
stacked latency toxics, the slicer's delay, reset_peer on a closing client, the order of JSON
fields and proxies, and what ``/populate`` answers and keeps when it fails.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import pytest
from chaos_helpers import RawApi, connect, recv_exactly, recv_until_closed, round_trip

from chaos import ToxiproxyClient


@pytest.fixture
def occupied() -> Iterator[str]:
    """A loopback ``host:port`` something else is listening on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        host, port = sock.getsockname()
        yield f"{host}:{port}"


class TestDataPlane:
    def test_stacked_latency_toxics_add_up(
        self, client: ToxiproxyClient, echo_proxy: tuple[str, int]
    ) -> None:
        # Each latency toxic delays a chunk from the time the previous one passed it on.
        client.add_toxic("echo", "latency", name="first", attributes={"latency": 150})
        client.add_toxic("echo", "latency", name="second", attributes={"latency": 150})
        with connect(echo_proxy) as sock:
            elapsed = round_trip(sock)
        assert elapsed >= 0.280, elapsed

    def test_slicer_delays_after_every_slice(
        self, client: ToxiproxyClient, echo_proxy: tuple[str, int]
    ) -> None:
        # A chunk smaller than a slice is one slice, and the delay follows it too: the next
        # chunk waits for it.
        client.add_toxic(
            "echo",
            "slicer",
            attributes={"average_size": 100, "size_variation": 10, "delay": 400_000},
        )
        with connect(echo_proxy) as sock:
            sock.sendall(b"a" * 10)
            assert recv_exactly(sock, 10) == b"a" * 10
            start = time.perf_counter()
            sock.sendall(b"b" * 10)
            assert recv_exactly(sock, 10) == b"b" * 10
            elapsed = time.perf_counter() - start
        assert elapsed >= 0.300, elapsed

    @pytest.mark.parametrize("payload", [b"", b"dropped"], ids=["fin-only", "data-then-fin"])
    def test_reset_peer_resets_a_closing_client(
        self, client: ToxiproxyClient, echo_proxy: tuple[str, int], payload: bytes
    ) -> None:
        # The client's FIN is the toxic's first input like data is: it is held, and the
        # connection is reset after the timeout instead of closing gracefully.
        client.add_toxic("echo", "reset_peer", stream="upstream", attributes={"timeout": 300})
        with connect(echo_proxy) as sock:
            if payload:
                sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            start = time.perf_counter()
            data, how = recv_until_closed(sock, timeout=5)
            elapsed = time.perf_counter() - start
        assert (data, how) == (b"", "reset")
        assert elapsed >= 0.200, elapsed

    def test_reset_peer_update_keeps_a_held_close_and_removal_releases_it(
        self, client: ToxiproxyClient, echo_proxy: tuple[str, int]
    ) -> None:
        client.add_toxic("echo", "reset_peer", stream="upstream", attributes={"timeout": 60_000})
        with connect(echo_proxy) as updated, connect(echo_proxy) as removed:
            updated.sendall(b"x")
            assert recv_until_closed(updated, timeout=0.3) == (b"", "timeout")  # upstream dialled
            updated.shutdown(socket.SHUT_WR)
            assert recv_until_closed(updated, timeout=0.3) == (b"", "timeout")  # FIN held
            client.update_toxic("echo", "reset_peer_upstream", attributes={"timeout": 100})
            assert recv_until_closed(updated, timeout=5) == (b"", "reset")

            client.update_toxic("echo", "reset_peer_upstream", attributes={"timeout": 60_000})
            removed.shutdown(socket.SHUT_WR)
            assert recv_until_closed(removed, timeout=0.3) == (b"", "timeout")  # FIN held
            client.remove_toxic("echo", "reset_peer_upstream")
            # the FIN goes on: the echo server closes, and so does the connection, gracefully
            assert recv_until_closed(removed, timeout=5) == (b"", "eof")


class TestJsonShapes:
    def test_toxic_json_lists_attributes_first(
        self, raw_api: RawApi, echo_proxy: tuple[str, int]
    ) -> None:
        expected = ["attributes", "name", "type", "stream", "toxicity"]
        created = raw_api("POST", "/proxies/echo/toxics", {"type": "latency"})
        assert list(created.json()) == expected
        shown = raw_api("GET", "/proxies/echo/toxics/latency_downstream")
        assert list(shown.json()) == expected
        listed = raw_api("GET", "/proxies/echo")
        assert [list(t) for t in listed.json()["toxics"]] == [expected]

    def test_proxy_index_is_keyed_in_name_order(self, raw_api: RawApi) -> None:
        for name in ("zeta", "alpha", "mid"):
            body = {"name": name, "listen": "127.0.0.1:0", "upstream": "127.0.0.1:9"}
            assert raw_api("POST", "/proxies", body).status == 201
        assert list(raw_api("GET", "/proxies").json()) == ["alpha", "mid", "zeta"]


class TestPopulateFailures:
    def test_invalid_populate_answers_null_proxies(self, raw_api: RawApi) -> None:
        response = raw_api("POST", "/populate", [{"name": "broken"}])
        assert response.status == 400
        assert response.json() == {
            "error": "missing required field: upstream at proxy 1",
            "status": 400,
            "proxies": None,
            "hint": response.json()["hint"],  # ours, after Toxiproxy's members
        }

    def test_bind_failure_lists_the_proxies_done_before_it(
        self, raw_api: RawApi, occupied: str
    ) -> None:
        body = [
            {"name": "first", "listen": "127.0.0.1:0", "upstream": "127.0.0.1:9"},
            {"name": "second", "listen": occupied, "upstream": "127.0.0.1:9"},
        ]
        response = raw_api("POST", "/populate", body)
        assert response.status == 500
        answer = response.json()
        assert answer["status"] == 500
        assert [p["name"] for p in answer["proxies"]] == ["first"]
        assert set(raw_api("GET", "/proxies").json()) == {"first"}

    def test_failed_replacement_keeps_the_old_proxy_disabled(
        self, raw_api: RawApi, occupied: str
    ) -> None:
        old = {"name": "redis", "listen": "127.0.0.1:0", "upstream": "127.0.0.1:6379"}
        assert raw_api("POST", "/proxies", old).status == 201
        new = {"name": "redis", "listen": occupied, "upstream": "127.0.0.1:6380"}
        assert raw_api("POST", "/populate", [new]).status == 500
        kept = raw_api("GET", "/proxies/redis")
        assert kept.status == 200
        shown = kept.json()
        assert (shown["upstream"], shown["enabled"]) == ("127.0.0.1:6379", False)
        # it can be enabled again where it was
        assert raw_api("PATCH", "/proxies/redis", {"enabled": True}).json()["enabled"] is True


def test_json_module_keeps_key_order() -> None:
    # The JSON-shape tests above rely on json.loads keeping the server's key order.
    assert list(json.loads('{"b": 1, "a": 2}')) == ["b", "a"]
