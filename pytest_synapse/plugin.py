"""pytest entry point for Synapse (registered through the ``pytest11`` entry point).

Kept thin and cheap to import: chaos, docker, zeroconf and hypothesis are imported only when a
fixture or strategy needs them, so installing Synapse never slows down or breaks collection.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Generator, Iterable
from pathlib import Path
from typing import Any

import pytest

from pytest_synapse import autowatch, junit
from pytest_synapse import gates as gates_mod
from pytest_synapse.interrupt import TermHandler
from pytest_synapse.ledger import WorkerLedger, read_ledger, remove_proxies
from pytest_synapse.markers import chaos_settings, validate_chaos_markers
from pytest_synapse.metrics import MetricValue, compute
from pytest_synapse.options import SynapseSettings, add_options, resolve
from pytest_synapse.records import TestRecord
from pytest_synapse.run import TestRun, set_current
from pytest_synapse.session import SESSION, SYNAPSE_FIXTURES, VIRTUAL_CLOCK_FIXTURES, settings_of

# The fixtures are registered as plugins of their own (nothing here imports them).
pytest_plugins = ("pytest_synapse.fixtures", "pytest_synapse.docker_fixtures")


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
        self._reported: set[str] = set()
        self.collection_errors = 0
        self.term = TermHandler()
        self.interrupted: str | None = None
        self.crashes: list[dict[str, str | None]] = []
        self.cleanup: list[dict[str, Any]] = []
        # xdist: each worker notes the proxies it makes on a shared server in its ledger, so
        # the controller can remove them if the worker dies (see pytest_synapse.ledger).
        ledger = getattr(config, "workerinput", {}).get("synapse_ledger")
        self.ledger = WorkerLedger(Path(ledger)) if ledger else None
        self._ledger_dir: Path | None = None
        self._ledgers: dict[str, Path] = {}
        self._live_workers: set[str] = set()

    # -------------------------------------------------------------------- per test

    def wants(self, item: pytest.Item) -> bool:
        names = set(getattr(item, "fixturenames", ()))
        return (
            self.settings.recording
            or bool(names & SYNAPSE_FIXTURES)
            or item.get_closest_marker("chaos") is not None
            or self.auto_watch(item)
        )

    def auto_watch(self, item: pytest.Item) -> bool:
        """Whether *item* watches other libraries' breakers without ``watch`` calls."""
        return bool(self.settings.watch_breakers.value or item.get_closest_marker(autowatch.MARKER))

    @pytest.hookimpl(hookwrapper=True, tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> Generator[None, None, None]:
        if self.wants(item):
            names = set(getattr(item, "fixturenames", ()))
            self.start_run(item, virtual=bool(names & VIRTUAL_CLOCK_FIXTURES))
        yield

    def start_run(self, item: pytest.Item, *, virtual: bool) -> TestRun:
        """Begin recording *item*: at setup, or when a test asks for a Synapse fixture late
        (``request.getfixturevalue``), which the fixture names seen at collection miss."""
        run = TestRun(item.nodeid, virtual=virtual, worker=self.worker)
        run.start()
        if self.auto_watch(item):
            run.auto_watch = autowatch.AutoWatch(
                lambda breaker: run.track_foreign(breaker, "auto")
            ).start()
        self.runs[item.nodeid] = run
        self._outer_runs[item.nodeid] = set_current(run)
        return run

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, Any, None]:
        outcome = yield
        report: pytest.TestReport = outcome.get_result()
        if report.when == "teardown":
            if report.failed and item.nodeid in self._reported:
                # The record went out with the call report; the controller amends it.
                report.synapse_outcome = "error"  # type: ignore[attr-defined]
            self._reported.discard(item.nodeid)
            return
        run = self.runs.get(item.nodeid)
        if run is None or run.record is not None:
            return
        if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
            # Before fixture teardown: final states are what the test left behind.
            record = run.snapshot(_outcome(report), report.duration)
            if run.interesting or item.get_closest_marker("chaos") is not None:
                if junit.per_test_properties_allowed(item.config):
                    item.user_properties.extend(junit.test_properties(record))
                    report.user_properties = list(item.user_properties)
                # Travels with the report (xdist serializes report attributes), so the
                # controller gets every finished test even if a worker dies later.
                report.synapse_record = record.to_dict()  # type: ignore[attr-defined]
                self._reported.add(item.nodeid)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if self.is_worker:
            return
        payload = getattr(report, "synapse_record", None)
        if payload is not None:
            self.records.append(TestRecord.from_dict(payload))
        amended = getattr(report, "synapse_outcome", None)
        if amended is not None:
            for record in reversed(self.records):
                if record.nodeid == report.nodeid:
                    if record.outcome == "passed":
                        record.outcome = amended
                    break

    @pytest.hookimpl(hookwrapper=True, trylast=True)
    def pytest_runtest_teardown(self, item: pytest.Item) -> Generator[None, None, None]:
        yield
        run = self.runs.pop(item.nodeid, None)
        if run is not None:
            run.stop()
            set_current(self._outer_runs.pop(item.nodeid, None))

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.collection_errors += 1

    # -------------------------------------------------------------------- interruptions

    def pytest_keyboard_interrupt(self, excinfo: pytest.ExceptionInfo[BaseException]) -> None:
        if self.interrupted is None:
            self.interrupted = _interruption(excinfo, sigterm=self.term.received)

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        """xdist controller: give each worker a ledger file (see pytest_synapse.ledger)."""
        if self._ledger_dir is None:
            self._ledger_dir = Path(tempfile.mkdtemp(prefix="synapse-ledgers-"))
        worker = str(node.gateway.id)
        path = self._ledger_dir / f"{worker}.jsonl"
        self._ledgers[worker] = path
        self._live_workers.add(worker)
        node.workerinput["synapse_ledger"] = str(path)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        worker = str(getattr(getattr(node, "gateway", None), "id", id(node)))
        self._worker_ids.add(worker)
        self._live_workers.discard(worker)
        if error is not None and error != "keyboard-interrupt":
            # Crashed: no teardown ran there. Remove its proxies now, before the
            # replacement worker (or the next pipeline) meets them.
            self.crashes.append({"worker": worker, "test": None, "error": str(error)})
            self._read_ledgers([worker])

    @pytest.hookimpl(optionalhook=True)
    def pytest_handlecrashitem(self, crashitem: str, report: Any, sched: Any) -> None:
        worker = str(getattr(getattr(report.node, "gateway", None), "id", "?"))
        for crash in self.crashes:
            if crash["worker"] == worker and crash["test"] is None:
                crash["test"] = crashitem
        # Its figures died with the worker: unknown, not zero. Gates fail on this.
        self.records.append(TestRecord(nodeid=crashitem, outcome="crashed", worker=worker))

    def _read_ledgers(self, workers: Iterable[str]) -> None:
        """Take in what these workers' ledgers say: remove the proxies still listed, add the
        records of tests they were stopped in. A ledger is read once, then deleted."""
        for worker in workers:
            path = self._ledgers.pop(worker, None)
            if path is None:
                continue
            content = read_ledger(path)
            self.records.extend(TestRecord.from_dict(r) for r in content.unfinished)
            for server, proxy in content.proxies:
                problems = remove_proxies([(server, proxy)])
                self.cleanup.append(
                    {
                        "worker": worker,
                        "server": server,
                        "proxy": proxy,
                        "removed": not problems,
                        "error": problems[0] if problems else None,
                    }
                )
            path.unlink(missing_ok=True)

    def _stop_workers(self) -> None:
        """Pass SIGTERM on to the workers still up, so they stop and clean up now.

        Otherwise xdist waits for each to finish its test (or for its own timeout) before
        killing it, and the grace period of ``docker stop`` or a CI runner runs out first.
        """
        for worker in sorted(self._live_workers):
            path = self._ledgers.get(worker)
            pid = read_ledger(path).pid if path is not None else None
            if pid is not None:
                with contextlib.suppress(OSError):  # already gone
                    os.kill(pid, signal.SIGTERM)

    def incomplete(self) -> list[str]:
        """Why the session's figures may lack data (empty if they do not)."""
        reasons = []
        if self.interrupted is not None:
            reasons.append(f"the session was interrupted ({self.interrupted})")
        for record in self.records:
            if record.outcome == "crashed":
                reasons.append(
                    f"{record.nodeid} crashed on worker {record.worker}: its figures are unknown"
                )
        lost = sorted(str(c["worker"]) for c in self.crashes if c["test"] is None)
        if lost:
            reasons.append(f"worker(s) {', '.join(lost)} crashed: their figures are unknown")
        return reasons

    # -------------------------------------------------------------------- session end

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        self.term.stopping = True  # a second SIGTERM must not cut the cleanup short
        # Tests stopped mid-way (SIGTERM, Ctrl-C): their figures so far, before fixtures
        # clean up. A worker hands them over through its ledger.
        unfinished = [
            run.snapshot("interrupted", time.time() - run.started_wall)
            for run in list(self.runs.values())
            if run.record is None
        ]
        if self.is_worker:
            if self.ledger is not None:
                for record in unfinished:
                    self.ledger.unfinished(record.to_dict())
            return
        self.records.extend(unfinished)
        if self.term.received:
            self._stop_workers()
        if not self.config.option.collectonly:
            self._evaluate()
            junit.add_suite_properties(self.config, self.metrics, self.gate_results)

    def _evaluate(self) -> None:
        if not (self.settings.recording or self.records or self.gates):
            return
        self.metrics = self._compute()
        if self.collection_errors and not self.records:
            why = f"no figures: {self._collection_reason()}"
            self.gate_results = [gates_mod.GateResult(g, None, False, why) for g in self.gates]
        else:
            self.gate_results = gates_mod.evaluate(
                self.gates, self.metrics, incomplete=self.incomplete()
            )

    @pytest.hookimpl(wrapper=True, trylast=True, specname="pytest_sessionfinish")
    def pytest_sessionfinish_last(self, session: pytest.Session) -> Generator[None, None, None]:
        """After every other sessionfinish (fixture teardown, xdist's node shutdown), before
        the terminal summary: take in the workers' ledgers, write the reports."""
        try:
            yield
        finally:
            if not self.is_worker and not self.config.option.collectonly:
                self._finish(session)

    def _finish(self, session: pytest.Session) -> None:
        before = len(self.records)
        self._read_ledgers(list(self._ledgers))  # workers stopped or killed by the shutdown
        if len(self.records) != before:
            self._evaluate()
        self._write_reports()
        failed = (
            any(not g.passed for g in self.gate_results)
            or bool(self.write_errors)
            or any(not c["removed"] for c in self.cleanup)
        )
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
            self.metrics or self._compute(),
            self.gate_results,
            toxiproxy=str(self.settings.toxiproxy.value),
            seed=self.settings.seed.value,
            duration=time.monotonic() - self.started,
            workers=self._worker_count(),
            interrupted=self.interrupted,
            crashed=self.crashes,
            cleanup=self.cleanup,
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

    def _compute(self) -> dict[str, MetricValue]:
        return compute(
            (r for r in self.records if r.outcome in GATED_OUTCOMES),
            chaos_enabled=bool(self.settings.chaos.value),
        )

    def _worker_count(self) -> int:
        """xdist worker slots (``-n``): a worker started to replace a crashed one is not new."""
        dsession = self.config.pluginmanager.getplugin("dsession")
        specs = getattr(getattr(dsession, "nodemanager", None), "specs", None)
        if specs is not None:
            return len(specs)
        return len(self._worker_ids)

    def close(self) -> None:
        """At unconfigure: give SIGTERM back, drop the ledgers."""
        self.term.uninstall()
        if self._ledger_dir is not None:
            shutil.rmtree(self._ledger_dir, ignore_errors=True)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.is_worker or not (self.settings.recording or self.write_errors or self.cleanup):
            return  # plain runs that merely use a fixture stay quiet
        if self.config.option.collectonly:
            return  # nothing ran: no figures, and no report was written
        tr = terminalreporter
        tr.write_sep("=", "synapse resilience")
        for line in self._what_happened():
            tr.write_line(line, red=True)
        if self.collection_errors:
            tr.write_line(f"no figures: {self._collection_reason()}")
        else:
            self._write_metrics(tr)
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
        failed = [r for r in self.gate_results if not r.passed]
        if failed:
            # pytest's closing line lists every key of its stats: "3 passed, 2 resilience gates
            # failed in 1.46s", so the last line read says why the run failed.
            key = "resilience gate failed" if len(failed) == 1 else "resilience gates failed"
            tr.stats.setdefault(key, []).extend(failed)

    def _what_happened(self) -> list[str]:
        """Interruption, crashes and the controller's cleanup, one line each."""
        lines = []
        if self.interrupted is not None:
            lines.append(f"session interrupted ({self.interrupted}): the figures are partial")
        for crash in self.crashes:
            during = f" while running {crash['test']}" if crash["test"] else ""
            lines.append(
                f"worker {crash['worker']} crashed{during} ({crash['error']}): "
                "its figures are unknown"
            )
        for entry in self.cleanup:
            what = f"proxy {entry['proxy']} on {entry['server']} left by worker {entry['worker']}"
            if entry["removed"]:
                lines.append(f"removed {what}")
            else:
                lines.append(f"could not remove {what}: {entry['error']}")
        return lines

    def _collection_reason(self) -> str:
        n = self.collection_errors
        return f"{n} error{'s' if n != 1 else ''} during collection, no test ran"

    def _write_metrics(self, tr: Any) -> None:
        metrics = self.metrics or self._compute()
        for name in SUMMARY_METRICS:
            mv = metrics[name]
            if name.endswith("_virtual_seconds") and mv.value is None:
                continue  # no virtual-clock test: not worth a line
            value = "no data" if mv.value is None else _fmt(mv.value)
            where = f"  (in {mv.source})" if mv.source else ""
            note = f"  ({mv.note})" if mv.note else ""
            tr.write_line(f"{name:>28}: {value}{where}{note}")


SUMMARY_METRICS = (
    "all_recovered",
    "max_trip_seconds",
    "max_recovery_seconds",
    "max_rejected_call_ms",
    "total_open_seconds",
    "max_trip_virtual_seconds",
    "max_recovery_virtual_seconds",
    "total_open_virtual_seconds",
    "trips",
    "faults",
)


def _fmt(value: float | bool) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _interruption(excinfo: pytest.ExceptionInfo[BaseException], *, sigterm: bool) -> str | None:
    """Why the run was stopped from outside, or ``None`` when pytest stopped it itself.

    pytest and xdist raise ``Interrupted`` (a KeyboardInterrupt) for collection errors and
    ``-x``/``--maxfail`` too; those runs already fail and are not interruptions.
    """
    if sigterm:
        return "SIGTERM"
    error = excinfo.value
    if type(error).__name__ == "Interrupted":
        # xdist says "<worker> received keyboard-interrupt" when Ctrl-C reached a worker.
        return "KeyboardInterrupt" if "keyboard-interrupt" in str(error) else None
    if isinstance(error, pytest.exit.Exception):
        return f"pytest.exit: {error.msg}"
    return excinfo.typename


def _outcome(report: pytest.TestReport) -> str:
    """The record's outcome: pytest's, with xfail and setup/teardown errors told apart."""
    if hasattr(report, "wasxfail"):
        return "xfailed" if report.skipped else "xpassed"
    if report.when != "call" and report.failed:
        return "error"
    return report.outcome


GATED_OUTCOMES = frozenset({"passed", "failed", "error", "interrupted"})
"""Outcomes whose figures count in the metrics and gates. Skipped, xfailed and xpassed tests
(and crashed ones, which have no figures) are in the report but not gated: an xfail-marked test
is one the user declared broken."""


# ------------------------------------------------------------------------ module-level hooks


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
    config.addinivalue_line(
        "markers",
        f"{autowatch.MARKER}: record every pybreaker, aiobreaker and purgatory breaker the test "
        "creates, and every circuitbreaker breaker, without breaker_timeline.watch() calls.",
    )
    session = SynapseSession(config, resolve(config, lenient=bool(config.option.help)))
    config.stash[SESSION] = session
    config.pluginmanager.register(session, "synapse-session")
    session.term.install()
    if session.ledger is not None:
        session.ledger.started()


def pytest_unconfigure(config: pytest.Config) -> None:
    session = config.stash.get(SESSION, None)
    if session is not None:
        session.close()


@pytest.hookimpl(wrapper=True)
def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: object) -> Any:
    """Check ``chaos`` markers as each test is collected.

    A bad marker is then a collection error of its module, reported the same way with and
    without xdist (raised later, from a hook on an xdist worker, it was an INTERNALERROR).
    """
    result = yield
    items = result if isinstance(result, list) else [result]
    for item in items:
        if isinstance(item, pytest.Item) and item.get_closest_marker("chaos") is not None:
            try:
                validate_chaos_markers(item)
            except pytest.UsageError as exc:
                raise collector.CollectError(str(exc)) from None
    return result


def pytest_report_header(config: pytest.Config) -> list[str]:
    settings = settings_of(config)
    return settings.header_lines() + _timeout_method_warning(config, settings)


def _timeout_method_warning(config: pytest.Config, settings: SynapseSettings) -> list[str]:
    """A header line when pytest-timeout's thread method could strand faults on a shared
    server: on a timeout it ends the process with ``os._exit``, which no cleanup survives
    (under xdist the controller cleans up after the dead worker instead)."""
    if settings.toxiproxy.value == "embedded" or not config.pluginmanager.hasplugin("timeout"):
        return []
    if getattr(config.option, "numprocesses", None) or getattr(config.option, "tx", None):
        return []
    try:
        from pytest_timeout import get_env_settings  # type: ignore[import-untyped]

        timeout = get_env_settings(config)
    except Exception:  # another pytest-timeout than the one this was written for
        return []
    if timeout.method != "thread" or not timeout.timeout:
        return []
    return [
        "synapse: warning: pytest-timeout's thread method ends the process on a timeout "
        "(os._exit), so the timed-out test's faults and proxies stay on the shared server; "
        "use --timeout-method=signal (or run under xdist)"
    ]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    settings = settings_of(config)
    for item in items:
        if item.get_closest_marker("chaos") is None:
            continue
        if not isinstance(item, pytest.Function):
            validate_chaos_markers(item)  # Python tests were checked as they were collected
        if not settings.chaos.value:
            why = chaos_settings(item).get("reason")
            reason = (
                "chaos test: run with --synapse-chaos (or SYNAPSE_CHAOS=1, or ini synapse_chaos)"
            )
            item.add_marker(pytest.mark.skip(reason=f"{why}: {reason}" if why else reason))
