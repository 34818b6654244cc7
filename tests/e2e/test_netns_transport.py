"""Real multi-host mDNS: two peers in separate network namespaces joined by a bridge.

Each peer is its own process in its own namespace (``ip netns``), linked by veth pairs to a
bridge in a third namespace, so nothing touches the host's interfaces. The peers discover each
other across the bridge, exchange a message, then the test downs b's link: a's sends time out,
its breaker for b opens and rejects at once (no goodbye ever arrives: discovery still lists b),
and once the link is back up the breaker closes again. Another test kills b and brings it back
on a new address. Needs root and iproute2; skipped otherwise.
"""

from __future__ import annotations

import json
import os
import secrets
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.netns

PEER = Path(__file__).with_name("netns_peer.py")
REPO = Path(__file__).parents[2]


def _skip_reason() -> str | None:
    if sys.platform != "linux":
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root (run make test as root to include these tests)"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=10)


class Namespaces:
    """Namespaces ``<p>a``, ``<p>b`` and the bridge ``<p>br``; deleted by :meth:`delete`."""

    def __init__(self) -> None:
        self.prefix = f"syn{secrets.token_hex(3)}"
        self.created: list[str] = []
        self.subnet = f"10.{200 + secrets.randbelow(50)}.{secrets.randbelow(250)}"

    def name(self, which: str) -> str:
        return f"{self.prefix}{which}"

    def ip_of(self, which: str) -> str:
        return f"{self.subnet}.{1 if which == 'a' else 2}"

    def create(self) -> None:
        bridge = self.name("br")
        for which in ("br", "a", "b"):
            _ip("netns", "add", self.name(which))
            self.created.append(self.name(which))
        _ip("-n", bridge, "link", "add", "br0", "type", "bridge")
        _ip("-n", bridge, "link", "set", "br0", "up")
        for which in ("a", "b"):
            ns = self.name(which)
            _ip("link", "add", "v" + which, "netns", ns, "type", "veth",
                "peer", "name", f"v{which}-br", "netns", bridge)  # fmt: skip
            _ip("-n", bridge, "link", "set", f"v{which}-br", "master", "br0")
            _ip("-n", bridge, "link", "set", f"v{which}-br", "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "addr", "add", f"{self.ip_of(which)}/24", "dev", "v" + which)
            _ip("-n", ns, "link", "set", "v" + which, "up")

    def add_address(self, which: str, host: int) -> str:
        """Give *which*'s link one more address (``<subnet>.<host>``) and return it."""
        address = f"{self.subnet}.{host}"
        _ip("-n", self.name(which), "addr", "add", f"{address}/24", "dev", "v" + which)
        return address

    def set_link(self, which: str, up: bool) -> None:
        _ip("-n", self.name("br"), "link", "set", f"v{which}-br", "up" if up else "down")

    def delete(self) -> None:
        for ns in reversed(self.created):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10, check=False)
        self.created.clear()


class Peer:
    """A netns_peer.py process; ``call`` sends one command and returns its JSON answer."""

    def __init__(self, ns: str, entity_id: str, ip: str, service_type: str, *options: str) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        command = ["ip", "netns", "exec", ns, sys.executable, str(PEER)]
        self.proc = subprocess.Popen(
            [*command, entity_id, ip, service_type, *options],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            bufsize=0,
        )
        self._buffer = b""
        self.ready = self._read(timeout=20)

    def _read(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            ready, _, _ = select.select([self.proc.stdout], [], [], max(0.0, remaining))
            if not ready:
                raise TimeoutError(f"peer did not answer within {timeout}s")
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            if not chunk:
                raise RuntimeError(f"peer exited: {self._stderr()}")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def _stderr(self) -> str:
        self.proc.kill()
        _, err = self.proc.communicate(timeout=10)
        return err.decode(errors="replace")[-2000:]

    def call(self, reply_within: float = 15.0, **request: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(request) + "\n").encode())
        return self._read(reply_within)

    def kill(self) -> None:
        """SIGKILL: no goodbye, no closed connections, like a crashed host."""
        self.proc.kill()
        self.proc.communicate(timeout=10)

    def close(self) -> None:
        if self.proc.poll() is None and self.proc.stdin is not None:
            try:
                self.proc.stdin.write(b'{"cmd": "quit"}\n')
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate(timeout=10)


@pytest.fixture
def namespaces() -> Iterator[Namespaces]:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    ns = Namespaces()
    try:
        try:
            ns.create()
        except subprocess.CalledProcessError as exc:
            pytest.skip(f"cannot create network namespaces here: {exc.stderr.strip()}")
        yield ns
    finally:
        ns.delete()


@pytest.fixture
def peers(namespaces: Namespaces) -> Iterator[tuple[Peer, Peer]]:
    service_type = f"_syn{secrets.token_hex(4)}._tcp.local."
    started: list[Peer] = []
    try:
        for which in ("a", "b"):
            started.append(
                Peer(namespaces.name(which), which, namespaces.ip_of(which), service_type)
            )
        yield started[0], started[1]
    finally:
        for peer in started:
            peer.close()


def test_discovery_partition_and_heal_across_namespaces(
    namespaces: Namespaces, peers: tuple[Peer, Peer]
) -> None:
    a, b = peers
    assert a.ready["address"] == [namespaces.ip_of("a"), 7000]
    found = a.call(cmd="wait_peer", id="b", timeout=10)
    assert (found["host"], found["port"]) == (namespaces.ip_of("b"), 7000)
    assert b.call(cmd="wait_peer", id="a", timeout=10)["host"] == namespaces.ip_of("a")
    assert a.call(cmd="send", to="b", text="before")["ok"]
    assert b.call(cmd="received")["texts"] == ["before"]

    namespaces.set_link("b", up=False)
    errors = []
    for _ in range(10):
        if a.call(cmd="state", to="b")["state"] == "open":
            break
        result = a.call(cmd="send", to="b", text="during")
        assert not result["ok"]
        errors.append(result["error"])
    assert a.call(cmd="state", to="b")["state"] == "open"
    assert set(errors) <= {"DeliveryTimeoutError", "DeliveryError"}
    assert "DeliveryTimeoutError" in errors
    rejected = [a.call(cmd="send", to="b", text="x") for _ in range(20)]
    assert {r["error"] for r in rejected} == {"CircuitOpenError"}
    assert sorted(r["elapsed"] for r in rejected)[10] < 0.001  # median, measured in the peer

    namespaces.set_link("b", up=True)
    time.sleep(1.1)  # the peers' breaker recovery timeout (real time: separate processes)
    for _ in range(10):
        if a.call(cmd="state", to="b")["state"] == "closed":
            break
        a.call(cmd="send", to="b", text="after")
        time.sleep(0.2)
    assert a.call(cmd="state", to="b")["state"] == "closed"
    assert "after" in b.call(cmd="received")["texts"]


def test_a_peer_restarted_on_a_new_address_is_reachable_at_once(namespaces: Namespaces) -> None:
    """After a peer was killed and restarted, sends kept failing with CircuitOpenError until
    the breaker's recovery timeout although the new instance was announced: its breaker is now
    reset when its address (or instance) changes. a's breaker would recover after 60 s here."""
    service_type = f"_syn{secrets.token_hex(4)}._tcp.local."
    started: list[Peer] = []
    try:
        a = Peer(namespaces.name("a"), "a", namespaces.ip_of("a"), service_type, "7000", "60")
        started.append(a)
        first = Peer(namespaces.name("b"), "b", namespaces.ip_of("b"), service_type)
        started.append(first)
        assert a.call(cmd="wait_peer", id="b", timeout=10)["host"] == namespaces.ip_of("b")
        assert a.call(cmd="send", to="b", text="before")["ok"]

        first.kill()  # no goodbye: a still lists b at its old address
        errors = [a.call(cmd="send", to="b", text="lost")["error"] for _ in range(4)]
        assert errors[-1] == "CircuitOpenError", errors
        assert a.call(cmd="state", to="b")["state"] == "open"

        new_ip = namespaces.add_address("b", 3)
        second = Peer(namespaces.name("b"), "b", new_ip, service_type)
        started.append(second)
        deadline = time.monotonic() + 10
        while a.call(cmd="wait_peer", id="b", timeout=1)["host"] != new_ip:
            assert time.monotonic() < deadline, "a never saw b's new address"
            time.sleep(0.05)
        result = a.call(cmd="send", to="b", text="after")
        assert result["ok"], result  # at once: not 60 s later
        assert second.call(cmd="received")["texts"] == ["after"]
    finally:
        for peer in started:
            peer.close()
