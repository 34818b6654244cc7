"""TCP transport: a listener plus pooled client connections speaking the frame protocol.

See :mod:`synapse_core.transport.framing` for the bytes. Each peer address gets one reused
outbound connection; requests on it are pipelined and replies matched by sequence number, so
concurrent sends to one peer do not wait for each other. A connection that timed out is closed
(its stream position is unknown) and the next send reconnects. A pooled connection the peer
closed while it sat idle is noticed before it is written to; a send that could not hand a byte
to a reused connection goes once more on a new one (the peer never saw it: no duplicate).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import select
from collections.abc import Mapping
from functools import partial
from typing import Any

from synapse_core.breaker import CircuitBreakerConfig, CircuitBreakerManager
from synapse_core.clock import Clock
from synapse_core.transport.auth import MessageAuthenticator
from synapse_core.transport.base import Transport
from synapse_core.transport.errors import (
    DeliveryError,
    DeliveryTimeoutError,
    FrameError,
    FrameTooLargeError,
    MessageDecodeError,
    MessageRejectedError,
    PeerUnknownError,
    TransportClosedError,
)
from synapse_core.transport.framing import (
    DEFAULT_MAX_FRAME_SIZE,
    MIN_FRAME_LENGTH,
    FrameDecoder,
    FrameKind,
    decode_nack,
    encode_frame,
    encode_nack,
)
from synapse_core.transport.message import Message

logger = logging.getLogger("synapse_core.transport")

Address = tuple[str, int]
_READ_SIZE = 64 * 1024
_STOP_GRACE = 1.0  # seconds given to inbound handlers to finish after their sockets close


def parse_address(text: str) -> Address:
    """``"host:port"`` or ``"[v6]:port"`` as ``(host, port)``; ``ValueError`` otherwise."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"expected 'host:port', got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    port = int(port_text)
    if not 0 < port < 65536:
        raise ValueError(f"port must be 1-65535, got {port}")
    return host, port


def check_port(port: object, what: str = "port") -> int:
    """*port* if it is an int 1-65535; ``ValueError`` naming *what* otherwise."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError(f"{what} must be an int 1-65535, got {port!r}")
    return port


class _ConnectionLost(Exception):
    """Internal: an outbound connection ended before the reply came."""


class _NotSent(_ConnectionLost):
    """Internal: the connection was dead before a single byte of the request reached the kernel.

    The peer cannot have seen the request, so sending it again on another connection cannot
    deliver it twice.
    """


def _readable_now(fd: int) -> bool:
    """Whether *fd* has something to read (data, end of stream or an error), without waiting."""
    if fd < 0:
        return True
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(0))
    readable, _, _ = select.select([fd], [], [], 0)  # pragma: no cover - platforms without poll
    return bool(readable)


class _Connection:
    """One outbound connection: writes request frames, matches replies to them by ``seq``."""

    __slots__ = (
        "_pending",
        "_reader",
        "_seq",
        "_writer",
        "address",
        "closed",
        "reason",
        "requests",
        "task",
        "timed_out",
    )

    def __init__(
        self,
        address: Address,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        max_frame_size: int,
    ) -> None:
        self.address = address
        self._reader = reader
        self._writer = writer
        # seq -> future resolved with (kind, body), or with the reason string when lost.
        self._pending: dict[int, asyncio.Future[tuple[FrameKind, bytes] | str]] = {}
        self._seq = itertools.count(1)
        self.closed = False
        self.reason = ""
        # Closed because a request got no reply in time: the requests still waiting on it
        # got none either, so they end as timeouts too (not as plain connection failures).
        self.timed_out = False
        self.requests = 0  # written so far: more than 0 means the connection is being reused
        self.task = asyncio.get_running_loop().create_task(self._read_loop(max_frame_size))

    def usable(self) -> bool:
        """Whether a request may be written now; closes the connection if it turns out dead.

        The peer may have closed (say, after its ``idle_timeout``) or reset an idle pooled
        connection without our reader having run since: the end of stream is then waiting in
        the socket. The peer never sends anything unprompted, so an idle connection with
        something to read is one to give up on (at worst a late reply to a cancelled request,
        which costs a reconnection).
        """
        if self.closed:
            return False
        transport = self._writer.transport
        dead = transport.is_closing() or self._reader.at_eof()
        if not dead and not self._pending:
            sock = self._writer.get_extra_info("socket")
            dead = sock is None or _readable_now(sock.fileno())
        if dead:
            self.close("closed or reset by the peer")
        return not dead

    async def request(
        self, kind: FrameKind, body: bytes, limit: float, target: str, max_frame_size: int
    ) -> tuple[FrameKind, bytes]:
        """Send one request frame and wait up to *limit* seconds for its reply.

        Raises ``_NotSent`` when not a byte of the frame left this host (the connection was
        closed first, or the kernel refused the very first write), ``_ConnectionLost`` when the
        connection ended after the frame went out (the peer may or may not have processed it).
        """
        if self.closed:
            if self.timed_out:
                raise DeliveryTimeoutError(target, "ack", limit)
            raise _NotSent(self.reason)
        transport = self._writer.transport
        if transport.is_closing():
            self.close("closed or reset by the peer")
            raise _NotSent(self.reason)
        seq = next(self._seq) & 0xFFFFFFFF
        frame = encode_frame(kind, seq, body, max_frame_size)
        self.requests += 1
        self._writer.write(frame)
        if transport.is_closing():
            # write() sends at once when nothing is queued, and a send that fails there closes
            # the transport before returning: the kernel took none of these bytes.
            self.close("connection lost at the first write")
            raise _NotSent(self.reason)
        future: asyncio.Future[tuple[FrameKind, bytes] | str]
        future = asyncio.get_running_loop().create_future()
        self._pending[seq] = future
        try:
            async with asyncio.timeout(limit):
                await self._writer.drain()
                reply = await future
        except TimeoutError:
            self.close(f"no reply within {limit:g}s", timed_out=True)
            raise DeliveryTimeoutError(target, "ack", limit) from None
        except (ConnectionError, OSError) as exc:
            self.close(f"connection lost: {exc}")
            raise _ConnectionLost(self.reason) from None
        finally:
            self._pending.pop(seq, None)
        if isinstance(reply, str):
            if self.timed_out:
                # Another request on this connection timed out and closed it while this one
                # was still waiting for its reply: just as unanswered, so a timeout as well.
                raise DeliveryTimeoutError(target, "ack", limit)
            raise _ConnectionLost(reply)
        return reply

    async def _read_loop(self, max_frame_size: int) -> None:
        decoder = FrameDecoder(max_frame_size)
        reason = "closed by the peer"
        try:
            while True:
                data = await self._reader.read(_READ_SIZE)
                if not data:
                    decoder.close()
                    break
                try:
                    frames = decoder.feed(data)
                except FrameError as exc:
                    self._resolve(exc.frames)  # replies that arrived whole still count
                    raise
                self._resolve(frames)
        except FrameError as exc:
            reason = f"protocol error from the peer: {exc}"
            logger.warning("closing connection to %s:%s: %s", *self.address, exc)
        except (ConnectionError, OSError) as exc:
            reason = f"connection lost: {exc}"
        finally:
            self.close(reason)

    def _resolve(self, frames: list[tuple[FrameKind, int, bytes]]) -> None:
        pending = self._pending
        for kind, seq, body in frames:
            if kind not in (FrameKind.ACK, FrameKind.NACK, FrameKind.PONG):
                raise FrameError(f"unexpected {kind.name} frame from a server")
            future = pending.pop(seq, None)
            if future is not None and not future.done():
                future.set_result((kind, body))

    def close(self, reason: str, *, timed_out: bool = False) -> None:
        """Close the socket and fail every request still waiting (idempotent).

        *timed_out*: closed because a request got no reply in time; the other waiting
        requests then raise ``DeliveryTimeoutError`` too.
        """
        if self.closed:
            return
        self.closed = True
        self.timed_out = timed_out
        self.reason = reason
        for future in self._pending.values():
            if not future.done():
                future.set_result(reason)
        self._pending.clear()
        _shut(self._writer)

    async def wait_closed(self) -> None:
        """Wait for the reader task and the socket to finish closing."""
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await self.task
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()


def _shut(writer: asyncio.StreamWriter) -> None:
    """Close *writer*'s socket now, dropping what a peer that stopped reading never took.

    A graceful close waits for the write buffer to drain first, which never happens when the
    peer stopped reading: the socket, its buffer and whoever waits for the close would hang.
    """
    transport = writer.transport
    if transport.get_write_buffer_size():
        transport.abort()
    else:
        writer.close()


def _close_opened_server(opening: asyncio.Future[asyncio.Server]) -> None:
    if not opening.cancelled() and opening.exception() is None:
        opening.result().close()


class TcpTransport(Transport):
    """Messages over TCP with length-prefixed frames, acknowledgements and per-peer breakers.

    ::

        async with TcpTransport("127.0.0.1", 0, node_id="a") as a, \\
                   TcpTransport("127.0.0.1", 0, node_id="b") as b:
            a.add_peer("b", *b.address)
            receipt = await a.send_message("b", Message("b", "a", b"hi"))
            [message] = await b.receive_messages()

    A target is a peer id added with :meth:`add_peer` (or given in *peers*), or a literal
    ``"host:port"``. The listener binds *host* (loopback by default); port 0 picks a free port,
    read back from :attr:`address`.

    Args:
        host, port: where to listen.
        node_id: this peer's id (default ``"host:port"`` as bound).
        peers: initial ``{peer_id: (host, port)}``.
        connect_timeout: seconds allowed to open a connection.
        send_timeout: seconds allowed from writing a frame to its acknowledgement.
        max_frame_size: the largest frame sent or accepted (default 1 MiB).
        max_connections: inbound connections served at once; more are closed on arrival.
        idle_timeout: seconds an inbound connection may stay silent between frames before it
            is closed, freeing its slot (``None``: no limit). A frame that has started must be
            complete within *send_timeout* (the sender gave up on it by then anyway), and a
            peer must take our replies within *send_timeout*; a connection that stalls like
            that is closed and counted in ``stats().protocol_errors``.

    The remaining keyword arguments are :class:`~synapse_core.transport.Transport`'s.
    """

    kind = "tcp"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        node_id: str | None = None,
        peers: Mapping[str, Address] | None = None,
        connect_timeout: float = 2.0,
        send_timeout: float = 5.0,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        max_connections: int = 256,
        idle_timeout: float | None = 30.0,
        authenticator: MessageAuthenticator | None = None,
        breaker_config: CircuitBreakerConfig | None = None,
        breaker_manager: CircuitBreakerManager | None = None,
        clock: Clock | None = None,
        inbound_queue_size: int = 1024,
    ) -> None:
        if connect_timeout <= 0 or send_timeout <= 0:
            raise ValueError("connect_timeout and send_timeout must be > 0 seconds")
        if idle_timeout is not None and idle_timeout <= 0:
            raise ValueError(f"idle_timeout must be > 0 seconds or None, got {idle_timeout}")
        if max_frame_size < MIN_FRAME_LENGTH + 1:
            raise ValueError(f"max_frame_size must be > {MIN_FRAME_LENGTH}, got {max_frame_size}")
        if max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {max_connections}")
        self._auto_id = node_id is None
        super().__init__(
            node_id if node_id is not None else f"{host}:{port}",
            breaker_config=breaker_config,
            breaker_manager=breaker_manager,
            clock=clock,
            authenticator=authenticator,
            inbound_queue_size=inbound_queue_size,
        )
        self._host = host
        self._port = port
        self._bound: Address | None = None
        self.connect_timeout = float(connect_timeout)
        self.send_timeout = float(send_timeout)
        self.max_frame_size = max_frame_size
        self.max_connections = max_connections
        self.idle_timeout = None if idle_timeout is None else float(idle_timeout)
        self._peers: dict[str, Address] = {}
        for peer_id, (peer_host, peer_port) in (peers or {}).items():
            self.add_peer(peer_id, peer_host, peer_port)
        self._server: asyncio.Server | None = None
        self._conns: dict[Address, _Connection] = {}
        self._connecting: dict[Address, asyncio.Task[_Connection]] = {}
        self._closing: set[_Connection] = set()
        self._handlers: dict[asyncio.StreamWriter, asyncio.Task[Any] | None] = {}

    # ------------------------------------------------------------------ addresses and peers

    @property
    def address(self) -> Address:
        """``(host, port)`` the listener is bound to (after ``start()``)."""
        if self._bound is None:
            raise TransportClosedError(f"{self!r} has no address before start()")
        return self._bound

    @property
    def capabilities(self) -> frozenset[str]:
        caps = {"tcp", "framed", "acknowledged", "unicast", "pooled-connections"}
        if self._authenticator is not None:
            caps.add("authenticated")
        return frozenset(caps)

    @property
    def peers(self) -> dict[str, Address]:
        """The statically known peers, ``{peer_id: (host, port)}`` (a copy)."""
        return dict(self._peers)

    def add_peer(self, peer_id: str, host: str, port: int) -> None:
        """Make *peer_id* addressable at ``host:port`` (replacing an earlier address)."""
        if not isinstance(peer_id, str) or not peer_id:
            raise TypeError(f"peer_id must be a non-empty str, got {peer_id!r}")
        self._peers[peer_id] = (host, check_port(port))

    def remove_peer(self, peer_id: str) -> None:
        """Forget *peer_id*, its breaker and its metrics (no error if unknown)."""
        address = self._peers.pop(peer_id, None)
        self._forget_peer(peer_id)
        if address is not None:
            self._drop_connection(address, f"peer {peer_id!r} removed")

    def resolve(self, target: str) -> Address:
        """The ``(host, port)`` a send to *target* goes to; ``PeerUnknownError`` if none."""
        address = self._peers.get(target)
        if address is not None:
            return address
        try:
            return parse_address(target)
        except ValueError:
            raise PeerUnknownError(
                target, "add it with add_peer(peer_id, host, port) or send to 'host:port'"
            ) from None

    def _check_target(self, target: str) -> None:
        self.resolve(target)

    # ------------------------------------------------------------------ lifecycle

    async def _start(self) -> None:
        opening = asyncio.ensure_future(asyncio.start_server(self._serve, self._host, self._port))
        try:
            self._server = await asyncio.shield(opening)
        except asyncio.CancelledError:
            # start_server yields once more after binding: cancelled there, it would leave a
            # listener nobody holds. Let it finish and close what it opened.
            opening.add_done_callback(_close_opened_server)
            raise
        sockname = self._server.sockets[0].getsockname()
        self._bound = (str(sockname[0]), int(sockname[1]))
        if self._auto_id:
            self.node_id = f"{self._bound[0]}:{self._bound[1]}"

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in self._connecting.values():
            task.cancel()
        connecting = list(self._connecting.values())
        conns = [*self._conns.values(), *self._closing]
        for conn in conns:
            conn.close("transport stopped")
        for writer in self._handlers:
            _shut(writer)
        await asyncio.gather(*connecting, return_exceptions=True)
        await asyncio.gather(*(conn.wait_closed() for conn in conns))
        handlers = [task for task in self._handlers.values() if task is not None]
        if handlers:
            _, stuck = await asyncio.wait(handlers, timeout=_STOP_GRACE)
            for task in stuck:
                task.cancel()
            await asyncio.gather(*stuck, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
        self._conns.clear()
        self._closing.clear()

    # ------------------------------------------------------------------ outbound

    def _encode(self, message: Message) -> bytes:
        data = message.to_bytes()
        if len(data) + MIN_FRAME_LENGTH > self.max_frame_size:
            raise FrameTooLargeError(len(data) + MIN_FRAME_LENGTH, self.max_frame_size)
        return data

    async def _transmit(self, target: str, message: Message, data: bytes) -> None:
        kind, body = await self._request(target, FrameKind.MESSAGE, data)
        if kind is FrameKind.NACK:
            code, reason = decode_nack(body)
            raise MessageRejectedError(target, code, reason)
        if kind is not FrameKind.ACK:
            raise DeliveryError(target, f"the peer answered a message with {kind.name}")

    async def _probe(self, target: str) -> None:
        nonce = os.urandom(8)
        kind, body = await self._request(target, FrameKind.PING, nonce)
        if kind is not FrameKind.PONG or body != nonce:
            raise DeliveryError(target, f"bad answer to a ping ({kind.name})")

    async def _request(self, target: str, kind: FrameKind, body: bytes) -> tuple[FrameKind, bytes]:
        address = self.resolve(target)
        conn = await self._connection(target, address)
        reused = conn.requests > 0
        try:
            try:
                return await conn.request(
                    kind, body, self.send_timeout, target, self.max_frame_size
                )
            except _NotSent:
                if not reused or self._state != "running":
                    raise
                # A reused connection the peer had already given up on (its idle_timeout, a
                # reset): the peer never saw this request, so once more on a fresh connection.
                # A new connection that fails like this is the peer's failure, not a stale one.
                logger.debug("%s: %s:%s was dead before the send; reconnecting", self, *address)
            conn = await self._connection(target, address)
            return await conn.request(kind, body, self.send_timeout, target, self.max_frame_size)
        except _ConnectionLost as exc:
            if self._state != "running":
                raise TransportClosedError(f"{self!r} stopped during the send") from None
            raise DeliveryError(target, str(exc) or "connection closed") from None

    async def _connection(self, target: str, address: Address) -> _Connection:
        conn = self._conns.get(address)
        if conn is not None and conn.usable():
            return conn
        task = self._connecting.get(address)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._open(address))
            self._connecting[address] = task
            task.add_done_callback(partial(self._connect_done, address))
        try:
            # Concurrent senders share one connection attempt; shield it from their cancellation.
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if task.cancelled() and (current is None or current.cancelling() == 0):
                # The attempt itself was cancelled (stop() does that), not this sender.
                if self._state != "running":
                    raise TransportClosedError(f"{self!r} stopped while connecting") from None
                raise DeliveryError(
                    target, f"connecting to {address[0]}:{address[1]} was cancelled"
                ) from None
            raise
        except TimeoutError:
            raise DeliveryTimeoutError(target, "connect", self.connect_timeout) from None
        except OSError as exc:
            detail = exc.strerror or str(exc) or type(exc).__name__
            raise DeliveryError(
                target, f"cannot connect to {address[0]}:{address[1]}: {detail}"
            ) from None

    async def _open(self, address: Address) -> _Connection:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(*address), self.connect_timeout
        )
        if self._state != "running":
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            raise TransportClosedError(f"{self!r} stopped while connecting")
        conn = _Connection(address, reader, writer, self.max_frame_size)
        self._counters.connections_opened += 1
        conn.task.add_done_callback(partial(self._connection_ended, conn))
        old = self._conns.get(address)
        if old is not None:
            self._closing.add(old)
        self._conns[address] = conn
        return conn

    def _connect_done(self, address: Address, task: asyncio.Task[_Connection]) -> None:
        if self._connecting.get(address) is task:
            del self._connecting[address]
        if not task.cancelled():
            task.exception()  # retrieved here too, in case every waiter was cancelled

    def _connection_ended(self, conn: _Connection, _task: object) -> None:
        if self._conns.get(conn.address) is conn:
            del self._conns[conn.address]
        self._closing.discard(conn)

    def _drop_connection(self, address: Address, reason: str) -> None:
        conn = self._conns.get(address)
        if conn is not None:
            conn.close(reason)

    # ------------------------------------------------------------------ inbound

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        # Served while still starting: an mDNS peer is announced (and found) before its
        # start() returns, and the listener is ready by then.
        stopping = self._state != "running" and self._state != "starting"
        if stopping or len(self._handlers) >= self.max_connections:
            logger.warning(
                "%s: refusing a connection from %s (%s)",
                self,
                peer,
                "stopping" if stopping else f"{self.max_connections} open",
            )
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            return
        self._handlers[writer] = asyncio.current_task()
        self._counters.connections_accepted += 1
        try:
            await self._serve_frames(reader, writer, peer)
        finally:
            del self._handlers[writer]
            _shut(writer)
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve_frames(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: object
    ) -> None:
        decoder = FrameDecoder(self.max_frame_size)
        loop = asyncio.get_running_loop()
        frame_deadline: float | None = None  # when the frame under way must be complete
        try:
            while True:
                if decoder.pending:
                    if frame_deadline is None:
                        frame_deadline = loop.time() + self.send_timeout
                    limit: float | None = frame_deadline - loop.time()
                else:
                    frame_deadline = None
                    limit = self.idle_timeout
                try:
                    async with asyncio.timeout(limit):
                        data = await reader.read(_READ_SIZE)
                except TimeoutError:
                    self._stalled(peer, decoder.pending)
                    return
                if not data:
                    decoder.close()
                    return
                try:
                    frames = decoder.feed(data)
                except FrameError as exc:
                    # Answer what was whole before the garbage, then give up on the stream.
                    self._answer(exc.frames, writer)
                    if not await self._flush(writer, peer):
                        return
                    raise
                if frames:
                    frame_deadline = None  # progress: the next partial frame gets a fresh limit
                    self._answer(frames, writer)
                    if not await self._flush(writer, peer):
                        return
        except (FrameError, MessageDecodeError) as exc:
            self._counters.protocol_errors += 1
            logger.warning("%s: closing the connection from %s: %s", self, peer, exc)
        except (ConnectionError, OSError) as exc:
            logger.debug("%s: connection from %s lost: %s", self, peer, exc)

    async def _flush(self, writer: asyncio.StreamWriter, peer: object) -> bool:
        """Wait until the peer takes our replies; ``False`` (counted, logged) if it stalls."""
        try:
            async with asyncio.timeout(self.send_timeout):
                await writer.drain()
        except TimeoutError:
            self._counters.protocol_errors += 1
            logger.warning(
                "%s: closing the connection from %s: it did not read our replies within %gs",
                self,
                peer,
                self.send_timeout,
            )
            return False
        return True

    def _stalled(self, peer: object, pending: int) -> None:
        if pending:
            # Half a frame and then silence: a broken or hostile peer holding a slot.
            self._counters.protocol_errors += 1
            logger.warning(
                "%s: closing the connection from %s: a frame stayed incomplete for %gs "
                "(%d bytes received)",
                self,
                peer,
                self.send_timeout,
                pending,
            )
        else:
            logger.debug(
                "%s: closing the connection from %s: idle for %gs", self, peer, self.idle_timeout
            )

    def _answer(
        self, frames: list[tuple[FrameKind, int, bytes]], writer: asyncio.StreamWriter
    ) -> None:
        accept = self._accept_inbound
        for kind, seq, body in frames:
            if kind is FrameKind.MESSAGE:
                code = accept(Message.from_bytes(body), len(body))
                if code is None:
                    writer.write(encode_frame(FrameKind.ACK, seq))
                else:
                    nack = encode_nack(code, f"refused by {self.node_id}")
                    writer.write(encode_frame(FrameKind.NACK, seq, nack))
            elif kind is FrameKind.PING:
                writer.write(encode_frame(FrameKind.PONG, seq, body, self.max_frame_size))
            else:
                raise FrameError(f"unexpected {kind.name} frame from a client")
