"""The frame format and the incremental decoder, including a Hypothesis fuzz of the decoder."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from synapse_core.transport import (
    FrameDecoder,
    FrameError,
    FrameKind,
    FrameTooLargeError,
    NackCode,
    encode_frame,
)
from synapse_core.transport.framing import decode_nack, encode_nack


def test_layout() -> None:
    frame = encode_frame(FrameKind.MESSAGE, 7, b"body")
    assert frame == struct.pack(">IBI", 9, 1, 7) + b"body"
    assert encode_frame(FrameKind.ACK, 2**32 + 3) == struct.pack(">IBI", 5, 2, 3)


def test_encoder_enforces_the_limit() -> None:
    encode_frame(FrameKind.MESSAGE, 1, b"x" * 5, max_frame_size=10)
    with pytest.raises(FrameTooLargeError) as info:
        encode_frame(FrameKind.MESSAGE, 1, b"x" * 6, max_frame_size=10)
    assert (info.value.size, info.value.limit) == (11, 10)
    assert "max_frame_size" in str(info.value)


def test_decoder_reassembles_byte_by_byte() -> None:
    stream = encode_frame(FrameKind.PING, 1, b"abc") + encode_frame(FrameKind.PONG, 2)
    decoder = FrameDecoder()
    frames = []
    for i in range(len(stream)):
        frames += decoder.feed(stream[i : i + 1])
    assert frames == [(FrameKind.PING, 1, b"abc"), (FrameKind.PONG, 2, b"")]
    assert decoder.pending == 0
    decoder.close()


def test_oversized_length_is_refused_before_the_body_arrives() -> None:
    decoder = FrameDecoder(max_frame_size=100)
    with pytest.raises(FrameTooLargeError):
        decoder.feed(struct.pack(">I", 101))
    with pytest.raises(FrameError, match="already failed"):
        decoder.feed(encode_frame(FrameKind.ACK, 1))  # no resynchronising on garbage


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (struct.pack(">I", 4), "below the minimum"),
        (struct.pack(">IBI", 5, 9, 0), "unknown frame kind 9"),
        (struct.pack(">IB", 5, 0), "unknown frame kind 0"),
        (b"GET / HTTP/1.1\r\n", "exceeds the maximum"),
    ],
)
def test_garbage_is_refused(data: bytes, match: str) -> None:
    with pytest.raises(FrameError, match=match):
        FrameDecoder().feed(data)


def test_truncated_frame_is_reported_at_close() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(encode_frame(FrameKind.MESSAGE, 1, b"abcdef")[:-2]) == []
    assert decoder.pending == 13
    with pytest.raises(FrameError, match="ended inside a frame"):
        decoder.close()


def test_decoder_limit_must_fit_a_header() -> None:
    with pytest.raises(ValueError, match="max_frame_size"):
        FrameDecoder(max_frame_size=4)


def test_nack_body() -> None:
    assert decode_nack(encode_nack(NackCode.BUSY, "queue full")) == ("busy", "queue full")
    assert decode_nack(b"\x09why") == ("code-9", "why")
    assert decode_nack(b"") == ("unknown", "")
    assert len(encode_nack(NackCode.UNAUTHENTICATED, "x" * 1000)) == 201


frames = st.lists(
    st.tuples(
        st.sampled_from(FrameKind),
        st.integers(min_value=0, max_value=2**32 - 1),
        st.binary(max_size=64),
    ),
    max_size=8,
)


@given(frames, st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=20))
def test_any_chunking_yields_the_same_frames(
    sent: list[tuple[FrameKind, int, bytes]], cuts: list[int]
) -> None:
    stream = b"".join(encode_frame(kind, seq, body) for kind, seq, body in sent)
    decoder = FrameDecoder(max_frame_size=128)
    received: list[tuple[FrameKind, int, bytes]] = []
    offset = 0
    i = 0
    while offset < len(stream):
        size = cuts[i % len(cuts)]
        received += decoder.feed(stream[offset : offset + size])
        offset += size
        i += 1
    decoder.close()
    assert received == sent


@given(st.lists(st.binary(max_size=50), max_size=10))
def test_fuzz_decoder_never_fails_otherwise(chunks: list[bytes]) -> None:
    decoder = FrameDecoder(max_frame_size=64)
    try:
        for chunk in chunks:
            for kind, seq, body in decoder.feed(chunk):
                assert isinstance(kind, FrameKind)
                assert 0 <= seq < 2**32
                assert len(body) <= 64 - 5
        decoder.close()
    except FrameError:
        pass


def test_frames_before_garbage_are_handed_back_with_the_error() -> None:
    good = encode_frame(FrameKind.PING, 1, b"a") + encode_frame(FrameKind.PING, 2)
    with pytest.raises(FrameError) as info:
        FrameDecoder().feed(good + b"\xff" * 9)
    assert info.value.frames == [(FrameKind.PING, 1, b"a"), (FrameKind.PING, 2, b"")]
