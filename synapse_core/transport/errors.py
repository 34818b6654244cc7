"""Exceptions raised by the transports: one small hierarchy under :class:`TransportError`.

A rejected call raises the breaker's own :class:`~synapse_core.CircuitOpenError`, not one of
these: the transport never ran.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class TransportError(Exception):
    """Base class of every error a transport raises itself."""


class TransportClosedError(TransportError):
    """The transport is not running: call ``await transport.start()`` (or use ``async with``)."""


class PeerUnknownError(TransportError, LookupError):
    """The target is not a peer this transport knows, so nothing was sent.

    Attributes:
        target: the id that was asked for.
    """

    def __init__(self, target: str, hint: str = "") -> None:
        self.target = target
        message = f"unknown peer {target!r}"
        if hint:
            message += f": {hint}"
        super().__init__(message)


class DeliveryError(TransportError):
    """A message (or probe) could not be delivered: refused, reset, or closed before the ack.

    Whether the peer received it is unknown unless stated; a receipt is the only proof.

    Attributes:
        target: the peer id.
        reason: a short description of what went wrong.
        maybe_delivered: ``False`` when the message certainly never reached the peer's
            application (the connection was refused, or the peer said it processed nothing),
            so sending it again elsewhere cannot deliver it twice; ``True`` (the default) when
            it may have (the connection broke after the frame left, the ack timed out).
    """

    def __init__(self, target: str, reason: str, *, maybe_delivered: bool = True) -> None:
        self.target = target
        self.reason = reason
        self.maybe_delivered = maybe_delivered
        super().__init__(f"delivery to {target!r} failed: {reason}")


class DeliveryTimeoutError(DeliveryError, TimeoutError):
    """Connecting or waiting for the ack took longer than the configured timeout.

    A breaker records it as a ``TIMEOUT``.

    Attributes:
        phase: ``"connect"`` or ``"ack"``.
        timeout: the limit in seconds that was exceeded.
    """

    def __init__(
        self, target: str, phase: str, timeout: float, *, maybe_delivered: bool | None = None
    ) -> None:
        self.phase = phase
        self.timeout = timeout
        super().__init__(
            target,
            f"no {phase} within {timeout:g}s",
            maybe_delivered=phase != "connect" if maybe_delivered is None else maybe_delivered,
        )


class MessageRejectedError(DeliveryError):
    """The peer answered, but refused the message (bad signature, inbound queue full...).

    The peer did not queue the message (``maybe_delivered`` is ``False``).

    Attributes:
        code: the peer's reason code (``"unauthenticated"``, ``"busy"`` or ``"misaddressed"``).
        verified: whether the refusal carried a valid signature of our key (always ``False``
            for a transport without an authenticator, which cannot tell).
    """

    def __init__(self, target: str, code: str, reason: str, *, verified: bool = False) -> None:
        self.code = code
        self.verified = verified
        super().__init__(target, f"rejected by the peer ({code}): {reason}", maybe_delivered=False)


class FrameError(TransportError, ValueError):
    """Bytes on a connection are not a valid frame (oversized, truncated, unknown kind).

    Attributes:
        frames: whole frames that arrived before the bad bytes in the same chunk (raised by
            ``FrameDecoder.feed``; empty otherwise). A server still answers them.
    """

    frames: list[tuple[Any, int, bytes]] = []  # noqa: RUF012 - replaced per instance, never mutated


class FrameTooLargeError(FrameError):
    """A frame is larger than the configured maximum.

    Attributes:
        size: the frame's size in bytes.
        limit: the maximum allowed.
    """

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(
            f"frame of {size} bytes exceeds the maximum of {limit} bytes "
            "(raise max_frame_size on both peers, or send smaller messages)"
        )


class MessageDecodeError(TransportError, ValueError):
    """Bytes are not a valid wire-encoded :class:`~synapse_core.transport.Message`."""


class AuthenticationError(TransportError):
    """A message's signature did not verify (wrong key, tampered, too old, or replayed)."""


class NoRouteError(TransportError):
    """No transport of a router could deliver the message.

    Attributes:
        target: the peer id.
        attempts: ``(transport description, exception)`` for each transport tried or skipped.
    """

    def __init__(self, target: str, attempts: Sequence[tuple[str, BaseException]]) -> None:
        self.target = target
        self.attempts = tuple(attempts)
        tried = "; ".join(f"{name}: {exc}" for name, exc in self.attempts) or "no transports"
        super().__init__(f"no route to {target!r} ({tried})")


class DiscoveryError(TransportError):
    """mDNS discovery could not start or register (for example, the entity id is taken)."""


class DiscoveryTimeoutError(DiscoveryError, TimeoutError):
    """A peer did not appear (or disappear) within the time allowed.

    Attributes:
        entity_id: the peer waited for.
        timeout: seconds waited.
    """

    def __init__(self, entity_id: str, timeout: float, what: str = "discovered") -> None:
        self.entity_id = entity_id
        self.timeout = timeout
        super().__init__(f"peer {entity_id!r} was not {what} within {timeout:g}s")
