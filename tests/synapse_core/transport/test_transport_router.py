"""FailoverRouter: preferred transport first, failover when its breaker opens, and back."""

from __future__ import annotations

import asyncio

import pytest
from transport_support import ScriptedTransport, free_port, msg, until

from chaos import ToxiproxyClient
from synapse_core import CircuitBreakerConfig, CircuitState, VirtualClock
from synapse_core.transport import (
    DeliveryError,
    DeliveryReceipt,
    FailoverRouter,
    MessageRejectedError,
    NoRouteError,
    RouteSkipped,
    TcpTransport,
)

CONFIG = CircuitBreakerConfig(
    failure_threshold=2, minimum_requests=2, recovery_timeout=5.0, half_open_max_calls=1
)


@pytest.fixture
def pair(clock: VirtualClock) -> tuple[ScriptedTransport, ScriptedTransport]:
    return (
        ScriptedTransport("primary", clock=clock, breaker_config=CONFIG),
        ScriptedTransport("backup", clock=clock, breaker_config=CONFIG),
    )


@pytest.mark.asyncio
async def test_fails_over_while_open_and_returns_after_recovery(
    pair: tuple[ScriptedTransport, ScriptedTransport], clock: VirtualClock
) -> None:
    primary, backup = pair
    router = FailoverRouter([primary, backup])
    async with primary, backup:
        assert (await router.send_message("b", msg())).transport == "scripted"
        assert await router.route_for("b") is primary

        primary.behaviour["b"] = DeliveryError("b", "link down", maybe_delivered=False)
        for _ in range(2):  # each failed attempt fails over: the message still arrives
            receipt = await router.send_message("b", msg())
            assert receipt.breaker == "scripted:backup->b"
        assert primary.get_circuit_breaker("b").state is CircuitState.OPEN
        assert await router.route_for("b") is backup

        calls_before = len(primary.calls)
        for _ in range(5):  # while open the primary is skipped without being tried
            assert (await router.send_message("b", msg())).breaker == "scripted:backup->b"
        assert len(primary.calls) == calls_before

        primary.behaviour["b"] = "ok"
        clock.advance(CONFIG.recovery_timeout)
        assert await router.route_for("b") is primary  # the probe goes to the preferred one
        assert (await router.send_message("b", msg())).breaker == "scripted:primary->b"
        assert primary.get_circuit_breaker("b").state is CircuitState.CLOSED
        stats = router.stats()
    assert stats.delivered == {"scripted:primary": 2, "scripted:backup": 7}
    assert stats.failovers == 7
    assert stats.failed_attempts == 2


@pytest.mark.asyncio
async def test_no_route_lists_every_attempt(
    pair: tuple[ScriptedTransport, ScriptedTransport],
) -> None:
    primary, backup = pair
    router = FailoverRouter([primary, backup])
    async with primary:  # backup never started
        primary.get_circuit_breaker("b").force_open("maintenance")
        with pytest.raises(NoRouteError) as info:
            await router.send_message("b", msg())
        with pytest.raises(NoRouteError) as unknown:
            await router.send_message("nobody", msg("nobody"))
    reasons = [str(exc) for _, exc in info.value.attempts]
    assert all(isinstance(exc, RouteSkipped) for _, exc in info.value.attempts)
    assert "is open" in reasons[0]
    assert reasons[1] == "transport not running"
    assert "peer unknown" in str(unknown.value.attempts[0][1])
    assert router.stats().no_route == 2
    assert not await router.can_reach("b")


@pytest.mark.asyncio
async def test_failover_can_be_disabled(
    pair: tuple[ScriptedTransport, ScriptedTransport],
) -> None:
    primary, backup = pair
    router = FailoverRouter([primary, backup], failover_on_error=False)
    async with primary, backup:
        primary.behaviour["b"] = DeliveryError("b", "down", maybe_delivered=False)
        with pytest.raises(DeliveryError):
            await router.send_message("b", msg())
    assert backup.calls == []


@pytest.mark.asyncio
async def test_refusals_are_not_failed_over_unless_busy(
    pair: tuple[ScriptedTransport, ScriptedTransport],
) -> None:
    primary, backup = pair
    router = FailoverRouter([primary, backup])
    async with primary, backup:
        primary.behaviour["b"] = MessageRejectedError("b", "unauthenticated", "bad key")
        with pytest.raises(MessageRejectedError):
            await router.send_message("b", msg())
        assert backup.calls == []
        primary.behaviour["b"] = MessageRejectedError("b", "busy", "queue full")
        assert (await router.send_message("b", msg())).breaker == "scripted:backup->b"


def test_validation() -> None:
    with pytest.raises(ValueError, match="at least one"):
        FailoverRouter([])
    with pytest.raises(TypeError, match="Transport"):
        FailoverRouter(["tcp"])  # type: ignore[list-item]


@pytest.mark.asyncio
async def test_over_real_tcp(clock: VirtualClock) -> None:
    async with (
        TcpTransport(node_id="receiver") as receiver,
        TcpTransport(node_id="via-dead-path", clock=clock, breaker_config=CONFIG) as dead,
        TcpTransport(node_id="via-live-path", clock=clock, breaker_config=CONFIG) as live,
    ):
        dead.add_peer("receiver", "127.0.0.1", free_port())
        live.add_peer("receiver", *receiver.address)
        router = FailoverRouter([dead, live])
        for _ in range(4):
            receipt = await router.send_message("receiver", msg("receiver"))
            assert receipt.breaker == "tcp:via-live-path->receiver"
        assert dead.get_circuit_breaker("receiver").state is CircuitState.OPEN
        assert len(await receiver.receive_messages()) == 4
    assert router.stats().failed_attempts == 2  # then the open breaker skipped the dead path


async def _send_while_the_primary_drops(
    router: FailoverRouter, receiver: TcpTransport, client: ToxiproxyClient, count: int
) -> list[BaseException | DeliveryReceipt]:
    """*count* sends whose frames reach *receiver* through the proxy, whose ACKs the proxy holds
    back, and whose connection the proxy then drops (the primary link fails mid-flight)."""
    client.add_toxic("b", "latency", stream="downstream", attributes={"latency": 5000})
    before = receiver.stats().messages_received
    sends = [
        asyncio.create_task(router.send_message("b", msg("b", "a", str(i).encode())))
        for i in range(count)
    ]
    await until(lambda: receiver.stats().messages_received - before >= count)
    client.update_proxy("b", enabled=False)  # the acks never come: a plain disconnect
    results = await asyncio.gather(*sends, return_exceptions=True)
    client.update_proxy("b", enabled=True)
    client.remove_toxic("b", "latency_downstream")
    return results


@pytest.mark.asyncio
async def test_a_message_that_may_have_arrived_is_not_sent_again_elsewhere(
    toxiproxy: ToxiproxyClient,
) -> None:
    """20/20 messages arrived twice: a disconnect after the frame left failed over to the backup
    (the docs only warned about timeouts). Now such a send is raised, and with at_least_once
    the resend is acknowledged by the receiver without delivering the message again."""
    lenient = CircuitBreakerConfig(failure_threshold=1000, minimum_requests=1000)
    async with (
        TcpTransport(node_id="b") as b,
        TcpTransport(node_id="a", breaker_config=lenient, send_timeout=10) as primary,
        TcpTransport(node_id="a", breaker_config=lenient) as backup,
    ):
        toxiproxy.create_proxy("b", upstream="{}:{}".format(*b.address))
        listen = toxiproxy.proxies()["b"]
        primary.add_peer("b", listen.listen_host, listen.listen_port)
        backup.add_peer("b", *b.address)

        router = FailoverRouter([primary, backup])
        results = await _send_while_the_primary_drops(router, b, toxiproxy, 20)
        assert all(isinstance(r, DeliveryError) and r.maybe_delivered for r in results), results
        assert backup.stats().messages_sent == 0  # nothing was sent a second time
        assert len({m.message_id for m in await b.receive_messages()}) == 20
        assert router.stats().not_failed_over == 20

        router = FailoverRouter([primary, backup], at_least_once=True)
        results = await _send_while_the_primary_drops(router, b, toxiproxy, 20)
        assert all(isinstance(r, DeliveryReceipt) for r in results), results
        assert backup.stats().messages_sent == 20
        received = await b.receive_messages()
        assert len(received) == 20  # the application sees each message once ...
        assert len({m.message_id for m in received}) == 20
        assert b.stats().duplicates == 20  # ... the second copies were only acknowledged
        assert router.stats().failovers == 20


@pytest.mark.asyncio
async def test_router_without_failover_raises_busy() -> None:
    primary, backup = ScriptedTransport("p"), ScriptedTransport("s")
    async with primary, backup:
        primary.behaviour["b"] = MessageRejectedError("b", "busy", "queue full")
        with pytest.raises(MessageRejectedError, match="busy"):
            await FailoverRouter([primary, backup], failover_on_error=False).send_message(
                "b", msg()
            )
        assert backup.calls == []
        receipt = await FailoverRouter([primary, backup]).send_message("b", msg())
        assert receipt.breaker == backup.breaker_name("b")


@pytest.mark.asyncio
@pytest.mark.parametrize("error", [TimeoutError(), OSError("boom"), ConnectionResetError()])
async def test_router_fails_over_on_bare_errors_only_for_at_least_once(error: Exception) -> None:
    """A bare error cannot say whether the peer got the message: resending could duplicate it."""
    primary, backup = ScriptedTransport("p"), ScriptedTransport("s")
    async with primary, backup:
        primary.behaviour["b"] = error
        router = FailoverRouter([primary, backup])
        with pytest.raises(type(error)):
            await router.send_message("b", msg())
        assert backup.calls == []
        assert router.stats().not_failed_over == 1

        router = FailoverRouter([primary, backup], at_least_once=True)
        receipt = await router.send_message("b", msg())
        assert receipt.breaker == backup.breaker_name("b")
        assert router.stats().failed_attempts == 1

        backup.behaviour["b"] = error
        with pytest.raises(NoRouteError) as no_route:
            await router.send_message("b", msg())
        assert [type(e) for _, e in no_route.value.attempts] == [type(error)] * 2


@pytest.mark.asyncio
async def test_router_fails_over_on_a_refused_connection() -> None:
    primary, backup = ScriptedTransport("p"), ScriptedTransport("s")
    async with primary, backup:
        primary.behaviour["b"] = ConnectionRefusedError()
        receipt = await FailoverRouter([primary, backup]).send_message("b", msg())
        assert receipt.breaker == backup.breaker_name("b")
        with pytest.raises(ConnectionRefusedError):
            await FailoverRouter([primary, backup], failover_on_error=False).send_message(
                "b", msg()
            )
