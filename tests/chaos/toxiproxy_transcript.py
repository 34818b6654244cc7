"""A scripted conversation with a Toxiproxy API, recorded from the real server and replayed on ours.

``STEPS`` is one sequence of requests covering every endpoint and every error a client can meet:
409s, 404s, Go's decoding errors, bind failures (a port in use, addresses Go cannot parse),
``/populate`` stopping at a failing middle entry, 405s, unknown paths, paths the router
redirects to their clean form, a browser, escapes and float32 formatting in JSON. :func:`run`
plays it against a server and returns what came back; ports are chosen at run time and written
back as placeholders (``{free0}``, ``{held}``), so a transcript recorded on one machine compares
with a run on another.

``toxiproxy_transcript.json`` next to this file is what the real Toxiproxy 2.12.0 answered
(recorded with ``-proxy-metrics``)::

    toxiproxy-server -host 127.0.0.1 -port 18474 -proxy-metrics &
    python tests/chaos/toxiproxy_transcript.py http://127.0.0.1:18474 > transcript.json

``test_toxiproxy_differential.py`` replays it on the embedded server and compares status,
headers and bodies byte for byte (our extra ``hint`` member set aside).
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import re
import socket
import sys
from collections.abc import Iterator
from typing import Any

FREE_PORTS = 6

# Headers compared as values; the request id is compared by format, Date not at all.
COMPARED = ("Content-Type", "X-Content-Type-Options", "Location")
REQUEST_ID = "X-Toxiproxy-Request-Id"
XID = re.compile(r"[0-9a-v]{20}\Z")


def _step(
    method: str,
    path: str,
    body: str | bytes | None = None,
    *,
    agent: str = "synapse-differential",
    compare_body: bool = True,
    note: str = "",
) -> dict[str, Any]:
    step: dict[str, Any] = {"method": method, "path": path, "agent": agent}
    if isinstance(body, bytes):
        step["body_b64"] = base64.b64encode(body).decode()
    elif body is not None:
        step["body"] = body
    if not compare_body:
        step["compare_body"] = False
    if note:
        step["note"] = note
    return step


def _proxy(name: str, listen: str, upstream: str = "127.0.0.1:1", **extra: object) -> str:
    return json.dumps({"name": name, "listen": listen, "upstream": upstream, **extra})


STEPS: list[dict[str, Any]] = [
    _step("GET", "/version"),
    _step("GET", "/proxies", note="no proxies: {}"),
    # -- create --------------------------------------------------------------------------------
    _step("POST", "/proxies", _proxy("redis", "127.0.0.1:{free0}", "127.0.0.1:6379")),
    _step("POST", "/proxies", _proxy("redis", "127.0.0.1:{free1}", "127.0.0.1:6379")),
    _step("POST", "/proxies", '{"listen":"127.0.0.1:{free1}","upstream":"127.0.0.1:1"}'),
    _step("POST", "/proxies", '{"name":"nameonly"}'),
    _step("POST", "/proxies", '{"name":"","upstream":""}'),
    _step("POST", "/proxies", "null"),
    _step("POST", "/proxies", ""),
    _step("POST", "/proxies", "   \n"),
    _step("POST", "/proxies", "nope"),
    _step("POST", "/proxies", '{"name":"t2","upstream":"x:1"'),
    _step("POST", "/proxies", '{"name":"t3",}'),
    _step("POST", "/proxies", "{'name':1}"),
    _step("POST", "/proxies", '{"name" 1}'),
    _step("POST", "/proxies", '{"a":"\\x"}'),
    _step("POST", "/proxies", '{"a":tru}'),
    _step("POST", "/proxies", '{"a":01}'),
    _step("POST", "/proxies", '{"a":1.}'),
    _step("POST", "/proxies", '{"a":"\\u12"}'),
    _step("POST", "/proxies", b'{"a":\xff}'),
    _step("POST", "/proxies", '{"name":5,"upstream":"x:1"}'),
    _step("POST", "/proxies", '{"name":"e","upstream":"x:1","enabled":"yes"}'),
    _step("POST", "/proxies", '{"name":"e","upstream":"x:1","Logger":5}'),
    _step("POST", "/proxies", "[1]"),
    _step("POST", "/proxies", '"proxy"'),
    # listen addresses Go cannot use: its own words, 500
    _step("POST", "/proxies", _proxy("bad1", "local373")),
    _step("POST", "/proxies", _proxy("bad2", "127.0.0.1:{held}")),
    _step("POST", "/proxies", _proxy("bad3", "localhost:{held}")),
    _step("POST", "/proxies", _proxy("bad4", "127.0.0.1:99999")),
    _step("POST", "/proxies", _proxy("bad5", "127.0.0.1:-1")),
    _step("POST", "/proxies", _proxy("bad6", "127.0.0.1:nosuchservice")),
    _step("POST", "/proxies", _proxy("bad7", "1:2:3")),
    _step("POST", "/proxies", _proxy("bad8", "[::1:80")),
    _step("POST", "/proxies", _proxy("bad9", "a[b]:0")),
    _step("POST", "/proxies", _proxy("bad10", "256.1.1.1:0")),
    _step("POST", "/proxies", _proxy("bad11", "10.255.254.253:{free1}")),
    _step("GET", "/proxies", note="none of the failed ones exists"),
    # keys match case-insensitively; unknown keys, trailing data and the Logger are ignored
    _step(
        "POST",
        "/proxies",
        '{"NAME":"cased","Upstream":"127.0.0.1:2","LISTEN":"127.0.0.1:{free1}","ENABLED":false,'
        '"Logger":{"x":1},"toxics":5,"other":[1]} trailing',
    ),
    _step("POST", "/proxies", '{"name":"off","upstream":"127.0.0.1:3","enabled":false}'),
    _step(
        "POST",
        "/proxies",
        '{"name":"odd <&> \\u2028 \\u00e9 \\ud800 \\"q\\" \\\\ \\u0001","upstream":"127.0.0.1:4",'
        '"enabled":false}',
    ),
    _step("GET", "/proxies"),
    _step("GET", "/proxies/odd%20%3C&%3E%20%E2%80%A8%20%C3%A9%20%EF%BF%BD%20%22q%22%20%5C%20%01"),
    _step("GET", "/proxies/redis"),
    _step("GET", "/proxies/nosuch"),
    # -- update --------------------------------------------------------------------------------
    _step("PATCH", "/proxies/redis", '{"enabled":false}'),
    _step("GET", "/proxies/redis"),
    _step("PATCH", "/proxies/redis", '{"enabled":true}'),
    _step("PATCH", "/proxies/redis", '{"upstream":"127.0.0.1:6380","name":"ignored"}'),
    _step("POST", "/proxies/redis", '{"upstream":"127.0.0.1:6379"}', note="POST updates too"),
    _step("PATCH", "/proxies/redis", "null"),
    _step("PATCH", "/proxies/redis", "nope"),
    _step("PATCH", "/proxies/redis", '{"enabled":"x"}'),
    _step("PATCH", "/proxies/redis", '{"listen":"nope"}'),
    _step("PATCH", "/proxies/redis", '{"listen":"127.0.0.1:{free2}"}'),
    _step("PATCH", "/proxies/nosuch", '{"enabled":false}'),
    _step("PATCH", "/proxies/nosuch", "nope", note="404 before the body is read"),
    _step("PATCH", "/proxies/off", '{"listen":"127.0.0.1:{free3}","enabled":true}'),
    # -- toxics --------------------------------------------------------------------------------
    _step("GET", "/proxies/redis/toxics"),
    _step("POST", "/proxies/redis/toxics", '{"type":"latency","attributes":{"latency":100}}'),
    _step("POST", "/proxies/redis/toxics", '{"type":"latency","attributes":{"latency":100}}'),
    _step(
        "POST",
        "/proxies/redis/toxics",
        '{"type":"latency","stream":"UPSTREAM","toxicity":0.333333333333,'
        '"attributes":{"LATENCY":7,"Jitter":2}}',
    ),
    _step(
        "POST",
        "/proxies/redis/toxics",
        '{"name":"bw","type":"bandwidth","stream":"upstream","toxicity":0.5,'
        '"attributes":{"rate":1000}}',
    ),
    _step(
        "POST",
        "/proxies/redis/toxics",
        '{"name":"tiny","type":"slicer","toxicity":1e-7,'
        '"attributes":{"average_size":64,"size_variation":8,"delay":10}}',
    ),
    _step("POST", "/proxies/redis/toxics", '{"name":"zero","type":"timeout","toxicity":0}'),
    _step(
        "POST",
        "/proxies/redis/toxics",
        '{"name":"nulls","type":"reset_peer","attributes":null,"toxicity":null,"stream":null}',
    ),
    _step("POST", "/proxies/redis/toxics", '{"name":"sc","type":"slow_close"}'),
    _step("POST", "/proxies/redis/toxics", '{"name":"ld","type":"limit_data"}'),
    _step("POST", "/proxies/redis/toxics", '{"name":"n","type":"noop","attributes":{}}'),
    _step("POST", "/proxies/redis/toxics", '{"type":"bogus"}'),
    _step("POST", "/proxies/redis/toxics", '{"name":"nt"}'),
    _step("POST", "/proxies/redis/toxics", "null"),
    _step("POST", "/proxies/redis/toxics", '{"type":"latency","stream":"sideways"}'),
    _step("POST", "/proxies/redis/toxics", '{"type":"latency","stream":""}'),
    _step("POST", "/proxies/redis/toxics", '{"type":"latency","name":"n"}'),
    _step("POST", "/proxies/redis/toxics", ""),
    _step("POST", "/proxies/redis/toxics", "[1]"),
    _step("POST", "/proxies/redis/toxics", '{"type":5}'),
    _step("POST", "/proxies/redis/toxics", '{"type":"latency","name":"x","toxicity":"x"}'),
    _step("POST", "/proxies/redis/toxics", '{"type":"latency","name":"x","toxicity":1e50}'),
    _step("POST", "/proxies/redis/toxics", '{"type":"latency","name":"x","attributes":5}'),
    _step(
        "POST",
        "/proxies/redis/toxics",
        '{"type":"latency","name":"x","attributes":{"latency":"5"}}',
    ),
    _step(
        "POST", "/proxies/redis/toxics", '{"type":"latency","name":"x","attributes":{"jitter":5.5}}'
    ),
    _step(
        "POST",
        "/proxies/redis/toxics",
        '{"type":"latency","name":"x","attributes":{"latency":5.0}}',
    ),
    _step(
        "POST",
        "/proxies/redis/toxics",
        '{"type":"latency","name":"x","attributes":{"latency":99999999999999999999}}',
    ),
    _step(
        "POST",
        "/proxies/redis/toxics",
        '{"type":"slicer","name":"x","attributes":{"average_size":true}}',
    ),
    _step("POST", "/proxies/nosuch/toxics", '{"type":"latency"}'),
    _step("GET", "/proxies/redis/toxics"),
    _step("GET", "/proxies/redis/toxics/bw"),
    _step("GET", "/proxies/redis/toxics/nosuch"),
    _step("GET", "/proxies/nosuch/toxics/bw"),
    _step("PATCH", "/proxies/redis/toxics/bw", '{"attributes":{"rate":5},"toxicity":0.25}'),
    _step("POST", "/proxies/redis/toxics/bw", '{"TOXICITY":0.75}', note="POST updates too"),
    _step("PATCH", "/proxies/redis/toxics/bw", '{"type":"latency","stream":"downstream"}'),
    _step("PATCH", "/proxies/redis/toxics/bw", "null"),
    _step("PATCH", "/proxies/redis/toxics/bw", '{"toxicity":null,"attributes":null}'),
    _step("PATCH", "/proxies/redis/toxics/bw", '{"toxicity":"x"}'),
    _step("PATCH", "/proxies/redis/toxics/bw", '{"attributes":5}'),
    _step("PATCH", "/proxies/redis/toxics/bw", '{"attributes":{"rate":"x"}}'),
    _step("PATCH", "/proxies/redis/toxics/bw", "[1]"),
    _step("PATCH", "/proxies/redis/toxics/bw", "nope"),
    _step("PATCH", "/proxies/redis/toxics/nosuch", '{"toxicity":0.5}'),
    _step("DELETE", "/proxies/redis/toxics/bw"),
    _step("DELETE", "/proxies/redis/toxics/bw"),
    _step("DELETE", "/proxies/nosuch/toxics/bw"),
    _step("GET", "/proxies/redis"),
    # -- populate ------------------------------------------------------------------------------
    _step(
        "POST",
        "/populate",
        "["
        + _proxy("p1", "127.0.0.1:{free4}")
        + ","
        + _proxy("p2", "127.0.0.1:{held}")
        + ","
        + _proxy("p3", "127.0.0.1:{free5}")
        + "]",
        note="a failing middle entry: p1 stays, p3 is never created",
    ),
    _step("GET", "/proxies/p3"),
    _step("POST", "/populate", "[" + _proxy("p4", "local373") + "]"),
    _step("POST", "/populate", "[" + _proxy("p1", "local373") + "]", note="existing: bare text"),
    _step(
        "POST",
        "/populate",
        "["
        + _proxy("p1", "127.0.0.1:{free4}")
        + ","
        + _proxy("redis", "127.0.0.1:{free2}", "127.0.0.1:6379")
        + "]",
        note="unchanged proxies are kept as they are",
    ),
    _step("POST", "/populate", '[{"name":"q","upstream":"x:1"},{"listen":"a:1","upstream":"x:1"}]'),
    _step("POST", "/populate", '[{"name":"q","upstream":"x:1"},{"name":"r"}]'),
    _step("POST", "/populate", "[null]"),
    _step("POST", "/populate", "[1]"),
    _step("POST", "/populate", '{"name":"q"}'),
    _step("POST", "/populate", '[{"name":5}]'),
    _step("POST", "/populate", '[{"name":"q","upstream":"x:1","enabled":"no"}]'),
    _step("POST", "/populate", ""),
    _step("POST", "/populate", "nope"),
    _step("POST", "/populate", "[]"),
    _step("POST", "/populate", "null"),
    _step("POST", "/populate", '[{"name":"pd","upstream":"127.0.0.1:5","enabled":false}]'),
    _step("GET", "/proxies"),
    # -- methods, paths, browsers, reset, delete -----------------------------------------------
    _step("PUT", "/proxies"),
    _step("PUT", "/proxies/redis"),
    _step("PUT", "/proxies/redis/toxics"),
    _step("PUT", "/proxies/redis/toxics/x"),
    _step("GET", "/reset"),
    _step("GET", "/populate"),
    _step("POST", "/version"),
    _step("DELETE", "/version"),
    _step("HEAD", "/version"),
    _step("HEAD", "/proxies"),
    _step("OPTIONS", "/proxies"),
    _step("GET", "/nope"),
    _step("GET", "/proxies/"),
    _step("GET", "/proxies/redis/"),
    _step("GET", "/proxies/redis/toxics/x/y"),
    _step("GET", "/"),
    # paths the router cleans first: a 301 to the clean path (query kept), whatever the method
    _step("GET", "//proxies?x=1"),
    _step("POST", "/proxies/../version"),
    _step("GET", "/proxies/./odd%20name!"),
    _step("DELETE", "/proxies//"),
    _step("GET", "/a/b/.."),
    _step("GET", "/proxies", agent="Mozilla/5.0 (X11; Linux x86_64)"),
    _step("POST", "/reset", agent="Mozilla/5.0"),
    _step("GET", "/nope", agent="Mozilla/5.0"),
    _step("GET", "/metrics", compare_body=False),
    _step("POST", "/metrics", compare_body=False),
    # Enabled by /reset, proxies created without a listen would listen on every interface in
    # Toxiproxy and on 127.0.0.1 here (a deliberate difference), on a random port: gone first.
    _step("DELETE", "/proxies/pd"),
    _step(
        "DELETE", "/proxies/odd%20%3C&%3E%20%E2%80%A8%20%C3%A9%20%EF%BF%BD%20%22q%22%20%5C%20%01"
    ),
    _step("POST", "/reset"),
    _step("GET", "/proxies"),
    _step("DELETE", "/proxies/redis"),
    _step("DELETE", "/proxies/redis"),
    _step("GET", "/proxies/redis"),
]


@contextlib.contextmanager
def ports(free: int = FREE_PORTS, refused: bool = False) -> Iterator[dict[str, int]]:
    """``{held}``: a port something else listens on; ``{free0}``...: *free* ports held for the
    run; with *refused*, ``{refused}``: a port bound but not listening (connects are refused).

    The free ones are bound (SO_REUSEADDR, not listening), so nothing chooses them by itself
    while the script runs, and a listener (Go's and ours set SO_REUSEADDR too) can still bind.
    """
    with contextlib.ExitStack() as stack:
        held = stack.enter_context(socket.create_server(("127.0.0.1", 0)))
        found = {"held": held.getsockname()[1]}
        if refused:
            closed = stack.enter_context(socket.socket())
            closed.bind(("127.0.0.1", 0))
            found["refused"] = closed.getsockname()[1]
        for i in range(free):
            sock = stack.enter_context(socket.socket())
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", 0))
            found[f"free{i}"] = sock.getsockname()[1]
        yield found


def _fill(text: str, values: dict[str, int]) -> str:
    for key, port in values.items():
        text = text.replace("{" + key + "}", str(port))
    return text


def _placeholders(text: str, values: dict[str, int]) -> str:
    for key, port in sorted(values.items(), key=lambda kv: -len(str(kv[1]))):
        text = re.sub(rf"(?<![0-9]){port}(?![0-9])", "{" + key + "}", text)
    return text


def request(base: tuple[str, int], step: dict[str, Any], values: dict[str, int]) -> dict[str, Any]:
    """Send *step* and return what came back, ports written as placeholders."""
    body: bytes | None = None
    if "body_b64" in step:
        body = base64.b64decode(step["body_b64"])
    elif "body" in step:
        body = _fill(step["body"], values).encode()
    conn = http.client.HTTPConnection(*base, timeout=10)
    try:
        path = _fill(step["path"], values)
        headers = {"User-Agent": step["agent"]}
        if body is not None:
            headers["Content-Type"] = "application/json"
        conn.request(step["method"], path, body=body, headers=headers)
        response = conn.getresponse()
        raw = response.read()
        header_names = sorted({name for name, _ in response.getheaders()} - {"Date"})
        length = response.getheader("Content-Length")
        answer: dict[str, Any] = {
            "status": response.status,
            "header_names": header_names,
            "headers": {h: response.getheader(h) for h in COMPARED if response.getheader(h)},
            # Bodies are kept with ports as placeholders, so lengths are compared as "right".
            "length_right": None if length is None else int(length) == len(raw),
            "request_id": response.getheader(REQUEST_ID),
            "body": _placeholders(raw.decode("utf-8", "backslashreplace"), values),
        }
    finally:
        conn.close()
    return answer


def run(base: tuple[str, int]) -> list[dict[str, Any]]:
    """Play :data:`STEPS` against the API at *base*; each step with its answer."""
    with ports() as values:
        return [{**step, "answer": request(base, step, values)} for step in STEPS]


def main(url: str) -> None:
    host, _, port = url.removeprefix("http://").rpartition(":")
    transcript = run((host, int(port)))
    json.dump(transcript, sys.stdout, indent=1, ensure_ascii=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(sys.argv[1])
