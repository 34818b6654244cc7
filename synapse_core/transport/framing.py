"""Length-prefixed frames: the byte format of every transport connection.

A frame is::

    length   uint32, big endian: the number of bytes that follow (5 .. max_frame_size)
    kind     uint8:  1 MESSAGE, 2 ACK, 3 NACK, 4 PING, 5 PONG
    seq      uint32, big endian: chosen by the requester, echoed by the reply
    body     length - 5 bytes

``MESSAGE`` bodies are a wire-encoded :class:`~synapse_core.transport.Message`; the receiver
answers ``ACK`` (empty body) once the message is in its inbound queue, or ``NACK`` (body: one
reason-code byte, see :class:`NackCode`, then a UTF-8 reason). ``PING`` (any body) is
answered by ``PONG`` with the same body. A connection carries requests one way; replies may
come back in any order, matched by ``seq``.

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


class NackCode(IntEnum):
    """Why a peer refused a message (first byte of a ``NACK`` body)."""

    UNAUTHENTICATED = 1
    BUSY = 2

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


def encode_nack(code: NackCode, reason: str) -> bytes:
    """The body of a ``NACK`` frame."""
    return bytes([code]) + reason.encode("utf-8", "replace")[:200]


def decode_nack(body: bytes) -> tuple[str, str]:
    """``(code label, reason)`` from a ``NACK`` body; unknown codes are reported as numbers."""
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
