"""Message: defaults, normalisation, timestamps, pickling and copies, the version-1 wire encoding
and its strict decoder."""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import pickle
import uuid
from datetime import UTC, datetime, timedelta, timezone
from types import MappingProxyType

import pytest
from hypothesis import given
from hypothesis import strategies as st
from transport_support import msg

from synapse_core.transport import WIRE_VERSION, Message, MessageDecodeError, SecurityLevel


def _fields(message: Message) -> dict[str, object]:
    data: dict[str, object] = json.loads(message.to_bytes()[1:])
    return data


def _encode(fields: dict[str, object], version: int = WIRE_VERSION) -> bytes:
    return bytes([version]) + json.dumps(fields).encode()


def test_defaults() -> None:
    before = datetime.now(UTC)
    message = Message(to_global_id="b", from_global_id="a", content=b"hi")
    assert message.message_id.version == 4
    assert before <= message.timestamp <= datetime.now(UTC)
    assert message.timestamp.tzinfo is UTC
    assert message.signature == b""
    assert message.security_level is SecurityLevel.PUBLIC
    assert message.routing_path == ()
    assert dict(message.metadata) == {}
    assert Message("b", "a", b"") != Message("b", "a", b"")  # fresh ids


def test_normalisation_and_immutability() -> None:
    meta = {"k": "v"}
    message = Message(
        "b",
        "a",
        bytearray(b"x"),
        message_id=str(uuid.UUID(int=5)),  # type: ignore[arg-type]
        timestamp=datetime(2024, 1, 1, 2, tzinfo=timezone(timedelta(hours=2))),
        security_level="secure",  # type: ignore[arg-type]
        routing_path=["a", "hop"],  # type: ignore[arg-type]
        metadata=meta,
    )
    meta["k"] = "changed"
    assert message.content == b"x"
    assert type(message.content) is bytes
    assert message.message_id == uuid.UUID(int=5)
    assert message.timestamp == datetime(2024, 1, 1, tzinfo=UTC)
    assert message.security_level is SecurityLevel.SECURE
    assert message.routing_path == ("a", "hop")
    assert message.metadata["k"] == "v"
    with pytest.raises(TypeError):
        message.metadata["k"] = "x"  # type: ignore[index]
    with pytest.raises(AttributeError):
        message.content = b"y"  # type: ignore[misc]
    assert hash(message) == hash(message.message_id)
    assert message.replace(content=b"z").message_id == message.message_id


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"to_global_id": ""}, "to_global_id"),
        ({"from_global_id": 3}, "from_global_id"),
        ({"content": "text"}, "content"),
        ({"signature": None}, "signature"),
        ({"message_id": 7}, "message_id"),
        ({"timestamp": datetime(2024, 1, 1)}, "timezone-aware"),
        ({"routing_path": "a,b"}, "routing_path"),
        ({"routing_path": [1]}, "routing_path"),
        ({"metadata": {"k": 1}}, "metadata"),
    ],
)
def test_bad_fields_are_refused(changes: dict[str, object], match: str) -> None:
    fields: dict[str, object] = {"to_global_id": "b", "from_global_id": "a", "content": b""}
    fields.update(changes)
    with pytest.raises(TypeError, match=match):
        Message(**fields)  # type: ignore[arg-type]


def test_wire_format_is_documented_json_after_a_version_byte() -> None:
    message = Message(
        "b",
        "a",
        b"\x00\xff",
        message_id=uuid.UUID(int=1),
        signature=b"sig",
        timestamp=datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC),
        routing_path=("a",),
        metadata={"trace": "t1"},
    )
    raw = message.to_bytes()
    assert raw[0] == 1
    assert raw[1:].isascii()
    assert _fields(message) == {
        "id": "00000000-0000-0000-0000-000000000001",
        "to": "b",
        "from": "a",
        "content": base64.b64encode(b"\x00\xff").decode(),
        "signature": base64.b64encode(b"sig").decode(),
        "timestamp": "2024-05-06T07:08:09.123456Z",
        "security_level": "public",
        "routing_path": ["a"],
        "metadata": {"trace": "t1"},
    }
    assert b" " not in raw  # compact
    assert list(json.loads(raw[1:])) == sorted(json.loads(raw[1:]))  # keys sorted
    assert b'"signature"' not in message.signing_bytes()
    assert message.signing_bytes() == message.replace(signature=b"other").signing_bytes()
    assert Message.from_bytes(raw) == message


def _valid_fields() -> dict[str, object]:
    return _fields(Message("b", "a", b"x"))


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda f: f.pop("to"), "missing"),
        (lambda f: f.update(extra=1), "unknown"),
        (lambda f: f.update(to=""), "'to'"),
        (lambda f: f.update(content="%%%"), "base64"),
        (lambda f: f.update(content=5), "base64"),
        (lambda f: f.update(id="not-a-uuid"), "UUID"),
        (lambda f: f.update(id=str(uuid.UUID(int=0xABC)).upper()), "canonical"),
        (lambda f: f.update(id=1), "UUID"),
        (lambda f: f.update(timestamp="2024-01-01T00:00:00+00:00"), "timestamp"),
        (lambda f: f.update(timestamp="2024-01-01T00:00:00Z"), "timestamp"),
        (lambda f: f.update(timestamp="2024-13-01T00:00:00.000000Z"), "timestamp"),
        (lambda f: f.update(security_level="top-secret"), "invalid message field"),
        (lambda f: f.update(routing_path="a"), "routing_path"),
        (lambda f: f.update(metadata={"a": 1}), "metadata"),
        (lambda f: f.update(metadata=[]), "metadata"),
    ],
)
def test_decoder_rejects_bad_fields(mutate: object, match: str) -> None:
    fields = _valid_fields()
    mutate(fields)  # type: ignore[operator]
    with pytest.raises(MessageDecodeError, match=match):
        Message.from_bytes(_encode(fields))


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b"", "empty"),
        (b"\x02{}", "unsupported wire version 2"),
        (b"\x01{not json", "not valid UTF-8 JSON"),
        (b"\x01\xff\xfe", "not valid UTF-8 JSON"),
        (b"\x01[1, 2]", "JSON object"),
        (b"\x01" + b"[" * 100_000, "JSON"),
    ],
)
def test_decoder_rejects_garbage(raw: bytes, match: str) -> None:
    with pytest.raises(MessageDecodeError, match=match):
        Message.from_bytes(raw)


_text = st.text(min_size=1, max_size=30)
messages = st.builds(
    Message,
    to_global_id=_text,
    from_global_id=_text,
    content=st.binary(max_size=200),
    message_id=st.uuids(),
    signature=st.binary(max_size=40),
    timestamp=st.datetimes(
        min_value=datetime(1970, 1, 2), max_value=datetime(2999, 1, 1), timezones=st.just(UTC)
    ),
    security_level=st.sampled_from(SecurityLevel),
    routing_path=st.lists(st.text(max_size=10), max_size=4).map(tuple),
    metadata=st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=4),
)


@given(messages)
def test_round_trip(message: Message) -> None:
    raw = message.to_bytes()
    decoded = Message.from_bytes(raw)
    assert decoded == message
    assert decoded.to_bytes() == raw  # exactly one encoding per message


@given(st.binary(max_size=300))
def test_decoder_fuzz_raises_only_decode_errors(raw: bytes) -> None:
    with contextlib.suppress(MessageDecodeError):
        Message.from_bytes(raw)


@given(messages, st.integers(min_value=0), st.integers(min_value=0, max_value=255))
def test_decoder_fuzz_on_corrupted_messages(message: Message, where: int, byte: int) -> None:
    raw = bytearray(message.to_bytes())
    raw[where % len(raw)] = byte
    try:
        decoded = Message.from_bytes(bytes(raw))
    except MessageDecodeError:
        return
    assert isinstance(decoded, Message)


@pytest.mark.parametrize(
    "timestamp",
    [
        "2024-01-01T00:00:00.0+0100Z",  # an offset hidden in the fraction
        "2024-01-01T00:00:00.00000 Z",
        "2024-01-01T00:00:00.-00000Z",
        "2024-01-01T00:00:00.00000\u0661Z",  # a non-ASCII digit
        "2024-01-0\u0661T00:00:00.000000Z",
    ],
)
def test_non_canonical_timestamps_are_refused(timestamp: str) -> None:
    fields = json.loads(msg().to_bytes()[1:])
    fields["timestamp"] = timestamp
    raw = b"\x01" + json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
    with pytest.raises(MessageDecodeError, match="timestamp"):
        Message.from_bytes(raw)


def test_a_canonical_timestamp_round_trips() -> None:
    message = msg().replace(timestamp=datetime(2024, 1, 1, 12, 30, 5, 123456, tzinfo=UTC))
    assert Message.from_bytes(message.to_bytes()) == message


def _full_message() -> Message:
    return Message(
        "b",
        "a",
        b"\x00payload",
        signature=b"sig",
        timestamp=datetime(2024, 5, 1, 12, 30, tzinfo=timezone(timedelta(hours=2))),
        security_level=SecurityLevel.SECURE,
        routing_path=("x", "y"),
        metadata={"k": "v", "é": "\n"},
    )


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_a_message_pickles_to_an_equal_message(protocol: int) -> None:
    for message in (_full_message(), Message.from_bytes(_full_message().to_bytes())):
        restored = pickle.loads(pickle.dumps(message, protocol))
        assert restored == message
        assert restored.to_bytes() == message.to_bytes()
        assert isinstance(restored.metadata, MappingProxyType)
        with pytest.raises(TypeError):
            restored.metadata["k"] = "changed"  # type: ignore[index]


def test_a_message_copies_to_an_equal_read_only_message() -> None:
    message = _full_message()
    for duplicate in (copy.deepcopy(message), copy.copy(message), copy.deepcopy([message])[0]):
        assert duplicate == message
        assert duplicate.to_bytes() == message.to_bytes()
        with pytest.raises(TypeError):
            duplicate.metadata["k"] = "changed"  # type: ignore[index]
    assert message.metadata == {"k": "v", "é": "\n"}


@pytest.mark.parametrize(
    "timestamp",
    [
        datetime.min.replace(tzinfo=timezone(timedelta(hours=1))),
        datetime.max.replace(tzinfo=timezone(timedelta(hours=-1))),
    ],
)
def test_a_timestamp_outside_the_utc_calendar_is_a_value_error(timestamp: datetime) -> None:
    with pytest.raises(ValueError, match="timestamp"):
        Message("b", "a", b"", timestamp=timestamp)
    assert Message("b", "a", b"", timestamp=datetime.min.replace(tzinfo=UTC)).timestamp.year == 1
