"""Toxic definitions: the toxic types, their attributes, and validation of API bodies.

A :class:`ToxicSpec` is what the API stores and shows; what a toxic *does* to a connection lives in
:mod:`chaos.server.runtimes`. Attribute names and units are Toxiproxy's:

============  =======================================  ===========================================
type          attributes                               effect
============  =======================================  ===========================================
latency       ``latency``, ``jitter`` (ms)             delay each chunk by latency +/- jitter
bandwidth     ``rate`` (KB/s, 1 KB = 1000 B)           limit throughput; rate 0 holds all data
slow_close    ``delay`` (ms)                           wait before passing on the close (EOF)
timeout       ``timeout`` (ms)                         drop data, close after timeout (0 = never)
reset_peer    ``timeout`` (ms)                         on data, wait timeout then TCP RST
slicer        ``average_size``, ``size_variation``     cut chunks into slices, ``delay`` us apart
              (bytes), ``delay`` (us)
limit_data    ``bytes``                                pass this many bytes, then close
noop          (none)                                   nothing
============  =======================================  ===========================================
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Final, Literal

from chaos.server import gojson
from chaos.server.apierror import (
    INVALID_STREAM,
    INVALID_TOXIC_TYPE,
    ApiError,
    bad_request,
)
from chaos.server.config import check_name
from chaos.server.gojson import FLOAT32, INT, INT64, STRING, GoType

Stream = Literal["upstream", "downstream"]
STREAMS: Final[tuple[Stream, ...]] = ("upstream", "downstream")

TOXIC_ATTRIBUTES: Final[Mapping[str, tuple[str, ...]]] = {
    "latency": ("latency", "jitter"),
    "bandwidth": ("rate",),
    "slow_close": ("delay",),
    "timeout": ("timeout",),
    "reset_peer": ("timeout",),
    "slicer": ("average_size", "size_variation", "delay"),
    "limit_data": ("bytes",),
    "noop": (),
}
"""Every toxic type and its attribute names (all non-negative integers, default 0)."""

# Toxiproxy's Go struct of each type's attributes: its name and field types show in its errors
# (``cannot unmarshal string into Go struct field LatencyToxic.attributes.latency of type int64``).
_GO_STRUCTS: Final = {
    "latency": "LatencyToxic",
    "bandwidth": "BandwidthToxic",
    "slow_close": "SlowCloseToxic",
    "timeout": "TimeoutToxic",
    "reset_peer": "ResetToxic",
    "slicer": "SlicerToxic",
    "limit_data": "LimitDataToxic",
    "noop": "NoopToxic",
}


def _attributes_type(toxic_type: str) -> GoType:
    go_int = INT if toxic_type == "slicer" else INT64
    name = _GO_STRUCTS[toxic_type]
    fields = dict.fromkeys(TOXIC_ATTRIBUTES[toxic_type], go_int)
    return gojson.go_struct(name, f"toxics.{name}", fields)


_NOOP_ATTRIBUTES: Final = _attributes_type("noop")
# POST /proxies/{p}/toxics is decoded twice, as Toxiproxy does: the wrapper (attributes as the
# noop toxic's: any object), then, once the type is known, the attributes alone.
_WRAPPER: Final = gojson.go_struct(
    "ToxicWrapper",
    "toxics.ToxicWrapper",
    {
        "attributes": _NOOP_ATTRIBUTES,
        "name": STRING,
        "type": STRING,
        "stream": STRING,
        "toxicity": FLOAT32,
    },
)


def _attributes_only(toxic_type: str) -> GoType:
    return gojson.go_struct(
        "",
        'struct { Attributes interface {} "json:\\"attributes\\"" }',
        {"attributes": _attributes_type(toxic_type)},
    )


def _update_type(toxic_type: str) -> GoType:
    return gojson.go_struct(
        "",
        'struct { Attributes interface {} "json:\\"attributes\\""; '
        'Toxicity float32 "json:\\"toxicity\\"" }',
        {"attributes": _attributes_type(toxic_type), "toxicity": FLOAT32},
    )


# Larger values are certainly a mistake (a 2**63 ms latency) and would overflow timers.
_MAX_ATTRIBUTE: Final = 2**53


@dataclasses.dataclass(frozen=True, slots=True)
class ToxicSpec:
    """A configured toxic: what ``GET /proxies/{p}/toxics/{t}`` shows.

    ``stream`` is the direction; ``stream_text`` the stream as the client wrote it (Toxiproxy
    reads ``"UPSTREAM"`` as upstream and shows it as written).
    """

    name: str
    type: str
    stream: Stream
    toxicity: float
    attributes: Mapping[str, int]
    stream_text: str = ""

    def to_json(self) -> dict[str, object]:
        """Return the Toxiproxy JSON form, fields in its order (``attributes`` first)."""
        return {
            "attributes": dict(self.attributes),
            "name": self.name,
            "type": self.type,
            "stream": self.stream_text or self.stream,
            "toxicity": self.toxicity,  # a float32 value (see gojson.encode)
        }

    def attr(self, key: str) -> int:
        """Return attribute *key* (0 when the type has no such attribute)."""
        return self.attributes.get(key, 0)


def _type_list() -> str:
    return ", ".join(sorted(TOXIC_ATTRIBUTES))


def _check_toxicity(toxicity: float) -> float:
    if not 0.0 <= toxicity <= 1.0:
        raise bad_request(
            f"toxicity {gojson.format_float32(toxicity)} is outside 0..1",
            "toxicity is the probability that the toxic applies to a connection, 0.0 to 1.0",
        )
    return toxicity


def _decode(raw: bytes, go_type: GoType) -> dict[str, object]:
    try:
        value = gojson.unmarshal(gojson.decode(raw), go_type)
    except gojson.GoJsonError as exc:
        raise bad_request(
            str(exc),
            'send a JSON object such as {"type": "latency", "stream": "downstream", '
            '"toxicity": 1.0, "attributes": {"latency": 100}}',
        ) from None
    return value if isinstance(value, dict) else {}


def _raw_attributes(raw: bytes) -> list[gojson.Pairs]:
    """The ``attributes`` objects of a body, as written (for the checks Toxiproxy lacks)."""
    body = gojson.decode(raw)
    if not isinstance(body, gojson.Pairs):
        return []
    return [
        value
        for key, value in body
        if gojson.fold(key) == "attributes" and isinstance(value, gojson.Pairs)
    ]


def _attributes(
    toxic_type: str, decoded: object, raw: bytes, base: Mapping[str, int] | None = None
) -> dict[str, int]:
    """The attributes of a *toxic_type* toxic: *decoded* over *base* (defaults when None), after
    our checks: no unknown names (typos), no negative or absurd values."""
    names = TOXIC_ATTRIBUTES[toxic_type]
    result = dict(base) if base is not None else dict.fromkeys(names, 0)
    for pairs in _raw_attributes(raw):
        unknown = [key for key, _ in pairs if gojson.fold(key) not in names]
        if unknown:
            expected = ", ".join(names) if names else "none"
            raise bad_request(
                f"unknown attribute {unknown[0]!r} for toxic type {toxic_type!r}",
                f"a {toxic_type} toxic has the attributes: {expected} (Toxiproxy ignores "
                "unknown ones; this server refuses them, as they are usually typos)",
            )
    if isinstance(decoded, dict):
        for key, value in decoded.items():
            assert isinstance(value, int)
            if not 0 <= value <= _MAX_ATTRIBUTE:
                raise bad_request(
                    f"attribute {key!r} of a {toxic_type} toxic is {value}",
                    f"attributes are integers from 0 to {_MAX_ATTRIBUTE}",
                )
            result[key] = value
    return result


def parse_new_toxic(raw: bytes, check_free: Callable[[str], None]) -> ToxicSpec:
    """Validate the body of ``POST /proxies/{p}/toxics`` and return the toxic it describes.

    Toxiproxy's checks in its order (body, stream, type, then *check_free* on the name, which
    raises the 409 if it is taken, then the attributes), then ours. Defaults follow Toxiproxy:
    stream ``downstream``, toxicity 1.0, name ``<type>_<stream>``.
    """
    wrapper = _decode(raw, _WRAPPER)
    stream_text = str(wrapper.get("stream", "downstream"))
    stream: Stream = "upstream" if stream_text.lower() == "upstream" else "downstream"
    if stream_text.lower() not in STREAMS:
        raise ApiError(INVALID_STREAM, 400, f"got {stream_text!r}; upstream is client to server")
    toxic_type = str(wrapper.get("type", ""))
    name = str(wrapper.get("name") or f"{toxic_type}_{stream_text}")
    if toxic_type not in TOXIC_ATTRIBUTES:
        raise ApiError(INVALID_TOXIC_TYPE, 400, f"got {toxic_type!r}; the types are {_type_list()}")
    check_free(name)
    attributes = _decode(raw, _attributes_only(toxic_type)).get("attributes")
    check_name(name, "name")
    toxicity = _check_toxicity(float(wrapper.get("toxicity", 1.0)))  # type: ignore[arg-type]
    return ToxicSpec(
        name,
        toxic_type,
        stream,
        toxicity,
        _attributes(toxic_type, attributes, raw),
        stream_text,
    )


def parse_toxic_update(current: ToxicSpec, raw: bytes) -> ToxicSpec:
    """Validate the body of ``PATCH /proxies/{p}/toxics/{t}`` and return the updated toxic.

    Only ``attributes`` (merged over the current ones) and ``toxicity`` change; the name, type and
    stream of a toxic are fixed once it exists, as in Toxiproxy.
    """
    fields = _decode(raw, _update_type(current.type))
    toxicity = current.toxicity
    if "toxicity" in fields:
        toxicity = _check_toxicity(float(fields["toxicity"]))  # type: ignore[arg-type]
    attributes = _attributes(current.type, fields.get("attributes"), raw, current.attributes)
    return dataclasses.replace(current, toxicity=toxicity, attributes=attributes)
