"""Fault kinds, their parameters and the toxics each one adds: the single source of truth.

Both :class:`chaos.Proxy` fault methods and scenario files go through :func:`normalize_params`, so
a typo or a bad value gets the same message (with the fault's signature) wherever it comes from.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from chaos.errors import InvalidFault

StreamName = Literal["upstream", "downstream"]
StreamArg = Literal["upstream", "downstream", "both"]

_REQUIRED: Final = object()

MAX_ATTRIBUTE: Final = 2**53
"""Largest integer toxic attribute a Toxiproxy server takes (JSON numbers are doubles)."""

MIN_FLAPPING_PERIOD: Final = 0.05
"""Shortest ``flapping`` period, seconds: each switch is two API requests."""


def short_repr(value: object) -> str:
    """``repr(value)``, cut short: error messages must stay one readable line."""
    try:
        text = repr(value)
    except (RecursionError, ValueError):  # deeply nested, or an int too long to print
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 80 else text[:77] + "..."


_EXPONENT_RE: Final = re.compile(r"^\s*([-+]?[0-9_]*\.?[0-9_]*)[eE]([-+]?[0-9_]+)\s*$")


def text_number_hint(value: object) -> str:
    """For a string that reads as a number, a hint in parentheses (with a leading space), else "".

    PyYAML follows YAML 1.1, which only reads an exponent as a number with a dot in the mantissa
    and a sign in the exponent: ``1e3`` and ``1.0e3`` load as strings, ``1.0e+3`` as 1000.0.
    """
    if not isinstance(value, str):
        return ""
    try:
        number = float(value)
    except ValueError:
        return ""
    if not math.isfinite(number):
        return ""  # "nan", "inf": not what anyone means by a number of ms
    exponent = _EXPONENT_RE.match(value)
    if exponent is None:
        return f" (a number in quotes is text; write {value.strip()} without quotes)"
    mantissa, power = exponent.groups()
    if "." not in mantissa:
        mantissa += ".0"
    if power[0] not in "+-":
        power = "+" + power
    written = f"{mantissa}e{power}"
    plain = repr(int(number)) if number.is_integer() and abs(number) < 1e16 else repr(number)
    if "e" not in plain:  # repr's own exponent form (1e+20) is text to YAML 1.1 as well
        written = f"{plain} or {written}"
    return f" (YAML reads {value.strip()} as text; write {written})"


def _number(kind: str, name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidFault(
            f"{kind}: {name} must be a number, got {type(value).__name__} {short_repr(value)}"
            + text_number_hint(value),
            fault=kind,
            param=name,
        )
    try:
        number = float(value)
    except OverflowError:  # an int beyond any float
        number = math.inf if value > 0 else -math.inf
    if math.isnan(number):
        raise InvalidFault(f"{kind}: {name} must be a number, got nan", fault=kind, param=name)
    return number


def _non_negative_int(kind: str, name: str, value: object) -> int:
    number = _number(kind, name, value)
    if not 0 <= number <= MAX_ATTRIBUTE or (isinstance(value, int) and value > MAX_ATTRIBUTE):
        raise InvalidFault(
            f"{kind}: {name} must be a finite number >= 0 and <= 2**53 (the largest Toxiproxy "
            f"takes), got {short_repr(value)}",
            fault=kind,
            param=name,
        )
    # Toxiproxy attributes are integers; milliseconds and bytes are rounded.
    return round(number)


def _period(kind: str, name: str, value: object) -> float:
    number = _number(kind, name, value)
    if not MIN_FLAPPING_PERIOD <= number < math.inf:
        raise InvalidFault(
            f"{kind}: {name} must be a positive number of seconds >= {MIN_FLAPPING_PERIOD:g} "
            f"(each switch is an API request), got {short_repr(value)}",
            fault=kind,
            param=name,
        )
    return number


def _fraction(kind: str, name: str, value: object) -> float:
    number = _number(kind, name, value)
    if not 0 < number < 1:
        raise InvalidFault(
            f"{kind}: {name} must be strictly between 0 and 1, got {short_repr(value)}",
            fault=kind,
            param=name,
        )
    return number


def _toxicity(kind: str, name: str, value: object) -> float:
    number = _number(kind, name, value)
    if not 0 <= number <= 1:
        raise InvalidFault(
            f"{kind}: toxicity must be between 0 and 1 (the share of connections affected), "
            f"got {short_repr(value)}",
            fault=kind,
            param=name,
        )
    return number


def _choice(*allowed: str) -> Callable[[str, str, object], str]:
    def check(kind: str, name: str, value: object) -> str:
        if value not in allowed:
            options = ", ".join(repr(a) for a in allowed)
            raise InvalidFault(
                f"{kind}: {name} must be one of {options}, got {short_repr(value)}",
                fault=kind,
                param=name,
            )
        return str(value)

    return check


_STREAM = _choice("upstream", "downstream", "both")
_ONE_STREAM_DEFAULT = "downstream"


@dataclass(frozen=True, slots=True)
class _Param:
    name: str
    check: Callable[[str, str, object], object]
    default: object = _REQUIRED


def _toxic_params(*params: _Param, stream: str = _ONE_STREAM_DEFAULT) -> tuple[_Param, ...]:
    return (*params, _Param("stream", _STREAM, stream), _Param("toxicity", _toxicity, 1.0))


FAULT_PARAMS: Final[Mapping[str, tuple[_Param, ...]]] = {
    "latency": _toxic_params(
        _Param("ms", _non_negative_int),
        _Param("jitter", _non_negative_int, 0),
        stream="both",
    ),
    "bandwidth": _toxic_params(_Param("rate", _non_negative_int)),
    "slow_close": _toxic_params(_Param("ms", _non_negative_int)),
    "blackhole": _toxic_params(stream="both"),
    "reset_peer": _toxic_params(_Param("after_ms", _non_negative_int, 0)),
    "down": (),
    "partition": (_Param("mode", _choice("drop", "reject"), "drop"),),
    "slicer": _toxic_params(
        _Param("average_size", _non_negative_int),
        _Param("size_variation", _non_negative_int, 0),
        _Param("delay_us", _non_negative_int, 0),
    ),
    "limit_data": _toxic_params(_Param("bytes", _non_negative_int)),
    "flapping": (
        _Param("period", _period),
        _Param("down_fraction", _fraction, 0.5),
    ),
}
"""Every fault kind and its parameters, in signature order."""

FAULT_KINDS: Final = tuple(FAULT_PARAMS)
"""The fault kinds a :class:`Proxy` (and a scenario step) can apply."""


def fault_signature(kind: str) -> str:
    """A readable signature, e.g. ``latency(ms, jitter=0, stream='both', toxicity=1.0)``."""
    parts = [
        p.name if p.default is _REQUIRED else f"{p.name}={p.default!r}" for p in FAULT_PARAMS[kind]
    ]
    return f"{kind}({', '.join(parts)})"


def normalize_params(kind: str, params: Mapping[str, object]) -> dict[str, Any]:
    """Validate *params* for fault *kind*; return them complete (defaults filled in).

    Raises :class:`InvalidFault` naming the unknown fault, unknown or missing parameter, or bad
    value, with the fault's signature so the user sees what is expected.
    """
    spec = FAULT_PARAMS.get(kind)
    if spec is None:
        raise InvalidFault(
            f"unknown fault {kind!r}; the faults are: {', '.join(FAULT_KINDS)}", fault=str(kind)
        )
    known = {p.name for p in spec}
    for name in params:
        if name not in known:
            raise InvalidFault(
                f"{kind} has no parameter {name!r}; expected {fault_signature(kind)}",
                fault=kind,
                param=str(name),
            )
    result: dict[str, Any] = {}
    for param in spec:
        if param.name in params:
            result[param.name] = param.check(kind, param.name, params[param.name])
        elif param.default is _REQUIRED:
            raise InvalidFault(
                f"{kind} needs {param.name!r}; expected {fault_signature(kind)}",
                fault=kind,
                param=param.name,
            )
        else:
            result[param.name] = param.default
    return result


@dataclass(frozen=True, slots=True)
class ToxicPlan:
    """One toxic a fault adds: Toxiproxy type, stream, attributes and toxicity."""

    type: str
    stream: StreamName
    attributes: Mapping[str, int]
    toxicity: float = 1.0


def _streams(stream: str) -> tuple[StreamName, ...]:
    if stream == "both":
        return ("upstream", "downstream")
    return ("upstream",) if stream == "upstream" else ("downstream",)


def toxic_plans(kind: str, params: Mapping[str, Any]) -> tuple[ToxicPlan, ...]:
    """The toxics fault *kind* adds with normalized *params* (empty for proxy-state faults)."""
    attributes: dict[str, int]
    if kind == "latency":
        toxic, attributes = "latency", {"latency": params["ms"], "jitter": params["jitter"]}
    elif kind == "bandwidth":
        toxic, attributes = "bandwidth", {"rate": params["rate"]}
    elif kind == "slow_close":
        toxic, attributes = "slow_close", {"delay": params["ms"]}
    elif kind == "blackhole":
        toxic, attributes = "timeout", {"timeout": 0}
    elif kind == "reset_peer":
        toxic, attributes = "reset_peer", {"timeout": params["after_ms"]}
    elif kind == "slicer":
        toxic = "slicer"
        attributes = {
            "average_size": params["average_size"],
            "size_variation": params["size_variation"],
            "delay": params["delay_us"],
        }
    elif kind == "limit_data":
        toxic, attributes = "limit_data", {"bytes": params["bytes"]}
    elif kind == "partition" and params["mode"] == "drop":
        # A firewall DROP: both directions silently discarded; timeout 0 never closes.
        return tuple(ToxicPlan("timeout", s, {"timeout": 0}) for s in ("upstream", "downstream"))
    else:
        return ()
    toxicity = float(params.get("toxicity", 1.0))
    return tuple(
        ToxicPlan(toxic, s, dict(attributes), toxicity) for s in _streams(params["stream"])
    )


def disables_proxy(kind: str, params: Mapping[str, Any]) -> bool:
    """True if fault *kind* works by disabling the proxy (down, partition reject, flapping)."""
    return kind in ("down", "flapping") or (kind == "partition" and params["mode"] == "reject")
