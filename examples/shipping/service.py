"""The shipping service as its authors wrote it, with pybreaker: nothing here knows Synapse.

``quote(zone)`` asks the rates API; after three failures in a row ``rates_breaker`` opens and
``quote`` answers ``RatesUnavailable`` at once for half a second, then lets one trial call through.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pybreaker


class UnknownZone(LookupError):
    """The rates API has no such zone: bad input, not an outage (the breaker ignores it)."""


rates_breaker = pybreaker.CircuitBreaker(
    fail_max=3, reset_timeout=0.5, exclude=[UnknownZone], name="rates"
)


class RatesUnavailable(Exception):
    """The rates API is down (its breaker is open): callers show a flat rate."""


class ShippingQuotes:
    """Quotes from the rates API at ``rates`` (``host:port``)."""

    def __init__(self, rates: str, *, timeout: float = 0.3) -> None:
        self.rates = rates
        self.timeout = timeout

    @rates_breaker
    def _price(self, zone: str) -> float:
        url = f"http://{self.rates}/rates/{zone}"
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as answer:
                return float(json.loads(answer.read())["price"])
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code == 404:
                raise UnknownZone(zone) from None
            raise

    def quote(self, zone: str) -> float:
        """The price of shipping to *zone*; ``RatesUnavailable`` while the breaker is open."""
        try:
            return self._price(zone)
        except pybreaker.CircuitBreakerError as exc:
            raise RatesUnavailable(str(exc)) from None
