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


def test_replay_memory_lasts_max_age_however_many_messages_come() -> None:
    """It held the last 10,000 ids: above ~333 msg/s a replay was accepted before max_age."""
    now = [datetime(2024, 1, 1, tzinfo=UTC)]
    auth = MessageAuthenticator(KEY, max_age=10, wall_clock=lambda: now[0])
    first = auth.sign(Message("b", "a", b"1", timestamp=now[0]))
    auth.verify(first)
    for _ in range(10_050):
        auth.remember(Message("b", "a", b"", timestamp=now[0]))
    with pytest.raises(AuthenticationError, match="replay"):
        auth.verify(first)
    now[0] += timedelta(seconds=10)
    assert auth.seen(first.message_id)  # still inside max_age: still a replay
    now[0] += timedelta(microseconds=1)
    assert not auth.seen(first.message_id)
    assert auth.remembered == 0  # memory is bounded by the age: all expired together
    with pytest.raises(AuthenticationError, match="outside max_age"):
        auth.verify(first)  # and by now it is too old anyway


def test_replay_memory_expires_each_id_at_its_own_time() -> None:
    now = [datetime(2024, 1, 1, tzinfo=UTC)]
    auth = MessageAuthenticator(KEY, max_age=10, wall_clock=lambda: now[0])
    ahead = auth.sign(Message("b", "a", b"", timestamp=now[0] + timedelta(seconds=9)))
    behind = auth.sign(Message("b", "a", b"", timestamp=now[0] - timedelta(seconds=9)))
    auth.verify(ahead)  # a clock running ahead: kept until 19 s from now
    auth.verify(behind)  # kept 1 s more, although remembered after the other
    now[0] += timedelta(seconds=2)
    assert not auth.seen(behind.message_id)
    assert auth.seen(ahead.message_id)
    assert auth.remembered == 1


def test_max_age_is_on_by_default() -> None:
    """Without max_age there was no freshness or replay check at all."""
    auth = MessageAuthenticator(KEY)
    assert auth.max_age == 30.0
    signed = auth.sign(Message("b", "a", b""))
    auth.verify(signed)
    with pytest.raises(AuthenticationError, match="replay"):
        auth.verify(signed)
    old = auth.sign(Message("b", "a", b"", timestamp=datetime.now(UTC) - timedelta(seconds=31)))
    with pytest.raises(AuthenticationError, match="outside max_age"):
        auth.verify(old)
    unchecked = MessageAuthenticator(KEY, max_age=None)  # the explicit opt-out
    unchecked.verify(signed)
    unchecked.verify(signed)


@pytest.mark.parametrize("kwargs", [{"max_age": 0}, {"max_age": float("inf")}, {"max_age": -1}])
def test_validation(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="max_age"):
        MessageAuthenticator(KEY, **kwargs)
