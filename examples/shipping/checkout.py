"""The checkout service: calls the rates API with httpx through Synapse's breaker transport.

One breaker per host, made by ``BreakerTransport`` on the first request: no breaker code here.
While it is open, ``shipping_price`` falls back to a flat rate without touching the network.
"""

from __future__ import annotations

import httpx

from synapse_core import CircuitBreakerConfig, CircuitOpenError
from synapse_core.http import BreakerTransport

FLAT_RATE = 9.9
RATES_BREAKER = CircuitBreakerConfig(
    failure_threshold=3, minimum_requests=3, recovery_timeout=0.5, half_open_max_calls=1
)


class Checkout:
    """Checkout's client of the rates API at ``rates`` (``host:port``)."""

    def __init__(self, rates: str, *, timeout: float = 0.3) -> None:
        self.transport = BreakerTransport(config=RATES_BREAKER)
        self.http = httpx.Client(
            base_url=f"http://{rates}", transport=self.transport, timeout=timeout
        )

    def shipping_price(self, zone: str) -> float:
        """The rate for *zone*, or the flat rate when the rates API is failing or its breaker is
        open."""
        try:
            answer = self.http.get(f"/rates/{zone}")
        except CircuitOpenError:
            return FLAT_RATE
        except httpx.TransportError:
            return FLAT_RATE
        answer.raise_for_status()
        return float(answer.json()["price"])

    def close(self) -> None:
        self.http.close()
