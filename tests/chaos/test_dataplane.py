"""Data plane under load: byte-exact bulk transfer, many concurrent connections, no fd leaks."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import threading
import time

import pytest
from chaos_helpers import EchoServer, open_fds

from chaos import EmbeddedToxiproxy, ToxiproxyClient

TOTAL = 100 * 1024 * 1024
BLOCK = 1024 * 1024


def transfer_through(address: tuple[str, int], total: int = TOTAL) -> None:
    """Send *total* pseudo-random bytes through the echo proxy and check every byte comes back.

    A sender thread writes while this thread reads, so both directions of the proxy carry the
    full stream at the same time; both sides are hashed and compared.
    """
    pattern = os.urandom(BLOCK + 4099)
    sent_hash = hashlib.sha256()
    received_hash = hashlib.sha256()
    errors: list[BaseException] = []
    with socket.create_connection(address, timeout=60) as sock:

        def send() -> None:
            try:
                offset = 0
                sent = 0
                while sent < total:
                    # Shift the window each block so misplaced blocks change the hash.
                    block = pattern[offset : offset + min(BLOCK, total - sent)]
                    offset = (offset + 4099) % 4100
                    sent_hash.update(block)
                    sock.sendall(block)
                    sent += len(block)
                sock.shutdown(socket.SHUT_WR)
            except BaseException as exc:
                errors.append(exc)

        sender = threading.Thread(target=send)
        sender.start()
        received = 0
        buffer = bytearray(BLOCK)
        view = memoryview(buffer)
        deadline = time.monotonic() + 90
        try:
            while time.monotonic() < deadline:
                n = sock.recv_into(buffer)
                if n == 0:
                    break
                received_hash.update(view[:n])
                received += n
        finally:
            sender.join(60)
    assert not errors, errors
    assert received == total
    assert received_hash.hexdigest() == sent_hash.hexdigest()


@pytest.mark.slow
def test_100_mb_byte_exact_both_directions(echo_proxy: tuple[str, int]) -> None:
    transfer_through(echo_proxy)


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
    transfer_through(echo_proxy)


@pytest.mark.slow
@pytest.mark.asyncio
async def test_1000_concurrent_connections(echo_server: EchoServer) -> None:
    with EmbeddedToxiproxy() as server:
        info = await asyncio.to_thread(
            server.client().create_proxy, "echo", upstream=echo_server.address
        )
        address = (info.listen_host, info.listen_port)
        writers: list[asyncio.StreamWriter] = []
        try:
            streams = []
            for i in range(1000):
                reader, writer = await asyncio.wait_for(asyncio.open_connection(*address), 10)
                writers.append(writer)
                streams.append((i, reader, writer))

            async def exchange(
                i: int, reader: asyncio.StreamReader, w: asyncio.StreamWriter
            ) -> bytes:
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
async def test_10000_open_close_cycles_leak_no_fds(echo_server: EchoServer) -> None:
    with EmbeddedToxiproxy() as server:
        info = await asyncio.to_thread(
            server.client().create_proxy, "echo", upstream=echo_server.address
        )
        address = (info.listen_host, info.listen_port)

        async def cycle() -> None:
            reader, writer = await asyncio.open_connection(*address)
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
        # closes complete asynchronously on the server thread: wait for them, bounded
        deadline = time.monotonic() + 10
        while open_fds() > baseline + 5 and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        assert open_fds() <= baseline + 5, f"fds grew from {baseline} to {open_fds()}"
        assert elapsed < 100
