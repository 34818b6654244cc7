"""TCP transport: a listener plus pooled client connections speaking the frame protocol.

See :mod:`synapse_core.transport.framing` for the bytes. Each peer address gets one reused
outbound connection; requests on it are pipelined and replies matched by sequence number, so
concurrent sends to one peer do not wait for each other. A connection that timed out is closed
(its stream position is unknown) and the next send reconnects. A pooled connection the peer
closed while it sat idle is noticed before it is written to; a send that could not hand a byte
to a reused connection goes once more on a new one (the peer never saw it: no duplicate), and so
does a send the peer's ``GOAWAY`` says it never processed (its idle close crossed the send).

The listener closes connections idle for ``idle_timeout`` and, when ``max_connections`` (or a
source's ``max_connections_per_source``) are taken, makes room for a newcomer by closing the
least useful connection: one that never delivered a message before one that did, the longest
unused first. Either way it says ``GOAWAY`` first.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
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
from synapse_core.transport.base import (
    DEFAULT_DEDUP_WINDOW,
    DEFAULT_INBOUND_QUEUE_BYTES,
    DEFAULT_TARGET_CACHE_SIZE,
    Transport,
)
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
    NackCode,
    ack_signed_part,
    decode_nack,
    encode_ack,
    encode_frame,
    encode_nack,
    encode_nack_unsigned,
    split_reply,
)
from synapse_core.transport.message import Message

logger = logging.getLogger("synapse_core.transport")

Address = tuple[str, int]
_READ_SIZE = 64 * 1024
_STOP_GRACE = 1.0  # seconds given to inbound handlers to finish after their sockets close
# After a GOAWAY, how long the server keeps reading (and dropping) what the client still sends,
# waiting for it to close: closing with unread bytes would reset the connection, and a reset can
# destroy the GOAWAY before the client reads it.
_LINGER = 1.0


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


def _is_wildcard(host: str) -> bool:
    """Whether *host* is a wildcard address (``0.0.0.0``, ``::``)."""
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


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


class _NotProcessed(_NotSent):
    """Internal: the peer said ``GOAWAY`` before answering the request: it did not process it."""


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
        "goaway",
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
        # The peer said GOAWAY: it processed none of the requests it had not answered.
        self.goaway = False
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
                raise DeliveryTimeoutError(target, "ack", limit, maybe_delivered=False)
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
            if self.goaway:
                raise _NotProcessed(self.reason) from None
            raise _ConnectionLost(self.reason) from None
        finally:
            self._pending.pop(seq, None)
        if isinstance(reply, str):
            if self.timed_out:
                # Another request on this connection timed out and closed it while this one
                # was still waiting for its reply: just as unanswered, so a timeout as well.
                raise DeliveryTimeoutError(target, "ack", limit)
            if self.goaway:
                raise _NotProcessed(reply)
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
            if kind is FrameKind.GOAWAY:
                # Every reply the server wrote came before this: what is still pending was
                # never processed, and may go again on a new connection.
                self.goaway = True
                why = body.decode("utf-8", "replace") or "no reason given"
                self.close(f"the peer closed the connection ({why})")
                return
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
        max_connections: inbound connections served at once. When they are all taken, a
            newcomer is served and the least useful connection is closed (``GOAWAY``): one
            that never delivered a message before one that did, then the longest unused.
        max_connections_per_source: inbound connections from one source address at once
            (default half of *max_connections*); a source at its limit makes room among
            its own connections the same way, never among other sources'.
        idle_timeout: seconds an inbound connection may stay silent between frames before it
            is closed (``GOAWAY``), freeing its slot (``None``: no limit). A frame that has
            started must be complete within *send_timeout* (the sender gave up on it by then
            anyway), and a peer must take our replies within *send_timeout*; a connection that
            stalls like that is closed and counted in ``stats().protocol_errors``.

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
        max_connections_per_source: int | None = None,
        idle_timeout: float | None = 30.0,
        authenticator: MessageAuthenticator | None = None,
        breaker_config: CircuitBreakerConfig | None = None,
        breaker_manager: CircuitBreakerManager | None = None,
        clock: Clock | None = None,
        inbound_queue_size: int = 1024,
        inbound_queue_bytes: int = DEFAULT_INBOUND_QUEUE_BYTES,
        dedup_window: int = DEFAULT_DEDUP_WINDOW,
        target_cache_size: int = DEFAULT_TARGET_CACHE_SIZE,
    ) -> None:
        if connect_timeout <= 0 or send_timeout <= 0:
            raise ValueError("connect_timeout and send_timeout must be > 0 seconds")
        if idle_timeout is not None and idle_timeout <= 0:
            raise ValueError(f"idle_timeout must be > 0 seconds or None, got {idle_timeout}")
        if max_frame_size < MIN_FRAME_LENGTH + 1:
            raise ValueError(f"max_frame_size must be > {MIN_FRAME_LENGTH}, got {max_frame_size}")
        if max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {max_connections}")
        if max_connections_per_source is None:
            max_connections_per_source = max(1, max_connections // 2)
        if not 1 <= max_connections_per_source <= max_connections:
            raise ValueError(
                "max_connections_per_source must be 1 .. max_connections "
                f"({max_connections}), got {max_connections_per_source}"
            )
        self._auto_id = node_id is None
        super().__init__(
            node_id if node_id is not None else f"{host}:{port}",
            breaker_config=breaker_config,
            breaker_manager=breaker_manager,
            clock=clock,
            authenticator=authenticator,
            inbound_queue_size=inbound_queue_size,
            inbound_queue_bytes=inbound_queue_bytes,
            dedup_window=dedup_window,
            target_cache_size=target_cache_size,
        )
        self._host = host
        self._port = port
        self._bound: Address | None = None
        self.connect_timeout = float(connect_timeout)
        self.send_timeout = float(send_timeout)
        self.max_frame_size = max_frame_size
        self.max_connections = max_connections
        self.max_connections_per_source = max_connections_per_source
        self.idle_timeout = None if idle_timeout is None else float(idle_timeout)
        self._peers: dict[str, Address] = {}
        for peer_id, (peer_host, peer_port) in (peers or {}).items():
            self.add_peer(peer_id, peer_host, peer_port)
        self._server: asyncio.Server | None = None
        self._conns: dict[Address, _Connection] = {}
        self._connecting: dict[Address, asyncio.Task[_Connection]] = {}
        self._closing: set[_Connection] = set()
        self._handlers: dict[asyncio.StreamWriter, _Inbound] = {}

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
        self._now_pinned(peer_id)

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

    def _pinned(self, target: str) -> bool:
        return target in self._peers

    def _target_forgotten(self, target: str) -> None:
        try:
            address = parse_address(target)
        except ValueError:
            return
        if address not in self._peers.values():
            self._drop_connection(address, f"target {target!r} forgotten")

    def _addressed_to_me(self, to_global_id: str) -> bool:
        if to_global_id == self.node_id or self._bound is None:
            return to_global_id == self.node_id
        # Our address as a literal target ("host:port") names us too. Bound to a wildcard
        # ("0.0.0.0"), we cannot tell our own addresses from another host's: the port decides.
        try:
            host, port = parse_address(to_global_id)
        except ValueError:
            return False
        bound_host, bound_port = self._bound
        if port != bound_port:
            return False
        return host == bound_host or _is_wildcard(bound_host)

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
        for inbound in self._handlers.values():
            # GOAWAY first: the senders then know which of their requests we never processed.
            inbound.go_away("the peer is stopping")
            _shut(inbound.writer)
        await asyncio.gather(*connecting, return_exceptions=True)
        await asyncio.gather(*(conn.wait_closed() for conn in conns))
        handlers = [inbound.task for inbound in self._handlers.values()]
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
        auth = self._authenticator
        if kind is FrameKind.ACK:
            if auth is not None and not auth.reply_is_valid(
                kind, message, *split_reply(kind, body)
            ):
                # A receipt must prove that a holder of the key queued the message. Discovery
                # is not authenticated: anyone can announce a peer's id and take its messages.
                raise DeliveryError(
                    target,
                    "its acknowledgement is not signed with our key: it does not hold the key "
                    "(or has no authenticator), or is not the peer it claims to be",
                )
            return
        if kind is FrameKind.NACK:
            code, reason = decode_nack(body)
            verified = auth is not None and auth.reply_is_valid(
                kind, message, *split_reply(kind, body)
            )
            raise MessageRejectedError(target, code, reason, verified=verified)
        raise DeliveryError(target, f"the peer answered a message with {kind.name}")

    async def _probe(self, target: str) -> None:
        nonce = os.urandom(8)
        kind, body = await self._request(target, FrameKind.PING, nonce)
        if kind is not FrameKind.PONG or body != nonce:
            raise DeliveryError(target, f"bad answer to a ping ({kind.name})")

    async def _request(self, target: str, kind: FrameKind, body: bytes) -> tuple[FrameKind, bytes]:
        address = self.resolve(target)
        retried = False
        while True:
            conn = await self._connection(target, address)
            reused = conn.requests > 0
            try:
                return await conn.request(
                    kind, body, self.send_timeout, target, self.max_frame_size
                )
            except _ConnectionLost as exc:
                if self._state != "running":
                    raise TransportClosedError(f"{self!r} stopped during the send") from None
                reason = str(exc) or "connection closed"
                if not isinstance(exc, _NotSent):
                    raise DeliveryError(target, reason) from None
                if retried or not (reused or isinstance(exc, _NotProcessed)):
                    # A new connection that fails before the send is the peer's failure.
                    raise DeliveryError(target, reason, maybe_delivered=False) from None
                # The peer never processed this request: a reused connection it had given up on
                # (its idle_timeout, a reset), or its GOAWAY crossed the send (an idle close,
                # an eviction). Once more on a fresh connection; no duplicate is possible.
                retried = True
                logger.debug("%s: %s:%s: %s; sending again", self, *address, reason)

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
                    target,
                    f"connecting to {address[0]}:{address[1]} was cancelled",
                    maybe_delivered=False,
                ) from None
            raise
        except TimeoutError:
            raise DeliveryTimeoutError(target, "connect", self.connect_timeout) from None
        except OSError as exc:
            detail = exc.strerror or str(exc) or type(exc).__name__
            raise DeliveryError(
                target,
                f"cannot connect to {address[0]}:{address[1]}: {detail}",
                maybe_delivered=False,
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
        if self._state != "running" and self._state != "starting":
            logger.warning("%s: refusing a connection from %s (stopping)", self, peer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            return
        task = asyncio.current_task()
        assert task is not None
        source = str(peer[0]) if isinstance(peer, tuple) and peer else str(peer)
        self._make_room(source, peer)
        inbound = _Inbound(writer, task, source, asyncio.get_running_loop().time())
        self._handlers[writer] = inbound
        self._counters.connections_accepted += 1
        try:
            await self._serve_frames(reader, inbound, peer)
        finally:
            del self._handlers[writer]
            _shut(writer)
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _make_room(self, source: str, peer: object) -> None:
        """Before serving a newcomer from *source*: close the least useful connection if full.

        A source at ``max_connections_per_source`` loses one of its own connections; otherwise,
        with ``max_connections`` served, the least useful of all goes. Never the newcomer: a
        listener full of idle or hostile connections must not lock a real peer out.
        """
        handlers = self._handlers.values()
        active = [inbound for inbound in handlers if inbound.goaway is None]
        same = [inbound for inbound in active if inbound.source == source]
        if len(same) >= self.max_connections_per_source:
            victim = min(same, key=_Inbound.usefulness)
            why = f"{source} has {len(same)} connections, its limit"
        elif len(active) >= self.max_connections:
            victim = min(active, key=_Inbound.usefulness)
            why = f"{len(active)} connections served, the limit"
        else:
            victim = None
            why = ""
        if victim is not None:
            self._counters.connections_evicted += 1
            logger.info(
                "%s: closing the least useful connection (from %s) for one from %s: %s",
                self,
                victim.source,
                peer,
                why,
            )
            victim.evict("closed to make room for a new connection")
        closing = len(self._handlers) - len(active)
        if closing >= self.max_connections:
            # Connections lingering after their GOAWAY are bounded too (an eviction storm).
            oldest = min(
                (inbound for inbound in handlers if inbound.goaway is not None),
                key=lambda inbound: inbound.opened,
            )
            oldest.writer.transport.abort()

    async def _serve_frames(
        self, reader: asyncio.StreamReader, inbound: _Inbound, peer: object
    ) -> None:
        writer = inbound.writer
        decoder = FrameDecoder(self.max_frame_size)
        loop = asyncio.get_running_loop()
        frame_deadline: float | None = None  # when the frame under way must be complete
        try:
            while True:
                if inbound.goaway is not None:
                    await self._go_away(reader, inbound, peer)
                    return
                if decoder.pending:
                    if frame_deadline is None:
                        frame_deadline = loop.time() + self.send_timeout
                    limit: float | None = frame_deadline - loop.time()
                else:
                    frame_deadline = None
                    limit = self.idle_timeout
                try:
                    async with asyncio.timeout(limit) as deadline:
                        inbound.deadline = deadline
                        try:
                            data = await reader.read(_READ_SIZE)
                        finally:
                            inbound.deadline = None
                except TimeoutError:
                    if not inbound.closing():
                        if decoder.pending:
                            self._stalled(peer, decoder.pending)
                            return
                        inbound.goaway = f"idle for {self.idle_timeout:g}s"
                    continue
                if inbound.closing():
                    continue  # decided while these bytes came: never processed
                if not data:
                    decoder.close()
                    return
                try:
                    frames = decoder.feed(data)
                except FrameError as exc:
                    # Answer what was whole before the garbage, then give up on the stream.
                    self._answer(exc.frames, inbound)
                    if not await self._flush(writer, peer):
                        return
                    raise
                if frames:
                    frame_deadline = None  # progress: the next partial frame gets a fresh limit
                    self._answer(frames, inbound)
                    if not await self._flush(writer, peer):
                        return
        except (FrameError, MessageDecodeError) as exc:
            self._counters.protocol_errors += 1
            logger.warning("%s: closing the connection from %s: %s", self, peer, exc)
        except (ConnectionError, OSError) as exc:
            logger.debug("%s: connection from %s lost: %s", self, peer, exc)

    async def _go_away(self, reader: asyncio.StreamReader, inbound: _Inbound, peer: object) -> None:
        """Say GOAWAY, half-close, and drop what still arrives until the client closes."""
        logger.debug("%s: closing the connection from %s: %s", self, peer, inbound.goaway)
        inbound.go_away(inbound.goaway or "closing")
        if self._state != "running" and self._state != "starting":
            return  # stop() closes the socket; nobody waits for the client
        with contextlib.suppress(TimeoutError, ConnectionError, OSError):
            async with asyncio.timeout(min(_LINGER, self.send_timeout)):
                while await reader.read(_READ_SIZE):
                    pass

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

    def _answer(self, frames: list[tuple[FrameKind, int, bytes]], inbound: _Inbound) -> None:
        accept = self._accept_inbound
        auth = self._authenticator
        writer = inbound.writer
        delivered = False
        for kind, seq, body in frames:
            if kind is FrameKind.MESSAGE:
                message = Message.from_bytes(body)
                code = accept(message, len(body))
                if code is None:
                    delivered = True
                    tag = None
                    if auth is not None:
                        tag = auth.reply_tag(FrameKind.ACK, message, ack_signed_part())
                    writer.write(encode_frame(FrameKind.ACK, seq, encode_ack(tag)))
                else:
                    reason = self._refusal(code, message)
                    if auth is None:
                        nack = encode_nack(code, reason)
                    else:
                        nack = encode_nack_unsigned(code, reason)
                        nack += auth.reply_tag(FrameKind.NACK, message, nack)
                    writer.write(encode_frame(FrameKind.NACK, seq, nack))
            elif kind is FrameKind.PING:
                writer.write(encode_frame(FrameKind.PONG, seq, body, self.max_frame_size))
            else:
                raise FrameError(f"unexpected {kind.name} frame from a client")
        if delivered:
            inbound.delivered()

    def _refusal(self, code: NackCode, message: Message) -> str:
        if code is NackCode.MISADDRESSED:
            return f"this is {self.node_id!r}, not {message.to_global_id!r}"
        if code is NackCode.BUSY:
            return f"the inbound queue of {self.node_id!r} is full"
        return f"refused by {self.node_id!r}"


class _Inbound:
    """One inbound connection as the listener sees it: its source, use, and closing state."""

    __slots__ = (
        "deadline",
        "goaway",
        "last_delivery",
        "opened",
        "said_goaway",
        "source",
        "task",
        "writer",
    )

    def __init__(
        self, writer: asyncio.StreamWriter, task: asyncio.Task[Any], source: str, opened: float
    ) -> None:
        self.writer = writer
        self.task = task
        self.source = source
        self.opened = opened
        self.last_delivery: float | None = None  # when a message on it was last acknowledged
        self.deadline: asyncio.Timeout | None = None  # the read under way, if any
        self.goaway: str | None = None  # why the server is closing it (no frame processed since)
        self.said_goaway = False

    def usefulness(self) -> tuple[bool, float]:
        """Sort key: lowest is least useful (never delivered, then longest unused)."""
        if self.last_delivery is None:
            return (False, self.opened)
        return (True, self.last_delivery)

    def closing(self) -> bool:
        """Whether the server decided to close it (it then processes nothing more)."""
        return self.goaway is not None

    def delivered(self) -> None:
        self.last_delivery = asyncio.get_running_loop().time()

    def evict(self, reason: str) -> None:
        """Make the handler say GOAWAY and close, as soon as it is back in its loop."""
        if self.goaway is None:
            self.goaway = reason
        deadline = self.deadline
        if deadline is not None and not deadline.expired():
            deadline.reschedule(asyncio.get_running_loop().time())  # wake the read now

    def go_away(self, reason: str) -> None:
        """Write GOAWAY (once) and half-close; nothing is processed on this connection after."""
        if self.goaway is None:
            self.goaway = reason
        if self.said_goaway:
            return
        self.said_goaway = True
        writer = self.writer
        if writer.transport.is_closing():
            return
        with contextlib.suppress(Exception):
            writer.write(encode_frame(FrameKind.GOAWAY, 0, reason.encode("utf-8")[:200]))
            if writer.can_write_eof():
                writer.write_eof()
