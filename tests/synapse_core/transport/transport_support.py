"""Test doubles and helpers for the transport tests (imported by the conftest and tests)."""

from __future__ import annotations

import asyncio
import secrets
import socket
from collections.abc import Callable
from typing import Any

from synapse_core.transport import Message, NackCode, PeerUnknownError, Transport

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


def free_port() -> int:
    """A port nothing listens on right now (connections to it are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
