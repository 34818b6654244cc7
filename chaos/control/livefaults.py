"""How the harness names its toxics, and which of them this process still holds.

Every toxic the harness adds is named ``synapse:<owner>:<fault>:<token>:<stream>``
(:func:`toxic_prefix`); faults that disable a proxy also hold a ``noop`` marker toxic named
``...:marker``. This module remembers, per server (:func:`server_key`), the toxics this process
added and has not removed, so :meth:`chaos.Proxy.remove_stale_faults` can tell a live fault
from one a dead process left behind, and so overlapping faults that disable one proxy compose
(:func:`proxy_gate`, :func:`live_markers`).

If a process dies with faults applied, :meth:`~chaos.Proxy.remove_stale_faults` (run by every
scenario run and by ``synapse-chaos run``) removes the toxics of its owner that no live fault in
this process holds, and re-enables the proxy if a stale marker says the harness disabled it.
Concurrent runs against one shared server should use different owners; a disabling fault that
ends leaves the proxy disabled while another owner's marker is on it (that owner's fault still
holds it down).
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import re
import socket
import threading
import urllib.parse
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Final

from chaos.errors import InvalidFault

if TYPE_CHECKING:
    from chaos.control.types import ToxicInfo

TOXIC_PREFIX: Final = "synapse"
DEFAULT_OWNER: Final = "default"
MARKER_SUFFIX: Final = ":marker"
_OWNER_RE: Final = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

# Toxics this process added and has not removed yet: (server key, proxy name, toxic name).
# Faults that disable a proxy hold a marker here; the proxy is re-enabled when the last marker
# for it goes, so overlapping down()/partition("reject")/flapping faults compose.
# _REGISTRY_LOCK guards these in-memory structures only and is never held during a request:
# a hung server must not stall faults on other servers (or other proxies).
_REGISTRY_LOCK = threading.Lock()
_LIVE: set[tuple[str, str, str]] = set()
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


class _Gate:
    """Serialises the enable/disable requests of one proxy (see :func:`proxy_gate`)."""

    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        # Reentrant so that a nested use in one thread cannot deadlock on itself.
        self.lock = threading.RLock()
        self.users = 0


_GATES: dict[tuple[str, str], _Gate] = {}


def toxic_prefix(owner: str) -> str:
    """The name prefix of every toxic the harness adds for *owner* (``synapse:<owner>:``)."""
    return f"{TOXIC_PREFIX}:{owner}:"


def check_owner(owner: str) -> str:
    """Return *owner* if it can be part of a toxic name, else raise :class:`InvalidFault`."""
    if not isinstance(owner, str) or not _OWNER_RE.match(owner):
        raise InvalidFault(
            f"owner must be 1 to 64 letters, digits, '_', '.' or '-', got {owner!r}",
            param="owner",
        )
    return owner


# -- registry of live toxics ---------------------------------------------------------------------


@functools.cache
def _localhost_address() -> str | None:
    """The one address ``localhost`` resolves to, or ``None`` if it resolves to several.

    Only a single address is safe to merge with: with several (``::1`` and ``127.0.0.1``) the
    client reaches whichever accepts first, which may be another server than the literal address.
    """
    try:
        infos = socket.getaddrinfo("localhost", None, type=socket.SOCK_STREAM)
    except OSError:
        return None
    addresses = {str(info[4][0]) for info in infos}
    if len(addresses) != 1:
        return None
    return _canonical_host(addresses.pop())


def _canonical_host(host: str) -> str:
    try:
        return str(ipaddress.ip_address(host))  # ::0001 and ::1 are one address
    except ValueError:
        return host.lower().rstrip(".")


@functools.lru_cache(maxsize=256)
def server_key(url: str) -> str:
    """The identity of the Toxiproxy server *url* names, for the live-fault registry.

    Spellings of one server give one key: scheme and host case, a trailing slash or path (the
    client ignores it), a default port left out (``http://h`` is ``http://h:80``), IPv6 written
    in full or short, and ``localhost`` when it resolves to exactly one address (then it is that
    address). Other host names are kept as written: resolving them could block or change.
    """
    try:
        parts = urllib.parse.urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return url.strip().rstrip("/")  # not a URL the client accepts; keep it distinct
    scheme = (parts.scheme or "http").lower()
    host = _canonical_host(parts.hostname or "")
    if host == "localhost":
        host = _localhost_address() or host
    if port is None:
        port = _DEFAULT_PORTS.get(scheme)
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}" if port is None else f"{scheme}://{host}:{port}"


def register(url: str, proxy: str, toxic: str) -> None:
    key = server_key(url)
    with _REGISTRY_LOCK:
        _LIVE.add((key, proxy, toxic))


def unregister(url: str, proxy: str, toxic: str) -> None:
    key = server_key(url)
    with _REGISTRY_LOCK:
        _LIVE.discard((key, proxy, toxic))


def is_live(url: str, proxy: str, toxic: str) -> bool:
    key = server_key(url)
    with _REGISTRY_LOCK:
        return (key, proxy, toxic) in _LIVE


def live_markers(url: str, proxy: str) -> int:
    key = server_key(url)
    with _REGISTRY_LOCK:
        return sum(1 for u, p, t in _LIVE if u == key and p == proxy and t.endswith(MARKER_SUFFIX))


@contextlib.contextmanager
def proxy_gate(url: str, proxy: str) -> Iterator[None]:
    """Hold the gate of one proxy: its marker count and enable/disable requests stay in step.

    Counting the live markers and sending the matching enable/disable must be one step per
    proxy, or a release's enable could reach the server after a concurrent acquire's disable
    (proxy up while a fault holds it down). The gate is per proxy, so a slow or hung server
    delays only the faults on that proxy.
    """
    key = (server_key(url), proxy)
    with _REGISTRY_LOCK:
        gate = _GATES.get(key)
        if gate is None:
            gate = _GATES[key] = _Gate()
        gate.users += 1
    try:
        with gate.lock:
            yield
    finally:
        with _REGISTRY_LOCK:
            gate.users -= 1
            if gate.users == 0 and _GATES.get(key) is gate:
                del _GATES[key]  # nobody waits on it: bounded memory across many proxies


def is_marker(name: str) -> bool:
    """Whether *name* is a disable marker toxic of the harness (any owner)."""
    return name.startswith(f"{TOXIC_PREFIX}:") and name.endswith(MARKER_SUFFIX)


def any_marker(toxics: Iterable[ToxicInfo]) -> bool:
    """Whether any owner's disable marker is among *toxics*."""
    return any(is_marker(t.name) for t in toxics)


def other_owner_marker(toxics: Iterable[ToxicInfo], owner: str) -> str | None:
    """The name of a disable marker of an owner other than *owner* among *toxics*, if any."""
    own = toxic_prefix(owner)
    for toxic in toxics:
        if is_marker(toxic.name) and not toxic.name.startswith(own):
            return toxic.name
    return None
