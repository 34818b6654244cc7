"""JSON as Toxiproxy's Go code reads and writes it, so that answers match it byte for byte.

Toxiproxy decodes request bodies with Go's ``encoding/json`` (``json.NewDecoder(body).Decode``)
into Go structs, and encodes answers with ``json.Marshal``. Clients see the consequences:

* decoding reads the first JSON value and ignores what follows it; an empty body is ``EOF``, a
  truncated one ``unexpected EOF``, a syntax error is reported as Go's scanner words it
  (``invalid character '}' looking for beginning of object key string``);
* object keys match struct fields case-insensitively, unknown keys are ignored, ``null`` leaves a
  field as it was, and a value of the wrong type is ``json: cannot unmarshal string into Go struct
  field Proxy.enabled of type bool`` (the first such error; decoding goes on);
* strings with invalid UTF-8 or lone surrogates get U+FFFD; integers must be integer literals
  (``5.0`` is refused for an ``int64``); ``float32`` fields are rounded to float32;
* encoding is compact, in struct field order, with ``<``, ``>``, ``&``, U+2028 and U+2029 escaped
  as ``\\u003c``..., and float32 numbers printed in their shortest form (``0.33333334``, ``1e-7``).

:func:`decode` and :func:`unmarshal` do the first two, :func:`encode` the last.
"""

from __future__ import annotations

import codecs
import dataclasses
import json
import math
import re
import struct
from collections.abc import Mapping
from decimal import Decimal
from typing import Final

# -- decoding: syntax ------------------------------------------------------------------------------


class GoJsonError(ValueError):
    """A body Go's decoder refuses; ``str()`` is Go's error text (``unexpected EOF``...)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Number:
    """A JSON number as written (Go's errors quote the literal: ``number 5.5``)."""

    text: str


class Pairs(list[tuple[str, object]]):
    """A JSON object's members in order, duplicates kept (Go assigns each in turn)."""


_WHITE: Final = b" \t\r\n"
_HEX: Final = frozenset(b"0123456789abcdefABCDEF")
_ESCAPES: Final = frozenset(b'bfnrt\\/"')
_LITERALS: Final = {ord("t"): b"true", ord("f"): b"false", ord("n"): b"null"}


def _quote_char(c: int) -> str:
    """Go's ``quoteChar``: how its scanner names an offending byte (as a rune U+0000..U+00FF)."""
    if c == ord("'"):
        return "'\\''"
    if c == ord('"'):
        return "'\"'"
    named = {7: "\\a", 8: "\\b", 12: "\\f", 10: "\\n", 13: "\\r", 9: "\\t", 11: "\\v", 92: "\\\\"}
    if c in named:
        return f"'{named[c]}'"
    if c < 0x20 or c == 0x7F:
        return f"'\\x{c:02x}'"
    if 0x80 <= c <= 0xA0 or c == 0xAD:  # not printable for strconv.IsPrint
        return f"'\\u{c:04x}'"
    return f"'{chr(c)}'"


class _Scanner:
    """Go's ``encoding/json`` scanner, run over the bytes of one value (iterative, no recursion).

    ``end()`` returns the index just past the first complete value, or raises GoJsonError with
    the text Go's Decoder would give.
    """

    MAX_DEPTH: Final = 10000

    def __init__(self, data: bytes) -> None:
        self.data = data

    def _fail(self, c: int, context: str) -> GoJsonError:
        return GoJsonError(f"invalid character {_quote_char(c)} {context}")

    def end(self) -> int:
        data = self.data
        n = len(data)
        i = 0
        while i < n and data[i] in _WHITE:
            i += 1
        if i == n:
            raise GoJsonError("EOF")
        stack: list[str] = []  # "key" (expecting a key or '}'), "value" (in object), "array"
        i = self._value(i, stack, empty_ok=False)
        while True:
            if not stack:
                return i
            while i < n and data[i] in _WHITE:
                i += 1
            if i == n:
                raise GoJsonError("unexpected EOF")
            c = data[i]
            top = stack[-1]
            if top == "key":  # just after a key string
                if c != ord(":"):
                    raise self._fail(c, "after object key")
                stack[-1] = "value"
                i = self._value(i + 1, stack, empty_ok=False)
            elif top == "value":
                if c == ord(","):
                    i = self._key(i + 1, stack, empty_ok=False)
                elif c == ord("}"):
                    stack.pop()
                    i += 1
                else:
                    raise self._fail(c, "after object key:value pair")
            else:  # array
                if c == ord(","):
                    i = self._value(i + 1, stack, empty_ok=False)
                elif c == ord("]"):
                    stack.pop()
                    i += 1
                else:
                    raise self._fail(c, "after array element")

    def _skip_white(self, i: int) -> int:
        data = self.data
        while i < len(data) and data[i] in _WHITE:
            i += 1
        if i == len(data):
            raise GoJsonError("unexpected EOF")
        return i

    def _push(self, stack: list[str], state: str, c: int) -> None:
        if len(stack) >= self.MAX_DEPTH:
            raise GoJsonError("exceeded max depth")
        stack.append(state)

    def _key(self, i: int, stack: list[str], *, empty_ok: bool) -> int:
        """At the start of an object key (or ``}`` when *empty_ok*); returns the index after."""
        i = self._skip_white(i)
        c = self.data[i]
        if empty_ok and c == ord("}"):
            stack.pop()
            return i + 1
        if c != ord('"'):
            raise self._fail(c, "looking for beginning of object key string")
        stack[-1] = "key"
        return self._string(i + 1)

    def _value(self, i: int, stack: list[str], *, empty_ok: bool) -> int:
        """At the start of a value (or ``]`` when *empty_ok*); returns the index after it, or
        after the opening bracket of an object or array (pushed on *stack*)."""
        i = self._skip_white(i)
        data = self.data
        c = data[i]
        if empty_ok and c == ord("]"):
            stack.pop()
            return i + 1
        if c == ord("{"):
            self._push(stack, "key", c)
            return self._key(i + 1, stack, empty_ok=True)
        if c == ord("["):
            self._push(stack, "array", c)
            return self._value(i + 1, stack, empty_ok=True)
        if c == ord('"'):
            return self._string(i + 1)
        if c == ord("-") or ord("0") <= c <= ord("9"):
            return self._number(i)
        literal = _LITERALS.get(c)
        if literal is None:
            raise self._fail(c, "looking for beginning of value")
        word = literal.decode()
        for k in range(1, len(literal)):
            if i + k == len(data):
                raise GoJsonError("unexpected EOF")
            if data[i + k] != literal[k]:
                raise self._fail(
                    data[i + k], f"in literal {word} (expecting {_quote_char(literal[k])})"
                )
        return i + len(literal)

    def _string(self, i: int) -> int:
        """Just after an opening quote; returns the index after the closing one."""
        data = self.data
        n = len(data)
        while True:
            if i == n:
                raise GoJsonError("unexpected EOF")
            c = data[i]
            if c == ord('"'):
                return i + 1
            if c < 0x20:
                raise self._fail(c, "in string literal")
            if c == ord("\\"):
                i += 1
                if i == n:
                    raise GoJsonError("unexpected EOF")
                e = data[i]
                if e == ord("u"):
                    for _ in range(4):
                        i += 1
                        if i == n:
                            raise GoJsonError("unexpected EOF")
                        if data[i] not in _HEX:
                            raise self._fail(data[i], "in \\u hexadecimal character escape")
                elif e not in _ESCAPES:
                    raise self._fail(e, "in string escape code")
            i += 1

    def _number(self, i: int) -> int:
        data = self.data
        n = len(data)

        def at(k: int) -> int:
            if k == n:
                raise GoJsonError("unexpected EOF")
            return data[k]

        def digits(k: int) -> int:
            while k < n and ord("0") <= data[k] <= ord("9"):
                k += 1
            return k

        if data[i] == ord("-"):
            i += 1
            c = at(i)
            if not ord("0") <= c <= ord("9"):
                raise self._fail(c, "in numeric literal")
        i = i + 1 if data[i] == ord("0") else digits(i)
        if i < n and data[i] == ord("."):
            c = at(i + 1)
            if not ord("0") <= c <= ord("9"):
                raise self._fail(c, "after decimal point in numeric literal")
            i = digits(i + 1)
        if i < n and data[i] in b"eE":
            i += 1
            if at(i) in b"+-":
                i += 1
            c = at(i)
            if not ord("0") <= c <= ord("9"):
                raise self._fail(c, "in exponent of numeric literal")
            i = digits(i)
        # A number ends at the end of the input only at the top level (Go feeds a space at
        # EOF); inside an object or array the caller finds the input truncated.
        return i


def _go_replace(error: UnicodeError) -> tuple[str, int]:
    """One U+FFFD per invalid byte, as Go's ``utf8.DecodeRune`` walks them."""
    assert isinstance(error, UnicodeDecodeError)
    return "\ufffd", error.start + 1


codecs.register_error("synapse-go-utf8", _go_replace)

_LONE_SURROGATE: Final = re.compile("[\ud800-\udfff]")


def go_text(text: str) -> str:
    """*text* with each lone surrogate (from a ``"\\ud800"`` escape) replaced by U+FFFD, as Go's
    decoder does; left in, such a string could not even be encoded as UTF-8."""
    return _LONE_SURROGATE.sub("\ufffd", text)


def decode(body: bytes) -> object:
    """The first JSON value of *body*, as Go's ``json.Decoder.Decode`` reads it.

    Objects become :class:`Pairs`, numbers :class:`Number`; strings have Go's replacements.
    Raises :class:`GoJsonError` with Go's text for an empty, truncated or malformed body.
    """
    return _parse(body, _Scanner(body).end())


def decode_document(body: bytes) -> object:
    """*body* as Go's ``json.Unmarshal`` reads it: one JSON value and nothing after it.

    As :func:`decode`, with Unmarshal's texts: ``unexpected end of JSON input`` for an empty or
    truncated body, ``invalid character 'x' after top-level value`` for trailing data.
    """
    try:
        end = _Scanner(body).end()
    except GoJsonError as exc:
        if str(exc) in ("EOF", "unexpected EOF"):
            raise GoJsonError("unexpected end of JSON input") from None
        raise
    trailing = body[end:].lstrip(_WHITE)
    if trailing:
        raise GoJsonError(f"invalid character {_quote_char(trailing[0])} after top-level value")
    return _parse(body, end)


def _parse(body: bytes, end: int) -> object:
    text = body[:end].decode("utf-8", "synapse-go-utf8")
    try:
        return json.loads(
            text,
            object_pairs_hook=lambda pairs: Pairs((go_text(k), v) for k, v in pairs),
            parse_int=Number,
            parse_float=Number,
        )
    except RecursionError:
        raise GoJsonError("exceeded max depth") from None


# -- decoding: into Go types -----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class GoType:
    """A Go type a JSON value is decoded into.

    Args:
        kind: ``"string"``, ``"bool"``, ``"int"`` (int, int64), ``"float32"``, ``"struct"``,
            ``"slice"``, ``"map"`` (string keys) or ``"any"`` (``interface{}``: objects become
            dicts, numbers float64).
        name: the type as Go prints it in errors (``"int64"``, ``"toxiproxy.Proxy"``).
        struct: for a struct, its bare name (``"Proxy"``; ``""`` for an anonymous struct).
        fields: for a struct, its JSON field names and types, in order.
        element: for a slice or a map, the type of its elements.
    """

    kind: str
    name: str
    struct: str = ""
    fields: Mapping[str, GoType] = dataclasses.field(default_factory=dict)
    element: GoType | None = None


STRING: Final = GoType("string", "string")
BOOL: Final = GoType("bool", "bool")
INT64: Final = GoType("int", "int64")
INT: Final = GoType("int", "int")
FLOAT32: Final = GoType("float32", "float32")
ANY: Final = GoType("any", "interface {}")


def go_struct(bare_name: str, go_name: str, fields: Mapping[str, GoType]) -> GoType:
    """A Go struct type: its bare name, how Go prints the type, its JSON fields in order."""
    return GoType("struct", go_name, struct=bare_name, fields=fields)


def slice_of(element: GoType, go_name: str) -> GoType:
    """A Go slice type."""
    return GoType("slice", go_name, element=element)


def map_of(element: GoType, go_name: str) -> GoType:
    """A Go map type with string keys."""
    return GoType("map", go_name, element=element)


def _kind_of(value: object) -> str:
    if isinstance(value, Pairs):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "bool"
    return "number"


def fold(key: str) -> str:
    """A key as Go's case-insensitive field match sees it (long s is s, the Kelvin sign
    ``k``); non-ASCII keys otherwise match no field."""
    key = key.replace("\u017f", "s").replace("\u212a", "k")
    return key.lower() if key.isascii() else key


_INTEGER: Final = re.compile(r"-?[0-9]+\Z")


def to_float32(value: float) -> float:
    """*value* rounded to the nearest float32; OverflowError beyond float32's range (as Go's
    ``ParseFloat(s, 32)``; a JSON number is never infinite)."""
    rounded = float(struct.unpack("f", struct.pack("f", value))[0])
    if math.isinf(rounded):
        raise OverflowError(f"{value!r} is out of float32's range")
    return rounded


class _Unmarshal:
    """Decodes one value into a :class:`GoType`, keeping Go's first type error."""

    def __init__(self) -> None:
        self.error: str | None = None

    def _type_error(self, value: str, go_type: GoType, context: tuple[str, list[str]]) -> None:
        if self.error is not None:
            return
        struct_name, path = context
        if struct_name or path:
            where = f"Go struct field {struct_name}.{'.'.join(path)}"
        else:
            where = "Go value"
        self.error = f"json: cannot unmarshal {value} into {where} of type {go_type.name}"

    def value(self, value: object, go_type: GoType, context: tuple[str, list[str]]) -> object:
        """The decoded value, or None (null, or a type error recorded)."""
        if value is None:
            return None
        kind = go_type.kind
        if kind == "struct":
            if not isinstance(value, Pairs):
                self._type_error(_kind_of(value), go_type, context)
                return None
            return self.fields(value, go_type, context[1])
        if kind == "any":
            return self.any(value, context)
        if kind == "map":
            if not isinstance(value, Pairs):
                self._type_error(_kind_of(value), go_type, context)
                return None
            assert go_type.element is not None
            element = go_type.element
            return {go_text(k): self.value(v, element, context) for k, v in value}
        if kind == "slice":
            if not isinstance(value, list) or isinstance(value, Pairs):
                self._type_error(_kind_of(value), go_type, context)
                return None
            assert go_type.element is not None
            return [self.value(item, go_type.element, ("", [])) for item in value]
        if kind == "string":
            if isinstance(value, str):
                return go_text(value)
        elif kind == "bool":
            if isinstance(value, bool):
                return value
        elif isinstance(value, Number):
            if kind == "int":
                if _INTEGER.match(value.text) and -(2**63) <= int(value.text) < 2**63:
                    return int(value.text)
            else:
                try:
                    return to_float32(float(value.text))
                except OverflowError:
                    pass
            self._type_error(f"number {value.text}", go_type, context)
            return None
        self._type_error(_kind_of(value), go_type, context)
        return None

    def any(self, value: object, context: tuple[str, list[str]]) -> object:
        if isinstance(value, Pairs):
            return {go_text(k): self.any(v, context) for k, v in value}
        if isinstance(value, list):
            return [self.any(item, context) for item in value]
        if isinstance(value, Number):
            number = float(value.text)
            if math.isinf(number):
                self._type_error(f"number {value.text}", GoType("float", "float64"), context)
                return None
            return number
        return go_text(value) if isinstance(value, str) else value

    def fields(self, pairs: Pairs, go_type: GoType, path: list[str]) -> dict[str, object]:
        folded = {fold(name): name for name in go_type.fields}
        result: dict[str, object] = {}
        for key, item in pairs:
            name = key if key in go_type.fields else folded.get(fold(key))
            if name is None:
                continue  # unknown keys are ignored
            # null leaves a field as it was (Go); so does a value of the wrong type.
            decoded = self.value(item, go_type.fields[name], (go_type.struct, [*path, name]))
            if decoded is not None:
                result[name] = decoded
        return result


def unmarshal(value: object, go_type: GoType) -> object:
    """Decode *value* (from :func:`decode`) into *go_type* as Go's ``Unmarshal`` would.

    A struct becomes a dict of the fields present and not ``null``; ``null`` itself is None;
    raises :class:`GoJsonError` with Go's text for the first value of the wrong type.
    """
    worker = _Unmarshal()
    result = worker.value(value, go_type, ("", []))
    if worker.error is not None:
        raise GoJsonError(worker.error)
    return result


# -- encoding ----------------------------------------------------------------------------------


_STRING_ESCAPES: Final = {
    **{c: f"\\u{c:04x}" for c in range(0x20)},
    ord("\n"): "\\n",
    ord("\r"): "\\r",
    ord("\t"): "\\t",
    ord('"'): '\\"',
    ord("\\"): "\\\\",
    ord("<"): "\\u003c",
    ord(">"): "\\u003e",
    ord("&"): "\\u0026",
    0x2028: "\\u2028",
    0x2029: "\\u2029",
}


def _encode_string(text: str) -> str:
    return '"' + go_text(text).translate(_STRING_ESCAPES) + '"'


def format_float32(value: float) -> str:
    """Go's encoding of a float32: shortest round-tripping digits, ``e`` form below 1e-6."""
    f32 = to_float32(value)
    if f32 == 0:
        return "-0" if math.copysign(1.0, f32) < 0 else "0"
    packed = struct.pack("f", f32)
    digits = f"{f32:.8e}"
    for precision in range(9):
        candidate = f"{f32:.{precision}e}"
        if struct.pack("f", float(candidate)) == packed:
            digits = candidate
            break
    small = abs(f32) < to_float32(1e-6) or abs(f32) >= to_float32(1e21)
    if not small:
        return format(Decimal(digits), "f")
    mantissa, exponent = digits.split("e")
    if "." in mantissa:
        mantissa = mantissa.rstrip("0").rstrip(".")
    sign, magnitude = exponent[0], exponent[1:].lstrip("0") or "0"
    return f"{mantissa}e{sign}{magnitude.zfill(2) if sign == '+' else magnitude}"


def encode(value: object, *, float32: bool = True) -> str:
    """*value* as ``json.Marshal`` writes it: compact, dicts in their order.

    Floats are written as Go writes a ``float32`` (the only floats in Toxiproxy's answers are
    toxicities), or, with ``float32=False``, as Python writes a float (our own endpoints).
    """
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return _encode_string(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return format_float32(value) if float32 else json.dumps(value)
    if isinstance(value, Mapping):
        members = (
            f"{_encode_string(str(k))}:{encode(v, float32=float32)}" for k, v in value.items()
        )
        return "{" + ",".join(members) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(encode(v, float32=float32) for v in value) + "]"
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")
