"""Discovery data: the mDNS config, what a discovered peer looks like, and TXT validation.

Everything here is pure (no sockets), so the rules for bogus records and odd names are tested
without a network. :mod:`synapse_core.transport.mdns` uses it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import logging
import re
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Any

logger = logging.getLogger("synapse_core.transport.mdns")

SERVICE_TYPE = "_synapse._tcp.local."
"""The DNS-SD service type every Synapse peer registers and browses."""
PROTOCOL_VERSION = "1"
"""The ``version`` TXT value; peers with another major version are ignored."""

TOKEN = re.compile(r"[A-Za-z0-9._-]{1,64}")
_LABEL_SAFE = re.compile(r"[^A-Za-z0-9_-]")
_MAX_ENTITY_ID_BYTES = 245  # "entity_id=" + id must fit one 255-byte TXT string


def check_entity_id(entity_id: object) -> str:
    """Return *entity_id* if usable as a peer id, else raise ``ValueError`` saying why.

    Any printable text up to 245 UTF-8 bytes (a TXT string's limit) without control characters.
    """
    if not isinstance(entity_id, str) or not entity_id:
        raise ValueError(f"entity_id must be a non-empty str, got {entity_id!r}")
    if len(entity_id.encode("utf-8")) > _MAX_ENTITY_ID_BYTES:
        raise ValueError(f"entity_id must be at most {_MAX_ENTITY_ID_BYTES} UTF-8 bytes")
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp") for ch in entity_id):
        raise ValueError(f"entity_id must not contain control characters: {entity_id!r}")
    return entity_id


def instance_label(entity_id: str) -> str:
    """The DNS-safe instance label for *entity_id* (the TXT record carries the real id).

    Letters, digits, ``-`` and ``_`` are kept; anything else, an upper-case letter, or an id
    too long for a label, gets a short hash suffix so different ids never share a label. DNS
    compares names without regard to case, so ``Node`` and ``node`` would otherwise be one
    service; a lower-case id keeps its plain label.
    """
    safe = _LABEL_SAFE.sub("-", entity_id)
    if safe == entity_id and len(safe) <= 63 and not any("A" <= ch <= "Z" for ch in safe):
        return safe
    digest = hashlib.sha256(entity_id.encode("utf-8")).hexdigest()[:10]
    return f"{safe[:50]}-{digest}"


def host_addresses() -> list[str]:
    """This host's own IPv4 addresses, loopback excluded: ``MdnsConfig(interfaces=...)`` for
    peers that find each other across a real network (containers on one Docker network, say).

    Read from the interfaces (``ifaddr``, which zeroconf uses); inside a container these are
    the container's addresses on its networks. Raises ``OSError`` if there are none.
    """
    import ifaddr  # zeroconf's dependency; only needed here

    found = sorted(
        {
            ip.ip
            for adapter in ifaddr.get_adapters()
            for ip in adapter.ips
            if isinstance(ip.ip, str) and not ipaddress.ip_address(ip.ip).is_loopback
        },
        key=ipaddress.ip_address,
    )
    if not found:
        raise OSError("this host has no IPv4 address besides loopback; use ['127.0.0.1']")
    return found


@dataclasses.dataclass(frozen=True, slots=True)
class MdnsConfig:
    """Discovery settings. Durations in seconds; validated on construction.

    Attributes:
        interfaces: IP addresses (strings) of the interfaces to announce and browse on; the
            first is also where the TCP listener binds unless told otherwise. Pinning them is
            required where there is no default route; the default keeps everything on loopback.
            ``interfaces=host_addresses()`` takes this host's (or container's) own addresses.
        service_type: the DNS-SD type (change it to keep test runs apart).
        ttl: TTL of the records this peer announces.
        announce_interval: re-announce this peer's records this often.
        query_interval: ask for peers this often (answers also refresh ``last_seen``).
        peer_timeout: forget a peer not heard from for this long.
        discovery_timeout: default wait of :meth:`MdnsTransport.wait_for_peer`.
        resolve_timeout: how long to wait for a service's SRV/TXT/address records.
        max_peers: peers kept at most; more are ignored (and counted), except that a newcomer
            takes the place of a peer that never answered a ping.
        probe_name: before announcing, ask three times (250 ms apart) whether another peer
            already announces this entity id, and refuse to start if one does (``DiscoveryError``).
            Turn off only where ids are known to be unique: it adds 1.25 s to ``start()``.
    """

    interfaces: Sequence[str] = ("127.0.0.1",)
    service_type: str = SERVICE_TYPE
    ttl: int = 120
    announce_interval: float = 60.0
    query_interval: float = 10.0
    peer_timeout: float = 45.0
    discovery_timeout: float = 5.0
    resolve_timeout: float = 3.0
    max_peers: int = 64
    probe_name: bool = True

    def __post_init__(self) -> None:
        interfaces = self.interfaces
        if isinstance(interfaces, str) or not isinstance(interfaces, Iterable):
            raise TypeError("interfaces must be a list of IP address strings, like ['127.0.0.1']")
        checked: list[str] = []
        for item in interfaces:
            try:
                checked.append(str(ipaddress.ip_address(item)))
            except ValueError:
                raise ValueError(f"interfaces: {item!r} is not an IP address") from None
        if not checked:
            raise ValueError("interfaces must name at least one IP address")
        object.__setattr__(self, "interfaces", tuple(checked))
        if not self.service_type.endswith("._tcp.local.") or not self.service_type.startswith("_"):
            raise ValueError(
                f"service_type must look like '_name._tcp.local.', got {self.service_type!r}"
            )
        if isinstance(self.ttl, bool) or not isinstance(self.ttl, int) or self.ttl < 1:
            raise ValueError(f"ttl must be an int >= 1 second, got {self.ttl!r}")
        for name in (
            "announce_interval",
            "query_interval",
            "peer_timeout",
            "discovery_timeout",
            "resolve_timeout",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ValueError(f"{name} must be > 0 seconds, got {value!r}")
            object.__setattr__(self, name, float(value))
        if (
            isinstance(self.max_peers, bool)
            or not isinstance(self.max_peers, int)
            or self.max_peers < 1
        ):
            raise ValueError(f"max_peers must be an int >= 1, got {self.max_peers!r}")

    def replace(self, **changes: Any) -> MdnsConfig:
        """A copy with *changes* applied."""
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass(frozen=True, slots=True)
class PeerInfo:
    """A peer found by mDNS (from its SRV, TXT and address records).

    ``host``/``port`` is where messages go (the address it advertises); ``discovered_at`` is on
    the transport's ``discovery_clock`` (``time.monotonic`` by default). ``instance`` is a
    random token the peer picks when it is created (TXT ``instance``; ``""`` from a peer that
    predates it): a new value means the peer restarted.
    """

    entity_id: str
    host: str
    port: int
    addresses: tuple[str, ...]
    version: str
    capabilities: frozenset[str]
    transport_types: frozenset[str]
    service_name: str
    discovered_at: float
    instance: str = ""


def _tokens(raw: bytes | None) -> frozenset[str]:
    """Comma-separated tokens of a TXT value; bogus entries are dropped."""
    if not raw:
        return frozenset()
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        return frozenset()
    return frozenset(t for t in (part.strip() for part in text.split(",")) if TOKEN.fullmatch(t))


def _token(raw: bytes | None) -> str:
    """One token of a TXT value, or ``""`` if missing or bogus."""
    try:
        text = (raw or b"").decode("ascii")
    except UnicodeDecodeError:
        return ""
    return text if TOKEN.fullmatch(text) else ""


def peer_from_txt(
    properties: dict[bytes, bytes | None],
    addresses: Sequence[str],
    port: int | None,
    service_name: str,
    now: float,
) -> PeerInfo | None:
    """A :class:`PeerInfo` from resolved records, or ``None`` (with the reason logged) if bogus."""

    def ignore(why: str) -> None:
        logger.debug("ignoring mDNS service %r: %s", service_name, why)

    if properties.get(b"protocol") != b"synapse":
        ignore("TXT protocol is not 'synapse'")
        return None
    version_raw = properties.get(b"version") or b""
    version = version_raw.decode("ascii", "replace")
    if version.split(".")[0] != PROTOCOL_VERSION:
        ignore(f"unsupported protocol version {version!r}")
        return None
    try:
        entity_id = check_entity_id((properties.get(b"entity_id") or b"").decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        ignore(f"bad entity_id: {exc}")
        return None
    if port is None or not 0 < port < 65536:
        ignore(f"bad port {port!r}")
        return None
    usable: list[str] = []
    for address in addresses:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            continue
        if not (ip.is_multicast or ip.is_unspecified):
            usable.append(str(ip))
    if not usable:
        ignore("no usable address")
        return None
    return PeerInfo(
        entity_id=entity_id,
        host=usable[0],
        port=port,
        addresses=tuple(usable),
        version=version,
        capabilities=_tokens(properties.get(b"capabilities")),
        transport_types=_tokens(properties.get(b"transport_types")),
        service_name=service_name,
        discovered_at=now,
        instance=_token(properties.get(b"instance")),
    )
