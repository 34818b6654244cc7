"""Data plane under load: byte-exact bulk transfer, many concurrent connections, no fd leaks."""

from __future__ import annotations

import asyncio
import time

import pytest
from chaos_helpers import MIB, EchoServer, echo_transfer, fds_settle, open_fds

from chaos import ToxiproxyClient

TOTAL = 100 * MIB


@pytest.mark.slow
def test_100_mb_byte_exact_both_directions(echo_proxy: tuple[str, int]) -> None:
    echo_transfer(echo_proxy, TOTAL)


@pytest.mark.slow
def test_100_mb_byte_exact_through_slicer(
    client: ToxiproxyClient, echo_proxy: tuple[str, int]
) -> None:
    for stream in ("upstream", "downstream"):
        client.add_toxic(
            "echo",
            "slicer",
            stream=stream,  # type: ignore[arg-type]
            attributes={"average_size": 32768, "size_variation": 16384, "delay": 0},
        )
    echo_transfer(echo_proxy, TOTAL)


@pytest.mark.slow
@pytest.mark.asyncio
async def test_1000_concurrent_connections(
    echo_server: EchoServer, echo_proxy: tuple[str, int]
) -> None:
    writers: list[asyncio.StreamWriter] = []
    try:
        streams = []
        for i in range(1000):
            reader, writer = await asyncio.wait_for(asyncio.open_connection(*echo_proxy), 10)
            writers.append(writer)
            streams.append((i, reader, writer))

        async def exchange(i: int, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> bytes:
            message = f"conn-{i:04d}\n".encode()
            w.write(message)
            await w.drain()
            return await reader.readexactly(len(message))

        results = await asyncio.wait_for(
            asyncio.gather(*(exchange(*s) for s in streams)), timeout=60
        )
        assert results == [f"conn-{i:04d}\n".encode() for i in range(1000)]
        assert echo_server.accepted == 1000
    finally:
        for writer in writers:
            writer.close()
        await asyncio.gather(*(w.wait_closed() for w in writers), return_exceptions=True)


@pytest.mark.slow
@pytest.mark.asyncio
async def test_10000_open_close_cycles_leak_no_fds(echo_proxy: tuple[str, int]) -> None:

    async def cycle() -> None:
        reader, writer = await asyncio.open_connection(*echo_proxy)
        try:
            writer.write(b"x")
            assert await reader.readexactly(1) == b"x"
        finally:
            writer.close()
            await writer.wait_closed()

    async def worker(count: int) -> None:
        for _ in range(count):
            await cycle()

    await asyncio.wait_for(worker(200), 30)  # warm up: lazily created fds/buffers
    await asyncio.sleep(0.2)
    baseline = open_fds()
    start = time.monotonic()
    await asyncio.wait_for(asyncio.gather(*(worker(500) for _ in range(20))), 100)
    elapsed = time.monotonic() - start
    fds = await asyncio.to_thread(fds_settle, baseline + 5)
    assert fds <= baseline + 5, f"fds grew from {baseline} to {fds}"
    assert elapsed < 100
