"""Follow-ups of the chaos harness: per-proxy enable/disable ordering (a hung server blocks no
other), one registry key per server however its URL is spelt, real ports for proxies created
disabled, a second Ctrl-C abandoning a hung cleanup, and line numbers in JSON scenario errors."""

from __future__ import annotations

import functools
import http.client
import http.server
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from chaos_helpers import EchoServer, connect_state, echoes

from chaos import (
    ChaosError,
    EmbeddedToxiproxy,
    Proxy,
    ProxyInfo,
    ScenarioError,
    ToxiproxyClient,
    ToxiproxyError,
    load_scenario,
)
from chaos.livefaults import server_key

# -- a scripted loopback HTTP server --------------------------------------------------------------

Answer = tuple[int, Any]


class FakeApi:
    """A loopback HTTP server answering each request with ``answer(method, path)``.

    With ``hold=True`` every request waits (at most ``max_hold`` seconds) until
    :meth:`release`: a server that stopped answering. ``requests`` records ``(method, path)``.
    """

    def __init__(
        self,
        answer: Callable[[str, str, bytes], Answer],
        *,
        hold: bool = False,
        max_hold: float = 20.0,
    ) -> None:
        self.requests: list[tuple[str, str]] = []
        self.requested = threading.Event()
        self._released = threading.Event()
        if not hold:
            self._released.set()
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                received = self.rfile.read(length) if length else b""
                api.requests.append((self.command, self.path))
                api.requested.set()
                api._released.wait(max_hold)
                status, body = answer(self.command, self.path, received)
                payload = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PATCH = do_DELETE = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def release(self) -> None:
        self._released.set()

    def close(self) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)


@pytest.fixture
def fake_api() -> Iterator[Callable[..., FakeApi]]:
    started: list[FakeApi] = []

    def start(answer: Callable[[str, str, bytes], Answer], *, hold: bool = False) -> FakeApi:
        started.append(FakeApi(answer, hold=hold))
        return started[-1]

    yield start
    for api in started:
        api.close()


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


# -- 1. a hung server holds up no fault on another server -----------------------------------------


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


# -- 2. one registry key per server ---------------------------------------------------------------


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


# -- 3. a proxy created disabled gets a real port -------------------------------------------------


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


# -- 4. a second Ctrl-C abandons a hung cleanup ---------------------------------------------------

LONG = """name: long
proxies: [svc]
duration: 60
steps:
  - {at: 0, fault: latency, ms: 20}
  - {at: 0, fault: down}
"""


class Child:
    """A ``python -m chaos`` process whose stdout lines arrive on a queue."""

    def __init__(self, *args: str) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.pop("SYNAPSE_TOXIPROXY", None)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "chaos", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)

    def wait_for(self, text: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                if self.process.poll() is not None:
                    break
                continue
            self.seen.append(line)
            if text in line:
                return line
        raise AssertionError(f"{text!r} not seen within {timeout} s; output: {self.seen}")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)  # harmless unless it was stopped
            self.process.kill()
        self.process.wait(10)
        self._reader.join(10)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def child() -> Iterator[Callable[..., Child]]:
    started: list[Child] = []

    def start(*args: str) -> Child:
        started.append(Child(*args))
        return started[-1]

    yield start
    for item in reversed(started):
        item.stop()


@pytest.mark.slow
def test_a_second_interrupt_abandons_a_hung_cleanup(
    child: Callable[..., Child], echo_server: EchoServer, tmp_path: Path
) -> None:
    server = child("serve", "--port", "0")
    ready = server.wait_for("listening on http://")
    url = ready.split(" on ", 1)[1].split()[0]
    scenario = tmp_path / "long.yaml"
    scenario.write_text(LONG)
    run = child(
        "run",
        str(scenario),
        "--proxy",
        f"redis={echo_server.address}",
        "--toxiproxy",
        url,
        "--timeout",
        "60",
        "--no-progress",
    )
    run.wait_for("apply    down()")
    os.kill(server.process.pid, signal.SIGSTOP)  # the server stops answering mid-run
    try:
        run.process.send_signal(signal.SIGINT)  # cleanup starts and hangs on the server
        time.sleep(1.0)
        assert run.process.poll() is None, "the first interrupt should wait for the cleanup"
        run.process.send_signal(signal.SIGINT)
        started = time.monotonic()
        code = run.process.wait(10)
        assert time.monotonic() - started < 5
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
    assert run.process.stderr is not None
    err = run.process.stderr.read()
    assert code == 130
    assert "Traceback" not in err
    (line,) = [line for line in err.splitlines() if "abandoned" in line]
    assert f"may remain on {url}: latency, down on proxy redis" in line
    assert f"POST {url}/reset" in line
    assert "--owner default" in line
    assert f"DELETE {url}/proxies/redis" in line
    # What it said may remain did (the latency toxics at least), and its remedy removes it.
    client = ToxiproxyClient(url, timeout=10)
    assert any(t.name.startswith("synapse:default:latency:") for t in client.toxics("redis"))
    client.reset()
    assert client.toxics("redis") == []
    assert client.proxy_info("redis").enabled


# -- 5. JSON scenario errors name the line -------------------------------------------------------

JSON_BAD_STEP = """{
  "name": "bad",
  "proxies": ["svc"],
  "steps": [
    {"at": 0, "fault": "latency", "ms": 10, "duration": 5},

    {
      "at": 1,
      "fault": "latency", "colour": "red"
    }
  ]
}
"""

JSON_OVERLAP = """{"name": "overlap", "proxies": ["svc"], "steps": [
  {"at": 0, "fault": "down", "duration": 5},
  {"at": 2, "fault": "partition", "mode": "reject"}
]}
"""


@pytest.mark.parametrize(
    ("text", "where", "words"),
    [
        (JSON_BAD_STEP, ":7, step 2: ", "latency has no parameter 'colour'"),
        (JSON_OVERLAP, ":3, step 2: ", "overlaps step 1"),
        (
            '{"proxies": ["a"], "steps": [{"at": 0, "fault": "down"},\n\n'
            ' {"at": -1, "fault": "down"}]}',
            ":3, step 2: ",
            "at must be a finite number of seconds >= 0",
        ),
    ],
)
def test_json_scenario_errors_name_the_line_of_the_step(
    tmp_path: Path, text: str, where: str, words: str
) -> None:
    path = tmp_path / "scenario.json"
    path.write_text(text)
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    assert str(caught.value).startswith(f"{path}{where}")
    assert words in str(caught.value)
    assert caught.value.line == int(where.split(",")[0][1:])


def test_json_and_yaml_errors_have_one_format(tmp_path: Path) -> None:
    yaml_path = tmp_path / "scenario.yaml"
    yaml_path.write_text(
        "name: bad\nproxies: [svc]\nsteps:\n  - {at: 0, fault: latency, ms: 10, duration: 5}\n"
        "\n  - {at: 1,\n     fault: latency, colour: red}\n"
    )
    json_path = tmp_path / "scenario.json"
    json_path.write_text(JSON_BAD_STEP)
    messages = []
    for path in (yaml_path, json_path):
        with pytest.raises(ChaosError) as caught:
            load_scenario(path)
        messages.append(str(caught.value).replace(str(path), "FILE"))
    assert messages[0] == messages[1].replace("FILE:7", "FILE:6")


def test_json_syntax_errors_name_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"name": "x",\n "steps": [\n  {"at": 0, "fault": "down" "duration": 1}]}\n')
    with pytest.raises(ChaosError) as caught:
        load_scenario(path)
    assert str(caught.value) == f"{path}:3: invalid JSON: Expecting ',' delimiter (column 29)"


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_numbers_too_long_to_read_are_a_file_error(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"huge{suffix}"
    digits = "9" * 5000
    if suffix == ".json":
        path.write_text(f'{{"steps": [{{"at": {digits}, "fault": "down"}}]}}')
    else:
        path.write_text(f"steps:\n  - {{at: {digits}, fault: down}}\n")
    with pytest.raises(ChaosError, match="no scenario value needs a number that long"):
        load_scenario(path)
