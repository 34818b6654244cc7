"""Hypothesis: malformed API bodies always get a 4xx JSON error and the server keeps serving."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chaos import EmbeddedToxiproxy
from chaos.server import TOXIC_ATTRIBUTES


@pytest.fixture(scope="module")
def server() -> Iterator[EmbeddedToxiproxy]:
    with EmbeddedToxiproxy() as embedded:
        client = embedded.client()
        client.create_proxy("target", upstream="127.0.0.1:1")
        client.add_toxic("target", "latency", name="lat")
        yield embedded


def send(server: EmbeddedToxiproxy, method: str, path: str, body: bytes) -> tuple[int, Any]:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers={"User-Agent": "fuzz"})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


def not_json(raw: bytes) -> bool:
    """True if *raw* does not even start with a JSON value (Toxiproxy, as Go's decoder, reads
    the first value and ignores what follows it: ``{}x`` is an empty object)."""
    try:
        json.JSONDecoder().raw_decode(raw.decode().lstrip(" \t\r\n"))
    except ValueError:
        return True
    return False


garbage = st.binary(max_size=200).filter(not_json)
not_a_string = st.booleans() | st.integers() | st.lists(st.integers(), max_size=2)
truthy_not_a_string = (
    st.just(True) | st.integers(min_value=1) | st.lists(st.integers(), min_size=1, max_size=2)
)
not_a_bool = st.integers() | st.text() | st.lists(st.booleans(), max_size=2)

# A proxy body with one field of the wrong type (the rest valid): always a 400.
bad_proxy = st.one_of(
    st.fixed_dictionaries({"name": truthy_not_a_string, "upstream": st.just("127.0.0.1:1")}),
    st.fixed_dictionaries({"name": st.just("n"), "upstream": truthy_not_a_string}),
    st.fixed_dictionaries(
        {"name": st.just("n"), "upstream": st.just("127.0.0.1:1"), "enabled": not_a_bool}
    ),
    st.fixed_dictionaries(
        {"name": st.just("n"), "upstream": st.text(min_size=1).filter(lambda s: ":" not in s)}
    ),
    st.fixed_dictionaries(
        {"name": st.just("n"), "upstream": st.just("127.0.0.1:1"), "listen": not_a_string}
    ),
)
# A toxic body that can never be valid: unknown type, or bad attributes of a known type.
bad_toxic = st.one_of(
    st.fixed_dictionaries(
        {"type": st.text().filter(lambda t: t.lower() not in TOXIC_ATTRIBUTES)},
        optional={"attributes": json_values, "stream": json_values},
    ),
    st.fixed_dictionaries(
        {
            "type": st.just("latency"),
            "attributes": st.dictionaries(
                st.sampled_from(["latency", "jitter"]),
                st.integers(max_value=-1)
                | st.text()
                | st.floats(allow_nan=False).filter(lambda f: not f.is_integer()),
                min_size=1,
            ),
        }
    ),
)
non_object = json_values.filter(lambda v: not isinstance(v, dict))
# null is an empty list to Toxiproxy (201, {"proxies":null}), not an error.
non_array = json_values.filter(lambda v: not isinstance(v, list) and v is not None)

FUZZ = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def assert_client_error(server: EmbeddedToxiproxy, status: int, body: Any) -> None:
    assert 400 <= status < 500, (status, body)
    assert body["status"] == status
    assert isinstance(body["error"], str)
    assert body["error"]
    assert send(server, "GET", "/version", b"")[0] == 200


@FUZZ
@given(raw=garbage)
def test_garbage_everywhere(server: EmbeddedToxiproxy, raw: bytes) -> None:
    for method, path in [
        ("POST", "/proxies"),
        ("POST", "/populate"),
        ("PATCH", "/proxies/target"),
        ("POST", "/proxies/target/toxics"),
        ("PATCH", "/proxies/target/toxics/lat"),
    ]:
        status, body = send(server, method, path, raw)
        assert_client_error(server, status, body)


@FUZZ
@given(body=st.one_of(bad_proxy, non_object))
def test_bad_proxy_bodies(server: EmbeddedToxiproxy, body: Any) -> None:
    status, answer = send(server, "POST", "/proxies", json.dumps(body).encode())
    assert_client_error(server, status, answer)


@FUZZ
@given(body=st.one_of(st.lists(bad_proxy, min_size=1, max_size=3), non_array))
def test_bad_populate_bodies(server: EmbeddedToxiproxy, body: Any) -> None:
    status, answer = send(server, "POST", "/populate", json.dumps(body).encode())
    assert_client_error(server, status, answer)
    assert set(send(server, "GET", "/proxies", b"")[1]) == {"target"}


@FUZZ
@given(body=st.one_of(bad_toxic, non_object))
def test_bad_toxic_bodies(server: EmbeddedToxiproxy, body: Any) -> None:
    status, answer = send(server, "POST", "/proxies/target/toxics", json.dumps(body).encode())
    assert_client_error(server, status, answer)


@FUZZ
@given(
    attributes=st.dictionaries(st.text(), json_values, min_size=1).filter(
        lambda d: not set(d) <= {"latency", "jitter"}
    )
)
def test_bad_toxic_updates(server: EmbeddedToxiproxy, attributes: dict[str, Any]) -> None:
    payload = json.dumps({"attributes": attributes}).encode()
    status, answer = send(server, "PATCH", "/proxies/target/toxics/lat", payload)
    assert_client_error(server, status, answer)
