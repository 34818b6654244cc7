"""The message every transport carries, and its versioned wire encoding.

Wire encoding, version 1 (``WIRE_VERSION``)::

    byte 0      the version, 0x01
    bytes 1..   a UTF-8 JSON object with exactly these keys:
      "id"              message_id, the canonical UUID string (lower case, with dashes)
      "to", "from"      to_global_id, from_global_id (non-empty strings)
      "content"         the content bytes, standard base64 with padding
      "signature"       the signature bytes, standard base64 ("" when unsigned)
      "timestamp"       UTC, exactly "YYYY-MM-DDTHH:MM:SS.ffffffZ"
      "security_level"  "public" | "private" | "authenticated" | "secure"
      "routing_path"    a list of strings
      "metadata"        an object of string values

The encoder writes keys sorted, no whitespace and ASCII only (``\\uXXXX`` escapes), so one
message has exactly one encoding. The *signing bytes* are that same encoding without the
``"signature"`` key; an HMAC (see :mod:`synapse_core.transport.auth`) covers them. The decoder
rejects unknown versions, missing or unknown keys, wrong types and non-canonical timestamps or
ids with :class:`~synapse_core.transport.MessageDecodeError`; a later version gets a new
version byte rather than new keys.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import re
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from synapse_core.transport.errors import MessageDecodeError

WIRE_VERSION = 1
"""The version byte written by :meth:`Message.to_bytes`."""

_VERSION_BYTE = bytes([WIRE_VERSION])
_KEYS = frozenset(
    (
        "id",
        "to",
        "from",
        "content",
        "signature",
        "timestamp",
        "security_level",
        "routing_path",
        "metadata",
    )
)


class SecurityLevel(StrEnum):
    """How a message is protected, as the original Synapse design names the levels.

    ``AUTHENTICATED`` messages carry an HMAC signature. ``PRIVATE`` and ``SECURE`` are labels
    carried for the application: this release signs but does not encrypt content.
    """

    PUBLIC = "public"
    PRIVATE = "private"
    AUTHENTICATED = "authenticated"
    SECURE = "secure"


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _format_timestamp(ts: datetime) -> str:
    if ts.tzinfo is not UTC:
        ts = ts.astimezone(UTC)
    return ts.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


@dataclasses.dataclass(frozen=True, slots=True)
class Message:
    """A message from one peer (``from_global_id``) to another (``to_global_id``).

    Only the ids and ``content`` are needed::

        Message(to_global_id="node-b", from_global_id="node-a", content=b"hello")

    ``message_id`` defaults to a new UUID4, ``timestamp`` to now (UTC, timezone-aware),
    ``signature`` to ``b""``, ``security_level`` to ``PUBLIC``, ``routing_path`` and
    ``metadata`` to empty. Values are normalised on construction: ``content`` may be any
    bytes-like object, ``security_level`` a string, ``routing_path`` any sequence of strings,
    and ``metadata`` (string keys and values) is stored as a read-only copy. Messages are
    immutable; :meth:`replace` returns a modified copy. Two messages are equal when every field
    is; the hash is the ``message_id``'s. A field of the wrong type raises ``TypeError``; a
    value out of range (a ``message_id`` string that is no UUID, an unknown security level, a
    timestamp outside the years 1-9999 once in UTC) raises ``ValueError``. Messages pickle and
    copy (``copy.deepcopy``) to an equal message.
    """

    to_global_id: str
    from_global_id: str
    content: bytes
    message_id: uuid.UUID = dataclasses.field(default_factory=uuid.uuid4)
    signature: bytes = b""
    timestamp: datetime = dataclasses.field(default_factory=_utcnow)
    security_level: SecurityLevel = SecurityLevel.PUBLIC
    routing_path: tuple[str, ...] = ()
    metadata: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("to_global_id", "from_global_id"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise TypeError(f"{name} must be a non-empty str, got {value!r}")
        for name in ("content", "signature"):
            value = getattr(self, name)
            if not isinstance(value, bytes | bytearray | memoryview):
                raise TypeError(f"{name} must be bytes, got {type(value).__name__}")
            object.__setattr__(self, name, bytes(value))
        message_id: object = self.message_id
        if isinstance(message_id, str):
            object.__setattr__(self, "message_id", uuid.UUID(message_id))
        elif not isinstance(message_id, uuid.UUID):
            raise TypeError(f"message_id must be a uuid.UUID, got {message_id!r}")
        ts: object = self.timestamp
        if not isinstance(ts, datetime) or ts.tzinfo is None or ts.utcoffset() is None:
            raise TypeError(f"timestamp must be a timezone-aware datetime, got {ts!r}")
        try:
            utc = ts.astimezone(UTC)
        except OverflowError:  # datetime.min at +01:00 is before year 1 in UTC
            raise ValueError(f"timestamp {ts!r} is outside the years 1-9999 in UTC") from None
        object.__setattr__(self, "timestamp", utc)
        object.__setattr__(self, "security_level", SecurityLevel(self.security_level))
        path: object = self.routing_path
        if isinstance(path, str | bytes) or not isinstance(path, Iterable):
            raise TypeError(f"routing_path must be a sequence of str, got {path!r}")
        hops = tuple(path)
        if not all(isinstance(hop, str) for hop in hops):
            raise TypeError(f"routing_path must be a sequence of str, got {path!r}")
        object.__setattr__(self, "routing_path", hops)
        meta: object = self.metadata
        if not isinstance(meta, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in meta.items()
        ):
            raise TypeError(f"metadata must map str to str, got {meta!r}")
        object.__setattr__(self, "metadata", MappingProxyType(dict(meta)))

    def __hash__(self) -> int:
        return hash(self.message_id)

    # The read-only metadata view (MappingProxyType) cannot be pickled, and the dataclass'
    # slot-state pickling would hand it over as is: rebuild through the constructor instead,
    # which wraps a plain copy again.
    def __reduce__(self) -> tuple[Any, tuple[object, ...]]:
        return (
            type(self),
            (
                self.to_global_id,
                self.from_global_id,
                self.content,
                self.message_id,
                self.signature,
                self.timestamp,
                self.security_level,
                self.routing_path,
                dict(self.metadata),
            ),
        )

    # Every field is immutable (metadata is a view nobody else can write through), so a copy
    # may be the message itself, as for a tuple of strings.
    def __copy__(self) -> Message:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> Message:
        return self

    def replace(self, **changes: Any) -> Message:
        """A copy with *changes* applied (``message.replace(signature=b"...")``)."""
        return dataclasses.replace(self, **changes)

    def _evolve(self, **changes: Any) -> Message:
        """Like :meth:`replace` for values already in their normal form, without re-checking
        every field (signing is on the path of every authenticated send)."""
        copy = object.__new__(Message)
        setattr_ = object.__setattr__
        for name in _FIELD_NAMES:
            setattr_(copy, name, changes[name] if name in changes else getattr(self, name))
        return copy

    # ------------------------------------------------------------------ wire encoding

    def _fields(self) -> dict[str, object]:
        return {
            "id": str(self.message_id),
            "to": self.to_global_id,
            "from": self.from_global_id,
            "content": base64.b64encode(self.content).decode("ascii"),
            "timestamp": _format_timestamp(self.timestamp),
            "security_level": self.security_level.value,
            "routing_path": list(self.routing_path),
            "metadata": dict(self.metadata),
        }

    @staticmethod
    def _dump(fields: dict[str, object]) -> bytes:
        text = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return _VERSION_BYTE + text.encode("ascii")

    def to_bytes(self) -> bytes:
        """The version-1 wire encoding (see the module docstring)."""
        fields = self._fields()
        fields["signature"] = base64.b64encode(self.signature).decode("ascii")
        return self._dump(fields)

    def signing_bytes(self) -> bytes:
        """The bytes a signature covers: the wire encoding without the ``signature`` key."""
        return self._dump(self._fields())

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> Message:
        """Decode a wire-encoded message; raise ``MessageDecodeError`` saying what is wrong."""
        raw = bytes(data)
        if not raw:
            raise MessageDecodeError("empty message")
        if raw[0] != WIRE_VERSION:
            raise MessageDecodeError(
                f"unsupported wire version {raw[0]} (this peer speaks version {WIRE_VERSION})"
            )
        try:
            obj = json.loads(raw[1:].decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise MessageDecodeError(f"message is not valid UTF-8 JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise MessageDecodeError(f"message must be a JSON object, got {type(obj).__name__}")
        keys = set(obj)
        if keys != _KEYS:
            missing = sorted(_KEYS - keys)
            unknown = sorted(keys - _KEYS)
            raise MessageDecodeError(f"bad message keys (missing {missing}, unknown {unknown})")
        try:
            level = SecurityLevel(_text(obj, "security_level"))
        except ValueError as exc:
            raise MessageDecodeError(f"invalid message field: {exc}") from None
        # Every field is validated above and below, so skip __post_init__'s checks (the hot
        # path of every received message).
        message = object.__new__(cls)
        setattr_ = object.__setattr__
        setattr_(message, "to_global_id", _text(obj, "to"))
        setattr_(message, "from_global_id", _text(obj, "from"))
        setattr_(message, "content", _b64(obj, "content"))
        setattr_(message, "message_id", _uuid(obj["id"]))
        setattr_(message, "signature", _b64(obj, "signature"))
        setattr_(message, "timestamp", _timestamp(obj["timestamp"]))
        setattr_(message, "security_level", level)
        setattr_(message, "routing_path", _string_list(obj["routing_path"]))
        setattr_(message, "metadata", MappingProxyType(_string_map(obj["metadata"])))
        return message


_FIELD_NAMES = tuple(field.name for field in dataclasses.fields(Message))


def _text(obj: dict[str, Any], key: str) -> str:
    value = obj[key]
    if not isinstance(value, str) or not value:
        raise MessageDecodeError(f"{key!r} must be a non-empty string, got {value!r}")
    return value


def _b64(obj: dict[str, Any], key: str) -> bytes:
    value = obj[key]
    if not isinstance(value, str):
        raise MessageDecodeError(f"{key!r} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise MessageDecodeError(f"{key!r} is not valid base64") from None


def _uuid(value: object) -> uuid.UUID:
    if not isinstance(value, str):
        raise MessageDecodeError(f"'id' must be a UUID string, got {value!r}")
    try:
        parsed = uuid.UUID(value)
    except ValueError:
        raise MessageDecodeError(f"'id' is not a UUID: {value!r}") from None
    if str(parsed) != value:
        raise MessageDecodeError(f"'id' must be a canonical lower-case UUID, got {value!r}")
    return parsed


_CANONICAL_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z", re.ASCII)


def _timestamp(value: object) -> datetime:
    # The canonical form only: "YYYY-MM-DDTHH:MM:SS.ffffffZ" (every digit an ASCII digit, so
    # nothing like an offset can hide in the fraction), then parsed in C.
    if not isinstance(value, str) or _CANONICAL_TIMESTAMP.fullmatch(value) is None:
        raise MessageDecodeError(
            f"'timestamp' must be 'YYYY-MM-DDTHH:MM:SS.ffffffZ', got {value!r}"
        )
    try:
        return datetime.fromisoformat(value[:26]).replace(tzinfo=UTC)
    except ValueError:
        raise MessageDecodeError(f"'timestamp' is not a valid time: {value!r}") from None


def _string_list(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise MessageDecodeError("'routing_path' must be a list of strings")
    return tuple(value)


def _string_map(value: object) -> dict[str, str]:
    # JSON object keys are always strings; only the values need checking.
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise MessageDecodeError("'metadata' must be an object of string values")
    return value
