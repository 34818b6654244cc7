"""Circuit breaker demo: trip, reject, recover and close again, with events and stats.

Runs on a virtual clock, so the 10 second recovery timeout takes no time. Run it with
``make demo`` or ``python examples/circuit_breaker_demo.py``.
"""

from __future__ import annotations

import sys

from synapse_core import (
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitEvent,
    CircuitOpenError,
    CircuitState,
    VirtualClock,
)


class PaymentsDown(ConnectionError):
    """What the flaky payments dependency raises while it is down."""


class FlakyPayments:
    """A dependency that is down until told otherwise."""

    def __init__(self) -> None:
        self.healthy = True
        self.calls = 0

    def charge(self, amount: int) -> str:
        self.calls += 1
        if not self.healthy:
            raise PaymentsDown("payments API unreachable")
        return f"charged {amount}"


def main() -> int:
    clock = VirtualClock()
    breaker = CircuitBreaker("payments", CircuitBreakerConfig(), clock=clock)
    payments = FlakyPayments()

    def on_event(event: CircuitEvent) -> None:
        print(f"  [t={event.timestamp:5.1f}s] event: {event.kind} {_details(event)}")

    breaker.subscribe(on_event)
    config = breaker.config
    print(
        f"Breaker {breaker.name!r}: trips after {config.failure_threshold} failures "
        f"(min {config.minimum_requests} calls) in {config.failure_window:g}s, "
        f"recovers after {config.recovery_timeout:g}s with {config.half_open_max_calls} probes"
    )

    print("\n1. Healthy dependency: calls flow (closed)")
    for amount in (10, 20):
        print("  ", breaker.call(payments.charge, amount))

    print("\n2. The dependency goes down: failures are detected and the breaker trips")
    payments.healthy = False
    for _ in range(3):
        try:
            breaker.call(payments.charge, 30)
        except PaymentsDown as exc:
            print(f"   call failed: {exc} -> state {breaker.state.value}")

    print("\n3. While open, calls are rejected at once without touching the dependency")
    before = payments.calls
    for _ in range(3):
        clock.advance(2.0)
        try:
            breaker.call(payments.charge, 40)
        except CircuitOpenError as exc:
            print(f"   rejected: retry after {exc.retry_after:.1f}s")
    print(f"   dependency calls while open: {payments.calls - before}")

    print("\n4. The dependency recovers; after the recovery timeout probes close the breaker")
    payments.healthy = True
    clock.advance(breaker.retry_after)
    for amount in (50, 60):
        print(f"   probe: {breaker.call(payments.charge, amount)} -> state {breaker.state.value}")

    print("\n5. Back to normal")
    print("  ", breaker.call(payments.charge, 70))
    stats = breaker.stats()
    print(
        f"\nStats: state={stats.state.value} successes={stats.success_count} "
        f"failures={stats.failure_count} rejections={stats.rejection_count} "
        f"total={stats.total_requests} window={stats.window_requests}"
    )
    if breaker.state is not CircuitState.CLOSED:
        print("demo failed: the breaker did not close again", file=sys.stderr)
        return 1
    print("The breaker tripped, rejected fast, and closed again.")
    return 0


def _details(event: CircuitEvent) -> str:
    fields = {
        "opened": ("reason",),
        "closed": ("reason",),
        "request_rejected": ("retry_after",),
        "external_trigger_activated": ("trigger_name",),
    }.get(event.kind, ())
    return " ".join(f"{name}={getattr(event, name)!r}" for name in fields)


if __name__ == "__main__":
    sys.exit(main())
