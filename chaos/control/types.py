"""What the Toxiproxy API reports about proxies and toxics, shared by the client and the faults.

Kept apart from :mod:`chaos.control.client` so that the modules reading these records (the
proxy handle, the live-fault bookkeeping) do not depend on the HTTP client that fetches them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any


@dataclasses.dataclass(frozen=True, slots=True)
class ToxicInfo:
    """A toxic as the server reports it."""

    name: str
    type: str
    stream: str
    toxicity: float
    attributes: Mapping[str, Any]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ToxicInfo:
        """Build from the server's JSON."""
        return cls(
            name=str(data["name"]),
            type=str(data["type"]),
            stream=str(data.get("stream", "downstream")),
            toxicity=float(data.get("toxicity", 1.0)),
            attributes=dict(data.get("attributes") or {}),
        )


@dataclasses.dataclass(frozen=True, slots=True)
class ProxyInfo:
    """A proxy as the server reports it; ``listen`` is the bound ``host:port``."""

    name: str
    listen: str
    upstream: str
    enabled: bool
    toxics: tuple[ToxicInfo, ...] = ()

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProxyInfo:
        """Build from the server's JSON."""
        return cls(
            name=str(data["name"]),
            listen=str(data["listen"]),
            upstream=str(data["upstream"]),
            enabled=bool(data["enabled"]),
            toxics=tuple(ToxicInfo.from_json(t) for t in data.get("toxics") or ()),
        )

    @property
    def listen_host(self) -> str:
        """Host part of ``listen`` (IPv6 without brackets)."""
        host = self.listen.rpartition(":")[0]
        return host[1:-1] if host.startswith("[") else host

    @property
    def listen_port(self) -> int:
        """Port part of ``listen``."""
        return int(self.listen.rpartition(":")[2])
