"""Proxy configuration as the API receives it: proxy bodies read as Toxiproxy reads them.

Bodies are decoded as Toxiproxy's Go code decodes them (:mod:`chaos.server.gojson`): the same
errors for malformed JSON and fields of the wrong type, keys matched case-insensitively, unknown
keys ignored. Then Toxiproxy's checks (``missing required field: name``), then ours, which
Toxiproxy does not make: a name over :data:`NAME_MAX` characters, an upstream that is not
``host:port``, a ``/populate`` naming one proxy twice.

A ``listen`` address is not checked here: as in Toxiproxy, one that cannot be used is a bind
failure with Go's text (:mod:`chaos.server.golisten`). An empty or missing host means
127.0.0.1, not every interface: the proxy is a test tool and stays on loopback unless asked.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Final

from chaos.server import gojson
from chaos.server.apierror import bad_request, missing_field
from chaos.server.gojson import BOOL, STRING, GoType

LOOPBACK: Final = "127.0.0.1"

NAME_MAX: Final = 256
"""Longest proxy or toxic name, in characters. Even 4-byte characters, percent-encoded, keep a
toxic's URL (two names) within the 8 KiB request line the API reads; a longer name could be
created but never addressed again."""

_PROXY_FIELDS: Final = {
    "name": STRING,
    "listen": STRING,
    "upstream": STRING,
    "enabled": BOOL,
    # Toxiproxy's Proxy struct has an exported Logger field: it is decoded (and shown) too.
    "Logger": gojson.go_struct("Logger", "zerolog.Logger", {}),
}
PROXY: Final = gojson.go_struct("Proxy", "toxiproxy.Proxy", _PROXY_FIELDS)
"""``POST /proxies`` and ``PATCH /proxies/{p}`` bodies (Go's ``toxiproxy.Proxy``)."""

_POPULATE_ENTRY: Final = gojson.go_struct(
    "", 'struct { toxiproxy.Proxy; Enabled *bool "json:\\"enabled\\"" }', _PROXY_FIELDS
)
POPULATE: Final = gojson.slice_of(_POPULATE_ENTRY, "[]" + _POPULATE_ENTRY.name)
"""``POST /populate`` bodies."""


def decode_body(raw: bytes, go_type: GoType) -> object:
    """*raw* decoded into *go_type* as Toxiproxy decodes it; a 400 with Go's text if not."""
    try:
        return gojson.unmarshal(gojson.decode(raw), go_type)
    except gojson.GoJsonError as exc:
        raise bad_request(str(exc), _BODY_HINTS[go_type.name]) from None


_BODY_HINTS: Final = {
    PROXY.name: 'send a JSON object such as {"name": "redis", "listen": "127.0.0.1:26379", '
    '"upstream": "127.0.0.1:6379"}',
    POPULATE.name: 'send a JSON array of proxies: [{"name": ..., "listen": ..., "upstream": ...}]',
}


def check_name(name: str, what: str) -> str:
    """Return *name* if it is at most :data:`NAME_MAX` characters; else a 400 naming *what*."""
    if len(name) > NAME_MAX:
        raise bad_request(
            f"{what} is {len(name)} characters long, over {NAME_MAX}",
            f"names are at most {NAME_MAX} characters, so that every name fits in a request URL",
        )
    return name


@dataclasses.dataclass(frozen=True, slots=True)
class ProxyConfig:
    """What a client asked for when creating a proxy (``listen`` as given: ``""`` if none)."""

    name: str
    listen: str
    upstream: str
    enabled: bool = True


def split_address(text: str, field: str, *, allow_zero_port: bool) -> tuple[str, int]:
    """Split ``host:port`` / ``[v6]:port`` into ``(host, port)``; raise a 400 naming *field*.

    An empty host becomes 127.0.0.1.
    """
    example = "for example 127.0.0.1:6379"
    host, sep, port_text = text.rpartition(":")
    if not sep:
        raise bad_request(f"{field} {text!r} is not host:port", f"write host:port, {example}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not port_text.isascii() or not port_text.isdigit():
        raise bad_request(f"{field} {text!r} has no numeric port", f"write host:port, {example}")
    port = int(port_text)
    low = 0 if allow_zero_port else 1
    if not low <= port <= 65535:
        raise bad_request(
            f"{field} {text!r} has port {port}", f"a port is {low} to 65535, {example}"
        )
    return (host or LOOPBACK), port


def join_address(host: str, port: int) -> str:
    """Format ``(host, port)`` as Toxiproxy shows it (``[v6]:port`` for IPv6)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _required(fields: dict[str, object], where: str) -> tuple[str, str]:
    name = str(fields.get("name") or "")
    upstream = str(fields.get("upstream") or "")
    if not name:
        raise missing_field(f"name{where}", "every proxy needs a name")
    if not upstream:
        raise missing_field(
            f"upstream{where}",
            "every proxy needs the host:port it forwards to, e.g. 127.0.0.1:6379",
        )
    return name, upstream


def _ours(name: str, upstream: str, where: str) -> None:
    """The checks Toxiproxy does not make, after its own."""
    check_name(name, f"name{where}")
    split_address(upstream, f"upstream{where}", allow_zero_port=False)


def _fields(value: object) -> dict[str, object]:
    return value if isinstance(value, dict) else {}


def parse_proxy_config(raw: bytes) -> ProxyConfig:
    """Validate a ``POST /proxies`` body (Toxiproxy's checks, in its order, then ours)."""
    fields = _fields(decode_body(raw, PROXY))
    name, upstream = _required(fields, "")
    listen = str(fields.get("listen") or "")
    return ProxyConfig(name, listen, upstream, bool(fields.get("enabled", True)))


def check_proxy_config(config: ProxyConfig) -> None:
    """Our own checks of a new proxy, made once Toxiproxy's would have passed (after 409)."""
    _ours(config.name, config.upstream, "")


def parse_populate(raw: bytes) -> list[ProxyConfig]:
    """Validate every entry of a ``POST /populate`` body before anything is changed."""
    entries = decode_body(raw, POPULATE)
    items = entries if isinstance(entries, list) else []
    required = [_required(_fields(item), f" at proxy {i}") for i, item in enumerate(items, 1)]
    configs = []
    seen: set[str] = set()
    for i, (item, (name, upstream)) in enumerate(zip(items, required, strict=True), 1):
        _ours(name, upstream, f" at proxy {i}")
        if name in seen:
            raise bad_request(
                f"duplicate proxy name {name!r} in populate request",
                "each proxy may appear once; Toxiproxy would create the first and then "
                "replace it with the second",
            )
        seen.add(name)
        fields = _fields(item)
        listen = str(fields.get("listen") or "")
        configs.append(ProxyConfig(name, listen, upstream, bool(fields.get("enabled", True))))
    return configs


def populate_body(config: Sequence[object]) -> bytes:
    """A ``/populate`` body for *config* (a list of proxy dicts, as ``--config`` holds)."""
    return json.dumps(list(config)).encode()


@dataclasses.dataclass(frozen=True, slots=True)
class ProxyUpdate:
    """Fields present in a ``PATCH /proxies/{p}`` body (``None`` = keep the current value)."""

    listen: str | None = None
    upstream: str | None = None
    enabled: bool | None = None


def parse_proxy_update(raw: bytes) -> ProxyUpdate:
    """Validate the partial body of ``POST``/``PATCH /proxies/{p}``.

    As Toxiproxy, a ``name`` in the body is ignored (a proxy cannot be renamed).
    """
    fields = _fields(decode_body(raw, PROXY))
    listen = fields.get("listen")
    upstream = fields.get("upstream")
    enabled = fields.get("enabled")
    if isinstance(upstream, str) and upstream:
        split_address(upstream, "upstream", allow_zero_port=False)
    return ProxyUpdate(
        listen if isinstance(listen, str) and listen else None,
        upstream if isinstance(upstream, str) and upstream else None,
        enabled if isinstance(enabled, bool) else None,
    )
