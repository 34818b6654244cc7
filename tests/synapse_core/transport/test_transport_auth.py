"""HMAC message authentication: signing, tampering, wrong keys, freshness, replays, addressing
and signed replies (the last ones on real sockets and real mDNS)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest
from transport_support import exchange, msg

from synapse_core import CircuitOpenError, CircuitState
from synapse_core.transport import (
    AuthenticationError,
    DeliveryError,
    FrameDecoder,
    FrameKind,
    MdnsConfig,
    MdnsTransport,
    Message,
    MessageAuthenticator,
    MessageRejectedError,
    SecurityLevel,
    TcpTransport,
    encode_frame,
)
from synapse_core.transport.framing import decode_nack

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


# ---------------------------------------------------------------- on real sockets


def _message_frame(message: Message, seq: int = 1) -> bytes:
    return encode_frame(FrameKind.MESSAGE, seq, message.to_bytes())


@pytest.mark.asyncio
async def test_a_captured_message_replayed_after_10000_others_is_not_delivered_again() -> None:
    """The replay cache held 10,000 ids: at over ~333 msg/s a captured message was accepted
    again well inside max_age."""
    auth = MessageAuthenticator(KEY, max_age=30)
    async with TcpTransport(
        node_id="b", authenticator=MessageAuthenticator(KEY, max_age=30), inbound_queue_size=20_000
    ) as b:
        captured = auth.sign(Message("b", "a", b"pay 10"))
        traffic = [auth.sign(Message("b", "a", b"")) for _ in range(10_050)]
        frames = [_message_frame(m, seq) for seq, m in enumerate([captured, *traffic], 1)]
        replies = await exchange(b.address, *frames)
        assert [kind for kind, _, _ in replies] == [FrameKind.ACK] * len(frames)
        assert len(await b.receive_messages()) == len(frames)

        [(kind, _, _)] = await exchange(b.address, _message_frame(captured))
        assert kind is FrameKind.ACK  # answered like the original ...
        assert await b.receive_messages() == []  # ... but never delivered twice
        assert b.stats().duplicates == 1


@pytest.mark.asyncio
async def test_a_message_signed_for_b_is_refused_by_c_sharing_the_key() -> None:
    """Receivers never checked to_global_id: c accepted a message signed for b."""
    auth = MessageAuthenticator(KEY)
    async with (
        TcpTransport(node_id="b", authenticator=MessageAuthenticator(KEY)) as b,
        TcpTransport(node_id="c", authenticator=MessageAuthenticator(KEY)) as c,
    ):
        for_b = auth.sign(Message("b", "a", b"pay 10"))
        [(kind, _, _)] = await exchange(b.address, _message_frame(for_b))
        assert kind is FrameKind.ACK
        [(kind, _, body)] = await exchange(c.address, _message_frame(for_b))
        assert kind is FrameKind.NACK
        assert decode_nack(body)[0] == "misaddressed"
        assert await c.receive_messages() == []
        assert c.stats().misaddressed == 1
        assert [m.message_id for m in await b.receive_messages()] == [for_b.message_id]


def _fake_acks(answer: Callable[[Message], bytes]) -> Callable[..., Awaitable[None]]:
    """A server that ACKs every message with the body *answer* gives, like an impostor."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = FrameDecoder()
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                for kind, seq, body in decoder.feed(data):
                    if kind is FrameKind.MESSAGE:
                        reply = answer(Message.from_bytes(body))
                        writer.write(encode_frame(FrameKind.ACK, seq, reply))
        writer.close()

    return serve


_OTHER = MessageAuthenticator(b"another key, also 32 bytes long!")
_FORGED_ACKS = {
    "unsigned": lambda m: b"",
    "random tag": lambda m: b"\x01" + secrets.token_bytes(32),
    "wrong key": lambda m: b"\x01" + _OTHER.reply_tag(FrameKind.ACK, m, b"\x01"),
    "another message's tag": lambda m: (
        b"\x01"
        + MessageAuthenticator(KEY).reply_tag(
            FrameKind.ACK, m.replace(signature=b"x" * 32), b"\x01"
        )
    ),
}


@pytest.mark.asyncio
@pytest.mark.parametrize("forgery", list(_FORGED_ACKS))
async def test_an_ack_not_signed_with_our_key_is_no_receipt(forgery: str) -> None:
    server = await asyncio.start_server(_fake_acks(_FORGED_ACKS[forgery]), "127.0.0.1", 0)
    try:
        async with TcpTransport(node_id="a", authenticator=MessageAuthenticator(KEY)) as a:
            a.add_peer("b", *server.sockets[0].getsockname()[:2])
            with pytest.raises(DeliveryError, match="not signed with our key") as info:
                await a.send_message("b", Message("b", "a", b"secret"))
            assert info.value.maybe_delivered
            assert a.get_circuit_stats("b").failure_count == 1
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.asyncio
async def test_refusals_say_whether_a_key_holder_signed_them() -> None:
    async with (
        TcpTransport(node_id="b", authenticator=MessageAuthenticator(KEY)) as b,
        TcpTransport(node_id="a", authenticator=MessageAuthenticator(KEY)) as a,
        TcpTransport(node_id="m", authenticator=_OTHER) as m,
    ):
        for sender in (a, m):
            sender.add_peer("b", *b.address)
        with pytest.raises(MessageRejectedError) as by_holder:
            await a.send_message("b", Message("someone-else", "a", b""))
        assert (by_holder.value.code, by_holder.value.verified) == ("misaddressed", True)
        with pytest.raises(MessageRejectedError) as by_stranger:
            await m.send_message("b", Message("b", "m", b""))
        assert (by_stranger.value.code, by_stranger.value.verified) == ("unauthenticated", False)
        assert by_stranger.value.reason.endswith("refused by 'b'")  # the tag is not in the text


@pytest.mark.asyncio
@pytest.mark.usefixtures("loopback_multicast")
async def test_a_fake_mdns_peer_gets_messages_but_gives_no_receipt(
    mdns_config: MdnsConfig,
) -> None:
    """A fake service announcing entity_id=node-b took 10/10 messages meant for node-b, and
    with HMAC on every one still got a receipt. Discovery is not authenticated, so it still
    gets them; but a receipt now proves delivery to a holder of the key."""
    async with (
        MdnsTransport("node-a", 0, mdns_config, authenticator=MessageAuthenticator(KEY)) as a,
        MdnsTransport("node-b", 0, mdns_config) as impostor,  # announces node-b, has no key
    ):
        await a.wait_for_peer("node-b")
        receipts = 0
        for _ in range(10):
            try:
                await a.send_message("node-b", Message("node-b", "node-a", b"secret"))
                receipts += 1
            except (DeliveryError, CircuitOpenError):
                pass
        assert receipts == 0
        assert impostor.stats().messages_received == 3  # then a's breaker stopped the sends
        assert a.get_circuit_breaker("node-b").state is CircuitState.OPEN


def test_check_does_not_remember_and_remember_makes_a_replay() -> None:
    auth = MessageAuthenticator(KEY, max_age=30)
    signed = auth.sign(msg())
    auth.check(signed)
    auth.check(signed)  # checking is not receiving: still not a replay
    auth.remember(signed)
    with pytest.raises(AuthenticationError, match="replay"):
        auth.check(signed)
