"""Every answer of the embedded server, compared with what the real Toxiproxy 2.12.0 answered.

``toxiproxy_transcript.json`` was recorded from the real server (see ``toxiproxy_transcript.py``)
for one scripted sequence of requests: every endpoint, every error, ``/populate`` with a failing
middle entry, port clashes, 405s, unknown paths, browsers. The same script runs here against the
embedded server; status, header names, Content-Type, X-Content-Type-Options, Location,
Content-Length and the request id's format must match, and bodies byte for byte once our extra
``hint`` member is set aside (every JSON error must carry one). Before: errors said more than
Toxiproxy in ``error`` itself, listen addresses were refused with 400s, ``/populate`` stopped
before binding anything, there was no request id, 405s and 404s were JSON, ``Logger`` and Go's
number and string formatting were missing, and unclean paths (``//proxies``) were 404s instead
of the router's 301.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from toxiproxy_transcript import COMPARED, STEPS, XID, run

from chaos import EmbeddedToxiproxy

TRANSCRIPT = Path(__file__).with_name("toxiproxy_transcript.json")

# Our hint: always the last member of a JSON error object.
_HINT = re.compile(r',"hint":"((?:[^"\\]|\\.)*)"(\}\n?)\Z', re.S)


def split_hint(body: str) -> tuple[str, str | None]:
    """*body* without its ``hint`` member, and the hint (None when there is none)."""
    match = _HINT.search(body)
    if match is None:
        return body, None
    return body[: match.start()] + match.group(2), json.loads(f'"{match.group(1)}"')


def differences(step: dict[str, Any], real: dict[str, Any], ours: dict[str, Any]) -> list[str]:
    """What differs between the real server's answer to *step* and ours (empty: nothing)."""
    found = []

    def differ(what: str, expected: object, got: object) -> None:
        if expected != got:
            found.append(f"{what}: Toxiproxy {expected!r}, ours {got!r}")

    differ("status", real["status"], ours["status"])
    differ("header names", real["header_names"], ours["header_names"])
    for header in COMPARED:
        differ(header, real["headers"].get(header), ours["headers"].get(header))
    body, hint = split_hint(ours["body"])
    if step.get("compare_body", True):
        differ("body", real["body"], body)
    differ("Content-Length is the body's", real["length_right"], ours["length_right"])
    differ("request id sent", real["request_id"] is not None, ours["request_id"] is not None)
    if ours["request_id"] is not None and not XID.match(ours["request_id"]):
        found.append(f"request id {ours['request_id']!r} is not an xid")
    if real["body"].startswith('{"error":') and not hint:
        found.append("a JSON error without a hint")
    return found


def test_the_script_is_the_one_recorded() -> None:
    recorded = json.loads(TRANSCRIPT.read_text(encoding="utf-8"))
    assert [{k: v for k, v in s.items() if k != "answer"} for s in recorded] == STEPS


def test_every_answer_matches_toxiproxy_2_12() -> None:
    recorded = json.loads(TRANSCRIPT.read_text(encoding="utf-8"))
    with EmbeddedToxiproxy(seed=1) as server:
        answers = run((server.host, server.port))
    report = []
    for number, (real, ours) in enumerate(zip(recorded, answers, strict=True)):
        found = differences(real, real["answer"], ours["answer"])
        if found:
            request = f"{real['method']} {real['path']} {real.get('body', '')}".strip()
            report.append(f"step {number}: {request}\n    " + "\n    ".join(found))
    ids = [a["answer"]["request_id"] for a in answers if a["answer"]["request_id"]]
    assert len(set(ids)) == len(ids), "request ids repeat"
    assert not report, f"{len(report)} answers differ from Toxiproxy 2.12.0:\n" + "\n".join(report)


def test_hints_are_set_aside_exactly() -> None:
    body = '{"error":"proxy not found","status":404,"hint":"no proxy named \\"a\\""}\n'
    assert split_hint(body) == ('{"error":"proxy not found","status":404}\n', 'no proxy named "a"')
    assert split_hint('{"error":"x","status":400}\n') == ('{"error":"x","status":400}\n', None)
    real = {"status": 404, "header_names": [], "headers": {}, "request_id": None}
    real["length_right"] = None
    missing = differences({}, {**real, "body": '{"error":"x"}'}, {**real, "body": '{"error":"x"}'})
    assert missing == ["a JSON error without a hint"]
