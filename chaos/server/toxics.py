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
import math
from collections.abc import Mapping
from typing import Final, Literal

from chaos.server.apierror import (
    INVALID_STREAM,
    INVALID_TOXIC_TYPE,
    ApiError,
    bad_request,
)
from chaos.server.config import check_name, clean_text

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

# Larger values are certainly a mistake (a 2**63 ms latency) and would overflow timers.
_MAX_ATTRIBUTE: Final = 2**53


@dataclasses.dataclass(frozen=True, slots=True)
class ToxicSpec:
    """A configured toxic: what ``GET /proxies/{p}/toxics/{t}`` shows."""

    name: str
    type: str
    stream: Stream
    toxicity: float
    attributes: Mapping[str, int]

    def to_json(self) -> dict[str, object]:
        """Return the Toxiproxy JSON form, fields in its order (``attributes`` first)."""
        return {
            "attributes": dict(self.attributes),
            "name": self.name,
            "type": self.type,
            "stream": self.stream,
            "toxicity": self.toxicity,
        }

    def attr(self, key: str) -> int:
        """Return attribute *key* (0 when the type has no such attribute)."""
        return self.attributes.get(key, 0)


def _type_list() -> str:
    return ", ".join(sorted(TOXIC_ATTRIBUTES))


def _parse_toxicity(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad_request(f"toxicity must be a number from 0.0 to 1.0, got {value!r}")
    toxicity = float(value)
    if not (0.0 <= toxicity <= 1.0) or math.isnan(toxicity):
        raise bad_request(f"toxicity must be between 0.0 and 1.0, got {value!r}")
    return toxicity


def _parse_attributes(
    toxic_type: str, raw: object, base: Mapping[str, int] | None = None
) -> dict[str, int]:
    """Validate *raw* attributes for *toxic_type*, merged over *base* (defaults when ``None``)."""
    names = TOXIC_ATTRIBUTES[toxic_type]
    result = dict(base) if base is not None else dict.fromkeys(names, 0)
    if raw is None:
        return result
    if not isinstance(raw, dict):
        raise bad_request(f"attributes must be a JSON object, got {type(raw).__name__}")
    for key, value in raw.items():
        if key not in names:
            expected = ", ".join(names) if names else "none"
            raise bad_request(
                f"unknown attribute {key!r} for toxic type {toxic_type!r} (expected: {expected})"
            )
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad_request(
                f"attribute {key!r} of a {toxic_type} toxic must be an integer, got {value!r}"
            )
        if not 0 <= value <= _MAX_ATTRIBUTE:
            raise bad_request(
                f"attribute {key!r} of a {toxic_type} toxic must be between 0 and "
                f"{_MAX_ATTRIBUTE}, got {value}"
            )
        result[key] = value
    return result


def _optional_str(body: Mapping[str, object], field: str) -> str | None:
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise bad_request(f"field {field!r} must be a string, got {value!r}")
    return clean_text(value)


def parse_new_toxic(body: object) -> ToxicSpec:
    """Validate the body of ``POST /proxies/{p}/toxics`` and return the toxic it describes.

    Defaults follow Toxiproxy: stream ``downstream``, toxicity 1.0, name ``<type>_<stream>``.
    Raises :class:`ApiError` (400) naming the first problem found.
    """
    if not isinstance(body, dict):
        raise bad_request(f"expected a JSON object describing a toxic, got {type(body).__name__}")
    toxic_type = _optional_str(body, "type") or ""
    stream_raw = _optional_str(body, "stream")
    stream = (stream_raw or "downstream").lower()
    if stream not in STREAMS:
        raise ApiError(f"{INVALID_STREAM}: got {stream_raw!r}", 400)
    if toxic_type not in TOXIC_ATTRIBUTES:
        raise ApiError(
            f"{INVALID_TOXIC_TYPE}: {toxic_type!r} is not one of {_type_list()}",
            400,
        )
    name = check_name(_optional_str(body, "name") or f"{toxic_type}_{stream}", "name")
    toxicity = _parse_toxicity(body["toxicity"]) if body.get("toxicity") is not None else 1.0
    attributes = _parse_attributes(toxic_type, body.get("attributes"))
    return ToxicSpec(name, toxic_type, stream, toxicity, attributes)


def parse_toxic_update(current: ToxicSpec, body: object) -> ToxicSpec:
    """Validate the body of ``PATCH /proxies/{p}/toxics/{t}`` and return the updated toxic.

    Only ``attributes`` (merged over the current ones) and ``toxicity`` change; the name, type and
    stream of a toxic are fixed once it exists, as in Toxiproxy.
    """
    if not isinstance(body, dict):
        raise bad_request(f"expected a JSON object with attributes, got {type(body).__name__}")
    toxicity = current.toxicity
    if body.get("toxicity") is not None:
        toxicity = _parse_toxicity(body["toxicity"])
    attributes = _parse_attributes(current.type, body.get("attributes"), current.attributes)
    return dataclasses.replace(current, toxicity=toxicity, attributes=attributes)
