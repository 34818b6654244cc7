"""HMAC message authentication: signing, tampering, wrong keys, freshness and replays."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from synapse_core.transport import (
    AuthenticationError,
    Message,
    MessageAuthenticator,
    SecurityLevel,
)

KEY = b"0123456789abcdef0123456789abcdef"


def test_sign_and_verify() -> None:
    auth = MessageAuthenticator(KEY)
    signed = auth.sign(Message("b", "a", b"pay 10"))
    assert len(signed.signature) == 32
    assert signed.security_level is SecurityLevel.AUTHENTICATED
    auth.verify(signed)
    assert MessageAuthenticator(KEY.decode()).is_valid(signed)  # str keys are UTF-8
    secure = auth.sign(Message("b", "a", b"", security_level=SecurityLevel.SECURE))
    assert secure.security_level is SecurityLevel.SECURE


@pytest.mark.parametrize(
    "change",
    [
        {"content": b"pay 1000"},
        {"to_global_id": "mallory"},
        {"from_global_id": "mallory"},
        {"timestamp": datetime(2020, 1, 1, tzinfo=UTC)},
        {"security_level": SecurityLevel.PUBLIC},
        {"routing_path": ("x",)},
        {"metadata": {"k": "v"}},
    ],
)
def test_any_tampering_is_detected(change: dict[str, object]) -> None:
    auth = MessageAuthenticator(KEY)
    tampered = auth.sign(Message("b", "a", b"pay 10")).replace(**change)
    with pytest.raises(AuthenticationError, match="bad signature"):
        auth.verify(tampered)


def test_wrong_key_and_unsigned() -> None:
    signed = MessageAuthenticator(b"another key, also 32 bytes long!").sign(Message("b", "a", b""))
    auth = MessageAuthenticator(KEY)
    assert not auth.is_valid(signed)
    with pytest.raises(AuthenticationError, match="not signed"):
        auth.verify(Message("b", "a", b""))


def test_short_keys_are_refused_and_never_shown() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        MessageAuthenticator(b"short")
    assert "0123" not in repr(MessageAuthenticator(KEY))


def test_freshness_and_replay() -> None:
    now = datetime(2024, 1, 1, tzinfo=UTC)
    auth = MessageAuthenticator(KEY, max_age=timedelta(seconds=30), wall_clock=lambda: now)
    fresh = auth.sign(Message("b", "a", b"", timestamp=now - timedelta(seconds=5)))
    auth.verify(fresh)
    with pytest.raises(AuthenticationError, match="replay"):
        auth.verify(fresh)
    stale = auth.sign(Message("b", "a", b"", timestamp=now - timedelta(seconds=31)))
    with pytest.raises(AuthenticationError, match="outside max_age"):
        auth.verify(stale)
    future = auth.sign(Message("b", "a", b"", timestamp=now + timedelta(seconds=31)))
    assert not auth.is_valid(future)


def test_replay_memory_is_bounded_and_expires() -> None:
    now = [datetime(2024, 1, 1, tzinfo=UTC)]
    auth = MessageAuthenticator(KEY, max_age=10, wall_clock=lambda: now[0], replay_cache_size=2)
    first = auth.sign(Message("b", "a", b"1", timestamp=now[0]))
    auth.verify(first)
    for _ in range(2):
        auth.verify(auth.sign(Message("b", "a", b"", timestamp=now[0])))
    assert auth.is_valid(first)  # evicted by the size bound, so no longer recognised
    now[0] += timedelta(seconds=11)
    assert not auth.is_valid(first)  # but by now it is too old anyway


@pytest.mark.parametrize("kwargs", [{"max_age": 0}, {"replay_cache_size": 0}])
def test_validation(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        MessageAuthenticator(KEY, **kwargs)  # type: ignore[arg-type]
