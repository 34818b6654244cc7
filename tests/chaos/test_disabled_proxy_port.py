"""A disabled proxy keeps its listen port, refusing connections as a closed port does.

What broke: disabling a proxy (``down()``, flapping, ``PATCH enabled=false``) closed its listener,
and under load another socket took the port (an outgoing connection's source port, a listener on
port 0), so enabling it again failed with "address already in use" and the proxy stayed down.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from chaos_helpers import EchoServer, connect_state, echoes

from chaos import ToxiproxyClient

PROBE = Path(__file__).with_name("port_hold_probe.py")
REPO = Path(__file__).parents[2]


def _bind_error(port: int) -> int:
    """0 if a plain bind of 127.0.0.1:*port* succeeds, else its errno."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            return exc.errno or -1
    return 0


def test_a_disabled_proxy_refuses_connections_and_its_port_cannot_be_bound(
    client: ToxiproxyClient, echo_server: EchoServer
) -> None:
    proxy = client.create_proxy("held", upstream=echo_server.address)
    address = (proxy.host, proxy.port)
    client.disable("held")
    assert connect_state(address) == "refused"
    assert _bind_error(proxy.port) == errno.EADDRINUSE
    assert client.enable("held").listen == proxy.listen
    assert echoes(address)
    client.disable("held")  # and a second time: the same socket is paused and resumed again
    assert connect_state(address) == "refused"
    assert client.enable("held").listen == proxy.listen
    assert echoes(address)


def test_deleting_or_moving_a_disabled_proxy_frees_its_port(
    client: ToxiproxyClient, echo_server: EchoServer
) -> None:
    first = client.create_proxy("a", upstream=echo_server.address)
    client.disable("a")
    moved = client.update_proxy("a", listen="localhost:0")
    assert not moved.enabled
    assert _bind_error(first.port) == 0
    second = client.create_proxy("b", upstream=echo_server.address)
    client.disable("b")
    client.delete_proxy("b")
    assert _bind_error(second.port) == 0


def test_a_disabled_proxy_created_on_port_zero_keeps_the_port_it_got(
    client: ToxiproxyClient, echo_server: EchoServer
) -> None:
    # Linux keeps a non-listening socket's port only if bind() named it; port 0 is bound in
    # two steps so that the proxy's port is named.
    proxy = client.create_proxy("zero", upstream=echo_server.address, listen="127.0.0.1:0")
    client.update_proxy("zero", enabled=False)
    assert _bind_error(proxy.port) == errno.EADDRINUSE
    assert client.update_proxy("zero", enabled=True).listen_port == proxy.port


def _netns_skip_reason() -> str | None:
    if sys.platform != "linux":
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "a network namespace of its own needs root"
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "unshare (util-linux) and ip (iproute2) are needed"
    return None


@pytest.mark.skipif(_netns_skip_reason() is not None, reason=str(_netns_skip_reason()))
def test_under_port_pressure_no_other_socket_takes_a_disabled_proxys_port() -> None:
    # In a namespace of its own with a two-port automatic range: every port-0 listener and
    # every outgoing connection would have taken the disabled proxy's port if it were free.
    script = f"ip link set lo up && exec {sys.executable} {PROBE}"
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests' / 'chaos'}"}
    done = subprocess.run(
        ["unshare", "--net", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["in_range"], result
    assert result["listeners"] or result["connections"], result  # the range was used up
    assert result["port"] not in result["listeners"] + result["connections"], result
    assert result["enabled"], result
