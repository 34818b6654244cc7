"""chaos.ToxiproxyClient: typed results, PATCH updates, error mapping, timeouts, many servers."""

from __future__ import annotations

import gc
import http.client
import http.server
import math
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import ClassVar

import pytest
from chaos_helpers import (
    Answer,
    EchoServer,
    FakeApi,
    connect,
    connect_state,
    echoes,
    recv_exactly,
    round_trip,
)
from threaded_servers import serving

from chaos import (
    EmbeddedToxiproxy,
    InvalidToxic,
    NotFound,
    Proxy,
    ProxyExists,
    ProxyInfo,
    ToxicInfo,
    ToxiproxyClient,
    ToxiproxyError,
    ToxiproxyUnavailable,
)


def test_proxy_lifecycle(client: ToxiproxyClient, echo_server: EchoServer) -> None:
    assert client.version() == "2.12.0"
    assert client.is_running()
    handle = client.create_proxy("echo", upstream=echo_server.address)
    assert isinstance(handle, Proxy)
    created = handle.info
    assert isinstance(created, ProxyInfo)
    assert created.enabled
    assert created.listen_host == "127.0.0.1"
    assert created.listen_port > 0
    assert (handle.host, handle.port, handle.listen) == (
        created.listen_host,
        created.listen_port,
        created.listen,
    )
    assert client.proxies() == {"echo": created}
    assert client.proxy_info("echo") == created
    assert client.get_proxy("echo").info == created
    disabled = client.disable("echo")
    assert not disabled.enabled
    enabled = client.enable("echo")
    assert enabled.enabled
    assert enabled.listen == created.listen
    moved = client.update_proxy("echo", upstream="127.0.0.1:9")
    assert moved.upstream == "127.0.0.1:9"
    client.delete_proxy("echo")
    assert client.proxies() == {}


def test_toxic_lifecycle(client: ToxiproxyClient, echo_server: EchoServer) -> None:
    proxy = client.create_proxy("echo", upstream=echo_server.address)
    toxic = client.add_toxic("echo", "latency", attributes={"latency": 120})
    assert toxic == ToxicInfo(
        "latency_downstream", "latency", "downstream", 1.0, {"latency": 120, "jitter": 0}
    )
    with connect((proxy.listen_host, proxy.listen_port)) as sock:
        assert round_trip(sock) >= 0.115
        updated = client.update_toxic("echo", toxic.name, attributes={"latency": 0}, toxicity=0.5)
        assert updated.attributes == {"latency": 0, "jitter": 0}
        assert updated.toxicity == 0.5
        assert client.get_toxic("echo", toxic.name) == updated
        assert client.toxics("echo") == [updated]
        client.remove_toxic("echo", toxic.name)
        sock.sendall(b"ok")
        assert recv_exactly(sock, 2) == b"ok"
    assert client.proxy_info("echo").toxics == ()
    client.add_toxic("echo", "timeout", name="t", stream="upstream")
    client.reset()
    assert client.toxics("echo") == []


def test_populate_and_metrics(client: ToxiproxyClient, echo_server: EchoServer) -> None:
    proxies = client.populate(
        [
            {"name": "a", "listen": "127.0.0.1:0", "upstream": echo_server.address},
            {"name": "b", "listen": "127.0.0.1:0", "upstream": echo_server.address},
        ]
    )
    assert [p.name for p in proxies] == ["a", "b"]
    assert "toxiproxy_proxy_received_bytes_total" in client.metrics()


def test_errors_carry_status_and_message(client: ToxiproxyClient) -> None:
    client.create_proxy("p", upstream="127.0.0.1:1")
    with pytest.raises(ProxyExists) as exists:
        client.create_proxy("p", upstream="127.0.0.1:1")
    assert exists.value.status == 409
    assert exists.value.message == "proxy already exists"  # Toxiproxy's words, exactly
    assert "POST" in str(exists.value)
    with pytest.raises(NotFound) as missing:
        client.get_proxy("nope")
    assert missing.value.status == 404
    assert missing.value.message == "proxy not found"
    # the server's hint beside it names the proxy, and shows in the exception's text
    assert "'nope'" in missing.value.hint
    assert missing.value.hint in str(missing.value)
    with pytest.raises(InvalidToxic) as invalid:
        client.add_toxic("p", "lag")
    assert invalid.value.status == 400
    assert invalid.value.message == "invalid toxic type"
    assert "'lag'" in invalid.value.hint
    taken = client.get_proxy("p").listen
    with pytest.raises(ToxiproxyError) as unbindable:
        client.create_proxy("q", upstream="127.0.0.1:1", listen=taken)
    assert type(unbindable.value) is ToxiproxyError
    assert unbindable.value.status == 500


def test_discard_toxic_removes_it_and_ignores_only_a_missing_one(
    client: ToxiproxyClient, echo_server: EchoServer
) -> None:
    """The faults' cleanup used a private helper of chaos.faults; it is the client's now."""
    client.create_proxy("echo", upstream=echo_server.address)
    client.add_toxic("echo", "latency", name="slow", attributes={"latency": 10})
    client.discard_toxic("echo", "slow")
    assert client.toxics("echo") == []
    client.discard_toxic("echo", "slow")  # gone already: not an error
    client.discard_toxic("no-such-proxy", "slow")
    gone = ToxiproxyClient(client.url.replace(str(client.url.rpartition(":")[2]), "1"), timeout=2)
    with pytest.raises(ToxiproxyUnavailable):
        gone.discard_toxic("echo", "slow")  # anything but "not found" is still raised


def test_unreachable_server_raises_unavailable() -> None:
    spare = socket.socket()
    spare.bind(("127.0.0.1", 0))
    port = spare.getsockname()[1]
    spare.close()
    client = ToxiproxyClient(f"http://127.0.0.1:{port}", timeout=2)
    with pytest.raises(ToxiproxyUnavailable) as refused:
        client.proxies()
    assert refused.value.status is None
    assert "is the server running" in refused.value.message
    assert not client.is_running()


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A listener that accepts and never answers (bounded: closes after the test)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        listener.close()
        for sock in accepted:
            sock.close()


def test_timeout_is_enforced(silent_server: int) -> None:
    client = ToxiproxyClient(f"http://127.0.0.1:{silent_server}", timeout=0.3)
    start = time.perf_counter()
    with pytest.raises(ToxiproxyUnavailable) as slow:
        client.version()
    assert time.perf_counter() - start < 3.0
    assert "0.3 s" in slow.value.message


def test_several_servers_in_one_process() -> None:
    with EmbeddedToxiproxy() as one, EmbeddedToxiproxy() as two:
        a, b = one.client(), two.client()
        a.create_proxy("only-on-one", upstream="127.0.0.1:1")
        b.create_proxy("only-on-two", upstream="127.0.0.1:1")
        assert set(a.proxies()) == {"only-on-one"}
        assert set(b.proxies()) == {"only-on-two"}


@pytest.mark.parametrize("url", ["127.0.0.1:8474", "https://127.0.0.1:8474", "http://"])
def test_bad_url_is_rejected(url: str) -> None:
    with pytest.raises(ValueError, match="http://host:port"):
        ToxiproxyClient(url)


def test_bad_timeout_is_rejected() -> None:
    with pytest.raises(ValueError, match="timeout"):
        ToxiproxyClient(timeout=0)


class _KeepAliveApi(http.server.BaseHTTPRequestHandler):
    """An HTTP/1.1 API that counts connections and can drop one after answering."""

    protocol_version = "HTTP/1.1"
    connections: ClassVar[list[int]] = []
    drop_after_next: ClassVar[threading.Event] = threading.Event()

    def setup(self) -> None:
        super().setup()
        self.connections.append(1)

    def do_GET(self) -> None:
        body = b'{"version": "2.12.0"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        if self.drop_after_next.is_set():  # as a server ending an idle connection does
            self.drop_after_next.clear()
            self.close_connection = True

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def keepalive_api() -> Iterator[str]:
    _KeepAliveApi.connections = []
    with serving(http.server.ThreadingHTTPServer(("127.0.0.1", 0), _KeepAliveApi)) as address:
        yield f"http://{address}"


def test_requests_reuse_one_connection_and_survive_the_server_closing_it(
    keepalive_api: str,
) -> None:
    """A connection per request cost a connect and an accept each time (half of every request
    on the embedded server); a connection the server closed while idle is replaced silently."""
    with ToxiproxyClient(keepalive_api) as client:
        for _ in range(5):
            assert client.version() == "2.12.0"
        assert len(_KeepAliveApi.connections) == 1
        _KeepAliveApi.drop_after_next.set()
        assert client.version() == "2.12.0"  # answered, then the server closes the connection
        time.sleep(0.05)
        assert client.version() == "2.12.0"  # sent again on a new connection
        assert len(_KeepAliveApi.connections) == 2


def test_a_client_dropped_with_idle_connections_leaves_no_socket_to_the_collector(
    toxiproxy: EmbeddedToxiproxy,
) -> None:
    """Under filterwarnings=error a socket left for the garbage collector fails a later test."""
    client = toxiproxy.client()
    client.version()
    del client
    gc.collect()  # the finalizer closed the kept-alive socket: no ResourceWarning


def test_deleting_a_proxy_twice_sends_one_request(
    client: ToxiproxyClient, echo_server: EchoServer
) -> None:
    """chaos_proxy deletes its proxies at teardown and the backend again at session end: that
    second DELETE was one wasted request per chaos test."""
    proxy = client.create_proxy("once", upstream=echo_server.address)
    sent: list[str] = []
    original = client.request

    def counting(method: str, path: str, body: object = None) -> object:
        sent.append(f"{method} {path}")
        return original(method, path, body)

    client.request = counting  # type: ignore[method-assign]
    proxy.delete()
    proxy.delete()
    assert sent == ["DELETE /proxies/once"]


def test_client_rejects_bad_url_and_timeout_with_value_error() -> None:
    with pytest.raises(ValueError, match="http://host:port"):
        ToxiproxyClient("http://[::1")
    with pytest.raises(ValueError, match="http://host:port"):
        ToxiproxyClient("http://127.0.0.1:70000")
    for timeout in (math.nan, math.inf, 0):
        with pytest.raises(ValueError, match="timeout"):
            ToxiproxyClient("http://127.0.0.1:1", timeout=timeout)


def test_a_proxy_created_disabled_on_port_0_has_its_real_port(
    client: ToxiproxyClient, echo_server: EchoServer
) -> None:
    proxy = client.create_proxy("off", upstream=echo_server.address, enabled=False)
    assert proxy.port != 0
    assert proxy.host == "127.0.0.1"
    assert not proxy.info.enabled
    assert client.proxy_info("off").listen == proxy.listen
    assert connect_state(proxy.address) == "refused"
    client.enable("off")
    assert client.proxy_info("off").listen == proxy.listen
    assert echoes(proxy.address)
    with proxy.down():
        assert connect_state(proxy.address) == "refused"
    assert echoes(proxy.address)  # same port again after every re-enable


def test_a_proxy_created_disabled_on_a_fixed_port_is_created_disabled_directly(
    fake_api: Callable[..., FakeApi],
) -> None:
    def answer(method: str, path: str, body: bytes) -> Answer:
        return 201, {"name": "p", "listen": "127.0.0.1:1234", "upstream": "u:1", "enabled": False}

    api = fake_api(answer)
    proxy = ToxiproxyClient(api.url).create_proxy(
        "p", "u:1", listen="127.0.0.1:1234", enabled=False
    )
    assert proxy.port == 1234
    assert api.requests == [("POST", "/proxies")]  # no enable/disable dance needed


def test_a_failed_disable_after_creating_deletes_the_proxy_again(
    fake_api: Callable[..., FakeApi],
) -> None:
    def answer(method: str, path: str, body: bytes) -> Answer:
        if method == "POST":
            return 201, {
                "name": "p",
                "listen": "127.0.0.1:4321",
                "upstream": "u:1",
                "enabled": True,
            }
        if method == "PATCH":
            return 500, {"error": "cannot disable", "status": 500}
        return 204, None

    api = fake_api(answer)
    with pytest.raises(ToxiproxyError, match="cannot disable"):
        ToxiproxyClient(api.url).create_proxy("p", "u:1", enabled=False)
    assert api.requests == [("POST", "/proxies"), ("PATCH", "/proxies/p"), ("DELETE", "/proxies/p")]
