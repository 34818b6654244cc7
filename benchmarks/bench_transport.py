"""Transport figures on loopback: TCP message rate and latency, mDNS discovery, fail-fast.

* TCP, small messages (64-byte content, about 300 bytes framed): one sender, the receiver in a
  separate process (so both sides get a core). Sequential sends give p50/p99 round-trip
  latency (send until ack) and their rate; pipelined sends (64 in flight on one connection)
  give the throughput. The same again with a ``MessageAuthenticator`` on both sides: messages
  are signed and verified, and so are the receiver's ACKs (a receipt proves delivery to a holder
  of the key); the cost of the signed ACK alone (tag on the receiver, check on the sender) is
  timed on its own.
* mDNS discovery: two MdnsTransports started together on 127.0.0.1; time from ``start()`` to
  the first discovery of the other peer (median of several runs), with and without name probing.
* Fail-fast: a send while the peer's breaker is open (rejected without touching the network)
  next to the time a send takes to fail without a breaker, against a peer that refuses
  connections and against one that accepts but never answers (the ack timeout, 1 s here).

Run: ``python benchmarks/bench_transport.py [--quick]``. Everything stays on 127.0.0.1 and every
loop is bounded by a count and a deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import platform
import secrets
import socket
import statistics
import subprocess
import sys
import time
import timeit
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from synapse_core import CircuitBreakerConfig, CircuitOpenError
from synapse_core.transport import (
    DeliveryError,
    FrameKind,
    MdnsConfig,
    MdnsTransport,
    Message,
    MessageAuthenticator,
    TcpTransport,
)

CONTENT = b"x" * 64
NEVER_OPENS = CircuitBreakerConfig(failure_threshold=1_000_000, minimum_requests=1_000_000)
ACK_TIMEOUT = 1.0


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ---------------------------------------------------------------------------------- receiver


def authenticator(key: str | None) -> MessageAuthenticator | None:
    return None if key is None else MessageAuthenticator(bytes.fromhex(key), max_age=30)


async def serve(key: str | None) -> None:
    """Receiver process: print the port, drain messages until stdin closes."""
    async with TcpTransport(
        node_id="receiver", inbound_queue_size=1_000_000, authenticator=authenticator(key)
    ) as receiver:
        print(json.dumps({"port": receiver.address[1]}), flush=True)

        async def drain() -> None:
            async for _ in receiver:
                pass

        drainer = asyncio.create_task(drain())
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)  # returns when the parent closes it
        drainer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await drainer


@contextlib.contextmanager
def receiver_process(key: str | None) -> Iterator[int]:
    """Start the receiver process (before the timed part) and yield its port."""
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", *(["--key", key] if key else [])],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        yield int(json.loads(proc.stdout.readline())["port"])
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


# ---------------------------------------------------------------------------------- TCP


async def bench_tcp(
    sequential: int, pipelined: int, window: int, key: str | None = None
) -> dict[str, float]:
    with receiver_process(key) as port:
        return await _bench_tcp(port, sequential, pipelined, window, key)


async def _bench_tcp(
    port: int, sequential: int, pipelined: int, window: int, key: str | None
) -> dict[str, float]:
    async with TcpTransport(node_id="sender", authenticator=authenticator(key)) as sender:
        sender.add_peer("receiver", "127.0.0.1", port)
        for _ in range(200):  # warm up: connection, caches
            await sender.send_message("receiver", Message("receiver", "sender", CONTENT))
        latencies = []
        deadline = time.perf_counter() + 30
        started = time.perf_counter()
        for _ in range(sequential):
            receipt = await sender.send_message("receiver", Message("receiver", "sender", CONTENT))
            latencies.append(receipt.latency)
            if time.perf_counter() > deadline:
                break
        sequential_rate = len(latencies) / (time.perf_counter() - started)

        messages = [Message("receiver", "sender", CONTENT) for _ in range(pipelined)]
        queue = iter(messages)
        sent = 0

        async def worker() -> None:
            nonlocal sent
            for message in queue:
                await sender.send_message("receiver", message)
                sent += 1
                if time.perf_counter() > deadline:
                    return

        deadline = time.perf_counter() + 30
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(window)))
        pipelined_rate = sent / (time.perf_counter() - started)
        size = len(messages[0].to_bytes()) + 9
    return {
        "p50": pct(latencies, 0.50),
        "p99": pct(latencies, 0.99),
        "sequential_rate": sequential_rate,
        "pipelined_rate": pipelined_rate,
        "frame_bytes": size,
    }


def bench_ack_signature(rounds: int) -> float:
    """Seconds per signed ACK: the receiver's tag plus the sender's check, on one message."""
    auth = MessageAuthenticator(secrets.token_bytes(32))
    message = auth.sign(Message("receiver", "sender", CONTENT))

    def one() -> None:
        tag = auth.reply_tag(FrameKind.ACK, message, b"\x01")
        auth.reply_is_valid(FrameKind.ACK, message, b"\x01", tag)

    return min(timeit.repeat(one, number=rounds, repeat=5)) / rounds


# ---------------------------------------------------------------------------------- mDNS


async def discovery_once(probe: bool) -> float:
    config = MdnsConfig(service_type=f"_synb{secrets.token_hex(4)}._tcp.local.", probe_name=probe)
    a = MdnsTransport("bench-a", 0, config)
    b = MdnsTransport("bench-b", 0, config)
    started = time.perf_counter()
    try:
        await asyncio.gather(a.start(), b.start())
        await a.wait_for_peer("bench-b", timeout=15)
        return time.perf_counter() - started
    finally:
        await asyncio.gather(a.stop(), b.stop())


async def bench_discovery(runs: int) -> dict[str, float]:
    plain = [await discovery_once(False) for _ in range(runs)]
    probed = [await discovery_once(True) for _ in range(max(1, runs // 2))]
    return {"plain": statistics.median(plain), "probed": statistics.median(probed)}


# ---------------------------------------------------------------------------------- fail-fast


def refused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def bench_fail_fast(rejections: int, timeouts: int) -> dict[str, float]:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while await reader.read(65536):
                pass
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    hung_port = server.sockets[0].getsockname()[1]
    try:
        async with (
            TcpTransport(node_id="guarded", send_timeout=ACK_TIMEOUT) as guarded,
            TcpTransport(
                node_id="unguarded", send_timeout=ACK_TIMEOUT, breaker_config=NEVER_OPENS
            ) as unguarded,
        ):
            for transport in (guarded, unguarded):
                transport.add_peer("refused", "127.0.0.1", refused_port())
                transport.add_peer("hung", "127.0.0.1", hung_port)
            guarded.get_circuit_breaker("hung").force_open("benchmark")
            message = Message("hung", "guarded", CONTENT)
            rejected = []
            for _ in range(rejections):
                started = time.perf_counter()
                with contextlib.suppress(CircuitOpenError):
                    await guarded.send_message("hung", message)
                rejected.append(time.perf_counter() - started)
            refused = []
            for _ in range(200):
                started = time.perf_counter()
                with contextlib.suppress(DeliveryError):
                    await unguarded.send_message("refused", message)
                refused.append(time.perf_counter() - started)
            hung = []
            for _ in range(timeouts):
                started = time.perf_counter()
                with contextlib.suppress(DeliveryError):
                    await unguarded.send_message("hung", message)
                hung.append(time.perf_counter() - started)
    finally:
        server.close()
        await server.wait_closed()
    return {
        "open_p50": pct(rejected, 0.5),
        "open_p99": pct(rejected, 0.99),
        "refused_p50": pct(refused, 0.5),
        "hung_p50": pct(hung, 0.5),
    }


# ---------------------------------------------------------------------------------- main


async def main(quick: bool) -> None:
    counts = {
        "sequential": 1000 if quick else 5000,
        "pipelined": 5000 if quick else 30000,
        "window": 64,
    }
    tcp = await bench_tcp(**counts)
    signed = await bench_tcp(**counts, key=secrets.token_hex(32))
    ack_cost = bench_ack_signature(20_000 if quick else 100_000)
    discovery = await bench_discovery(runs=3 if quick else 5)
    fail = await bench_fail_fast(rejections=2000 if quick else 20000, timeouts=2 if quick else 3)

    print(f"Synapse transport benchmark (Python {platform.python_version()}, loopback)")
    rows = [
        ("TCP send -> ack, p50 (sequential)", f"{tcp['p50'] * 1e6:,.0f} us"),
        ("TCP send -> ack, p99 (sequential)", f"{tcp['p99'] * 1e6:,.0f} us"),
        ("TCP messages/s, sequential", f"{tcp['sequential_rate']:,.0f}"),
        ("TCP messages/s, 64 in flight", f"{tcp['pipelined_rate']:,.0f}"),
        ("  (message size on the wire)", f"{tcp['frame_bytes']:.0f} bytes"),
        ("HMAC, signed ACKs: send -> ack, p50", f"{signed['p50'] * 1e6:,.0f} us"),
        ("HMAC, signed ACKs: send -> ack, p99", f"{signed['p99'] * 1e6:,.0f} us"),
        ("HMAC, signed ACKs: messages/s, sequential", f"{signed['sequential_rate']:,.0f}"),
        ("HMAC, signed ACKs: messages/s, 64 in flight", f"{signed['pipelined_rate']:,.0f}"),
        (
            "  plain / HMAC rate, 64 in flight",
            f"{tcp['pipelined_rate'] / signed['pipelined_rate']:.2f}x",
        ),
        ("  ACK signature (tag + check) per message", f"{ack_cost * 1e6:,.1f} us"),
        ("  its share of the HMAC send -> ack p50", f"{ack_cost / signed['p50']:.1%}"),
        ("mDNS start -> first discovery", f"{discovery['plain'] * 1000:,.0f} ms"),
        ("  with name probing", f"{discovery['probed'] * 1000:,.0f} ms"),
        ("send while breaker open, p50", f"{fail['open_p50'] * 1e6:,.1f} us"),
        ("send while breaker open, p99", f"{fail['open_p99'] * 1e6:,.1f} us"),
        ("no breaker: refused peer, p50", f"{fail['refused_p50'] * 1e6:,.0f} us"),
        ("no breaker: hung peer (ack timeout)", f"{fail['hung_p50'] * 1000:,.0f} ms"),
        ("hung peer / open breaker", f"{fail['hung_p50'] / fail['open_p50']:,.0f}x"),
    ]
    width = max(len(name) for name, _ in rows)
    print("-" * (width + 16))
    for name, value in rows:
        print(f"{name:<{width}}  {value:>12}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    args = parser.parse_args()
    asyncio.run(serve(args.key) if args.serve else main(args.quick))
