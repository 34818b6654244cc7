"""Values printed as Go's ``fmt`` and ``strconv`` print them, for output that matches toxiproxy-cli.

:func:`go_quote` is ``%q`` (``strconv.Quote``), :func:`go_value` is ``%v`` of what Go's JSON
decoder produces for an ``interface{}`` (float64, string, bool, nil, maps, slices), and
:func:`parse_float64` is ``strconv.ParseFloat(s, 64)``: which texts it accepts decides whether
toxiproxy-cli sends an attribute as a number or as a string.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from typing import Final

_QUOTE_ESCAPES: Final = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
    '"': '\\"',
    "\\": "\\\\",
}


def go_quote(text: str) -> str:
    """*text* as Go's ``%q`` writes it: double quotes, Go escapes, printable runes kept.

    Bytes that were not UTF-8 (``surrogateescape``-decoded arguments) are written ``\\xff``.
    """
    out = []
    for char in text:
        code = ord(char)
        if char in _QUOTE_ESCAPES:
            out.append(_QUOTE_ESCAPES[char])
        elif 0xDC80 <= code <= 0xDCFF:  # an undecodable byte of an argument
            out.append(f"\\x{code - 0xDC00:02x}")
        elif char.isprintable():
            out.append(char)
        elif code < 0x80:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return '"' + "".join(out) + '"'


def _digits(value: float) -> tuple[str, int]:
    """The shortest decimal digits of *value* (> 0) and its decimal exponent (d.ddd x 10^exp)."""
    _, digits, exponent = Decimal(repr(value)).as_tuple()
    text = "".join(map(str, digits)).rstrip("0") or "0"
    assert isinstance(exponent, int)
    return text, exponent + len(digits) - 1


def format_g(value: float) -> str:
    """A float64 as Go's ``%v`` (``strconv.FormatFloat(f, 'g', -1, 64)``): 100, 0.5, 1e+06."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    sign = "-" if value < 0 else ""
    digits, exp = _digits(abs(value))
    if exp < -4 or exp >= 6:  # Go decides with precision 6 for the shortest form
        # %e form: d.ddde+XX with at least two exponent digits
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{mantissa}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    if exp < 0:
        return f"{sign}0.{'0' * (-exp - 1)}{digits}"
    if len(digits) <= exp + 1:
        return f"{sign}{digits}{'0' * (exp + 1 - len(digits))}"
    return f"{sign}{digits[: exp + 1]}.{digits[exp + 1 :]}"


def go_value(value: object) -> str:
    """*value* (decoded from JSON into ``interface{}``) as Go's ``fmt.Print`` writes it."""
    if value is None:
        return "<nil>"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, float | int):
        return format_g(float(value))
    if isinstance(value, dict):
        members = (f"{key}:{go_value(value[key])}" for key in sorted(value))
        return "map[" + " ".join(members) + "]"
    if isinstance(value, list):
        return "[" + " ".join(go_value(item) for item in value) + "]"
    return str(value)


_DIGITS: Final = r"[0-9](?:_?[0-9])*"  # Go literals: an underscore only between digits
_DECIMAL: Final = re.compile(
    rf"[+-]?(?:{_DIGITS}\.?(?:{_DIGITS})?|\.{_DIGITS})(?:[eE][+-]?{_DIGITS})?\Z"
)
_HEX: Final = re.compile(
    r"[+-]?0[xX](?:[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)[pP][+-]?[0-9]+\Z"
)
_SPECIAL: Final = re.compile(r"[+-]?(?:inf|infinity|nan)\Z", re.IGNORECASE)


def parse_float64(text: str) -> float | None:
    """``strconv.ParseFloat(text, 64)``; None where Go returns an error (out of range too)."""
    if _SPECIAL.match(text):
        return float(text.lower().replace("infinity", "inf"))
    if _DECIMAL.match(text):
        value = float(text)
    elif _HEX.match(text):
        sign = -1.0 if text.startswith("-") else 1.0
        try:
            value = sign * float.fromhex(text.lstrip("+-"))
        except OverflowError:
            return None
    else:
        return None
    return None if math.isinf(value) else value
