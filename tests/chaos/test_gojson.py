"""Go's JSON and listen-address rules, as the API needs them to answer as Toxiproxy does.

The expected texts were read off the real Toxiproxy 2.12.0 (Go 1.19); the differential test
(``test_toxiproxy_differential.py``) checks them end to end, these pin the edge cases.
"""

from __future__ import annotations

import pytest

from chaos.server import gojson
from chaos.server.golisten import ListenError, parse_listen

CANNOT = "json: cannot unmarshal"
INTO = "into Go struct field"
PROXY = gojson.go_struct(
    "Proxy",
    "toxiproxy.Proxy",
    {"name": gojson.STRING, "enabled": gojson.BOOL, "n": gojson.INT64, "t": gojson.FLOAT32},
)


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"", "EOF"),
        (b" \t\r\n", "EOF"),
        (b"{", "unexpected EOF"),
        (b'{"a":-', "unexpected EOF"),
        (b"tru", "unexpected EOF"),
        (b"[1 2]", "invalid character '2' after array element"),
        (b'{"a":1 "b"}', "invalid character '\"' after object key:value pair"),
        (b'{"a":-x}', "invalid character 'x' in numeric literal"),
        (b'{"a":1e+}', "invalid character '}' in exponent of numeric literal"),
        (b'{"a":fals}', "invalid character '}' in literal false (expecting 'e')"),
        (b'{"a":"\x01"}', "invalid character '\\x01' in string literal"),
        (b'{"a":\t\n\x7f}', "invalid character '\\x7f' looking for beginning of value"),
        (b"{\xc3\xa9:1}", "invalid character '\u00c3' looking for beginning of object key string"),
        (b"\\", "invalid character '\\\\' looking for beginning of value"),
    ],
)
def test_syntax_errors_are_gos(body: bytes, error: str) -> None:
    with pytest.raises(gojson.GoJsonError) as raised:
        gojson.decode(body)
    assert str(raised.value) == error


def test_only_the_first_value_is_read() -> None:
    assert gojson.decode(b'{"name":"a"} trailing ]]') == [("name", "a")]
    assert gojson.decode(b"01") == gojson.Number("0")


@pytest.mark.parametrize(
    ("body", "result_or_error"),
    [
        (b'{"NAME":"a","Enabled":true}', {"name": "a", "enabled": True}),
        (b'{"name":"a","name":null}', {"name": "a"}),  # null leaves a field as it was
        (b'{"n\xc5\xbfx":1,"other":[1,{}]}', {}),  # unknown keys are ignored
        (b'{"name":"\\ud800\xff"}', {"name": "\ufffd\ufffd"}),
        (b'{"n":5.0}', f"{CANNOT} number 5.0 into Go struct field Proxy.n of type int64"),
        (b"{\"n\":9223372036854775808}", f"{CANNOT} number {2**63} {INTO} Proxy.n of type int64"),
        (b'{"n":-9223372036854775808}', {"n": -(2**63)}),
        (b'{"t":1e39}', f"{CANNOT} number 1e39 into Go struct field Proxy.t of type float32"),
        (b'{"t":0.1}', {"t": gojson.to_float32(0.1)}),
        (b'{"enabled":"x","name":5}', f"{CANNOT} string {INTO} Proxy.enabled of type bool"),
        (b"[]", f"{CANNOT} array into Go value of type toxiproxy.Proxy"),
        (b"null", None),
    ],
)  # fmt: skip
def test_values_decode_into_go_types(body: bytes, result_or_error: object) -> None:
    if isinstance(result_or_error, str):
        with pytest.raises(gojson.GoJsonError) as raised:
            gojson.unmarshal(gojson.decode(body), PROXY)
        assert str(raised.value) == result_or_error
    else:
        assert gojson.unmarshal(gojson.decode(body), PROXY) == result_or_error


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1.0, "1"),
        (0.0, "0"),
        (0.5, "0.5"),
        (0.1, "0.1"),
        (0.333333333333, "0.33333334"),
        (1e-6, "0.000001"),
        (1.5e-6, "0.0000015"),
        (1e-7, "1e-7"),
        (1e-10, "1e-10"),
        (123456789.0, "123456790"),
        (3e38, "3e+38"),
    ],
)
def test_float32_is_written_as_go_writes_it(value: float, text: str) -> None:
    assert gojson.format_float32(value) == text


def test_encoding_is_compact_and_escapes_as_go() -> None:
    value = {
        "b": [1, True, None],
        "a": 'x<y>&"\\\n\t\b\x01\u2028\u2029é\ud800',
        "f": 1.0,
    }
    assert gojson.encode(value) == (
        '{"b":[1,true,null],"a":"x\\u003cy\\u003e\\u0026\\"\\\\\\n\\t\\u0008\\u0001'
        '\\u2028\\u2029é\ufffd","f":1}'
    )  # fmt: skip


@pytest.mark.parametrize(
    ("listen", "parsed"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        ("[::1]:0", ("::1", 0)),
        (":80", ("", 80)),
        ("127.0.0.1:", ("127.0.0.1", 0)),
        ("127.0.0.1:+80", ("127.0.0.1", 80)),
        ("127.0.0.1:-0", ("127.0.0.1", 0)),
        ("localhost:http", ("localhost", 80)),
        ("", ("", 0)),
        ("local373", "address local373: missing port in address"),
        ("1:2:3", "address 1:2:3: too many colons in address"),
        ("[::1]80", "address [::1]80: missing port in address"),
        ("[::1]:80:1", "address [::1]:80:1: too many colons in address"),
        ("[::1:80", "address [::1:80: missing ']' in address"),
        ("a]:80", "address a]:80: unexpected ']' in address"),
        ("h:65536", "address 65536: invalid port"),
        ("h:99999999999999999999", "address 99999999999999999999: invalid port"),
        ("h:nosuchservice", "address tcp/nosuchservice: unknown port"),
    ],
)
def test_listen_addresses_are_read_as_go_reads_them(listen: str, parsed: object) -> None:
    if isinstance(parsed, str):
        with pytest.raises(ListenError) as raised:
            parse_listen(listen)
        assert str(raised.value) == parsed
    else:
        assert parse_listen(listen) == parsed
