"""pytest entry point for Synapse (registered through the ``pytest11`` entry point).

Kept thin and cheap to import: chaos, docker, zeroconf and hypothesis are imported only when a
fixture or strategy needs them, so installing Synapse never slows down or breaks collection.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from typing import Any

import pytest

from pytest_synapse import gates as gates_mod
from pytest_synapse.fixtures import (  # noqa: F401  (fixtures are registered by import)
    breaker_timeline,
    chaos_proxy,
    chaos_scenario,
    circuit_breaker,
    synapse_backend,
    toxiproxy,
    virtual_clock,
)
from pytest_synapse.markers import chaos_settings, validate_chaos_markers
from pytest_synapse.metrics import MetricValue, compute
from pytest_synapse.options import SynapseSettings, add_options, resolve
from pytest_synapse.records import TestRecord
from pytest_synapse.run import TestRun, set_current

SYNAPSE_FIXTURES = frozenset(
    {
        "virtual_clock",
        "circuit_breaker",
        "breaker_timeline",
        "chaos_proxy",
        "toxiproxy",
        "chaos_scenario",
        "synapse_backend",
    }
)


class SynapseSession:
    """Session-wide state: settings, gates, the records of every test, gate results."""

    def __init__(self, config: pytest.Config, settings: SynapseSettings) -> None:
        self.config = config
        self.settings = settings
        self.gates = gates_mod.parse_gates(settings.gates.value)  # checked by resolve()
        self.worker = getattr(config, "workerinput", {}).get("workerid", "main")
        self.is_worker = hasattr(config, "workerinput")
        self.records: list[TestRecord] = []
        self.workers = 0
        self.metrics: dict[str, MetricValue] = {}
        self.gate_results: list[gates_mod.GateResult] = []
        self.write_errors: list[str] = []
        self.started = time.monotonic()
        self.runs: dict[str, TestRun] = {}
        self._outer_runs: dict[str, TestRun | None] = {}
        self._worker_ids: set[str] = set()

    # -------------------------------------------------------------------- per test

    def wants(self, item: pytest.Item) -> bool:
        names = set(getattr(item, "fixturenames", ()))
        return (
            self.settings.recording
            or bool(names & SYNAPSE_FIXTURES)
            or item.get_closest_marker("chaos") is not None
        )

    @pytest.hookimpl(hookwrapper=True, tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> Generator[None, None, None]:
        if self.wants(item):
            names = set(getattr(item, "fixturenames", ()))
            self.start_run(item, virtual=bool(names & {"virtual_clock", "circuit_breaker"}))
        yield

    def start_run(self, item: pytest.Item, *, virtual: bool) -> TestRun:
        """Begin recording *item*: at setup, or when a test asks for a Synapse fixture late
        (``request.getfixturevalue``), which the fixture names seen at collection miss."""
        run = TestRun(item.nodeid, virtual=virtual, worker=self.worker)
        run.start()
        self.runs[item.nodeid] = run
        self._outer_runs[item.nodeid] = set_current(run)
        return run

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, Any, None]:
        outcome = yield
        report: pytest.TestReport = outcome.get_result()
        run = self.runs.get(item.nodeid)
        if run is None or run.record is not None:
            return
        if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
            # Before fixture teardown: final states are what the test left behind.
            record = run.snapshot(report.outcome, report.duration)
            if run.interesting or item.get_closest_marker("chaos") is not None:
                _add_user_properties(item, record)
                report.user_properties = list(item.user_properties)
                # Travels with the report (xdist serializes report attributes), so the
                # controller gets every finished test even if a worker dies later.
                report.synapse_record = record.to_dict()  # type: ignore[attr-defined]

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        payload = getattr(report, "synapse_record", None)
        if payload is not None and not self.is_worker:
            self.records.append(TestRecord.from_dict(payload))

    @pytest.hookimpl(hookwrapper=True, trylast=True)
    def pytest_runtest_teardown(self, item: pytest.Item) -> Generator[None, None, None]:
        yield
        run = self.runs.pop(item.nodeid, None)
        if run is not None:
            run.stop()
            set_current(self._outer_runs.pop(item.nodeid, None))

    # -------------------------------------------------------------------- session end

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtestloop(self, session: pytest.Session) -> Generator[None, None, None]:
        yield
        if not self.is_worker and not self.config.option.collectonly:
            self.metrics = compute(self.records)
            self.gate_results = gates_mod.evaluate(self.gates, self.metrics)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        self._worker_ids.add(str(getattr(getattr(node, "gateway", None), "id", id(node))))
        self.workers = len(self._worker_ids)

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.is_worker or self.config.option.collectonly:
            return
        if not self.metrics and (self.records or self.gates):
            self.metrics = compute(self.records)
            self.gate_results = gates_mod.evaluate(self.gates, self.metrics)
        self._write_reports()
        failed = any(not g.passed for g in self.gate_results) or self.write_errors
        if failed and session.exitstatus == 0:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def _write_reports(self) -> None:
        report_path = self.settings.report.value
        html_path = self.settings.html.value
        if report_path is None and html_path is None:
            return
        from pytest_synapse.report import build_report, write_html, write_json

        document = build_report(
            self.records,
            self.metrics or compute(self.records),
            self.gate_results,
            toxiproxy=str(self.settings.toxiproxy.value),
            seed=self.settings.seed.value,
            duration=time.monotonic() - self.started,
            workers=self.workers,
        )
        for label, path, write in (
            ("JSON report", report_path, write_json),
            ("HTML report", html_path, write_html),
        ):
            if path is None:
                continue
            try:
                write(document, path)
            except OSError as exc:
                self.write_errors.append(f"could not write the {label} to {path}: {exc}")

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.is_worker or not (self.settings.recording or self.write_errors):
            return  # plain runs that merely use a fixture stay quiet
        if self.config.option.collectonly:
            return  # nothing ran: no figures, and no report was written
        tr = terminalreporter
        tr.write_sep("=", "synapse resilience")
        metrics = self.metrics or compute(self.records)
        shown = (
            "all_recovered",
            "max_trip_seconds",
            "max_recovery_seconds",
            "max_rejected_call_ms",
            "total_open_seconds",
            "trips",
            "faults",
        )
        for name in shown:
            mv = metrics[name]
            value = "no data" if mv.value is None else _fmt(mv.value)
            tr.write_line(f"{name:>22}: {value}{'  (' + mv.note + ')' if mv.note else ''}")
        for result in self.gate_results:
            verdict = "PASS" if result.passed else "FAIL"
            tr.write_line(
                f"gate {verdict}: {result.gate.describe()}  -> {result.message}",
                green=result.passed,
                red=not result.passed,
            )
        for label, path in (
            ("json", self.settings.report.value),
            ("html", self.settings.html.value),
        ):
            if path is not None:
                tr.write_line(f"{label} report: {path}")
        for error in self.write_errors:
            tr.write_line(f"error: {error}", red=True)


def _fmt(value: float | bool) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _add_user_properties(item: pytest.Item, record: TestRecord) -> None:
    props = item.user_properties
    props.append(("synapse_faults", len(record.faults)))
    for b in record.breakers:
        prefix = f"synapse_breaker_{b.name}"
        props.append((f"{prefix}_final_state", b.final_state))
        props.append((f"{prefix}_trips", b.trips))
        props.append((f"{prefix}_rejections", b.rejections))
        props.append((f"{prefix}_open_seconds", round(b.open_seconds, 6)))
        if b.trip_seconds:
            props.append((f"{prefix}_max_trip_seconds", round(max(b.trip_seconds), 6)))
        if b.recovery_seconds:
            props.append((f"{prefix}_max_recovery_seconds", round(max(b.recovery_seconds), 6)))


# ------------------------------------------------------------------------ module-level hooks

_STATE = pytest.StashKey[SynapseSession]()


def session_of(config: pytest.Config) -> SynapseSession | None:
    """The plugin's session object, or ``None`` when the plugin is not active."""
    return config.stash.get(_STATE, None)


def settings_of(config: pytest.Config) -> SynapseSettings:
    """The resolved Synapse settings of this pytest run."""
    return config.stash[_STATE].settings


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "chaos(scenario=None, proxies=None, reason=None): a chaos test; runs only with "
        "--synapse-chaos (or SYNAPSE_CHAOS=1 / synapse_chaos ini). scenario names a library "
        "scenario (or a file) for the chaos_scenario fixture; proxies maps its proxy names to "
        "upstreams.",
    )
    session = SynapseSession(config, resolve(config, lenient=bool(config.option.help)))
    config.stash[_STATE] = session
    config.pluginmanager.register(session, "synapse-session")


def pytest_report_header(config: pytest.Config) -> list[str]:
    return config.stash[_STATE].settings.header_lines()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    settings = config.stash[_STATE].settings
    for item in items:
        if item.get_closest_marker("chaos") is None:
            continue
        validate_chaos_markers(item)
        if not settings.chaos.value:
            why = chaos_settings(item).get("reason")
            reason = (
                "chaos test: run with --synapse-chaos (or SYNAPSE_CHAOS=1, or ini synapse_chaos)"
            )
            item.add_marker(pytest.mark.skip(reason=f"{why}: {reason}" if why else reason))
