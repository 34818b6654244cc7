"""``synapse-chaos serve``: serves on loopback, loads --config, exits 0 on SIGINT/SIGTERM."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from chaos_helpers import EchoServer, connect, recv_exactly

from chaos import ToxiproxyClient
from chaos.cli import build_parser, main

SCRIPT = Path(sys.executable).with_name("synapse-chaos")


def read_line(process: subprocess.Popen[str], timeout: float = 15.0) -> str:
    result: list[str] = []
    reader = threading.Thread(target=lambda: result.append(process.stdout.readline()))  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout)
    assert result, "the server printed nothing within the timeout"
    return result[0]


@pytest.fixture
def serve() -> Iterator[object]:
    """Start ``synapse-chaos serve`` with extra args; every process is killed at teardown."""
    started: list[subprocess.Popen[str]] = []

    def start(*args: str) -> subprocess.Popen[str]:
        command = [str(SCRIPT), "serve", "--port", "0", *args]
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=10)


def url_of(line: str) -> str:
    match = re.search(r"http://\S+", line)
    assert match, line
    return match.group(0)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_serve_until_signal_exits_zero(serve: object, sig: signal.Signals) -> None:
    assert SCRIPT.exists(), "the console script is installed by `pip install -e .`"
    process = serve()  # type: ignore[operator]
    url = url_of(read_line(process))
    assert url.startswith("http://127.0.0.1:")
    client = ToxiproxyClient(url, timeout=5)
    assert client.version() == "2.12.0"
    proxy = client.create_proxy("p", upstream="127.0.0.1:1")
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=15)
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert not client.is_running()
    with pytest.raises(ConnectionRefusedError):
        connect((proxy.listen_host, proxy.listen_port)).__enter__()


@pytest.mark.slow
def test_serve_with_config(serve: object, tmp_path: Path, echo_server: EchoServer) -> None:
    config = tmp_path / "proxies.json"
    config.write_text(
        json.dumps([{"name": "echo", "listen": "127.0.0.1:0", "upstream": echo_server.address}])
    )
    process = serve("--config", str(config), "--seed", "3")  # type: ignore[operator]
    first = read_line(process)
    assert "proxy echo: 127.0.0.1:" in first
    url = url_of(read_line(process))
    info = ToxiproxyClient(url, timeout=5).get_proxy("echo")
    with connect((info.listen_host, info.listen_port)) as sock:
        sock.sendall(b"cfg")
        assert recv_exactly(sock, 3) == b"cfg"
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=15)
    assert process.returncode == 0


def test_parser_has_serve_defaults() -> None:
    args = build_parser().parse_args(["serve"])
    assert (args.host, args.port, args.config, args.seed) == ("127.0.0.1", 8474, None, None)


def test_python_dash_m_chaos_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "chaos", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0
    assert "--config" in result.stdout


def test_serve_in_process_puts_back_the_signal_handlers_it_found(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """main(["serve", ...]) run in a caller's process leaves SIGINT and SIGTERM as it found
    them. Before, asyncio's remove_signal_handler left SIGTERM at SIG_DFL: once a test had run
    serve in-process, the pytest session lost pytest_synapse's SIGTERM handling, and a CI
    cancellation killed it with no teardown (containers of the Docker tier were left for the
    next run to reap)."""

    def mine(signum: int, frame: object) -> None:
        raise AssertionError("not expected to be called")

    previous = {sig: signal.signal(sig, mine) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        config = tmp_path / "bad.json"
        config.write_text('[{"name": "x"}]')  # serve starts, installs its handlers, fails
        assert main(["serve", "--port", "0", "--config", str(config)]) == 2
        assert "missing required field" in capsys.readouterr().err
        assert signal.getsignal(signal.SIGTERM) is mine
        assert signal.getsignal(signal.SIGINT) is mine
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
