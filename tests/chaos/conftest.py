"""Fixtures for the chaos server tests: an embedded server, clients and loopback upstreams.

Every server, socket and thread started here is stopped by the fixture that started it, also
when the test fails.
"""

from __future__ import annotations

import contextlib
import http.client
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from chaos_helpers import (
    Answer,
    EchoServer,
    FakeApi,
    LoopThread,
    Plane,
    RawApi,
    RawResponse,
    running_plane,
)

from chaos import Backend, EmbeddedToxiproxy, Proxy, ToxiproxyClient, resolve_backend


@pytest.fixture
def loop_thread() -> Iterator[LoopThread]:
    with contextlib.closing(LoopThread()) as lt:
        yield lt


@pytest.fixture
def echo_server(loop_thread: LoopThread) -> Iterator[EchoServer]:
    with contextlib.closing(EchoServer(loop_thread)) as server:
        yield server


@pytest.fixture
def plane(loop_thread: LoopThread) -> Iterator[Plane]:
    """An in-process ChaosServer whose connections and loop errors the test can inspect."""
    with running_plane(loop_thread, seed=7) as plane:
        yield plane


@pytest.fixture
def toxiproxy() -> Iterator[EmbeddedToxiproxy]:
    with EmbeddedToxiproxy(seed=1234) as server:
        yield server


@pytest.fixture
def client(toxiproxy: EmbeddedToxiproxy) -> ToxiproxyClient:
    return toxiproxy.client(timeout=10.0)


@pytest.fixture
def echo_proxy(client: ToxiproxyClient, echo_server: EchoServer) -> tuple[str, int]:
    """A proxy named ``echo`` in front of the echo server; returns its (host, port)."""
    info = client.create_proxy("echo", upstream=echo_server.address)
    return info.listen_host, info.listen_port


@pytest.fixture
def raw_api(toxiproxy: EmbeddedToxiproxy) -> RawApi:
    """Send a raw HTTP request to the API: ``raw_api(method, path, body=None, headers=None)``."""

    def send(
        method: str,
        path: str,
        body: bytes | str | Any = None,
        headers: dict[str, str] | None = None,
    ) -> RawResponse:
        if body is not None and not isinstance(body, bytes | str):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        conn = http.client.HTTPConnection(toxiproxy.host, toxiproxy.port, timeout=10)
        try:
            conn.request(
                method, path, body=body, headers={"User-Agent": "tests", **(headers or {})}
            )
            response = conn.getresponse()
            return RawResponse(
                response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
            )
        finally:
            conn.close()

    return send


@pytest.fixture
def toxiproxy_python(toxiproxy: EmbeddedToxiproxy, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A ``toxiproxy.Toxiproxy`` (the toxiproxy-python package) aimed at the embedded server.

    toxiproxy-python keeps the server address in class attributes of ``APIConsumer`` (default
    127.0.0.1:8474); monkeypatch sets them to our ephemeral port and restores them afterwards.
    """
    from toxiproxy.api import APIConsumer
    from toxiproxy.server import Toxiproxy

    monkeypatch.setattr(APIConsumer, "host", toxiproxy.host)
    monkeypatch.setattr(APIConsumer, "port", toxiproxy.port)
    return Toxiproxy()


@pytest.fixture
def chaos_backend() -> Iterator[Backend]:
    """The backend ``SYNAPSE_TOXIPROXY`` names (embedded by default), owner ``tests``.

    Pointing ``SYNAPSE_TOXIPROXY`` at a real Toxiproxy runs the fault and scenario tests against
    it. Stopping the backend heals and deletes every proxy the test created.
    """
    with resolve_backend(None, owner="tests") as backend:
        yield backend


@pytest.fixture
def echo_handle(chaos_backend: Backend, echo_server: EchoServer) -> Proxy:
    """A :class:`chaos.Proxy` in front of the echo server, on :func:`chaos_backend`."""
    return chaos_backend.create_proxy(echo_server.address)


@pytest.fixture
def fake_api() -> Iterator[Callable[..., FakeApi]]:
    """``fake_api(answer, hold=False)``: a scripted loopback HTTP server, closed after the test."""
    started: list[FakeApi] = []

    def start(answer: Callable[[str, str, bytes], Answer], *, hold: bool = False) -> FakeApi:
        started.append(FakeApi(answer, hold=hold))
        return started[-1]

    yield start
    for api in started:
        api.close()


@pytest.fixture
def shared_proxy(client: ToxiproxyClient) -> str:
    """A proxy named ``shared`` that several owners disable (its upstream is never reached)."""
    client.create_proxy("shared", upstream="127.0.0.1:9")
    return "shared"
