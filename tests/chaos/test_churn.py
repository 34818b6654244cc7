"""Toxics added, updated and removed on live streams: nothing corrupted, the API answers.

200 streams push random bytes through one proxy to an echo server and check every byte that
comes back against what they sent, while a churner adds, updates and removes toxics of every
type on both directions (and reads ``/proxies`` and ``/metrics``) as fast as the API answers.
A stream may be closed or reset by a destructive toxic, never handed a byte out of place: what
it receives is always a prefix of what it sent, and it reconnects after a close. The server
runs in its own process (``synapse-chaos serve``), as a user runs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from chaos_helpers import EchoServer, limited_server

from chaos import ToxiproxyClient

STREAMS = 200
CHURN_SECONDS = 6.0
WINDOW = 16 * 1024  # bytes a stream has in flight at most


class Stream:
    """One client: connections one after the other, each checked byte for byte."""

    def __init__(self, address: tuple[str, int], seed: int) -> None:
        self.address = address
        self.rng = random.Random(seed)
        self.verified = 0
        self.connections = 0
        self.corrupt: list[str] = []
        self.room = asyncio.Event()  # the current connection may send more

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set() and not self.corrupt:
            await self._one_connection(stop)

    async def final_check(self) -> bool:
        """After the churn: a fresh connection echoes a last message intact."""
        reader, writer = await asyncio.wait_for(asyncio.open_connection(*self.address), 10)
        try:
            message = self.rng.randbytes(1024)
            writer.write(message)
            return await asyncio.wait_for(reader.readexactly(len(message)), 10) == message
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _one_connection(self, stop: asyncio.Event) -> None:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(*self.address), 5)
        except (TimeoutError, OSError):
            await asyncio.sleep(0.05)
            return
        self.connections += 1
        pending = bytearray()
        room = self.room = asyncio.Event()
        room.set()

        async def send() -> None:
            with contextlib.suppress(OSError):
                while not stop.is_set():
                    if len(pending) >= WINDOW:
                        room.clear()
                        await room.wait()
                        continue
                    chunk = self.rng.randbytes(self.rng.randint(1, 4096))
                    pending.extend(chunk)
                    writer.write(chunk)
                    await writer.drain()
                    # Paced (~100 KB/s a stream): live traffic, not a CPU-bound benchmark.
                    await asyncio.sleep(self.rng.uniform(0, 0.04))

        progress = asyncio.Event()  # the receiver got data, or ended

        async def receive() -> None:
            try:
                while True:
                    data = await reader.read(65536)
                    if not data:
                        return  # closed (a destructive toxic, or our own end)
                    if pending[: len(data)] != data:
                        self.corrupt.append(
                            f"connection {self.connections}: {len(data)} bytes after "
                            f"{self.verified} verified do not match what was sent: "
                            f"{_divergence(bytes(pending), data)}"
                        )
                        return
                    del pending[: len(data)]
                    self.verified += len(data)
                    room.set()
                    progress.set()
            except OSError:
                return  # reset
            finally:
                progress.set()

        async def drained() -> None:
            while pending and not receiver.done():
                progress.clear()
                await progress.wait()

        sender = asyncio.ensure_future(send())
        try:
            receiver = asyncio.ensure_future(receive())
            done, _ = await asyncio.wait({receiver, sender}, return_when=asyncio.FIRST_COMPLETED)
            if receiver not in done:  # the sender stopped: collect the echoes still due
                try:
                    await asyncio.wait_for(drained(), 15)
                except TimeoutError:
                    # Bytes that never come back on a connection that stays open: lost.
                    self.corrupt.append(
                        f"connection {self.connections}: {len(pending)} bytes never came "
                        "back and the connection stayed open"
                    )
        finally:
            room.set()
            for task in (sender, receiver):
                task.cancel()
            await asyncio.gather(sender, receiver, return_exceptions=True)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


def _divergence(expected: bytes, got: bytes) -> str:
    """Where *got* leaves *expected*, and whether the rest is found later (a gap) or not."""
    at = next(i for i, (a, b) in enumerate(zip(expected, got, strict=False)) if a != b)
    rest = got[at : at + 64]
    found = expected.find(rest, at)
    where = f"found {found - at} bytes further on (a gap)" if found >= 0 else "not found"
    return f"differs at byte {at} of {len(got)}; what follows is {where}"


async def _run_streams(
    address: tuple[str, int], url: str, client: ToxiproxyClient
) -> tuple[list[Stream], dict[str, Any]]:
    streams = [Stream(address, seed) for seed in range(STREAMS)]
    stop = asyncio.Event()
    tasks = [asyncio.ensure_future(s.run(stop)) for s in streams]
    try:
        # The churner runs in a process of its own: its request times are the server's, not
        # this process's contention with 200 streams.
        churn = await asyncio.create_subprocess_exec(
            sys.executable,
            str(Path(__file__).with_name("churner.py")),
            url,
            "churn",
            str(CHURN_SECONDS),
            "16",
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await asyncio.wait_for(churn.communicate(), CHURN_SECONDS + 60)
        report = json.loads(out)
        await asyncio.to_thread(client.reset)  # every toxic off: held data goes on
    finally:
        stop.set()
        for stream in streams:
            stream.room.set()  # a sender waiting for room sees the stop
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
    checks = await asyncio.gather(*(s.final_check() for s in streams))
    assert all(checks), f"{checks.count(False)} streams failed their last echo"
    return streams, report


@pytest.mark.slow
def test_toxic_churn_on_200_live_streams_corrupts_nothing(
    tmp_path: Path, echo_server: EchoServer
) -> None:
    with limited_server(tmp_path) as server:
        info = server.client.create_proxy("churn", upstream=echo_server.address)
        address = (info.listen_host, info.listen_port)
        baseline_fds = server.fds()
        streams, churn = asyncio.run(_run_streams(address, f"http://{server.url}", server.client))

        corrupt = [c for s in streams for c in s.corrupt]
        verified = sum(s.verified for s in streams)
        connections = sum(s.connections for s in streams)
        p99 = churn["p99"]
        print(
            f"\nchurn: {churn['operations']} API operations, p50 {churn['p50'] * 1000:.1f} ms, "
            f"p99 {p99 * 1000:.1f} ms; "
            f"{verified / 1e6:.1f} MB verified over {connections} connections; "
            f"{len(corrupt)} corrupted"
        )
        assert not corrupt, corrupt[:5]
        assert not churn["errors"], churn["errors"][:5]
        assert churn["operations"] >= 50  # the API kept answering
        assert verified >= STREAMS * 8192  # every stream made progress on average
        # A generous bound: a lock-up or a request stuck behind the data plane, not a slow box.
        assert p99 < 2.0, f"API p99 {p99:.3f} s under churn"
        assert wait_until_fds(server, baseline_fds + 20), f"{server.fds()} vs {baseline_fds}"
        log = server.log()
        assert "Traceback" not in log, log[-3000:]
        assert "exception" not in log.lower(), log[-3000:]


def wait_until_fds(server: object, limit: int) -> bool:
    """The server's descriptors fall back to *limit* (pipes kept for reuse included)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if server.fds() <= limit:  # type: ignore[attr-defined]
            return True
        time.sleep(0.1)
    return False
