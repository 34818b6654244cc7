"""Test doubles and helpers for the transport tests (imported by the conftest and tests)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from synapse_core.transport import (
    FrameDecoder,
    FrameKind,
    Message,
    NackCode,
    PeerUnknownError,
    Transport,
)

Frame = tuple[FrameKind, int, bytes]

Behaviour = str | BaseException | Callable[[], Any]


class ScriptedTransport(Transport):
    """An in-memory transport whose sends do what the test says, per target.

    ``behaviour[target]`` is ``"ok"`` (default), ``"hang"`` (never returns), an exception to
    raise, or an async callable awaited in place of the network. ``calls`` records every
    ``_transmit``/``_probe`` that actually ran, so a test can prove a rejected call never did.
    """

    kind = "scripted"

    def __init__(self, node_id: str = "local", *, known: tuple[str, ...] = ("b", "c"), **kw: Any):
        super().__init__(node_id, **kw)
        self.known = set(known)
        self.behaviour: dict[str, Behaviour] = {}
        self.calls: list[tuple[str, str]] = []
        self.started = self.stopped = 0

    @property
    def capabilities(self) -> frozenset[str]:
        return frozenset({"scripted"})

    def _check_target(self, target: str) -> None:
        if target not in self.known:
            raise PeerUnknownError(target)

    async def _start(self) -> None:
        self.started += 1

    async def _stop(self) -> None:
        self.stopped += 1

    async def _act(self, target: str) -> None:
        behaviour = self.behaviour.get(target, "ok")
        if behaviour == "ok":
            return
        if behaviour == "hang":
            await asyncio.Event().wait()
        if isinstance(behaviour, BaseException):
            raise behaviour
        if callable(behaviour):
            await behaviour()

    async def _transmit(self, target: str, message: Message, data: bytes) -> None:
        self.calls.append(("send", target))
        await self._act(target)

    async def _probe(self, target: str) -> None:
        self.calls.append(("probe", target))
        await self._act(target)

    def inject(self, message: Message) -> NackCode | None:
        """Deliver *message* as if it had arrived from the network."""
        return self._accept_inbound(message, len(message.to_bytes()))


def msg(to: str = "b", sender: str = "local", content: bytes = b"x") -> Message:
    return Message(to_global_id=to, from_global_id=sender, content=content)


def inbound(content: bytes = b"x", to: str = "local") -> Message:
    """A message addressed to the default ScriptedTransport (``"local"``), as from ``"b"``."""
    return Message(to_global_id=to, from_global_id="b", content=content)


def unique_service_type() -> str:
    """A service type no other test run uses (DNS-SD allows 15 characters after the '_')."""
    return f"_syn{secrets.token_hex(4)}._tcp.local."


async def until(predicate: Callable[[], bool], within: float = 5.0) -> None:
    """Wait until *predicate* holds (checked every 5 ms); fail the test after *within* seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():
        assert loop.time() < deadline, f"condition not reached within {within:g}s"
        await asyncio.sleep(0.005)


def free_port() -> int:
    """A port nothing listens on right now (connections to it are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RawClient:
    """A bare frame-protocol client on a real socket (optionally from a given source address)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self._decoder = FrameDecoder()
        self._frames: list[Frame] = []

    @classmethod
    async def connect(cls, address: tuple[str, int], source: str | None = None) -> RawClient:
        local = None if source is None else (source, 0)
        reader, writer = await asyncio.open_connection(*address, local_addr=local)
        return cls(reader, writer)

    def send(self, *frames: bytes) -> None:
        self.writer.write(b"".join(frames))

    async def replies(self, count: int, timeout: float = 10.0) -> list[Frame]:  # noqa: ASYNC109
        """The next *count* frames from the server (fewer if it closes first)."""
        async with asyncio.timeout(timeout):
            while len(self._frames) < count:
                data = await self.reader.read(65536)
                if not data:
                    break
                self._frames += self._decoder.feed(data)
        got, self._frames = self._frames[:count], self._frames[count:]
        return got

    async def closed_by_server(self, timeout: float = 5.0) -> bool:  # noqa: ASYNC109
        """Whether the server ends the stream within *timeout* (frames before it are kept)."""
        try:
            async with asyncio.timeout(timeout):
                while data := await self.reader.read(65536):
                    self._frames += self._decoder.feed(data)
        except TimeoutError:
            return False
        except ConnectionError:
            pass
        return True

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


async def exchange(
    address: tuple[str, int],
    *frames: bytes,
    timeout: float = 10.0,  # noqa: ASYNC109 - a default for every raw exchange
) -> list[Frame]:
    """Send *frames* on a fresh raw connection and return the replies to all of them."""
    client = await RawClient.connect(address)
    try:
        client.send(*frames)
        return await client.replies(len(frames), timeout)
    finally:
        await client.close()


PEER_SCRIPT = Path(__file__).parents[2] / "e2e" / "netns_peer.py"


class PeerProcess:
    """An mDNS peer in its own process (``tests/e2e/netns_peer.py``) on loopback.

    ``await PeerProcess.start(entity_id, service_type, port)`` returns once it is announced;
    ``kill()`` ends it with SIGKILL: no goodbye, no closing handshake, like a crashed host.
    """

    def __init__(self, proc: asyncio.subprocess.Process, ready: dict[str, Any]) -> None:
        self.proc = proc
        self.ready = ready

    @classmethod
    async def start(cls, entity_id: str, service_type: str, port: int) -> PeerProcess:
        repo = str(Path(__file__).parents[3])
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(PEER_SCRIPT),
            entity_id,
            "127.0.0.1",
            service_type,
            str(port),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": repo},
        )
        peer = cls(proc, {})
        try:
            assert proc.stdout is not None
            async with asyncio.timeout(20):
                line = await proc.stdout.readline()
            if not line:
                raise RuntimeError(f"peer {entity_id!r} exited before it was ready")
            peer.ready = json.loads(line)
        except BaseException:
            await peer.kill()
            raise
        return peer

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()
        if self.proc.stdin is not None:
            self.proc.stdin.close()
