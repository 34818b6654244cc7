"""Three replicas of a service share one circuit breaker through a real Redis.

    python examples/shared_breaker/demo.py            # starts its own redis-server
    REDIS_URL=redis://127.0.0.1:6379/0 python examples/shared_breaker/demo.py

What it shows, with real processes and sockets:

1. the pricing service fails; each replica sees ONE failure, fewer than the threshold (3) a
   local breaker would need, and yet every replica opens: the breaker is the fleet's;
2. while open, no replica calls pricing at all (it counts its requests);
3. pricing recovers; after the recovery timeout six requests arrive at once across the three
   replicas, and only ``half_open_max_calls`` (2) of them reach pricing: the probes are limited
   fleet-wide; then every replica is closed again.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent


class Pricing(ThreadingHTTPServer):
    """The dependency: answers prices, or 503 while ``broken``; counts every request."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), PricingHandler)
        self.broken = False
        self.requests = 0
        self.lock = threading.Lock()


class PricingHandler(BaseHTTPRequestHandler):
    server: Pricing

    def do_GET(self) -> None:
        with self.server.lock:
            self.server.requests += 1
        if self.server.broken:
            self.send_error(503, "pricing is down")
            return
        time.sleep(0.2)  # a probe takes a moment: the other requests arrive meanwhile
        body = json.dumps({"item": self.path.rsplit("/", 1)[-1], "price": 42}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_redis(folder: str) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not installed (apt-get install redis-server), or set REDIS_URL")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--dir", folder],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return process, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.05)
    process.kill()
    sys.exit("redis-server did not start")


def get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as err:
        with err:
            return err.code, json.loads(err.read() or b"null")


def fleet_view(replicas: dict[str, str]) -> str:
    parts = []
    for name, url in replicas.items():
        entry = get(f"{url}/breakers")[1]["breakers"]["pricing"]
        fleet = entry["stats"]["fleet"]
        parts.append(f"{name}={entry['state']} (caused by {fleet['caused_by']})")
    return ", ".join(parts)


def wait_until(check: Any, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return False


def main() -> int:
    folder = tempfile.mkdtemp(prefix="synapse-shared-demo-")
    redis_process = None
    url = os.environ.get("REDIS_URL")
    if url is None:
        redis_process, url = start_redis(folder)
    pricing = Pricing()
    threading.Thread(target=pricing.serve_forever, daemon=True).start()
    pricing_url = f"http://127.0.0.1:{pricing.server_port}"
    processes: list[subprocess.Popen[str]] = []
    try:
        replicas: dict[str, str] = {}
        for i in (1, 2, 3):
            name = f"quotes-{i}"
            process = subprocess.Popen(
                [sys.executable, str(HERE / "replica.py"), "--name", name,
                 "--redis", url, "--pricing", pricing_url],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            processes.append(process)
            assert process.stdout is not None
            replicas[name] = process.stdout.readline().strip()
        print(f"redis {url}, pricing {pricing_url}, replicas {', '.join(replicas.values())}")

        for base in replicas.values():
            assert get(f"{base}/quote/apple")[0] == 200
        print("healthy: every replica quotes (status 200)")

        pricing.broken = True
        for name, base in replicas.items():
            status, _ = get(f"{base}/quote/apple")
            print(f"pricing down: {name} saw one failure (status {status})")
        opened = wait_until(
            lambda: all(
                get(f"{b}/breakers")[1]["breakers"]["pricing"]["state"] == "open"
                for b in replicas.values()
            ),
            5,
        )
        print(f"every replica open: {opened}: {fleet_view(replicas)}")
        before = pricing.requests
        started = time.perf_counter()
        answers = [get(f"{b}/quote/apple")[0] for b in replicas.values() for _ in range(10)]
        took = (time.perf_counter() - started) / len(answers) * 1000
        print(f"30 requests while open: statuses {sorted(set(answers))}, {took:.1f} ms each")
        print(f"pricing calls while open: {pricing.requests - before}")

        pricing.broken = False
        time.sleep(PRICING_RECOVERY + 0.1)
        before = pricing.requests
        results: list[int] = []
        lock = threading.Lock()

        def ask(base: str) -> None:
            status = get(f"{base}/quote/apple")[0]
            with lock:
                results.append(status)

        threads = [
            threading.Thread(target=ask, args=(b,)) for b in replicas.values() for _ in (1, 2)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        print(f"pricing recovered: 6 requests at once, statuses {sorted(results)}")
        print(f"probes that reached pricing: {pricing.requests - before}")
        closed = wait_until(
            lambda: all(
                get(f"{b}/breakers")[1]["breakers"]["pricing"]["state"] == "closed"
                for b in replicas.values()
            ),
            5,
        )
        print(f"all replicas closed: {closed}: {fleet_view(replicas)}")
        return 0 if opened and closed else 1
    finally:
        for process in processes:
            if process.stdin is not None:
                process.stdin.close()
            process.wait(10)
            if process.stdout is not None:
                process.stdout.close()
        pricing.shutdown()
        pricing.server_close()
        if redis_process is not None:
            redis_process.terminate()
            redis_process.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


PRICING_RECOVERY = 1.0  # PRICING.recovery_timeout in replica.py

if __name__ == "__main__":
    sys.exit(main())
