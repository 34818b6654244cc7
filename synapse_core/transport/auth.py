"""Message authentication with a shared key: HMAC-SHA256 in ``Message.signature``.

Give every peer the same :class:`MessageAuthenticator` key (``TcpTransport(...,
authenticator=MessageAuthenticator(key))``): outgoing messages are signed, and an inbound message
whose signature does not verify is refused with a ``NACK`` (the sender gets
:class:`~synapse_core.transport.MessageRejectedError`) and counted in ``transport.stats()``.

The signature is ``HMAC-SHA256(key, b"synapse-message-v1\\x00" + message.signing_bytes())``:
it covers every field (ids, content, timestamp, security level, routing path, metadata). With
``max_age`` set, messages whose timestamp is further than that from now are refused, and a
message id seen within the window is refused as a replay.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from uuid import UUID

from synapse_core.clock import to_seconds
from synapse_core.transport.errors import AuthenticationError
from synapse_core.transport.message import Message, SecurityLevel

_DOMAIN = b"synapse-message-v1\x00"
MIN_KEY_BYTES = 16
"""Shorter keys are refused: HMAC is only as strong as its key."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


class MessageAuthenticator:
    """Signs and verifies messages with HMAC-SHA256 and a shared secret *key*.

    Args:
        key: the shared secret, at least 16 bytes (a ``str`` is UTF-8 encoded).
        max_age: optional freshness limit (seconds or ``timedelta``): a message timestamped
            more than this before or after now is refused, and a repeated message id inside the
            window is refused as a replay (the last ``replay_cache_size`` ids are remembered).
        wall_clock: returns the current UTC time; inject a fixed clock in tests.
        replay_cache_size: how many recent message ids to remember for replay detection.

    ``sign`` returns a signed copy (``PUBLIC`` becomes ``AUTHENTICATED``; other levels are
    kept). ``verify`` raises :class:`~synapse_core.transport.AuthenticationError` saying why.
    """

    def __init__(
        self,
        key: bytes | str,
        *,
        max_age: float | timedelta | None = None,
        wall_clock: Callable[[], datetime] = _utcnow,
        replay_cache_size: int = 10_000,
    ) -> None:
        raw = key.encode("utf-8") if isinstance(key, str) else bytes(key)
        if len(raw) < MIN_KEY_BYTES:
            raise ValueError(
                f"the key must be at least {MIN_KEY_BYTES} bytes, got {len(raw)}; "
                "use secrets.token_bytes(32)"
            )
        self._key = raw
        self.max_age = None if max_age is None else to_seconds(max_age, "max_age")
        if self.max_age is not None and self.max_age <= 0:
            raise ValueError(f"max_age must be > 0 seconds, got {self.max_age}")
        if replay_cache_size < 1:
            raise ValueError(f"replay_cache_size must be >= 1, got {replay_cache_size}")
        self._wall_clock = wall_clock
        self._replay_cache_size = replay_cache_size
        self._seen: dict[UUID, datetime] = {}

    def __repr__(self) -> str:
        # Never show the key.
        return f"MessageAuthenticator(max_age={self.max_age!r})"

    def signature_for(self, message: Message) -> bytes:
        """The 32-byte signature *message* should carry."""
        return hmac.new(self._key, _DOMAIN + message.signing_bytes(), hashlib.sha256).digest()

    def sign(self, message: Message) -> Message:
        """A copy of *message* carrying its signature."""
        level = message.security_level
        if level is SecurityLevel.PUBLIC:
            level = SecurityLevel.AUTHENTICATED
            message = message.replace(security_level=level)
        return message.replace(signature=self.signature_for(message))

    def verify(self, message: Message) -> None:
        """Raise ``AuthenticationError`` unless *message* is correctly signed (and fresh).

        With ``max_age`` set, an accepted message's id is remembered, so the same message is
        refused as a replay next time. That is :meth:`check` followed by :meth:`remember`; a
        receiver that may still turn the message away for another reason (a full queue, say)
        calls the two separately and remembers only what it kept.
        """
        self.check(message)
        self.remember(message)

    def check(self, message: Message) -> None:
        """Like :meth:`verify`, but without remembering the message id (nothing changes)."""
        if not message.signature:
            raise AuthenticationError(f"message {message.message_id} is not signed")
        if not hmac.compare_digest(message.signature, self.signature_for(message)):
            raise AuthenticationError(
                f"message {message.message_id} has a bad signature (wrong key or tampered)"
            )
        if self.max_age is not None:
            self._check_fresh(message)

    def remember(self, message: Message) -> None:
        """Record *message*'s id so that it is refused as a replay within ``max_age``.

        Call it once the message was accepted (after :meth:`check`); without ``max_age`` it
        does nothing.
        """
        if self.max_age is None:
            return
        seen = self._seen
        seen[message.message_id] = message.timestamp
        if len(seen) > self._replay_cache_size:
            del seen[next(iter(seen))]

    def is_valid(self, message: Message) -> bool:
        """Whether :meth:`verify` accepts *message* (a replay check counts as a use)."""
        try:
            self.verify(message)
        except AuthenticationError:
            return False
        return True

    def _check_fresh(self, message: Message) -> None:
        assert self.max_age is not None
        now = self._wall_clock()
        window = timedelta(seconds=self.max_age)
        age = now - message.timestamp
        if age > window or -age > window:
            raise AuthenticationError(
                f"message {message.message_id} is {age.total_seconds():.3f}s old, outside "
                f"max_age={self.max_age:g}s (check the peers' clocks)"
            )
        seen = self._seen
        oldest_kept = now - window
        # Ids arrive roughly in timestamp order: drop expired ones from the front.
        while seen:
            first = next(iter(seen))
            if seen[first] >= oldest_kept:
                break
            del seen[first]
        if message.message_id in seen:
            raise AuthenticationError(f"message {message.message_id} was already received (replay)")
