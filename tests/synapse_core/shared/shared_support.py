"""Real Redis servers for the shared-breaker tests: one server, a three-master cluster, and
replicas of a breaker in child processes. Everything binds 127.0.0.1 on free ports, and every
server started here is stopped by whoever started it (and dies with this process)."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from redis.cluster import RedisCluster

HERE = Path(__file__).parent
REDIS_SERVER = shutil.which("redis-server")
REDIS_CLI = shutil.which("redis-cli")
MISSING = (
    "redis-server is not installed (make test installs it with scripts/system-deps.sh)"
    if REDIS_SERVER is None or REDIS_CLI is None
    else None
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too."""
    while True:
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the test process goes, however it goes."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def wait_for(condition: Callable[[], object], within: float, step: float = 0.005) -> bool:
    """Poll *condition* until it is true or *within* seconds passed; whether it became true."""
    deadline = time.monotonic() + within
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(step)


class RedisServer:
    """A ``redis-server`` of our own (no persistence: a restart loses everything)."""

    def __init__(self, folder: Path, *, cluster: bool = False) -> None:
        self.folder = folder
        self.cluster = cluster
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> RedisServer:
        assert REDIS_SERVER is not None
        for _ in range(5):  # a free port can be taken between the check and redis binding it
            port = self.port or (free_cluster_port() if self.cluster else free_port())
            args = [
                REDIS_SERVER,
                "--bind", "127.0.0.1",
                "--port", str(port),
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.folder),
            ]  # fmt: skip
            if self.cluster:
                args += [
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", f"nodes-{port}.conf",
                    "--cluster-node-timeout", "2000",
                ]  # fmt: skip
            self.process = subprocess.Popen(
                args,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,
            )
            client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1)
            try:
                wait_for(functools.partial(self._started, client), 10, 0.01)
                if self._answers(client):
                    self.port = port
                    return self
            finally:
                client.close()
            self.stop()
            if self.port:
                time.sleep(0.1)  # the old one still holds the port: try the same one again
        raise RuntimeError("redis-server did not start on a free port in 5 attempts")

    def _started(self, client: redis.Redis) -> bool:
        return self._answers(client) is not None

    def _answers(self, client: redis.Redis) -> bool | None:
        """True: it answers; False: it exited; None: not yet."""
        if self.process is None or self.process.poll() is not None:
            return False
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
            self.process = None

    def restart(self) -> None:
        """Stop and start again on the same port: every key is lost."""
        self.stop()
        self.start()


class ThreeMasterCluster:
    """A Redis Cluster of three masters on loopback, made with ``redis-cli --cluster create``."""

    def __init__(self, folder: Path) -> None:
        self.nodes = [RedisServer(folder, cluster=True) for _ in range(3)]

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def start(self) -> ThreeMasterCluster:
        assert REDIS_CLI is not None
        for node in self.nodes:
            node.start()
        subprocess.run(
            [
                REDIS_CLI,
                "--cluster",
                "create",
                *(node.address for node in self.nodes),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
        )
        clients = [redis.Redis(host="127.0.0.1", port=n.port, socket_timeout=1) for n in self.nodes]
        try:
            ok = wait_for(
                lambda: all(
                    c.execute_command("CLUSTER INFO").get("cluster_state") == "ok" for c in clients
                ),
                30,
                0.05,
            )
        finally:
            for client in clients:
                client.close()
        if not ok:
            raise RuntimeError("the three-master cluster did not reach cluster_state:ok")
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def client(self) -> RedisCluster:
        return RedisCluster.from_url(self.url, socket_timeout=2)


class Target:
    """Where the shared breakers live: a single server or a cluster (the same suite runs on
    both)."""

    def __init__(self, kind: str, server: RedisServer | ThreeMasterCluster) -> None:
        self.kind = kind
        self.server = server
        self.cluster = kind == "cluster"

    @property
    def url(self) -> str:
        return self.server.url

    def client(self) -> Any:
        if isinstance(self.server, ThreeMasterCluster):
            return self.server.client()
        return redis.Redis.from_url(self.server.url, socket_timeout=2)


class Replica:
    """One replica of a service in a child process: a breaker shared through the store.

    It runs ``shared_replica.py`` and is driven by JSON lines (see that file).
    """

    def __init__(
        self, target: Target, prefix: str, name: str, config: dict[str, Any], *, url: str = ""
    ) -> None:
        self.name = name
        options = {"url": url or target.url, "cluster": target.cluster, "prefix": prefix}
        self.process = subprocess.Popen(
            [
                sys.executable,
                str(HERE / "shared_replica.py"),
                name,
                json.dumps(options),
                json.dumps(config),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
            preexec_fn=_die_with_parent,
        )

    def ready(self) -> None:
        assert self.read() == {"ready": True}

    def ask(self, op: str, **args: Any) -> Any:
        self.send(op, **args)
        return self.read()

    def send(self, op: str, **args: Any) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.process.stdin.flush()

    def read(self) -> Any:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"replica {self.name} exited ({self.process.wait(5)})")
        answer = json.loads(line)
        if isinstance(answer, dict) and "error" in answer:
            raise AssertionError(f"replica {self.name}: {answer['error']}")
        return answer

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                assert self.process.stdin is not None
                self.process.stdin.close()
                self.process.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait(10)
        for pipe in (self.process.stdin, self.process.stdout):  # also when it was killed
            if pipe is not None and not pipe.closed:
                with contextlib.suppress(OSError):  # a killed child's stdin: no one to flush to
                    pipe.close()
