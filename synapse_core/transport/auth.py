"""Message authentication with a shared key: HMAC-SHA256 in ``Message.signature``.

Give every peer the same :class:`MessageAuthenticator` key (``TcpTransport(...,
authenticator=MessageAuthenticator(key))``): outgoing messages are signed, and an inbound message
whose signature does not verify is refused with a ``NACK`` (the sender gets
:class:`~synapse_core.transport.MessageRejectedError`) and counted in ``transport.stats()``.
Replies are signed too: a receipt proves that a holder of the key queued the message.

The signature is ``HMAC-SHA256(key, b"synapse-message-v1\\x00" + message.signing_bytes())``:
it covers every field (ids, content, timestamp, security level, routing path, metadata). A
message whose timestamp is further than ``max_age`` (30 s by default) from now is refused, and
a message id accepted within that window is recognised when it comes again.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from uuid import UUID

from synapse_core.clock import to_seconds
from synapse_core.transport.errors import AuthenticationError
from synapse_core.transport.message import Message, SecurityLevel

_DOMAIN = b"synapse-message-v1\x00"
_REPLY_DOMAIN = b"synapse-reply-v1\x00"
MIN_KEY_BYTES = 16
"""Shorter keys are refused: HMAC is only as strong as its key."""
_MAX_AGE_LIMIT = 10**9  # seconds (about 31 years): timedelta and POSIX times stay in range
DEFAULT_MAX_AGE = 30.0
"""Seconds a message stays acceptable (and its id remembered) unless told otherwise."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


class _ExpiringIds:
    """Message ids, each forgotten at its own expiry time (POSIX seconds): no count limit.

    A heap orders the expiries, so an id with a late expiry never keeps earlier ones alive.
    """

    __slots__ = ("_expiry", "_heap")

    def __init__(self) -> None:
        self._expiry: dict[int, float] = {}
        self._heap: list[tuple[float, int]] = []

    def __len__(self) -> int:
        return len(self._expiry)

    def __contains__(self, key: int) -> bool:
        return key in self._expiry

    def add(self, key: int, expires: float) -> None:
        if self._expiry.get(key, -1.0) >= expires:
            return
        self._expiry[key] = expires
        heapq.heappush(self._heap, (expires, key))

    def prune(self, now: float) -> None:
        heap = self._heap
        expiry = self._expiry
        while heap and heap[0][0] < now:  # at exactly max_age a message is still fresh
            expires, key = heapq.heappop(heap)
            if expiry.get(key) == expires:
                del expiry[key]


class MessageAuthenticator:
    """Signs and verifies messages with HMAC-SHA256 and a shared secret *key*.

    Args:
        key: the shared secret, at least 16 bytes (a ``str`` is UTF-8 encoded).
        max_age: the freshness limit (seconds or ``timedelta``, default 30 s): a message
            timestamped more than this before or after now is refused, and the id of a message
            accepted within the window is remembered until the message is too old anyway, so
            a replay is recognised for exactly as long as it could otherwise be accepted. The
            memory is bounded by the age, not by a count: about 185 bytes per id, so
            ``rate x 2 x max_age`` ids at most (a timestamp may be ``max_age`` ahead of this
            clock). ``None`` turns freshness and replay checks off: a captured message is then
            valid forever (only a transport's de-duplication window still catches repeats).
        wall_clock: returns the current UTC time; inject a fixed clock in tests.

    ``sign`` returns a signed copy (``PUBLIC`` becomes ``AUTHENTICATED``; other levels are
    kept). ``verify`` raises :class:`~synapse_core.transport.AuthenticationError` saying why.
    ``reply_tag`` signs a receiver's ``ACK``/``NACK`` for a message.
    """

    def __init__(
        self,
        key: bytes | str,
        *,
        max_age: float | timedelta | None = DEFAULT_MAX_AGE,
        wall_clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        raw = key.encode("utf-8") if isinstance(key, str) else bytes(key)
        if len(raw) < MIN_KEY_BYTES:
            raise ValueError(
                f"the key must be at least {MIN_KEY_BYTES} bytes, got {len(raw)}; "
                "use secrets.token_bytes(32)"
            )
        self._key = raw
        self.max_age = None if max_age is None else to_seconds(max_age, "max_age")
        if self.max_age is not None and not 0 < self.max_age < _MAX_AGE_LIMIT:
            raise ValueError(f"max_age must be > 0 seconds and finite, got {self.max_age}")
        self._wall_clock = wall_clock
        self._seen = _ExpiringIds()

    def __repr__(self) -> str:
        # Never show the key.
        return f"MessageAuthenticator(max_age={self.max_age!r})"

    def signature_for(self, message: Message) -> bytes:
        """The 32-byte signature *message* should carry."""
        return hmac.new(self._key, _DOMAIN + message.signing_bytes(), hashlib.sha256).digest()

    def sign(self, message: Message) -> Message:
        """A copy of *message* carrying its signature."""
        if message.security_level is SecurityLevel.PUBLIC:
            message = message._evolve(security_level=SecurityLevel.AUTHENTICATED)
        return message._evolve(signature=self.signature_for(message))

    def verify(self, message: Message) -> None:
        """Raise ``AuthenticationError`` unless *message* is correctly signed (and fresh).

        With ``max_age`` set, an accepted message's id is remembered, so the same message is
        refused as a replay next time. That is :meth:`check` followed by :meth:`remember`; a
        receiver that may still turn the message away for another reason (a full queue, say)
        calls the two separately and remembers only what it kept.
        """
        self.check(message)
        self.remember(message)

    def check(self, message: Message, *, replay: bool = True) -> None:
        """Like :meth:`verify`, but without remembering the message id (nothing changes).

        ``replay=False`` checks the signature and freshness only; :meth:`seen` then says
        whether the message was accepted before (a transport answers such a repeat like the
        original, without delivering it twice).
        """
        if not message.signature:
            raise AuthenticationError(f"message {message.message_id} is not signed")
        if not hmac.compare_digest(message.signature, self.signature_for(message)):
            raise AuthenticationError(
                f"message {message.message_id} has a bad signature (wrong key or tampered)"
            )
        if self.max_age is not None:
            self._check_fresh(message)
            if replay and self.seen(message.message_id):
                raise AuthenticationError(
                    f"message {message.message_id} was already received (replay)"
                )

    def seen(self, message_id: UUID) -> bool:
        """Whether *message_id* was remembered and its message is not yet older than ``max_age``."""
        if self.max_age is None:
            return False
        self._seen.prune(self._wall_clock().timestamp())
        return message_id.int in self._seen

    def remember(self, message: Message) -> None:
        """Record *message*'s id so that it is refused as a replay within ``max_age``.

        Call it once the message was accepted (after :meth:`check`); without ``max_age`` it
        does nothing. The id is kept until the message's timestamp is ``max_age`` in the past.
        """
        if self.max_age is None:
            return
        self._seen.add(message.message_id.int, message.timestamp.timestamp() + self.max_age)

    @property
    def remembered(self) -> int:
        """How many message ids the replay check holds now (expired ones are dropped lazily)."""
        return len(self._seen)

    def is_valid(self, message: Message) -> bool:
        """Whether :meth:`verify` accepts *message* (a replay check counts as a use)."""
        try:
            self.verify(message)
        except AuthenticationError:
            return False
        return True

    def reply_tag(self, kind: int, message: Message, signed_part: bytes) -> bytes:
        """The 32-byte tag of a receiver's reply (*kind*: ``ACK`` or ``NACK``) to *message*.

        It covers the frame kind, the message's signature (which binds its id, addressee and
        content) and *signed_part*, the reply body before the tag.
        """
        data = _REPLY_DOMAIN + bytes([kind]) + message.signature + signed_part
        return hmac.new(self._key, data, hashlib.sha256).digest()

    def reply_is_valid(
        self, kind: int, message: Message, signed_part: bytes, tag: bytes | None
    ) -> bool:
        """Whether *tag* is :meth:`reply_tag` of this reply (``False`` for a missing tag)."""
        return tag is not None and hmac.compare_digest(
            tag, self.reply_tag(kind, message, signed_part)
        )

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
