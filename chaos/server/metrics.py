"""Prometheus metrics for ``GET /metrics``, with Toxiproxy's metric names and labels.

The data plane only bumps plain integers on each proxy (no lock, no label lookup on the hot
path); this collector turns them into counters when the endpoint is scraped.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from chaos.server.registry import ProxyRegistry

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LABELS = ["direction", "proxy", "listener", "upstream"]


class ProxyBytesCollector(Collector):
    """``toxiproxy_proxy_received_bytes_total`` and ``..._sent_bytes_total`` per proxy/direction.

    *received* counts bytes read from the source socket, *sent* bytes written to the destination
    after toxics (so a ``timeout`` toxic shows received growing while sent stays put).
    """

    def __init__(self, proxies: ProxyRegistry) -> None:
        self._proxies = proxies

    def collect(self) -> Iterator[Metric]:
        received = CounterMetricFamily(
            "toxiproxy_proxy_received_bytes",
            "Bytes read by a proxy from the sending side, per direction.",
            labels=_LABELS,
        )
        sent = CounterMetricFamily(
            "toxiproxy_proxy_sent_bytes",
            "Bytes written by a proxy to the receiving side after toxics, per direction.",
            labels=_LABELS,
        )
        for proxy in self._proxies.all():
            for direction, (got, put) in proxy.counters.items():
                labels = [direction, proxy.name, proxy.listen, proxy.upstream]
                received.add_metric(labels, got)
                sent.add_metric(labels, put)
        yield received
        yield sent


class ServerMetrics:
    """A registry of its own per server, so several servers in one process never collide."""

    def __init__(self, proxies: ProxyRegistry) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(ProxyBytesCollector(proxies))

    def render(self) -> bytes:
        """Return the Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
