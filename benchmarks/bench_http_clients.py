"""What the breaker-guarded HTTP clients add to a request: httpx transport, requests adapter.

* Against a local server: a keep-alive HTTP/1.1 server in another process (so client and server
  each get a core) answers ``GET /`` with 8 bytes. The same client makes the same requests with
  and without the breaker, taking turns request by request (who goes first alternating) so
  drift hits both alike; median and p99 per request, and the ratio guarded / plain.
* The guard alone: the same clients over a transport that answers in memory (httpx's
  ``MockTransport``; an ``HTTPAdapter`` returning a canned response), so the difference is the
  breaker's admission and report, not the network.
* Rejection: a request while the host's breaker is open (``CircuitOpenError``, no socket).

Run: ``python benchmarks/bench_http_clients.py [--quick]``. Everything stays on 127.0.0.1; every
loop is bounded by a count.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import requests
from requests.adapters import HTTPAdapter

from synapse_core import CircuitBreakerConfig, CircuitOpenError
from synapse_core.http import BreakerAdapter, BreakerTransport

NEVER_OPENS = CircuitBreakerConfig(failure_threshold=1_000_000, minimum_requests=1_000_000)

SERVER = """
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else headers and body wait on delayed ACKs (40 ms)
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "8")
        self.end_headers()
        self.wfile.write(b"stock: 7")
    def log_message(self, *args):
        pass

server = ThreadingHTTPServer(("127.0.0.1", 0), H)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


@contextlib.contextmanager
def local_server() -> Iterator[str]:
    process = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        yield f"http://127.0.0.1:{port}/"
    finally:
        process.terminate()
        process.wait(10)


def timed(call: Callable[[], Any], count: int) -> list[float]:
    """Microseconds per call, *count* calls."""
    out = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        out.append((time.perf_counter() - started) * 1e6)
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def compare(title: str, variants: dict[str, Callable[[], Any]], count: int, rounds: int) -> None:
    """Each (plain, guarded) pair on its own: *rounds* x *count* turns in which both make one
    request, who goes first alternating (a burst of load on the shared machine hits both alike,
    and neither always pays for the switch); prints median/p99 and guarded/plain ratios."""
    print(f"\n{title}")
    print(f"  {'client':<28} {'median us':>10} {'p99 us':>10} {'ratio':>7}")
    names = list(variants)
    for i in range(0, len(names), 2):
        pair = [(names[i], variants[names[i]]), (names[i + 1], variants[names[i + 1]])]
        samples: dict[str, list[float]] = {names[i]: [], names[i + 1]: []}
        for _, call in pair:  # warm up connections and caches
            timed(call, min(50, count))
        for turn in range(rounds * count):
            for name, call in pair if turn % 2 == 0 else pair[::-1]:
                samples[name].extend(timed(call, 1))
        plain, guarded = names[i], names[i + 1]
        base = statistics.median(samples[plain])
        for name in (plain, guarded):
            median = statistics.median(samples[name])
            print(
                f"  {name:<28} {median:>10.1f} {pct(samples[name], 0.99):>10.1f} "
                f"{median / base:>7.2f}"
            )
        print(
            f"  {'  added by the breaker':<28} {statistics.median(samples[guarded]) - base:>10.1f}"
        )


class _Canned(HTTPAdapter):
    """An adapter that answers in memory: what remains is requests' own work."""

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> Any:
        response = requests.Response()
        response.status_code = 200
        response._content = b"stock: 7"
        response.request = request
        response.url = request.url or ""
        return response


class _GuardedCanned(BreakerAdapter, _Canned):
    """The breaker adapter over the in-memory adapter."""


def session(adapter: HTTPAdapter) -> requests.Session:
    s = requests.Session()
    s.mount("http://", adapter)
    return s


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer requests (a smoke run)")
    args = parser.parse_args()
    count, rounds = (200, 2) if args.quick else (1000, 5)
    print(
        f"python {sys.version.split()[0]}, httpx {httpx.__version__}, requests {requests.__version__}"
    )
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"{rounds} x {count} turns of one request per client of a pair; load {load}")

    with local_server() as url:
        plain_httpx = httpx.Client()
        guarded_httpx = httpx.Client(transport=BreakerTransport(config=NEVER_OPENS))
        plain_requests = session(HTTPAdapter())
        guarded_requests = session(BreakerAdapter(config=NEVER_OPENS))
        compare(
            "GET to a local keep-alive server (another process)",
            {
                "httpx.Client": lambda: plain_httpx.get(url),
                "httpx + BreakerTransport": lambda: guarded_httpx.get(url),
                "requests.Session": lambda: plain_requests.get(url),
                "requests + BreakerAdapter": lambda: guarded_requests.get(url),
            },
            count,
            rounds,
        )

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"stock: 7")

    mock_plain = httpx.Client(transport=httpx.MockTransport(answer))
    mock_guarded = httpx.Client(
        transport=BreakerTransport(httpx.MockTransport(answer), config=NEVER_OPENS)
    )
    canned_plain = session(_Canned())
    canned_guarded = session(_GuardedCanned(config=NEVER_OPENS))
    memory = "http://127.0.0.1:9/"
    compare(
        "The guard alone: the same clients answered in memory (no network)",
        {
            "httpx + MockTransport": lambda: mock_plain.get(memory),
            "  + BreakerTransport": lambda: mock_guarded.get(memory),
            "requests + canned adapter": lambda: canned_plain.get(memory),
            "  + BreakerAdapter": lambda: canned_guarded.get(memory),
        },
        count * 2,
        rounds,
    )

    transport = BreakerTransport(httpx.MockTransport(answer))
    opened = httpx.Client(transport=transport)
    opened.get(memory)
    transport.breakers.breaker_for("http", "127.0.0.1", 9).force_open()

    def rejected() -> None:
        try:
            opened.get(memory)
        except CircuitOpenError:
            return
        raise AssertionError("the open breaker let a request through")

    times = timed(rejected, count)
    print(
        f"\nA request while the host's breaker is open (httpx): median "
        f"{statistics.median(times):.1f} us, p99 {pct(times, 0.99):.1f} us (no socket opened)"
    )


if __name__ == "__main__":
    main()
