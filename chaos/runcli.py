"""``synapse-chaos run`` and ``synapse-chaos scenarios``: scenarios from the command line.

``run`` binds the scenario's proxies (creating the missing ones), plays it in real time with the
event log on stdout (and a progress bar on a terminal), prints the timeline, and removes every
fault it added on exit. SIGINT/SIGTERM do not raise into the middle of a request: they ask the
runner to stop, which removes the faults, deletes the proxies it created, and exits 130/143.
A second signal during that cleanup (a server that stopped answering) abandons it: one line
says what may remain and how to remove it, and the process exits at once (130/143).

Exit codes: 0 done; 2 bad input (one line on stderr, never a traceback): the arguments (a
``--json`` path that is a directory or under a folder that cannot be created included), the
scenario,
or ``--proxy``/``--listen`` not matching the proxies on the server; 1 the server could not be
reached or failed, the run failed (a proxy deleted under it, a request refused), the proxies it
created could not be removed afterwards, or the ``--json`` report could not be written;
130/143 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import signal
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any, Final, NoReturn

from chaos.backends import Backend, ProxyMismatch, get_or_create_proxy, resolve_backend
from chaos.control.livefaults import toxic_prefix
from chaos.control.proxy import Proxy
from chaos.errors import ChaosError, ToxiproxyUnavailable
from chaos.scenarios.runner import ConsoleProgress, ScenarioRunner
from chaos.scenarios.scenario import Scenario, load_scenario, scenario_library

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_USAGE: Final = 2
_SIGNAL_EXIT: Final = {signal.SIGINT: 130, signal.SIGTERM: 143}


class _Usage(Exception):
    """Bad command-line input: reported in one line, exit 2."""


def _fail(message: str | BaseException, code: int) -> int:
    print(f"synapse-chaos: error: {_cli_hint(message)}", file=sys.stderr, flush=True)
    return code


def _cli_hint(error: str | BaseException) -> str | BaseException:
    """A timeout's hint in the CLI's terms (``--timeout``), not the Python API's."""
    if isinstance(error, ToxiproxyUnavailable) and error.timed_out:
        error.hint = "raise --timeout if the server is just slow"
    return error


def _split_pair(text: str, option: str, *, need_value: bool) -> tuple[str, str | None]:
    name, sep, value = text.partition("=")
    name, value = name.strip(), value.strip()
    if not name or (sep and not value) or (need_value and not sep):
        form = "NAME=HOST:PORT" if need_value else "NAME or NAME=HOST:PORT"
        raise _Usage(f"{option} {text!r}: expected {form}")
    if value:
        host, colon, port = value.rpartition(":")
        if not colon or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise _Usage(f"{option} {text!r}: {value!r} is not HOST:PORT")
    return name, (value or None)


def bind_proxies(
    scenario: Scenario, proxy_args: list[str], listen_args: list[str]
) -> tuple[dict[str, tuple[str, str | None]], dict[str, str]]:
    """Map scenario proxy names to ``(server proxy name, upstream or None)``; listens by name.

    A scenario with exactly one proxy accepts one ``--proxy`` of any name (so
    ``run partition-heal --proxy redis=...`` binds the library's ``service`` to ``redis``).
    """
    declared = scenario.proxies
    pairs = [_split_pair(text, "--proxy", need_value=False) for text in proxy_args]
    listens: dict[str, str] = {}
    for text in listen_args:
        name, address = _split_pair(text, "--listen", need_value=True)
        listens[name] = address or ""
    if not pairs:
        example = " ".join(f"--proxy {name}=HOST:PORT" for name in declared)
        raise _Usage(f"scenario {scenario.name!r} needs its proxies bound: {example}")
    names = [name for name, _ in pairs]
    if len(set(names)) != len(names):
        raise _Usage(f"--proxy names a proxy twice: {names}")
    bindings: dict[str, tuple[str, str | None]] = {}
    if len(declared) == 1 and len(pairs) > 1:
        own = [
            text for text, (name, _) in zip(proxy_args, pairs, strict=True) if name == declared[0]
        ]
        extra = [text for text in proxy_args if text not in own[:1]] if own else proxy_args[1:]
        raise _Usage(
            f"scenario {scenario.name!r} has one proxy ({declared[0]}) but got {len(pairs)} "
            f"--proxy flags; drop {' '.join(f'--proxy {text}' for text in extra)}"
        )
    if len(declared) == 1:
        bindings[declared[0]] = pairs[0]
    else:
        for name, upstream in pairs:
            if name not in declared:
                raise _Usage(
                    f"scenario {scenario.name!r} has no proxy {name!r} "
                    f"(its proxies: {', '.join(declared)})"
                )
            bindings[name] = (name, upstream)
        missing = [name for name in declared if name not in bindings]
        if missing:
            raise _Usage(
                f"scenario {scenario.name!r} also needs "
                + " ".join(f"--proxy {name}=HOST:PORT" for name in missing)
            )
    server_names = {server for server, _ in bindings.values()}
    for name in listens:
        if name not in server_names:
            raise _Usage(f"--listen {name}=...: no --proxy named {name!r}")
    return bindings, listens


@dataclasses.dataclass
class _RunState:
    """What the signal handler needs: the runner to cancel and what a forced exit leaves behind.

    Filled in by :func:`_play` as the run gets going; the handler only reads it.
    """

    owner: str
    received: list[int] = dataclasses.field(default_factory=list)
    runner: ScenarioRunner | None = None
    url: str = ""
    embedded: bool = False
    proxies: list[Proxy] = dataclasses.field(default_factory=list)
    created: list[str] = dataclasses.field(default_factory=list)


def _abandon_message(state: _RunState) -> str:
    """One line: what a cleanup abandoned half-way may have left on the server, and the remedy."""
    head = "synapse-chaos run: second interrupt, cleanup abandoned"
    if not state.url:
        return f"{head}; nothing had been applied yet"
    if state.embedded:
        return f"{head}; the embedded server stops with this process, so nothing remains"
    left = []
    for proxy in state.proxies:
        kinds = ", ".join(dict.fromkeys(fault.kind for fault in proxy.faults))
        if kinds:
            left.append(f"{kinds} on proxy {proxy.name}")
    what = "; ".join(left) or "no fault known to remain"
    # Also when no fault is known: a removal that failed earlier may have left toxics behind.
    remedy = (
        f"to remove faults: POST {state.url}/reset (every fault, of every owner) or the next "
        f"run with --owner {state.owner} (removes its stale toxics "
        f"{toxic_prefix(state.owner)}*)"
    )
    created = ""
    if state.created:
        deletes = ", ".join(f"DELETE {state.url}/proxies/{name}" for name in state.created)
        created = f"; proxies this run created may remain too ({deletes})"
    return f"{head}; may remain on {state.url}: {what}; {remedy}{created}"


def _abandon(state: _RunState, signum: int) -> NoReturn:
    """Exit now, from a signal handler, without finishing the cleanup in progress.

    os._exit, not an exception: an exception would run the ``finally`` blocks on its way out,
    and they clean up through the very server that stopped answering.
    """
    with contextlib.suppress(Exception):  # RuntimeError if the main thread was mid-write
        sys.stdout.flush()
    os.write(2, ("\n" + _abandon_message(state) + "\n").encode("utf-8", "replace"))
    os._exit(_SIGNAL_EXIT.get(signal.Signals(signum), 130))


@contextmanager
def _signals_request_stop(state: _RunState) -> Iterator[list[int]]:
    """SIGINT/SIGTERM are recorded and cancel the runner instead of raising mid-request.

    The first one starts the orderly cleanup; another one abandons it (:func:`_abandon`). The
    handler takes no lock, since it may interrupt code that holds one.
    """
    received = state.received

    def handler(signum: int, frame: FrameType | None) -> None:
        if received:
            _abandon(state, signum)
        received.append(signum)
        # os.write, not print: a handler must not re-enter a buffered stream mid-write.
        os.write(
            2,
            b"\nsynapse-chaos run: interrupted, removing the faults... "
            b"(interrupt again to quit without cleaning up)\n",
        )
        if state.runner is not None:
            state.runner.cancel()

    previous = {sig: signal.signal(sig, handler) for sig in _SIGNAL_EXIT}
    try:
        yield received
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run_command(args: argparse.Namespace) -> int:
    """``synapse-chaos run``."""
    state = _RunState(owner=args.owner)
    with _signals_request_stop(state) as received:
        try:
            scenario = load_scenario(args.scenario)
            bindings, listens = bind_proxies(scenario, args.proxy, args.listen)
            if not 0 < args.timeout < math.inf:  # nan fails this too
                raise _Usage(
                    f"--timeout must be a finite number of seconds > 0, got {args.timeout}"
                )
            if args.json is not None:
                _check_json_path(args.json)
            backend = resolve_backend(args.toxiproxy, owner=args.owner, timeout=args.timeout)
        except (_Usage, ChaosError, ValueError) as exc:
            return _fail(exc, EXIT_USAGE)
        code = _play(args, scenario, bindings, listens, backend, state)
        if received:
            return _SIGNAL_EXIT.get(signal.Signals(received[0]), 130)
    return code


def _check_json_path(path: Path) -> None:
    """Refuse a ``--json`` path that cannot be written, before anything is applied.

    Writing happens after the run: finding out only then would cost the whole scenario.
    Missing folders are fine (they are created when the file is written, as pytest's
    ``--synapse-report`` does) if the nearest existing one is a writable directory.
    """
    if path.is_dir():
        raise _Usage(f"--json {path} is a directory; give a file path, e.g. {path / 'run.json'}")
    if path.exists():
        if not os.access(path, os.W_OK):
            raise _Usage(f"--json {path}: {path} is not writable; choose another path")
        return
    existing = path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise _Usage(f"--json {path}: {existing} is a file, not a folder; choose another path")
    try:  # a real probe: permission bits do not tell for root, or for /proc and the like
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError:
        raise _Usage(f"--json {path}: {existing} is not writable; choose another path") from None


def _play(
    args: argparse.Namespace,
    scenario: Scenario,
    bindings: dict[str, tuple[str, str | None]],
    listens: dict[str, str],
    backend: Backend,
    state: _RunState,
) -> int:
    try:
        backend.start()
    except ChaosError as exc:
        return _fail(exc, EXIT_FAILURE)
    state.embedded = backend.kind == "embedded"
    state.url = backend.url
    cleaned = False
    try:
        code = _play_started(args, scenario, bindings, listens, backend, state)
    finally:
        try:
            backend.stop()
            cleaned = True
        except ChaosError as exc:
            _fail(f"while removing the proxies: {_cli_hint(exc)}", EXIT_FAILURE)
    # Proxies (or faults) may be left behind on the server: the run did not end cleanly.
    return EXIT_FAILURE if not cleaned and code == EXIT_OK else code


def _play_started(
    args: argparse.Namespace,
    scenario: Scenario,
    bindings: dict[str, tuple[str, str | None]],
    listens: dict[str, str],
    backend: Backend,
    state: _RunState,
) -> int:
    out = sys.stdout
    interrupted = state.received
    try:
        proxies: dict[str, Proxy] = {}
        print(
            f"synapse-chaos run: scenario {scenario.name} ({scenario.duration:g} s) on "
            f"{backend.url} ({backend.kind})",
            file=out,
            flush=True,
        )
        for scenario_name, (server_name, upstream) in bindings.items():
            if interrupted:
                return EXIT_OK
            try:
                proxy, created = get_or_create_proxy(
                    backend,
                    server_name,
                    upstream,
                    listen=listens.get(server_name, "127.0.0.1:0"),
                    remove_stale=False,  # the runner removes them and logs what it removed
                    require_listen=server_name in listens,
                )
            except ProxyMismatch as exc:
                # The proxies named on the command line do not fit the server's: bad input.
                return _fail(exc, EXIT_USAGE)
            proxies[scenario_name] = proxy
            state.proxies = [*state.proxies, proxy]
            if created:
                state.created = [*state.created, proxy.name]
            alias = "" if scenario_name == server_name else f" (scenario proxy {scenario_name})"
            how = "created" if created else "existing"
            print(
                f"  proxy {server_name}{alias}: {proxy.listen} -> {proxy.upstream} [{how}]",
                file=out,
                flush=True,
            )
        runner = ScenarioRunner(scenario, proxies)
        state.runner = runner
        if interrupted:
            runner.cancel()
        progress = ConsoleProgress(out, live=None if not args.no_progress else False)
        try:
            runner.run(progress=progress)
        finally:
            report = _report(args, runner)
        return report
    except ChaosError as exc:
        # Everything here passed validation: the server or the run failed (a proxy deleted by
        # someone else, a value the server refused, an address it could not bind...).
        return _fail(exc, EXIT_FAILURE)


def _report(args: argparse.Namespace, runner: ScenarioRunner) -> int:
    """Print the timeline and write ``--json``; EXIT_FAILURE if the file could not be written."""
    out = sys.stdout
    origin = runner.started_at
    print("timeline:", file=out)
    rendered = runner.timeline.render(origin=origin)
    print(rendered if rendered else "  (no fault applied)", file=out, flush=True)
    if args.json is not None:
        data: dict[str, Any] = {
            "scenario": runner.scenario.to_dict(),
            "events": [event.to_dict() for event in runner.log],
            "timeline": runner.timeline.to_dict(),
            "started_at": origin,
        }
        try:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
        except OSError as exc:
            return _fail(f"cannot write --json {args.json}: {exc.strerror or exc}", EXIT_FAILURE)
    return EXIT_OK


def scenarios_command(args: argparse.Namespace) -> int:
    """``synapse-chaos scenarios [NAME|FILE] [--json]``."""
    if args.scenario is not None:
        try:
            scenario = load_scenario(args.scenario)
        except ChaosError as exc:
            return _fail(exc, EXIT_USAGE)
        sys.stdout.write(scenario.to_json() if args.json else scenario.to_yaml())
        return EXIT_OK
    library = scenario_library()
    if args.json:
        print(json.dumps([s.to_dict() for s in library.values()], indent=2))
        return EXIT_OK
    width = max(len(name) for name in library)
    for name, scenario in library.items():
        print(
            f"{name:<{width}}  {scenario.duration:>4g} s  "
            f"[{', '.join(scenario.proxies)}]  {scenario.description}"
        )
    print(
        "\nrun one: synapse-chaos run NAME --proxy service=HOST:PORT   "
        "(show one: synapse-chaos scenarios NAME)"
    )
    return EXIT_OK
