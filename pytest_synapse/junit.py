"""Synapse figures in pytest's JUnit XML (``--junitxml``), valid under every ``junit_family``.

Per test, the breaker figures go into the testcase's ``<properties>``, which only the
``xunit1`` and ``legacy`` schemas allow; under ``xunit2`` (pytest's default) they are left out
(the JSON report has them). The session's metrics and gate results always go into the
testsuite's ``<properties>``, which every schema allows. The names are listed in
``docs/report-schema.md``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import pytest

from pytest_synapse.gates import GateResult
from pytest_synapse.metrics import MetricValue
from pytest_synapse.records import TestRecord

# Characters XML 1.0 does not allow anywhere, plus the whitespace controls that a parser would
# turn into spaces inside an attribute: a breaker name holding one made the whole file
# unparseable.
_NOT_XML = re.compile("[\x00-\x1f\x7f-\x84\x86-\x9f\ud800-\udfff\ufffe\uffff]")


def xml_safe(text: str) -> str:
    """*text* with every character XML cannot carry written as ``\\xNN`` / ``\\uNNNN``."""

    def escape(match: re.Match[str]) -> str:
        code = ord(match.group())
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"

    return _NOT_XML.sub(escape, text)


def per_test_properties_allowed(config: pytest.Config) -> bool:
    """Whether testcase ``<properties>`` fit the JUnit schema pytest writes.

    True when no JUnit file is written (other consumers of ``user_properties`` are free).
    """
    if not getattr(config.option, "xmlpath", None):
        return True
    return str(config.getini("junit_family")) in ("xunit1", "legacy")


def test_properties(record: TestRecord) -> list[tuple[str, object]]:
    """The testcase properties for one test: faults, and per breaker its figures.

    Two breakers with one name are told apart by ``#2``, ``#3``... after the name.
    """
    props: list[tuple[str, object]] = [("synapse_faults", len(record.faults))]
    seen: dict[str, int] = {}
    for b in record.breakers:
        label = xml_safe(b.name)
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:
            label = f"{label}#{seen[label]}"
        prefix = f"synapse_breaker_{label}"
        if b.library:
            props.append((f"{prefix}_library", b.library))
        props.append((f"{prefix}_final_state", b.final_state))
        props.append((f"{prefix}_trips", b.trips))
        props.append((f"{prefix}_rejections", b.rejections))
        props.append((f"{prefix}_open_seconds", round(b.open_seconds, 6)))
        if b.trip_seconds:
            props.append((f"{prefix}_max_trip_seconds", round(max(b.trip_seconds), 6)))
        if b.recovery_seconds:
            props.append((f"{prefix}_max_recovery_seconds", round(max(b.recovery_seconds), 6)))
    return props


def add_suite_properties(
    config: pytest.Config, metrics: dict[str, MetricValue], gates: Sequence[GateResult]
) -> None:
    """Put the session's metrics and gate results in the testsuite's ``<properties>``."""
    try:
        from _pytest.junitxml import xml_key
    except ImportError:  # pragma: no cover - a pytest without it writes no suite properties
        return
    xml = config.stash.get(xml_key, None)
    if xml is None:
        return
    for name, mv in metrics.items():
        xml.add_global_property(f"synapse_{name}", "no data" if mv.value is None else mv.value)
    for index, result in enumerate(gates, 1):
        verdict = "PASS" if result.passed else "FAIL"
        xml.add_global_property(
            f"synapse_gate_{index}", f"{verdict} {result.gate.describe()}: {result.message}"
        )
