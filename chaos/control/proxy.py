"""The :class:`Proxy` handle: one proxy of a Toxiproxy server, with fault methods.

See :mod:`chaos.control.faults` for what each fault is built from and how stale faults are
recognised.
"""

from __future__ import annotations

import contextlib
import threading
from typing import TYPE_CHECKING, Any, Literal

from chaos.control.faults import DisableFault, Fault, FlappingFault, ToxicFault
from chaos.control.faultspec import StreamArg, disables_proxy, normalize_params, toxic_plans
from chaos.control.livefaults import (
    DEFAULT_OWNER,
    MARKER_SUFFIX,
    check_owner,
    is_live,
    live_markers,
    other_owner_marker,
    proxy_gate,
    toxic_prefix,
)
from chaos.errors import NotFound
from chaos.lifecycle import call_all
from synapse_core.timeline import Timeline

if TYPE_CHECKING:
    from chaos.control.client import ToxiproxyClient
    from chaos.control.traffic import ProxyTraffic
    from chaos.control.types import ProxyInfo, ToxicInfo


def _split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return (host[1:-1] if host.startswith("[") else host), int(port)


class Proxy:
    """A handle on one proxy of a Toxiproxy server, with fault methods.

    Get one from :meth:`chaos.ToxiproxyClient.create_proxy`, :meth:`~chaos.ToxiproxyClient.
    get_proxy` or a backend (:func:`chaos.backends.resolve_backend`). ``listen``, ``host`` and
    ``port`` are fixed for the proxy's lifetime: faults and heals never move the listener.

    Attributes:
        name: the proxy's name on the server.
        upstream: ``host:port`` it forwards to.
        listen: ``ip:port`` it listens on (what the service under test connects to).
        host, port: the two parts of ``listen``.
        client: the :class:`~chaos.ToxiproxyClient` it talks through.
        timeline: the :class:`synapse_core.Timeline` its faults record into.
        owner: the owner tag in its toxics' names (see :func:`toxic_prefix`).
        info: the :class:`~chaos.ProxyInfo` the server reported when the handle was made.
    """

    def __init__(
        self,
        client: ToxiproxyClient,
        info: ProxyInfo,
        *,
        timeline: Timeline | None = None,
        owner: str = DEFAULT_OWNER,
    ) -> None:
        self.client = client
        self.info = info
        self.name = info.name
        self.upstream = info.upstream
        self.listen = info.listen
        self.host, self.port = _split_listen(info.listen)
        self.timeline = Timeline() if timeline is None else timeline
        self.owner = check_owner(owner)
        self._faults: list[Fault] = []
        self._faults_lock = threading.Lock()
        self.deleted = False
        """True once :meth:`delete` removed the proxy from the server (through this handle)."""

    def __repr__(self) -> str:
        return f"<chaos.Proxy {self.name!r} {self.listen} -> {self.upstream}>"

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` for ``socket.create_connection``."""
        return self.host, self.port

    @property
    def listen_host(self) -> str:
        """Same as :attr:`host` (the name :class:`~chaos.ProxyInfo` uses)."""
        return self.host

    @property
    def listen_port(self) -> int:
        """Same as :attr:`port` (the name :class:`~chaos.ProxyInfo` uses)."""
        return self.port

    @property
    def faults(self) -> list[Fault]:
        """The faults this handle started that are still active, oldest first.

        Safe to call from a signal handler: it takes no lock (the code the signal interrupted
        may hold it), because the list is replaced, never changed in place.
        """
        return list(self._faults)

    def refresh(self) -> ProxyInfo:
        """Fetch the proxy's current state from the server (also stored in :attr:`info`)."""
        self.info = self.client.proxy_info(self.name)
        return self.info

    def toxics(self) -> list[ToxicInfo]:
        """The toxics on the proxy now, as the server reports them (ours and anyone else's)."""
        return self.client.toxics(self.name)

    def traffic(self) -> ProxyTraffic:
        """When clients connected to this proxy and sent bytes toward the upstream.

        Synapse's server only: see :mod:`chaos.control.traffic` (the real Toxiproxy cannot tell).
        """
        return self.client.traffic(self.name)

    # -- faults ------------------------------------------------------------------------------

    def fault(self, kind: str, **params: Any) -> Fault:
        """Build the fault *kind* with *params* (as in scenario files); not started yet."""
        normalized = normalize_params(kind, params)
        if kind == "flapping":
            return FlappingFault(self, normalized)
        if disables_proxy(kind, normalized):
            return DisableFault(self, kind, normalized)
        return ToxicFault(self, kind, normalized, toxic_plans(kind, normalized))

    def latency(
        self, ms: float, jitter: float = 0, stream: StreamArg = "both", toxicity: float = 1.0
    ) -> Fault:
        """Delay data by *ms* +/- *jitter* milliseconds in each direction named.

        With the default ``stream="both"`` a request/response round trip gets about ``2 * ms``
        slower.
        """
        return self.fault("latency", ms=ms, jitter=jitter, stream=stream, toxicity=toxicity)

    def bandwidth(
        self, rate: float, stream: StreamArg = "downstream", toxicity: float = 1.0
    ) -> Fault:
        """Limit throughput to *rate* KB/s (1 KB = 1000 B; 0 holds all data)."""
        return self.fault("bandwidth", rate=rate, stream=stream, toxicity=toxicity)

    def slow_close(
        self, ms: float, stream: StreamArg = "downstream", toxicity: float = 1.0
    ) -> Fault:
        """Delay the end of stream (FIN) by *ms* milliseconds."""
        return self.fault("slow_close", ms=ms, stream=stream, toxicity=toxicity)

    def blackhole(self, stream: StreamArg = "both", toxicity: float = 1.0) -> Fault:
        """Silently drop data in the direction(s) named; connections stay open and silent.

        One direction makes an asymmetric partition (``"upstream"``: requests vanish;
        ``"downstream"``: the service works but answers vanish). Removing it closes the
        connections it affected, as Toxiproxy does.
        """
        return self.fault("blackhole", stream=stream, toxicity=toxicity)

    def reset_peer(
        self, after_ms: float = 0, stream: StreamArg = "downstream", toxicity: float = 1.0
    ) -> Fault:
        """Reset connections (TCP RST) *after_ms* milliseconds after data arrives."""
        return self.fault("reset_peer", after_ms=after_ms, stream=stream, toxicity=toxicity)

    def down(self) -> Fault:
        """Take the service away: listener closed, open connections cut, new ones refused."""
        return self.fault("down")

    def partition(self, mode: Literal["drop", "reject"] = "drop") -> Fault:
        """Cut this proxy off from the network, both directions.

        ``"drop"`` (a firewall DROP): everything is silently discarded on open and new
        connections; connects still succeed, nothing answers; healing closes the connections it
        held. ``"reject"`` (a firewall REJECT): open connections are cut, new ones refused.
        """
        return self.fault("partition", mode=mode)

    def slicer(
        self,
        average_size: int,
        size_variation: int = 0,
        delay_us: int = 0,
        stream: StreamArg = "downstream",
        toxicity: float = 1.0,
    ) -> Fault:
        """Cut data into pieces of *average_size* +/- *size_variation* bytes, *delay_us* apart."""
        return self.fault(
            "slicer",
            average_size=average_size,
            size_variation=size_variation,
            delay_us=delay_us,
            stream=stream,
            toxicity=toxicity,
        )

    def limit_data(
        self, bytes: int, stream: StreamArg = "downstream", toxicity: float = 1.0
    ) -> Fault:
        """Close each connection once *bytes* bytes have passed in the direction(s) named."""
        return self.fault("limit_data", bytes=bytes, stream=stream, toxicity=toxicity)

    def flapping(self, period: float, down_fraction: float = 0.5) -> FlappingFault:
        """Go down and up every *period* seconds: down for ``period * down_fraction`` first."""
        return FlappingFault(
            self, normalize_params("flapping", {"period": period, "down_fraction": down_fraction})
        )

    # -- cleanup -----------------------------------------------------------------------------

    def heal(self) -> None:
        """Stop every fault this handle started (newest first); raise the first error after all."""
        call_all([fault.stop for fault in reversed(self.faults)])

    def delete(self) -> None:
        """Heal, then delete the proxy from the server (its connections close); once."""
        try:
            self.heal()
        finally:
            if not self.deleted:  # a second delete() (a backend's cleanup) sends nothing
                with contextlib.suppress(NotFound):  # already gone: nothing left to delete
                    self.client.delete_proxy(self.name)
                self.deleted = True

    def remove_stale_faults(self) -> list[str]:
        """Remove toxics of this owner left by a dead process; return their names.

        Toxics held by live faults of this process are kept. If a stale marker shows the harness
        disabled the proxy, the proxy is enabled again, unless a live fault of this process or
        another owner's marker still holds it down.
        """
        prefix = toxic_prefix(self.owner)
        url = self.client.url
        toxics = self.client.toxics(self.name)
        stale = [
            t.name
            for t in toxics
            if t.name.startswith(prefix) and not is_live(url, self.name, t.name)
        ]
        if any(name.endswith(MARKER_SUFFIX) for name in stale):
            with proxy_gate(url, self.name):
                # Another owner's marker is another process's fault still holding the proxy down.
                if live_markers(url, self.name) == 0 and (
                    other_owner_marker(toxics, self.owner) is None
                ):
                    self.client.enable(self.name)
        for name in stale:
            self.client.discard_toxic(self.name, name)
        return stale

    # -- bookkeeping (called by Fault) -------------------------------------------------------

    def note_started(self, fault: Fault) -> None:
        """Count *fault* among :attr:`faults` (what :meth:`heal` stops); :meth:`Fault.start` calls
        it, so users need not."""
        with self._faults_lock:
            self._faults = [*self._faults, fault]

    def note_stopped(self, fault: Fault) -> None:
        """Take *fault* off :attr:`faults`; :meth:`Fault.stop` calls it."""
        with self._faults_lock:
            self._faults = [f for f in self._faults if f is not fault]
