"""The circuit breaker guarding a real mDNS transport: two peers, a partition, recovery.

Two peers find each other with multicast DNS on 127.0.0.1. Peer ``beta`` advertises the
address of a chaos proxy (the embedded Toxiproxy-compatible server) standing in front of it, so
the demo can break the link without touching the peers:

1. ``alpha`` discovers ``beta`` and sends it messages (each acknowledged);
2. the proxy turns into a blackhole (bytes vanish, connections stay open), like a cut cable:
   no error comes back and no mDNS goodbye ever arrives;
3. alpha's sends time out, its breaker for beta opens, and further sends are rejected in
   microseconds instead of waiting for a timeout;
4. the partition heals; after the recovery timeout two probe sends succeed and the breaker
   closes again.

Events are printed as they happen, stats at the end. Run: ``python examples/mdns_demo.py``.
It uses loopback only and takes a few seconds.
"""

from __future__ import annotations

import asyncio
import secrets
import statistics
import time

from chaos import EmbeddedToxiproxy
from synapse_core import CircuitBreakerConfig, CircuitEvent, CircuitOpenError, CircuitState
from synapse_core.transport import DeliveryError, MdnsConfig, MdnsTransport, Message

SEEN: list[str] = []
RECOVERY = 1.0  # seconds: short so the demo is quick; the original preset uses 10 s
TIMEOUT = 0.3  # connect/ack timeout of alpha's sends


def show(event: CircuitEvent) -> None:
    detail = ""
    if event.kind == "opened":
        detail = f" ({getattr(event, 'reason', '')})"
    if event.kind != "request_rejected":
        print(f"  event: {event.kind}{detail}")
        SEEN.append(event.kind)


async def send(alpha: MdnsTransport, text: str) -> str:
    started = time.perf_counter()
    try:
        receipt = await alpha.send_message("beta", Message("beta", "alpha", text.encode()))
    except CircuitOpenError:
        return f"rejected by the breaker in {(time.perf_counter() - started) * 1e6:.0f} us"
    except DeliveryError as exc:
        return f"failed after {time.perf_counter() - started:.3f}s: {exc.reason}"
    return f"delivered, acked in {receipt.latency * 1000:.2f} ms"


async def main() -> None:
    config = MdnsConfig(
        interfaces=["127.0.0.1"],
        service_type=f"_syndemo{secrets.token_hex(2)}._tcp.local.",  # private to this run
        probe_name=False,
    )
    breaker = CircuitBreakerConfig(recovery_timeout=RECOVERY)  # otherwise the original preset
    with EmbeddedToxiproxy() as server:
        chaos = server.client()
        chaos.create_proxy("beta", upstream="127.0.0.1:9")  # pointed at beta once it listens
        proxy = chaos.proxies()["beta"]
        alpha = MdnsTransport(
            "alpha", 0, config, breaker_config=breaker, connect_timeout=TIMEOUT,
            send_timeout=TIMEOUT,
        )  # fmt: skip
        beta = MdnsTransport(
            "beta", 0, config, advertise_host=proxy.listen_host, advertise_port=proxy.listen_port
        )
        async with alpha, beta:
            chaos.update_proxy("beta", upstream="{}:{}".format(*beta.address))
            peer = await alpha.wait_for_peer("beta", timeout=10)
            print(f"alpha discovered beta via mDNS at {peer.host}:{peer.port} (the proxy)")
            alpha.get_circuit_breaker("beta").subscribe(show)

            print("\n1. healthy link")
            for i in range(3):
                print(f"  send {i}: {await send(alpha, f'hello {i}')}")

            print("\n2. blackhole between alpha and beta (beta never says goodbye)")
            chaos.add_toxic("beta", "timeout", stream="upstream", attributes={"timeout": 0})
            breaker_of_beta = alpha.get_circuit_breaker("beta")
            for i in range(5):
                if breaker_of_beta.state is CircuitState.OPEN:
                    break
                print(f"  send {i}: {await send(alpha, 'during')}")
            print(f"  breaker state={breaker_of_beta.state.value}")

            print("\n3. while open")
            timings = []
            for _ in range(100):
                started = time.perf_counter()
                try:
                    await alpha.send_message("beta", Message("beta", "alpha", b"x"))
                except CircuitOpenError:
                    timings.append(time.perf_counter() - started)
            print(f"  rejections: {len(timings)} of 100 sends")
            print(
                f"  median rejection {statistics.median(timings) * 1e6:.1f} us, "
                f"instead of a {TIMEOUT * 1000:.0f} ms timeout per send without a breaker"
            )
            print(f"  beta still in alpha's discovery cache: {'beta' in alpha.discovered_peers}")

            print("\n4. heal and recover")
            chaos.remove_toxic("beta", "timeout_upstream")
            await asyncio.sleep(RECOVERY)
            for i in range(4):
                if breaker_of_beta.state is CircuitState.CLOSED and i >= 2:
                    break
                print(f"  probe {i}: {await send(alpha, 'after')}")
            print(f"  breaker state={breaker_of_beta.state.value}")

            received = await beta.receive_messages()
            stats = alpha.get_circuit_stats("beta")
            metrics = alpha.get_metrics("beta")
            print("\nstats")
            print(f"  beta received {len(received)} messages")
            print(
                f"  breaker: state={stats.state.value} successes={stats.success_count} "
                f"failures={stats.failure_count} timeouts={stats.timeout_count} "
                f"rejections={stats.rejection_count}"
            )
            print(f"  events: {', '.join(SEEN)}")
            print(
                f"  link: latency={metrics.latency * 1000:.2f} ms "
                f"reliability={metrics.reliability_score:.2f} loss={metrics.packet_loss:.0%}"
            )
            transport_stats = alpha.stats()
            print(
                f"  transport: sent={transport_stats.messages_sent} "
                f"failed={transport_stats.send_failures} "
                f"rejected_by_breaker={transport_stats.rejected_by_breaker}"
            )


if __name__ == "__main__":
    asyncio.run(main())
