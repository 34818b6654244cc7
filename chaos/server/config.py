"""Proxy configuration as the API receives it: parsing and validation of proxy bodies.

Addresses are ``host:port`` (``[v6]:port`` for IPv6). An empty or missing listen host means
127.0.0.1, not every interface: the proxy is a test tool and stays on loopback unless asked.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Final

from chaos.server.apierror import ApiError, bad_request, missing_field

DEFAULT_LISTEN: Final = "127.0.0.1:0"
LOOPBACK: Final = "127.0.0.1"

NAME_MAX: Final = 256
"""Longest proxy or toxic name, in characters. Even 4-byte characters, percent-encoded, keep a
toxic's URL (two names) within the 8 KiB request line the API reads; a longer name could be
created but never addressed again."""

_LONE_SURROGATE: Final = re.compile("[\ud800-\udfff]")


def clean_text(text: str) -> str:
    """*text* with each lone surrogate (``"\\ud800"`` in JSON) replaced by U+FFFD.

    Go's JSON decoder, and so Toxiproxy, does the same. Left in, such a string cannot be
    encoded: ``/metrics`` failed and no URL could reach a proxy named with one.
    """
    return _LONE_SURROGATE.sub("\ufffd", text)


def check_name(name: str, what: str) -> str:
    """Return *name* if it is at most :data:`NAME_MAX` characters; else a 400 naming *what*."""
    if len(name) > NAME_MAX:
        raise bad_request(
            f"{what} is {len(name)} characters long; names are at most {NAME_MAX} characters "
            "(so that every name fits in a request URL)"
        )
    return name


@dataclasses.dataclass(frozen=True, slots=True)
class ProxyConfig:
    """What a client asked for when creating a proxy."""

    name: str
    listen: str
    upstream: str
    enabled: bool = True


def split_address(text: str, field: str, *, allow_zero_port: bool) -> tuple[str, int]:
    """Split ``host:port`` / ``[v6]:port`` into ``(host, port)``; raise a 400 naming *field*.

    An empty host becomes 127.0.0.1.
    """
    host, sep, port_text = text.rpartition(":")
    if not sep:
        raise bad_request(f"{field} {text!r} is not host:port (for example 127.0.0.1:6379)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not port_text.isdigit():
        raise bad_request(f"{field} {text!r} has no numeric port (for example 127.0.0.1:6379)")
    port = int(port_text)
    low = 0 if allow_zero_port else 1
    if not low <= port <= 65535:
        raise bad_request(f"{field} {text!r} has port {port}, expected {low} to 65535")
    return (host or LOOPBACK), port


def join_address(host: str, port: int) -> str:
    """Format ``(host, port)`` as Toxiproxy shows it (``[v6]:port`` for IPv6)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _field(body: dict[str, object], name: str, kind: type, where: str) -> object:
    value = body.get(name)
    if value is not None and not isinstance(value, kind):
        raise bad_request(
            f"field {name!r}{where} must be a {'boolean' if kind is bool else 'string'}, "
            f"got {type(value).__name__} {value!r}"
        )
    return clean_text(value) if isinstance(value, str) else value


def parse_proxy_config(body: object, *, position: int | None = None) -> ProxyConfig:
    """Validate a proxy object from ``POST /proxies`` or one entry of ``POST /populate``.

    *position* (1-based) is named in errors for populate entries, as Toxiproxy does.
    """
    where = f" at proxy {position}" if position is not None else ""
    if not isinstance(body, dict):
        raise bad_request(f"expected a JSON object describing a proxy{where}")
    name = _field(body, "name", str, where)
    upstream = _field(body, "upstream", str, where)
    listen = _field(body, "listen", str, where)
    enabled = _field(body, "enabled", bool, where)
    if not name:
        raise missing_field(f"name{where}")
    if not upstream:
        raise missing_field(f"upstream{where}")
    assert isinstance(name, str)
    assert isinstance(upstream, str)
    check_name(name, f"name{where}")
    listen_text = listen if isinstance(listen, str) and listen else DEFAULT_LISTEN
    split_address(listen_text, f"listen{where}", allow_zero_port=True)
    split_address(upstream, f"upstream{where}", allow_zero_port=False)
    return ProxyConfig(name, listen_text, upstream, True if enabled is None else bool(enabled))


def parse_populate(body: object) -> list[ProxyConfig]:
    """Validate every entry of a ``POST /populate`` array before anything is changed."""
    if not isinstance(body, list):
        raise bad_request(
            f"expected a JSON array of proxies, got {type(body).__name__}; "
            'send [{"name": ..., "listen": ..., "upstream": ...}]'
        )
    configs = [parse_proxy_config(entry, position=i) for i, entry in enumerate(body, 1)]
    seen: set[str] = set()
    for config in configs:
        if config.name in seen:
            raise bad_request(f"duplicate proxy name {config.name!r} in populate request")
        seen.add(config.name)
    return configs


@dataclasses.dataclass(frozen=True, slots=True)
class ProxyUpdate:
    """Fields present in a ``PATCH /proxies/{p}`` body (``None`` = keep the current value)."""

    listen: str | None = None
    upstream: str | None = None
    enabled: bool | None = None


def parse_proxy_update(body: object) -> ProxyUpdate:
    """Validate the partial body of ``POST``/``PATCH /proxies/{p}``."""
    if not isinstance(body, dict):
        raise bad_request("expected a JSON object with listen, upstream and/or enabled")
    listen = _field(body, "listen", str, "")
    upstream = _field(body, "upstream", str, "")
    enabled = _field(body, "enabled", bool, "")
    if isinstance(listen, str) and listen:
        split_address(listen, "listen", allow_zero_port=True)
    if isinstance(upstream, str) and upstream:
        split_address(upstream, "upstream", allow_zero_port=False)
    return ProxyUpdate(
        listen if isinstance(listen, str) and listen else None,
        upstream if isinstance(upstream, str) and upstream else None,
        enabled if isinstance(enabled, bool) else None,
    )


def listen_error(listen: str, proxy: str, exc: OSError) -> ApiError:
    """A 500 for a listen address that cannot be bound (the proxy is not created/started)."""
    reason = exc.strerror or str(exc)
    return ApiError(
        f"could not listen on {listen} for proxy {proxy!r}: {reason}; "
        "choose a free port (or port 0 for any free port) or stop whatever uses it",
        500,
    )
