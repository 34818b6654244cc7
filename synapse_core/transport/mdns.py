"""mDNS transport: peers find each other with real multicast DNS (zeroconf) and talk over TCP.

Each peer registers ``<label>._synapse._tcp.local.`` (``label`` is its entity id made DNS-safe)
with TXT keys ``version``, ``protocol=synapse``, ``entity_id``, ``capabilities`` and
``transport_types``, browses the same service type, and keeps a cache of the peers it found.
Messages travel over the TCP frame protocol of :class:`~synapse_core.transport.TcpTransport`.

Liveness is the breaker's and the connection's job, not the cache's: a peer that is cut off
never sends mDNS goodbyes, so a partition is noticed by failing sends and probes, which open that
peer's breaker. The cache only forgets a peer on a goodbye, when zeroconf's records expire, or
when nothing was heard from it for ``peer_timeout``; an answer the peer sent before its goodbye
but that arrives after it does not bring it back (see ``_on_goodbye``).

Discovery is not authenticated: anything on the network can announce a valid service. So each
newly found peer is pinged once (outside its breaker), and the cache prefers peers that answer:
when it is full, a newcomer takes the place of a peer that never answered a ping, and a peer
that never answers is forgotten after ``peer_timeout``. A peer that restarts (a new ``instance``
token in its TXT record) or moves to a new address gets a fresh breaker at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
import secrets
from collections.abc import Callable, Iterable
from functools import partial

# The DNS record classes are zeroconf's public API (documented, listed in its README) but not
# in its __all__, which mypy's strict re-export check reads.
from zeroconf import (  # type: ignore[attr-defined]
    DNSOutgoing,
    DNSPointer,
    DNSQuestion,
    DNSRecord,
    IPVersion,
    NonUniqueNameException,
    RecordUpdate,
    RecordUpdateListener,
    ServiceStateChange,
    Zeroconf,
)
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from synapse_core.breaker import CircuitBreakerConfig, CircuitBreakerManager
from synapse_core.clock import Clock, check_clock, monotonic_clock
from synapse_core.transport.auth import MessageAuthenticator
from synapse_core.transport.base import (
    DEFAULT_DEDUP_WINDOW,
    DEFAULT_INBOUND_QUEUE_BYTES,
    DEFAULT_TARGET_CACHE_SIZE,
)
from synapse_core.transport.discovery import (
    PROTOCOL_VERSION,
    TOKEN,
    MdnsConfig,
    PeerInfo,
    check_entity_id,
    instance_label,
    peer_from_txt,
)
from synapse_core.transport.errors import (
    DiscoveryError,
    DiscoveryTimeoutError,
    PeerUnknownError,
    TransportClosedError,
    TransportError,
)
from synapse_core.transport.framing import DEFAULT_MAX_FRAME_SIZE, FrameKind
from synapse_core.transport.tcp import Address, TcpTransport, check_port

logger = logging.getLogger("synapse_core.transport.mdns")

# DNS numbers (RFC 1035): a PTR question of class IN in a standard query.
_TYPE_PTR = 12
_CLASS_IN = 1
_FLAGS_QUERY = 0x0000
# The shortest sleep of the maintenance task when it wakes up for a peer's expiry (so that a
# clock that does not move cannot make it spin).
_MIN_EXPIRY_WAIT = 0.05
# Name probing: three queries 250 ms apart (RFC 6762 section 8.1), then listening until 1.25 s,
# because a responder that multicast its records less than a second ago defers its answer.
_PROBES = 3
_PROBE_STEPS = 5
_PROBE_WAIT = 0.25
# zeroconf holds a multicast answer back for up to 1.2 s (20-120 ms, aggregated for up to
# 500 ms, one more second for records it multicast in the last second: RFC 6762 sections 6
# and 14), so an answer a peer queued just before its goodbye can arrive after the goodbye.
# The rest is slack for a busy event loop on either side.
_GOODBYE_GRACE = 2.0
# One TXT string is a length byte and at most 255 bytes of "key=value" (RFC 6763 section 6.1).
_MAX_TXT_STRING = 255
# Pinging newly found peers: at most this many at once, and this many tries per peer (spaced
# 0.5 s, 1 s, 2 s... apart) before it counts as one that never answers.
_VERIFY_CONCURRENCY = 8
_VERIFY_TRIES = 4
_VERIFY_FIRST_RETRY = 0.5


def _check_advertised(host: object, port: object) -> tuple[str | None, int | None]:
    """*host*/*port* if usable as an advertised address (``None``: the listener's), else raise."""
    if host is not None:
        if not isinstance(host, str):
            raise ValueError(f"advertised host must be an IP address string, got {host!r}")
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"advertised host must be an IP address, got {host!r}") from None
    return host, None if port is None else check_port(port, "advertised port")


class _Refresher(RecordUpdateListener):
    """Marks peers as heard from whenever one of their records arrives (answers to queries)."""

    def __init__(self, transport: MdnsTransport) -> None:
        self._transport = transport

    def async_update_records(self, zc: Zeroconf, now: float, records: list[RecordUpdate]) -> None:
        names: set[str] = set()
        for update in records:
            record: DNSRecord = update.new
            if record.ttl == 0:
                continue  # a goodbye; the browser reports the removal
            if isinstance(record, DNSPointer):
                names.add(record.alias.lower())
            else:
                names.add(record.name.lower())
        if names:
            self._transport._heard_from(names)


class MdnsTransport(TcpTransport):
    """Finds peers with mDNS (zeroconf, asyncio API) and sends them messages over TCP framing.

    ::

        config = MdnsConfig(interfaces=["127.0.0.1"])
        async with MdnsTransport("node-a", 0, config) as a, MdnsTransport("node-b", 0, config) as b:
            await a.wait_for_peer("node-b")
            await a.send_message("node-b", Message("node-b", "node-a", b"hello"))

    A target is the peer's ``entity_id``. Every send goes through that peer's breaker, whose
    default preset is the original Synapse one (3 failures / 2 requests / 30 s window / 10 s
    recovery / 2 probes / 0.7); :meth:`get_circuit_breaker`, :meth:`get_circuit_stats` and
    :meth:`get_metrics` expose them.

    Args:
        entity_id: this peer's id, announced in TXT ``entity_id`` (any printable text).
        port: TCP listen port (0 = any free port).
        config: discovery settings (default: loopback only).
        listen_host: TCP listen address (default: the first configured interface).
        advertise_host, advertise_port: the address peers are told to send to, when it is not
            the listen address (a proxy or NAT in front of this peer).
        extra_capabilities: more tokens for the TXT ``capabilities`` list.
        zeroconf: an ``AsyncZeroconf`` to share (not closed by this transport); by default one
            is created on ``config.interfaces``.
        discovery_clock: the clock of peer liveness (``last_seen``, ``peer_timeout``,
            ``discovered_at``); default ``time.monotonic``. It is separate from *clock* (the
            breakers' clock) so that moving a virtual breaker clock never expires live peers.

    The remaining keyword arguments are :class:`~synapse_core.transport.TcpTransport`'s.
    """

    kind = "mdns"

    def __init__(
        self,
        entity_id: str,
        port: int = 0,
        config: MdnsConfig | None = None,
        *,
        listen_host: str | None = None,
        advertise_host: str | None = None,
        advertise_port: int | None = None,
        extra_capabilities: Iterable[str] = (),
        zeroconf: AsyncZeroconf | None = None,
        connect_timeout: float = 2.0,
        send_timeout: float = 5.0,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        max_connections: int = 256,
        max_connections_per_source: int | None = None,
        idle_timeout: float | None = 30.0,
        authenticator: MessageAuthenticator | None = None,
        breaker_config: CircuitBreakerConfig | None = None,
        breaker_manager: CircuitBreakerManager | None = None,
        clock: Clock | None = None,
        discovery_clock: Clock | None = None,
        inbound_queue_size: int = 1024,
        inbound_queue_bytes: int = DEFAULT_INBOUND_QUEUE_BYTES,
        dedup_window: int = DEFAULT_DEDUP_WINDOW,
        target_cache_size: int = DEFAULT_TARGET_CACHE_SIZE,
    ) -> None:
        self.entity_id = check_entity_id(entity_id)
        self.config = config if config is not None else MdnsConfig()
        if not isinstance(self.config, MdnsConfig):
            raise TypeError(f"config must be an MdnsConfig, got {type(config).__name__}")
        super().__init__(
            listen_host if listen_host is not None else self.config.interfaces[0],
            port,
            node_id=entity_id,
            connect_timeout=connect_timeout,
            send_timeout=send_timeout,
            max_frame_size=max_frame_size,
            max_connections=max_connections,
            max_connections_per_source=max_connections_per_source,
            idle_timeout=idle_timeout,
            authenticator=authenticator,
            breaker_config=breaker_config,
            breaker_manager=breaker_manager,
            clock=clock,
            inbound_queue_size=inbound_queue_size,
            inbound_queue_bytes=inbound_queue_bytes,
            dedup_window=dedup_window,
            target_cache_size=target_cache_size,
        )
        self._discovery_clock: Clock = (
            monotonic_clock if discovery_clock is None else check_clock(discovery_clock)
        )
        self._advertise_host, self._advertise_port = _check_advertised(
            advertise_host,
            advertise_port or None,  # 0, like None: the listener's port
        )
        extra = frozenset(extra_capabilities)
        bad = [token for token in extra if not TOKEN.fullmatch(token)]
        if bad:
            raise ValueError(f"capabilities must be tokens of [A-Za-z0-9._-], got {bad}")
        self._extra_capabilities = extra
        self.instance = secrets.token_hex(8)
        """This peer's instance token (TXT ``instance``): peers see a restart by its change."""
        self._check_txt()
        self._shared_zc = zeroconf
        self._zc: AsyncZeroconf | None = None
        self._info: AsyncServiceInfo | None = None
        self._registered = False
        self._name_taken = False
        self._browser: AsyncServiceBrowser | None = None
        self._refresher: _Refresher | None = None
        self._maintenance: asyncio.Task[None] | None = None
        self._resolving: dict[str, asyncio.Task[None]] = {}
        self._discovered: dict[str, PeerInfo] = {}
        self._last_seen: dict[str, float] = {}
        self._by_service: dict[str, str] = {}
        self._ignored: dict[str, float] = {}  # service name -> when it was found bogus
        # Services refused because max_peers were known -> when last heard from. Counted once;
        # not resolved again until a slot frees up; forgotten after peer_timeout of silence.
        self._refused: dict[str, float] = {}
        # Services that said goodbye (or expired) moments ago -> the end of their grace, and
        # those of them heard from during it (see _on_goodbye).
        self._gone: dict[str, asyncio.TimerHandle] = {}
        self._heard_while_gone: set[str] = set()
        self._changed: asyncio.Future[None] | None = None
        # Discovered peers that answered a ping or a send, and the pings of those not yet known
        # to (with how many tries failed so far).
        self._answered: set[str] = set()
        self._verify_failures: dict[str, int] = {}
        self._verifying: dict[str, asyncio.Task[None]] = {}
        self._verify_slots = asyncio.Semaphore(_VERIFY_CONCURRENCY)
        # Services whose peer never answered -> when that was found: they cannot take the place
        # of another such peer when the cache is full (no churn among impostors).
        self._unanswering: dict[str, float] = {}
        self.peers_ignored = 0
        """Peers not added because ``max_peers`` were already known."""
        self.peers_replaced = 0
        """Peers dropped because they never answered: for a newcomer, or after ``peer_timeout``."""

    # ------------------------------------------------------------------ identity

    @property
    def service_name(self) -> str:
        """This peer's full DNS-SD service name."""
        return f"{instance_label(self.entity_id)}.{self.config.service_type}"

    @property
    def advertised_address(self) -> Address:
        """``(host, port)`` announced to peers."""
        host, port = self.address
        return (self._advertise_host or host, self._advertise_port or port)

    @property
    def capabilities(self) -> frozenset[str]:
        return super().capabilities | {"discovery", "mdns"} | self._extra_capabilities

    def _txt(self) -> dict[str, str]:
        return {
            "version": PROTOCOL_VERSION,
            "protocol": "synapse",
            "entity_id": self.entity_id,
            "capabilities": ",".join(sorted(self.capabilities)),
            "transport_types": "tcp",
            "instance": self.instance,
        }

    def _check_txt(self) -> None:
        # zeroconf only fails on an oversized TXT string at registration, inside start(), and
        # with an error that names no field: refuse it here instead.
        for key, value in self._txt().items():
            size = len(key.encode("utf-8")) + 1 + len(value.encode("utf-8"))
            if size > _MAX_TXT_STRING:
                hint = " (use fewer or shorter extra_capabilities)" if key == "capabilities" else ""
                raise ValueError(
                    f"TXT entry {key!r} would be {size} bytes; one TXT string holds at most "
                    f"{_MAX_TXT_STRING}{hint}"
                )

    def _service_info(self, advertised: Address | None = None) -> AsyncServiceInfo:
        host, port = self.advertised_address if advertised is None else advertised
        ttl = self.config.ttl
        return AsyncServiceInfo(
            self.config.service_type,
            self.service_name,
            port=port,
            properties=self._txt(),
            server=f"{instance_label(self.entity_id)}.local.",
            host_ttl=ttl,
            other_ttl=ttl,
            parsed_addresses=[host],
        )

    async def set_advertised_address(self, host: str, port: int) -> None:
        """Announce a new address for this peer (peers re-resolve it).

        *host* is an IP address string and *port* 1-65535; anything else raises
        ``ValueError`` and changes nothing. Before ``start()`` the address is used when it
        announces; during a start it waits for the start to finish, then re-announces; once
        stopping or stopped it raises ``TransportClosedError``.
        """
        if host is None or port is None:
            raise ValueError(
                f"an advertised address needs a host and a port, got {host!r}, {port!r}"
            )
        _check_advertised(host, port)
        if self._state == "starting" and self._start_task is not None:
            # The start announces the info it built before probing: change it afterwards, or
            # the new address would be stored but never announced.
            await asyncio.shield(self._start_task)
        if self._state in ("stopping", "stopped"):
            raise TransportClosedError(f"{self!r} is stopped: nothing to announce")
        if self._zc is not None and self._registered:
            info = self._service_info((host, port))
            await (await self._zc.async_update_service(info))
            self._info = info
        self._advertise_host, self._advertise_port = host, port

    # ------------------------------------------------------------------ lifecycle

    async def _start(self) -> None:
        await super()._start()
        config = self.config
        if self._shared_zc is not None:
            self._zc = self._shared_zc
        else:
            v4_only = all(ipaddress.ip_address(i).version == 4 for i in config.interfaces)
            self._zc = AsyncZeroconf(
                interfaces=list(config.interfaces),
                ip_version=IPVersion.V4Only if v4_only else IPVersion.All,
            )
        zc = self._zc.zeroconf
        self._refresher = _Refresher(self)
        zc.async_add_listener(self._refresher, None)
        self._browser = AsyncServiceBrowser(
            zc, config.service_type, handlers=[self._on_service_state_change]
        )
        self._info = self._service_info()
        if config.probe_name:
            await self._probe_name()
        try:
            # Probing was done above: zeroconf's own probe asks for unicast answers, which on a
            # host with several mDNS responders sharing port 5353 reach only one of them.
            announced = await self._zc.async_register_service(
                self._info, cooperating_responders=True
            )
            self._registered = True
            await announced
        except NonUniqueNameException:
            raise self._conflict_error() from None
        self._maintenance = asyncio.get_running_loop().create_task(self._maintain())

    async def _probe_name(self) -> None:
        """Ask (multicast) who has our service name; fail if anyone answers before we announce."""
        assert self._zc is not None
        await self._zc.zeroconf.async_wait_for_start()  # a query sent before this is dropped
        for step in range(_PROBE_STEPS):
            if step < _PROBES:
                self.query()
            await asyncio.sleep(_PROBE_WAIT)
            if self._name_taken:
                raise self._conflict_error()

    def _conflict_error(self) -> DiscoveryError:
        return DiscoveryError(
            f"another peer already announces {self.service_name!r}: "
            f"entity id {self.entity_id!r} is taken on this network"
        )

    async def _stop(self) -> None:
        if self._maintenance is not None:
            self._maintenance.cancel()
            await asyncio.gather(self._maintenance, return_exceptions=True)
        for task in (*self._resolving.values(), *self._verifying.values()):
            task.cancel()
        await asyncio.gather(
            *self._resolving.values(), *self._verifying.values(), return_exceptions=True
        )
        for handle in self._gone.values():
            handle.cancel()
        self._gone.clear()
        self._heard_while_gone.clear()
        if self._browser is not None:
            await self._browser.async_cancel()
        zc = self._zc
        if zc is not None:
            if self._refresher is not None:
                zc.zeroconf.async_remove_listener(self._refresher)
            if self._registered and self._info is not None:
                # Goodbye packets: peers drop us from their caches at once.
                with contextlib.suppress(Exception):
                    await (await zc.async_unregister_service(self._info))
                self._registered = False
            if zc is not self._shared_zc:
                await zc.async_close()
        self._zc = None
        self._notify()
        await super()._stop()

    async def _maintain(self) -> None:
        """Periodic queries, re-announcements and expiry of silent peers.

        A failing step is logged and retried on the next round: the loop only ends with
        ``stop()``.
        """
        config = self.config
        loop = asyncio.get_running_loop()
        next_query = loop.time() + config.query_interval
        next_announce = loop.time() + config.announce_interval
        while True:
            wake = min(next_query, next_announce)
            expiry = self._next_expiry()
            if expiry is not None:
                wake = min(wake, loop.time() + max(_MIN_EXPIRY_WAIT, expiry))
            await asyncio.sleep(max(0.0, wake - loop.time()))
            now = loop.time()
            try:
                if now >= next_query:
                    next_query = now + config.query_interval
                    self.query()
                if now >= next_announce and self._zc is not None and self._info is not None:
                    next_announce = now + config.announce_interval
                    await (await self._zc.async_update_service(self._info))
            except Exception:
                logger.exception("%s: mDNS maintenance failed; retrying next round", self)
            try:
                self._expire()
            except Exception:
                logger.exception("%s: expiring silent peers failed; retrying next round", self)

    def _next_expiry(self) -> float | None:
        """Seconds until the next peer would expire (maybe negative), or ``None`` if none."""
        if not self._last_seen:
            return None
        oldest = min(self._last_seen.values())
        return oldest + self.config.peer_timeout - self._discovery_clock()

    def query(self) -> None:
        """Ask the network for peers now (answers arrive asynchronously)."""
        if self._zc is None:
            return
        out = DNSOutgoing(_FLAGS_QUERY)
        out.add_question(DNSQuestion(self.config.service_type, _TYPE_PTR, _CLASS_IN))
        self._zc.zeroconf.async_send(out)

    # ------------------------------------------------------------------ discovery events

    def _on_service_state_change(
        self,
        zeroconf: Zeroconf,
        service_type: str,
        name: str,
        state_change: ServiceStateChange,
    ) -> None:
        key = name.lower()
        if key == self.service_name.lower():
            if not self._registered and state_change is not ServiceStateChange.Removed:
                self._name_taken = True  # seen before we announced it: someone else has it
            return
        if state_change is ServiceStateChange.Removed:
            pending = self._resolving.pop(key, None)
            if pending is not None:
                pending.cancel()
            self._ignored.pop(key, None)
            self._refused.pop(key, None)
            self._on_goodbye(key)
            entity_id = self._by_service.get(key)
            if entity_id is not None:
                self._drop(entity_id, "it said goodbye or its records expired")
            return
        self._schedule_resolve(name, restart=True)

    def _on_goodbye(self, key: str) -> None:
        """Resolve nothing for service *key* for ``_GOODBYE_GRACE``; then ask, if it was heard.

        An answer the peer queued before it stopped can arrive after its goodbye: zeroconf
        caches the records again, the browser reports the service as added, and resolving it
        would bring back a dead peer. Nothing would take it away again before ``peer_timeout``:
        the goodbye's later copies are byte-identical to the first, and zeroconf drops those as
        duplicates for 800 ms. A peer heard from during the grace may also be one that restarted
        at once, so the grace ends with a query: only a live peer answers that.
        """
        if self._state != "running" and self._state != "starting":
            return
        previous = self._gone.pop(key, None)
        if previous is not None:
            previous.cancel()
        self._gone[key] = asyncio.get_running_loop().call_later(
            _GOODBYE_GRACE, self._grace_over, key
        )

    def _grace_over(self, key: str) -> None:
        del self._gone[key]
        if key in self._heard_while_gone:
            self._heard_while_gone.discard(key)
            self.query()  # a live peer's answer comes back through _heard_from

    def _schedule_resolve(self, name: str, restart: bool) -> None:
        if self._state != "running" and self._state != "starting":
            return
        key = name.lower()
        if key in self._gone:
            self._heard_while_gone.add(key)
            return
        previous = self._resolving.get(key)
        if previous is not None and not previous.done():
            if not restart:
                return
            previous.cancel()
        service_type = self.config.service_type
        task = asyncio.get_running_loop().create_task(self._resolve_service(service_type, name))
        self._resolving[key] = task
        task.add_done_callback(partial(self._resolve_done, key))

    def _resolve_done(self, key: str, task: asyncio.Task[None]) -> None:
        if self._resolving.get(key) is task:
            del self._resolving[key]
        if not task.cancelled() and task.exception() is not None:
            logger.warning("resolving %r failed: %r", key, task.exception())

    async def _resolve_service(self, service_type: str, name: str) -> None:
        zc = self._zc
        if zc is None:
            return
        info = AsyncServiceInfo(service_type, name)
        if not await info.async_request(zc.zeroconf, self.config.resolve_timeout * 1000):
            logger.debug("mDNS service %r did not resolve in time", name)
            return
        peer = peer_from_txt(
            info.properties,
            info.parsed_addresses(),
            info.port,
            name.lower(),
            self._discovery_clock(),
        )
        if peer is None or peer.entity_id == self.entity_id:
            if len(self._ignored) >= 4 * self.config.max_peers:
                self._ignored.clear()  # bounded memory; at worst a bogus service is re-resolved
            self._ignored[name.lower()] = self._discovery_clock()
            return
        self._add(peer)

    def _add(self, peer: PeerInfo) -> None:
        known = self._discovered.get(peer.entity_id)
        full = known is None and len(self._discovered) >= self.config.max_peers
        if full and not self._make_room_for(peer):
            self._refuse(peer.service_name, peer.entity_id)
            return
        self._refused.pop(peer.service_name, None)
        if known is not None:
            if known.service_name != peer.service_name:
                logger.warning(
                    "%s: entity id %r is now announced by %r (was %r)",
                    self,
                    peer.entity_id,
                    peer.service_name,
                    known.service_name,
                )
                self._by_service.pop(known.service_name, None)
            moved = (known.host, known.port) != (peer.host, peer.port)
            if moved or known.instance != peer.instance:
                self._renewed(known, peer, moved)
            peer = dataclasses.replace(peer, discovered_at=known.discovered_at)
        else:
            logger.info("%s: discovered %r at %s:%d", self, peer.entity_id, peer.host, peer.port)
        self._discovered[peer.entity_id] = peer
        self._now_pinned(peer.entity_id)
        self._by_service[peer.service_name] = peer.entity_id
        self._last_seen[peer.entity_id] = self._discovery_clock()
        if peer.entity_id not in self._answered:
            self._verify(peer.entity_id)
        self._notify()

    def _renewed(self, known: PeerInfo, peer: PeerInfo, moved: bool) -> None:
        """*known* restarted or moved (now *peer*): what we learnt about the old one is void.

        Its breaker would go on rejecting sends for the rest of its recovery timeout although
        a new instance is there, so it starts afresh, like its metrics; and the new instance
        must answer a ping again to count as a peer that answers.
        """
        entity_id = peer.entity_id
        logger.info(
            "%s: peer %r %s; its breaker starts afresh",
            self,
            entity_id,
            f"moved to {peer.host}:{peer.port}" if moved else "restarted",
        )
        self._drop_connection((known.host, known.port), "peer moved or restarted")
        breaker = self._peer_breakers.get(entity_id)
        if breaker is not None:
            breaker.reset()
        self._links.pop(entity_id, None)
        self._answered.discard(entity_id)
        self._verify_failures.pop(entity_id, None)
        self._unanswering.pop(peer.service_name, None)

    def _refuse(self, service_name: str, entity_id: str) -> None:
        refused = self._refused
        if service_name not in refused:
            # Counted and logged once; it is resolved again when a slot frees up.
            self.peers_ignored += 1
            logger.warning(
                "%s: ignoring peer %r: max_peers=%d reached",
                self,
                entity_id,
                self.config.max_peers,
            )
            if len(refused) >= 4 * self.config.max_peers:
                del refused[next(iter(refused))]  # bounded memory: forget the oldest
        refused[service_name] = self._discovery_clock()

    def _make_room_for(self, peer: PeerInfo) -> bool:
        """Drop a peer that never answered, so that *peer* gets its place; ``False`` if none.

        Only a peer that failed a ping and never answered can go, the one with the most failed
        pings first, then the earliest found. A newcomer that itself never answered before
        takes nobody's place.
        """
        if peer.service_name in self._unanswering:
            return False
        failures = self._verify_failures
        candidates = [
            known
            for entity_id, known in self._discovered.items()
            if failures.get(entity_id, 0) > 0 and entity_id not in self._answered
        ]
        if not candidates:
            return False
        victim = max(candidates, key=lambda p: (failures[p.entity_id], -p.discovered_at))
        self._replace(victim, f"it never answered; {peer.entity_id!r} takes its place")
        self._refuse(victim.service_name, victim.entity_id)
        return True

    def _replace(self, peer: PeerInfo, why: str) -> None:
        """Forget *peer*, which never answered; its service takes nobody's place later."""
        self.peers_replaced += 1
        unanswering = self._unanswering
        if len(unanswering) >= 4 * self.config.max_peers:
            del unanswering[next(iter(unanswering))]  # bounded memory: forget the oldest
        unanswering[peer.service_name] = self._discovery_clock()
        self._drop(peer.entity_id, why, reresolve=False)

    # ------------------------------------------------------------------ pinging new peers

    def _verify(self, entity_id: str) -> None:
        """Ping a newly found peer (outside its breaker) to learn whether it answers."""
        if entity_id in self._verifying or (self._state not in ("running", "starting")):
            return
        task = asyncio.get_running_loop().create_task(self._verify_peer(entity_id))
        self._verifying[entity_id] = task
        task.add_done_callback(partial(self._verify_done, entity_id))

    def _verify_done(self, entity_id: str, task: asyncio.Task[None]) -> None:
        if self._verifying.get(entity_id) is task:
            del self._verifying[entity_id]
        if not task.cancelled() and task.exception() is not None:
            logger.warning("pinging %r failed: %r", entity_id, task.exception())

    async def _verify_peer(self, entity_id: str) -> None:
        wait = _VERIFY_FIRST_RETRY
        for attempt in range(1, _VERIFY_TRIES + 1):
            if entity_id not in self._discovered or entity_id in self._answered:
                return
            try:
                async with self._verify_slots:
                    await self._probe(entity_id)  # _request marks it answered
                return
            except (TransportError, TimeoutError, OSError) as exc:
                if self._state != "running" or entity_id not in self._discovered:
                    return
                failures = self._verify_failures[entity_id] = (
                    self._verify_failures.get(entity_id, 0) + 1
                )
                logger.debug(
                    "%s: %r did not answer a ping (%d): %s", self, entity_id, failures, exc
                )
            if attempt == 1:
                self._retry_refused()  # it may now give its place to a peer that answers
            await asyncio.sleep(wait)
            wait *= 2

    async def _request(self, target: str, kind: FrameKind, body: bytes) -> tuple[FrameKind, bytes]:
        reply = await super()._request(target, kind, body)
        if target in self._discovered and target not in self._answered:
            self._answered.add(target)
            self._verify_failures.pop(target, None)
        return reply

    def _drop(self, entity_id: str, why: str, *, reresolve: bool = True) -> None:
        peer = self._discovered.pop(entity_id, None)
        if peer is None:
            return
        logger.info("%s: forgetting peer %r: %s", self, entity_id, why)
        self._by_service.pop(peer.service_name, None)
        self._last_seen.pop(entity_id, None)
        self._answered.discard(entity_id)
        self._verify_failures.pop(entity_id, None)
        verifying = self._verifying.pop(entity_id, None)
        if verifying is not None:
            verifying.cancel()
        if entity_id not in self._peers:
            self._forget_peer(entity_id)
        self._drop_connection((peer.host, peer.port), f"peer {entity_id!r} gone")
        if reresolve:
            self._retry_refused()  # a slot is free: another chance for the refused peers
        self._notify()

    def _retry_refused(self) -> None:
        for name in list(self._refused):
            self._schedule_resolve(name, restart=False)

    def _heard_from(self, service_names: set[str]) -> None:
        now = self._discovery_clock()
        suffix = "." + self.config.service_type.lower()
        own = self.service_name.lower()
        refused = self._refused
        for name in service_names:
            entity_id = self._by_service.get(name)
            if entity_id is not None:
                self._last_seen[entity_id] = now
            elif name in refused:
                refused[name] = now
                if len(self._discovered) < self.config.max_peers:
                    self._schedule_resolve(name, restart=False)  # a slot is free again
            elif name.endswith(suffix) and name != own and not self._recently_ignored(name, now):
                # A peer we expired (or never resolved) is answering again: zeroconf's browser
                # still has it cached and will not report it as new, so resolve it ourselves.
                self._schedule_resolve(name, restart=False)

    def _recently_ignored(self, name: str, now: float) -> bool:
        ignored_at = self._ignored.get(name)
        return ignored_at is not None and now - ignored_at < self.config.query_interval

    def _expire(self) -> None:
        limit = self._discovery_clock() - self.config.peer_timeout
        for name, seen in list(self._refused.items()):
            if seen <= limit:
                del self._refused[name]
        for name, since in list(self._unanswering.items()):
            if since <= limit:
                del self._unanswering[name]
        for entity_id, seen in list(self._last_seen.items()):
            if seen <= limit:
                self._drop(entity_id, f"not heard from for {self.config.peer_timeout:g}s")
        for entity_id, peer in list(self._discovered.items()):
            if (
                peer.discovered_at <= limit
                and entity_id not in self._answered
                and self._verify_failures.get(entity_id, 0) > 0
            ):
                self._replace(peer, f"it never answered in {self.config.peer_timeout:g}s")
                self._retry_refused()

    def _notify(self) -> None:
        changed = self._changed
        if changed is not None and not changed.done():
            changed.set_result(None)
        self._changed = None

    # ------------------------------------------------------------------ peers

    @property
    def peers(self) -> dict[str, Address]:
        """Every addressable peer, ``{entity_id: (host, port)}``: discovered and static."""
        found = {pid: (p.host, p.port) for pid, p in self._discovered.items()}
        return {**found, **self._peers}

    @property
    def discovered_peers(self) -> dict[str, PeerInfo]:
        """Peers found by mDNS and not expired, by entity id (a copy).

        A pure read, like :meth:`resolve` and ``can_reach``: expiry is the maintenance task's.
        """
        return dict(self._discovered)

    def last_seen(self, entity_id: str) -> float | None:
        """When *entity_id* was last heard from (``discovery_clock``), or ``None`` if unknown."""
        return self._last_seen.get(entity_id)

    def _pinned(self, target: str) -> bool:
        return target in self._peers or target in self._discovered

    def resolve(self, target: str) -> Address:
        static = self._peers.get(target)
        if static is not None:
            return static
        peer = self._discovered.get(target)
        if peer is None:
            raise PeerUnknownError(
                target, "not discovered (yet); await transport.wait_for_peer(entity_id) first"
            )
        return (peer.host, peer.port)

    async def _wait(
        self, done: Callable[[], bool], limit: float, entity_id: str, what: str
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        self._expire()
        while not done():
            if self._state == "stopping" or self._state == "stopped":
                # Nothing will change any more: waiting out the timeout would only misreport a
                # shutdown as a peer that never came.
                raise TransportClosedError(f"{self!r} stopped while waiting for {entity_id!r}")
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise DiscoveryTimeoutError(entity_id, limit, what)
            if self._changed is None:
                self._changed = loop.create_future()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._changed), min(remaining, 1.0))
            self._expire()

    async def wait_for_peer(
        self,
        entity_id: str,
        timeout: float | None = None,  # noqa: ASYNC109 - defaults to config.discovery_timeout
    ) -> PeerInfo:
        """Wait until *entity_id* is discovered (default ``config.discovery_timeout``)."""
        self._require_running()
        await self._wait(
            lambda: entity_id in self._discovered,
            self.config.discovery_timeout if timeout is None else timeout,
            entity_id,
            "discovered",
        )
        return self._discovered[entity_id]

    async def wait_for_peer_removed(
        self,
        entity_id: str,
        timeout: float | None = None,  # noqa: ASYNC109 - defaults to config.discovery_timeout
    ) -> None:
        """Wait until *entity_id* is no longer in the cache."""
        await self._wait(
            lambda: entity_id not in self._discovered,
            self.config.discovery_timeout if timeout is None else timeout,
            entity_id,
            "removed",
        )


EnhancedMdnsTransport = MdnsTransport
"""The original Synapse name of :class:`MdnsTransport`."""
