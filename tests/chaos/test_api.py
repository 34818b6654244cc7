"""Every control API endpoint and error through raw HTTP, as Toxiproxy 2.12 answers them."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from chaos_helpers import (
    EchoServer,
    RawApi,
    RawResponse,
    connect,
    recv_exactly,
    recv_until_closed,
)

PROXY = {"name": "redis", "listen": "127.0.0.1:0", "upstream": "127.0.0.1:6379"}


def create(raw_api: RawApi, **overrides: object) -> dict[str, object]:
    response = raw_api("POST", "/proxies", {**PROXY, **overrides})
    assert response.status == 201, response
    return response.json()  # type: ignore[no-any-return]


def assert_error(
    response: RawResponse, status: int, error: str, *, prefix: bool = False, populate: bool = False
) -> dict[str, Any]:
    """*response* is Toxiproxy's error *error* (exactly, or starting with it when *prefix*),
    written as Toxiproxy writes it, with our hint beside it; returns the JSON body."""
    assert response.status == status, response
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    if prefix:
        assert body["error"].startswith(error), body
    else:
        assert body["error"] == error, body
    assert isinstance(body.get("hint"), str), body
    assert body["hint"], body
    if populate:
        assert response.headers["content-type"] == "application/json"
    else:  # Go's http.Error
        assert response.headers["content-type"] == "text/plain; charset=utf-8"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.body.endswith(b"}\n")
    return body


class TestProxies:
    def test_create_rewrites_listen_to_bound_port(self, raw_api: RawApi) -> None:
        body = create(raw_api)
        assert list(body) == ["name", "listen", "upstream", "enabled", "Logger", "toxics"]
        assert body["Logger"] == {}
        assert body["name"] == "redis"
        assert body["upstream"] == "127.0.0.1:6379"
        assert body["enabled"] is True
        assert body["toxics"] == []
        host, port = str(body["listen"]).rsplit(":", 1)
        assert host == "127.0.0.1"
        assert int(port) > 0

    def test_listen_defaults_to_loopback(self, raw_api: RawApi) -> None:
        response = raw_api("POST", "/proxies", {"name": "a", "upstream": "127.0.0.1:1"})
        assert response.status == 201
        assert response.json()["listen"].startswith("127.0.0.1:")

    def test_index_show_and_delete(self, raw_api: RawApi) -> None:
        created = create(raw_api)
        index = raw_api("GET", "/proxies")
        assert index.status == 200
        assert index.json() == {"redis": created}
        shown = raw_api("GET", "/proxies/redis")
        assert shown.status == 200
        assert shown.json() == created
        deleted = raw_api("DELETE", "/proxies/redis")
        assert deleted.status == 204
        assert deleted.body == b""
        assert raw_api("GET", "/proxies").json() == {}

    def test_create_disabled_does_not_listen(self, raw_api: RawApi) -> None:
        body = create(raw_api, enabled=False, listen="127.0.0.1:0")
        assert body["enabled"] is False
        assert body["listen"] == "127.0.0.1:0"

    @pytest.mark.parametrize("method", ["POST", "PATCH"])
    def test_partial_update(self, raw_api: RawApi, method: str) -> None:
        created = create(raw_api)
        response = raw_api(method, "/proxies/redis", {"enabled": False})
        assert response.status == 200
        body = response.json()
        assert body["enabled"] is False
        assert body["upstream"] == created["upstream"]
        assert body["listen"] == created["listen"]
        # re-enabling binds the same port again
        again = raw_api(method, "/proxies/redis", {"enabled": True}).json()
        assert again["enabled"] is True
        assert again["listen"] == created["listen"]

    def test_update_upstream_keeps_listen(self, raw_api: RawApi) -> None:
        created = create(raw_api)
        body = raw_api("PATCH", "/proxies/redis", {"upstream": "127.0.0.1:6380"}).json()
        assert body["upstream"] == "127.0.0.1:6380"
        assert body["listen"] == created["listen"]

    def test_disable_refuses_new_connections_and_closes_open_ones(
        self, raw_api: RawApi, echo_server: EchoServer
    ) -> None:
        created = create(raw_api, upstream=echo_server.address)
        host, port = str(created["listen"]).rsplit(":", 1)
        with connect((host, int(port))) as sock:
            sock.sendall(b"hi")
            assert recv_exactly(sock, 2) == b"hi"
            assert raw_api("PATCH", "/proxies/redis", {"enabled": False}).status == 200
            assert recv_until_closed(sock, timeout=5)[1] in ("eof", "reset")
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((host, int(port)), timeout=5).close()

    def test_duplicate_name_is_409(self, raw_api: RawApi) -> None:
        create(raw_api)
        assert_error(raw_api("POST", "/proxies", PROXY), 409, "proxy already exists")

    @pytest.mark.parametrize(
        ("body", "field"),
        [({"upstream": "127.0.0.1:1"}, "name"), ({"name": "x"}, "upstream")],
    )
    def test_missing_field_is_400(self, raw_api: RawApi, body: object, field: str) -> None:
        assert_error(raw_api("POST", "/proxies", body), 400, f"missing required field: {field}")

    @pytest.mark.parametrize(
        "body",
        [b"{not json", b"", b"[1, 2]", {"name": 5, "upstream": "x:1"}, {**PROXY, "enabled": "no"}],
    )
    def test_bad_body_is_400(self, raw_api: RawApi, body: object) -> None:
        assert_error(raw_api("POST", "/proxies", body), 400, "bad request body: ", prefix=True)

    def test_unbindable_listen_is_500_and_not_created(self, raw_api: RawApi) -> None:
        taken = socket.socket()
        try:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            response = raw_api("POST", "/proxies", {**PROXY, "listen": f"127.0.0.1:{port}"})
            error = f"listen tcp 127.0.0.1:{port}: bind: address already in use"
            assert "'redis'" in assert_error(response, 500, error)["hint"]
        finally:
            taken.close()
        assert raw_api("GET", "/proxies").json() == {}

    @pytest.mark.parametrize(
        ("method", "path"),
        [
            ("GET", "/proxies/nope"),
            ("PATCH", "/proxies/nope"),
            ("DELETE", "/proxies/nope"),
            ("GET", "/proxies/nope/toxics"),
            ("POST", "/proxies/nope/toxics"),
        ],
    )
    def test_unknown_proxy_is_404(self, raw_api: RawApi, method: str, path: str) -> None:
        body = {"type": "latency"} if method != "GET" else None
        assert_error(raw_api(method, path, body), 404, "proxy not found")


class TestToxics:
    def test_create_with_defaults_answers_200(self, raw_api: RawApi) -> None:
        create(raw_api)
        response = raw_api("POST", "/proxies/redis/toxics", {"type": "latency"})
        assert response.status == 200
        assert response.json() == {
            "name": "latency_downstream",
            "type": "latency",
            "stream": "downstream",
            "toxicity": 1.0,
            "attributes": {"latency": 0, "jitter": 0},
        }

    def test_index_lists_upstream_then_downstream(self, raw_api: RawApi) -> None:
        create(raw_api)
        raw_api("POST", "/proxies/redis/toxics", {"type": "latency", "name": "d1"})
        raw_api("POST", "/proxies/redis/toxics", {"type": "timeout", "stream": "upstream"})
        raw_api("POST", "/proxies/redis/toxics", {"type": "slicer", "name": "d2"})
        names = [t["name"] for t in raw_api("GET", "/proxies/redis/toxics").json()]
        assert names == ["timeout_upstream", "d1", "d2"]
        proxy = raw_api("GET", "/proxies/redis").json()
        assert [t["name"] for t in proxy["toxics"]] == names

    def test_show_update_delete(self, raw_api: RawApi) -> None:
        create(raw_api)
        body = {"type": "latency", "attributes": {"latency": 100, "jitter": 5}, "toxicity": 0.5}
        raw_api("POST", "/proxies/redis/toxics", body)
        shown = raw_api("GET", "/proxies/redis/toxics/latency_downstream")
        assert shown.status == 200
        assert shown.json()["attributes"] == {"latency": 100, "jitter": 5}
        for method in ("PATCH", "POST"):
            updated = raw_api(
                method, "/proxies/redis/toxics/latency_downstream", {"attributes": {"latency": 7}}
            )
            assert updated.status == 200
            assert updated.json()["attributes"] == {"latency": 7, "jitter": 5}
            assert updated.json()["toxicity"] == 0.5
        toxicity = raw_api("PATCH", "/proxies/redis/toxics/latency_downstream", {"toxicity": 1})
        assert toxicity.json()["toxicity"] == 1.0
        deleted = raw_api("DELETE", "/proxies/redis/toxics/latency_downstream")
        assert deleted.status == 204
        assert raw_api("GET", "/proxies/redis/toxics").json() == []

    @pytest.mark.parametrize(
        "toxic_type",
        [
            "latency",
            "bandwidth",
            "slow_close",
            "timeout",
            "reset_peer",
            "slicer",
            "limit_data",
            "noop",
        ],
    )
    def test_every_type_is_accepted(self, raw_api: RawApi, toxic_type: str) -> None:
        create(raw_api)
        response = raw_api(
            "POST", "/proxies/redis/toxics", {"type": toxic_type, "stream": "upstream"}
        )
        assert response.status == 200
        assert response.json()["name"] == f"{toxic_type}_upstream"

    def test_duplicate_toxic_is_409(self, raw_api: RawApi) -> None:
        create(raw_api)
        raw_api("POST", "/proxies/redis/toxics", {"type": "latency"})
        assert_error(
            raw_api("POST", "/proxies/redis/toxics", {"type": "latency"}),
            409,
            "toxic already exists",
        )

    @pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
    def test_unknown_toxic_is_404(self, raw_api: RawApi, method: str) -> None:
        create(raw_api)
        body = {"attributes": {}} if method == "PATCH" else None
        assert_error(raw_api(method, "/proxies/redis/toxics/nope", body), 404, "toxic not found")

    def test_invalid_type_is_400(self, raw_api: RawApi) -> None:
        create(raw_api)
        response = raw_api("POST", "/proxies/redis/toxics", {"type": "lag"})
        assert "'lag'" in assert_error(response, 400, "invalid toxic type")["hint"]

    def test_invalid_stream_is_400(self, raw_api: RawApi) -> None:
        create(raw_api)
        assert_error(
            raw_api("POST", "/proxies/redis/toxics", {"type": "latency", "stream": "sideways"}),
            400,
            "stream was invalid, can be either upstream or downstream",
        )

    @pytest.mark.parametrize(
        "body",
        [
            {"type": "latency", "attributes": {"latency": "100"}},
            {"type": "latency", "attributes": {"latency": -1}},
            {"type": "latency", "attributes": {"latancy": 1}},
            {"type": "latency", "attributes": [1]},
            {"type": "latency", "toxicity": 2},
            {"type": "latency", "toxicity": "high"},
            {"type": 3},
            b"nope",
        ],
    )
    def test_bad_toxic_body_is_400(self, raw_api: RawApi, body: object) -> None:
        create(raw_api)
        response = raw_api("POST", "/proxies/redis/toxics", body)
        assert response.status == 400, response
        assert response.json()["status"] == 400

    def test_bad_update_keeps_toxic(self, raw_api: RawApi) -> None:
        create(raw_api)
        raw_api("POST", "/proxies/redis/toxics", {"type": "latency", "attributes": {"latency": 5}})
        response = raw_api(
            "PATCH", "/proxies/redis/toxics/latency_downstream", {"attributes": {"latency": 1.5}}
        )
        error = (
            "bad request body: json: cannot unmarshal number 1.5 into Go struct field "
            "LatencyToxic.attributes.latency of type int64"
        )
        assert_error(response, 400, error)
        shown = raw_api("GET", "/proxies/redis/toxics/latency_downstream").json()
        assert shown["attributes"]["latency"] == 5


class TestPopulateResetVersion:
    def test_populate_creates_and_answers_201(self, raw_api: RawApi) -> None:
        response = raw_api(
            "POST",
            "/populate",
            [PROXY, {"name": "pg", "upstream": "127.0.0.1:5432", "listen": "127.0.0.1:0"}],
        )
        assert response.status == 201
        names = [p["name"] for p in response.json()["proxies"]]
        assert names == ["redis", "pg"]
        assert set(raw_api("GET", "/proxies").json()) == {"redis", "pg"}

    def test_populate_keeps_identical_and_replaces_changed(self, raw_api: RawApi) -> None:
        first = create(raw_api)
        raw_api("POST", "/proxies/redis/toxics", {"type": "latency"})
        same = {**PROXY, "listen": first["listen"]}
        kept = raw_api("POST", "/populate", [same]).json()["proxies"][0]
        assert kept["listen"] == first["listen"]
        assert len(kept["toxics"]) == 1  # untouched: toxics survive
        changed = {**same, "upstream": "127.0.0.1:6380"}
        replaced = raw_api("POST", "/populate", [changed]).json()["proxies"][0]
        assert replaced["upstream"] == "127.0.0.1:6380"
        assert replaced["toxics"] == []

    def test_populate_validates_everything_first(self, raw_api: RawApi) -> None:
        response = raw_api("POST", "/populate", [PROXY, {"name": "broken"}])
        body = assert_error(
            response, 400, "missing required field: upstream at proxy 2", populate=True
        )
        assert body["proxies"] is None
        assert raw_api("GET", "/proxies").json() == {}

    @pytest.mark.parametrize("body", [{"proxies": []}, b"[", b"", [PROXY, PROXY]])
    def test_populate_bad_body_is_400(self, raw_api: RawApi, body: object) -> None:
        assert raw_api("POST", "/populate", body).status == 400

    def test_reset_enables_and_clears_toxics(self, raw_api: RawApi) -> None:
        create(raw_api)
        raw_api("POST", "/proxies/redis/toxics", {"type": "latency"})
        raw_api("PATCH", "/proxies/redis", {"enabled": False})
        response = raw_api("POST", "/reset")
        assert response.status == 204
        proxy = raw_api("GET", "/proxies/redis").json()
        assert proxy["enabled"] is True
        assert proxy["toxics"] == []

    def test_version(self, raw_api: RawApi) -> None:
        response = raw_api("GET", "/version")
        assert response.status == 200
        version = response.json()["version"]
        assert tuple(int(x) for x in version.split(".")) >= (2, 7, 0)


class TestProtocolErrors:
    def test_wrong_method_is_405_with_an_empty_body(self, raw_api: RawApi) -> None:
        for method, path in (("DELETE", "/proxies"), ("GET", "/reset"), ("HEAD", "/version")):
            response = raw_api(method, path)
            assert (response.status, response.body) == (405, b""), response
            assert "x-toxiproxy-request-id" not in response.headers  # as Toxiproxy's router

    def test_unknown_path_is_404_page_not_found(self, raw_api: RawApi) -> None:
        for path in ("/nothing/here", "/proxies/", "/"):
            response = raw_api("GET", path)
            assert (response.status, response.body) == (404, b"404 page not found\n")
            assert response.headers["content-type"] == "text/plain; charset=utf-8"

    def test_every_endpoint_answer_has_a_request_id(self, raw_api: RawApi) -> None:
        ids = {
            raw_api(method, path, body).headers["x-toxiproxy-request-id"]
            for method, path, body in (
                ("GET", "/version", None),
                ("GET", "/proxies", None),
                ("POST", "/proxies", PROXY),
                ("POST", "/proxies", PROXY),  # 409
                ("GET", "/proxies/nope", None),  # 404 of an endpoint
                ("POST", "/reset", None),  # 204
            )
        }
        assert len(ids) == 6
        assert all(len(i) == 20 and set(i) <= set("0123456789abcdefghijklmnopqrstuv") for i in ids)

    @pytest.mark.parametrize(
        "agent",
        [
            "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0",
            "Mozilla/5.0 (Macintosh) AppleWebKit/605.1.15 Safari/605.1.15",
        ],
    )
    def test_browser_user_agent_is_403(self, raw_api: RawApi, agent: str) -> None:
        response = raw_api("POST", "/proxies", PROXY, headers={"User-Agent": agent})
        assert (response.status, response.body) == (403, b"User agent not allowed\n")
        assert response.headers["content-type"] == "text/plain; charset=utf-8"
        assert raw_api("GET", "/proxies").json() == {}

    def test_metrics_exposition(self, raw_api: RawApi, echo_server: EchoServer) -> None:
        created = create(raw_api, upstream=echo_server.address)
        host, port = str(created["listen"]).rsplit(":", 1)
        with connect((host, int(port))) as sock:
            sock.sendall(b"x" * 1000)
            recv_exactly(sock, 1000)
        response = raw_api("GET", "/metrics")
        assert response.status == 200
        assert response.headers["content-type"].startswith("text/plain")
        text = response.body.decode()
        labels = (
            f'direction="upstream",listener="{created["listen"]}",proxy="redis",'
            f'upstream="{echo_server.address}"'
        )
        assert f"toxiproxy_proxy_received_bytes_total{{{labels}}} 1000.0" in text
        assert f"toxiproxy_proxy_sent_bytes_total{{{labels}}} 1000.0" in text


class TestNames:
    """Whatever can be created can be shown, scraped and deleted."""

    def test_a_lone_surrogate_becomes_the_replacement_character_as_in_toxiproxy(
        self, raw_api: RawApi
    ) -> None:
        """A name (or upstream) holding a lone surrogate (``"\\ud800"`` in the JSON) made
        ``/metrics`` answer 500 until restart, and the proxy could not be deleted: no URL
        reaches a name that cannot be encoded. Toxiproxy's JSON decoder turns it into U+FFFD;
        so does ours, in every string of a body."""
        body = b'{"name": "a\\ud800", "listen": "127.0.0.1:0", "upstream": "h\\udfff:6379"}'
        created = raw_api("POST", "/proxies", body)
        assert created.status == 201, created
        assert created.json()["name"] == "a\ufffd"
        assert created.json()["upstream"] == "h\ufffd:6379"
        toxic = raw_api(
            "POST", "/proxies/a%EF%BF%BD/toxics", b'{"type": "noop", "name": "\\udc00"}'
        )
        assert toxic.status == 200, toxic
        assert toxic.json()["name"] == "\ufffd"
        metrics = raw_api("GET", "/metrics")
        assert metrics.status == 200, metrics
        assert 'proxy="a\ufffd"' in metrics.body.decode()
        assert raw_api("DELETE", "/proxies/a%EF%BF%BD/toxics/%EF%BF%BD").status == 204
        assert raw_api("DELETE", "/proxies/a%EF%BF%BD").status == 204
        assert raw_api("GET", "/proxies").json() == {}

    def test_invalid_utf8_becomes_the_replacement_character_as_in_toxiproxy(
        self, raw_api: RawApi
    ) -> None:
        created = raw_api("POST", "/proxies", b'{"name": "b\xff", "upstream": "127.0.0.1:1"}')
        assert created.status == 201, created
        assert created.json()["name"] == "b\ufffd"

    @pytest.mark.parametrize("where", ["proxy", "toxic", "populate"])
    def test_a_name_over_the_cap_is_400(self, raw_api: RawApi, where: str) -> None:
        """Names of about 8 KB could be created but never fetched or deleted again (the request
        line is too long for the server: 400). Names are capped where they enter."""
        long = "x" * 257
        if where == "proxy":
            response = raw_api("POST", "/proxies", {**PROXY, "name": long})
        elif where == "populate":
            response = raw_api("POST", "/populate", [{**PROXY, "name": long}])
        else:
            create(raw_api)
            response = raw_api("POST", "/proxies/redis/toxics", {"type": "noop", "name": long})
        body = assert_error(
            response, 400, "bad request body: name", prefix=True, populate=where == "populate"
        )
        assert "over 256" in body["error"]
        assert "256 characters" in body["hint"]
        if where == "toxic":
            assert raw_api("GET", "/proxies/redis/toxics").json() == []
        else:
            assert raw_api("GET", "/proxies").json() == {}

    def test_the_longest_names_work_everywhere(self, raw_api: RawApi) -> None:
        """256 characters of 4 bytes each, percent-encoded twice in a toxic's URL, still fit."""
        from urllib.parse import quote

        proxy, toxic = "\U0001f600" * 256, "\U0001f601" * 256
        assert raw_api("POST", "/proxies", {**PROXY, "name": proxy}).status == 201
        path = f"/proxies/{quote(proxy, safe='')}"
        created = raw_api("POST", f"{path}/toxics", {"type": "noop", "name": toxic})
        assert created.status == 200, created
        toxic_path = f"{path}/toxics/{quote(toxic, safe='')}"
        assert raw_api("GET", toxic_path).json()["name"] == toxic
        assert raw_api("PATCH", toxic_path, {"toxicity": 0.5}).status == 200
        assert raw_api("DELETE", toxic_path).status == 204
        assert raw_api("GET", path).json()["name"] == proxy
        assert raw_api("DELETE", path).status == 204


class TestLoops:
    """A proxy whose upstream leads back to its own listener would connect to itself until the
    server runs out of descriptors (the API then never answered again): refused up front."""

    def test_upstream_equal_to_listen_is_400(self, raw_api: RawApi) -> None:
        spare = socket.socket()
        spare.bind(("127.0.0.1", 0))
        port = spare.getsockname()[1]
        spare.close()
        for upstream in (f"127.0.0.1:{port}", f"localhost:{port}"):
            response = raw_api(
                "POST",
                "/proxies",
                {"name": "loop", "listen": f"127.0.0.1:{port}", "upstream": upstream},
            )
            body = assert_error(response, 400, "bad request body: upstream", prefix=True)
            assert "own listen address" in body["error"]
        assert raw_api("GET", "/proxies").json() == {}
        response = raw_api(
            "POST",
            "/populate",
            [{"name": "loop", "listen": f"127.0.0.1:{port}", "upstream": f"127.0.0.1:{port}"}],
        )
        assert_error(response, 400, "bad request body: upstream", prefix=True, populate=True)
        # the port is free again: nothing was left bound
        with socket.socket() as again:
            again.bind(("127.0.0.1", port))

    def test_an_update_that_would_loop_is_400_and_changes_nothing(self, raw_api: RawApi) -> None:
        created = create(raw_api)
        response = raw_api("PATCH", "/proxies/redis", {"upstream": created["listen"]})
        assert_error(response, 400, "bad request body: upstream", prefix=True)
        assert raw_api("GET", "/proxies/redis").json() == created

    def test_a_wildcard_listener_loops_through_loopback_too(self, raw_api: RawApi) -> None:
        created = create(raw_api, listen="0.0.0.0:0")
        port = str(created["listen"]).rsplit(":", 1)[1]
        response = raw_api("PATCH", "/proxies/redis", {"upstream": f"127.0.0.1:{port}"})
        assert_error(response, 400, "bad request body: upstream", prefix=True)

    def test_two_proxies_pointing_at_each_other_are_400(self, raw_api: RawApi) -> None:
        first = create(raw_api, name="a")
        second = create(raw_api, name="b", upstream=first["listen"])
        response = raw_api("PATCH", "/proxies/a", {"upstream": second["listen"]})
        body = assert_error(response, 400, "bad request body: upstream", prefix=True)
        assert "'a' -> 'b' -> 'a'" in body["error"]

    def test_a_chain_without_a_cycle_is_fine(self, raw_api: RawApi) -> None:
        first = create(raw_api, name="a")
        assert (
            raw_api("POST", "/proxies", {**PROXY, "name": "b", "upstream": first["listen"]}).status
            == 201
        )
