"""Length-prefixed frames: the byte format of every transport connection.

A frame is::

    length   uint32, big endian: the number of bytes that follow (5 .. max_frame_size)
    kind     uint8:  1 MESSAGE, 2 ACK, 3 NACK, 4 PING, 5 PONG, 6 GOAWAY
    seq      uint32, big endian: chosen by the requester, echoed by the reply
    body     length - 5 bytes

``MESSAGE`` bodies are a wire-encoded :class:`~synapse_core.transport.Message`; the receiver
answers ``ACK`` once the message is in its inbound queue (or was already delivered), or
``NACK`` (body: one reason-code byte, see :class:`NackCode`, then a UTF-8 reason). ``PING``
(any body) is answered by ``PONG`` with the same body. A connection carries requests one way;
replies may come back in any order, matched by ``seq``.

Signed replies (a receiver with an authenticator): an ``ACK`` body is ``0x01`` followed by a
32-byte tag (an unsigned ``ACK`` has an empty body), a ``NACK`` body is the code, the reason,
``0x00`` and a 32-byte tag (reasons never contain ``0x00``). The tag is
:meth:`~synapse_core.transport.MessageAuthenticator.reply_tag` of everything before it. A peer
that predates signed replies ignores an ``ACK`` body, and shows a signed ``NACK``'s tag as part
of its reason.

``GOAWAY`` (server to client, ``seq`` 0, body: a UTF-8 reason) says the server is closing the
connection and processed none of the requests it has not answered yet: their senders may send
them again on a new connection without risking a duplicate. The server half-closes after it
and reads (and drops) whatever still arrives until the client closes. A peer that predates
``GOAWAY`` treats it as an unknown kind and closes the connection, which was closing anyway.

A receiver that sees a length over its ``max_frame_size``, a length under 5, an unknown kind,
or a connection that ends inside a frame, closes the connection: the stream can no longer be
trusted.
"""

from __future__ import annotations

import struct
from enum import IntEnum

from synapse_core.transport.errors import FrameError, FrameTooLargeError

DEFAULT_MAX_FRAME_SIZE = 1024 * 1024
"""1 MiB: the default limit on a frame (length field value)."""

_PREFIX = struct.Struct(">I")
_HEAD = struct.Struct(">IBI")  # length, kind, seq
HEADER_SIZE = _HEAD.size
"""Bytes before the body: length (4), kind (1), seq (4)."""
MIN_FRAME_LENGTH = HEADER_SIZE - _PREFIX.size
"""The smallest valid length field: kind and seq with an empty body."""


class FrameKind(IntEnum):
    """What a frame carries."""

    MESSAGE = 1
    ACK = 2
    NACK = 3
    PING = 4
    PONG = 5
    GOAWAY = 6


class NackCode(IntEnum):
    """Why a peer refused a message (first byte of a ``NACK`` body)."""

    UNAUTHENTICATED = 1
    BUSY = 2
    MISADDRESSED = 3

    @property
    def label(self) -> str:
        """The lower-case name used in errors and stats."""
        return self.name.lower()


_KINDS = {kind.value: kind for kind in FrameKind}


def encode_frame(
    kind: FrameKind, seq: int, body: bytes = b"", max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
) -> bytes:
    """One frame as bytes; raise ``FrameTooLargeError`` if it would exceed *max_frame_size*."""
    length = MIN_FRAME_LENGTH + len(body)
    if length > max_frame_size:
        raise FrameTooLargeError(length, max_frame_size)
    return _HEAD.pack(length, kind, seq & 0xFFFFFFFF) + body


TAG_SIZE = 32
"""Bytes of a reply's signature tag (HMAC-SHA256)."""
_SIGNED_ACK = b"\x01"
_TAG_MARK = b"\x00"


def encode_ack(tag: bytes | None = None) -> bytes:
    """The body of an ``ACK`` frame: empty, or ``0x01`` and the signature *tag*."""
    return b"" if tag is None else _SIGNED_ACK + tag


def ack_signed_part() -> bytes:
    """What the tag of a signed ``ACK`` covers (besides the message's signature)."""
    return _SIGNED_ACK


def encode_nack_unsigned(code: NackCode, reason: str) -> bytes:
    """Code and reason of a ``NACK`` body, ending with the mark a tag follows when signed.

    Without a tag, drop the last byte (:func:`encode_nack` does).
    """
    text = reason.replace("\x00", " ").encode("utf-8", "replace")[:200]
    return bytes([code]) + text + _TAG_MARK


def encode_nack(code: NackCode, reason: str, tag: bytes | None = None) -> bytes:
    """The body of a ``NACK`` frame; with *tag*, a signed one (see the module docstring)."""
    signed_part = encode_nack_unsigned(code, reason)
    return signed_part[:-1] if tag is None else signed_part + tag


def split_reply(kind: FrameKind, body: bytes) -> tuple[bytes, bytes | None]:
    """``(signed part, tag)`` of an ``ACK`` or ``NACK`` body; the tag is ``None`` if unsigned."""
    if kind is FrameKind.ACK:
        if len(body) == 1 + TAG_SIZE and body[:1] == _SIGNED_ACK:
            return body[:1], body[1:]
        return body, None
    if len(body) >= 2 + TAG_SIZE and body[-TAG_SIZE - 1] == 0:
        return body[:-TAG_SIZE], body[-TAG_SIZE:]
    return body, None


def decode_nack(body: bytes) -> tuple[str, str]:
    """``(code label, reason)`` from a ``NACK`` body (signed or not); unknown codes as numbers."""
    signed_part, tag = split_reply(FrameKind.NACK, body)
    if tag is not None:
        body = signed_part[:-1]
    if not body:
        return "unknown", ""
    try:
        code = NackCode(body[0]).label
    except ValueError:
        code = f"code-{body[0]}"
    return code, body[1:].decode("utf-8", "replace")


class FrameDecoder:
    """Incremental decoder: feed bytes as they arrive, get whole frames back.

    ``feed`` returns ``(kind, seq, body)`` tuples for every frame completed by the new bytes
    and keeps any incomplete tail. A protocol violation raises :class:`FrameError` (or
    ``FrameTooLargeError``), whose ``frames`` holds the whole frames that came before it in
    the same chunk, and leaves the decoder failed: every later ``feed`` raises too, so a
    caller cannot accidentally resynchronise on garbage. At end of stream call :meth:`close`,
    which raises ``FrameError`` if a frame was cut off.
    """

    __slots__ = ("_buffer", "_failed", "max_frame_size")

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        if max_frame_size < MIN_FRAME_LENGTH:
            raise ValueError(f"max_frame_size must be >= {MIN_FRAME_LENGTH}, got {max_frame_size}")
        self.max_frame_size = max_frame_size
        self._buffer = bytearray()
        self._failed: FrameError | None = None

    @property
    def pending(self) -> int:
        """Bytes received that do not yet form a whole frame."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[tuple[FrameKind, int, bytes]]:
        """Add *data*; return the frames it completes, in order."""
        if self._failed is not None:
            raise FrameError(f"the stream already failed: {self._failed}")
        buffer = self._buffer
        buffer += data
        frames: list[tuple[FrameKind, int, bytes]] = []
        offset = 0
        available = len(buffer)
        try:
            while available - offset >= HEADER_SIZE:
                length, kind_value, seq = _HEAD.unpack_from(buffer, offset)
                if length > self.max_frame_size:
                    raise FrameTooLargeError(length, self.max_frame_size)
                if length < MIN_FRAME_LENGTH:
                    raise FrameError(f"frame length {length} is below the minimum of 5")
                kind = _KINDS.get(kind_value)
                if kind is None:
                    raise FrameError(f"unknown frame kind {kind_value}")
                end = offset + _PREFIX.size + length
                if end > available:
                    break
                frames.append((kind, seq, bytes(buffer[offset + HEADER_SIZE : end])))
                offset = end
            if 0 < available - offset < HEADER_SIZE:
                # Judge a partial header as soon as its length field is complete, so an
                # oversized length is refused before its body is waited for.
                self._check_partial(buffer, offset, available)
        except FrameError as exc:
            self._failed = exc
            buffer.clear()
            exc.frames = frames
            raise
        if offset:
            del buffer[:offset]
        return frames

    def _check_partial(self, buffer: bytearray, offset: int, available: int) -> None:
        if available - offset >= _PREFIX.size:
            (length,) = _PREFIX.unpack_from(buffer, offset)
            if length > self.max_frame_size:
                raise FrameTooLargeError(length, self.max_frame_size)
            if length < MIN_FRAME_LENGTH:
                raise FrameError(f"frame length {length} is below the minimum of 5")
        if available - offset > _PREFIX.size and buffer[offset + _PREFIX.size] not in _KINDS:
            raise FrameError(f"unknown frame kind {buffer[offset + _PREFIX.size]}")

    def close(self) -> None:
        """Declare end of stream; raise ``FrameError`` if a frame was left incomplete."""
        if self._failed is None and self._buffer:
            pending = len(self._buffer)
            self._buffer.clear()
            self._failed = FrameError(f"connection ended inside a frame ({pending} bytes pending)")
            raise self._failed
