"""The ``synapse-chaos`` command line.

``synapse-chaos serve`` runs the Toxiproxy-compatible server until SIGINT/SIGTERM;
``synapse-chaos run`` plays a scenario (see :mod:`chaos.runcli`); ``synapse-chaos scenarios``
lists the library. Subcommands register themselves in :func:`build_parser` through
:data:`COMMANDS`. toxiproxy-cli's commands (``list``, ``create``, ``toxic add``...) are run by
:mod:`chaos.toxicli`, which parses them as toxiproxy-cli does (``-h`` is its host flag there).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import errno
import importlib.metadata
import ipaddress
import json
import logging
import os
import re
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from chaos import toxicli
from chaos.control.livefaults import DEFAULT_OWNER
from chaos.runcli import run_command as _run
from chaos.runcli import scenarios_command as _scenarios
from chaos.server import ApiError, ChaosServer, ServerLimits
from chaos.server.config import LOOPBACK
from chaos.server.limits import COUNT_FIELDS, LIMIT_HELP, limit_problem, option_name

PROG = "synapse-chaos"

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


def _add_serve(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = subparsers.add_parser(
        "serve",
        help="run the Toxiproxy-compatible chaos server",
        description="Run the Toxiproxy-compatible chaos server (HTTP API + TCP proxies) until "
        "interrupted (SIGINT/SIGTERM).",
    )
    serve.add_argument(
        "--host", default=LOOPBACK, help="API address (default %(default)s, loopback only)"
    )
    serve.add_argument("--port", type=int, default=8474, help="API port (default %(default)s)")
    serve.add_argument(
        "--config",
        type=Path,
        help="JSON file with an array of proxies, as accepted by POST /populate",
    )
    serve.add_argument("--seed", type=int, help="random seed for toxicity, jitter and slicing")
    limits = serve.add_argument_group(
        "limits", "bounds that keep the server answering (chaos.server.ServerLimits)"
    )
    default = ServerLimits()
    for field in dataclasses.fields(ServerLimits):
        limits.add_argument(
            option_name(field.name),
            dest=f"limit_{field.name}",
            type=int if field.name in COUNT_FIELDS else float,
            metavar="N" if field.name in COUNT_FIELDS else "SECONDS",
            help=f"{LIMIT_HELP[field.name]} (default {getattr(default, field.name)})",
        )
    serve.set_defaults(handler=_serve)


def limits_from_args(args: argparse.Namespace) -> ServerLimits:
    """The ServerLimits the serve options ask for; ValueError naming the option if invalid."""
    values = {}
    for field in dataclasses.fields(ServerLimits):
        value = getattr(args, f"limit_{field.name}")
        if value is None:
            continue
        problem = limit_problem(field.name, value)
        if problem:
            raise ValueError(f"{option_name(field.name)} {problem}")
        values[field.name] = value
    return ServerLimits(**values)


def _add_run(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = subparsers.add_parser(
        "run",
        help="play a scenario against proxies",
        description="Play a scenario in real time against proxies it creates (or existing "
        "ones), print what it applied and the timeline, and remove every fault it added on "
        "exit, Ctrl-C included. Proxies it created are deleted again. A second Ctrl-C during "
        "that cleanup abandons it (for a server that stopped answering) and says what may "
        "remain.",
        epilog="example: synapse-chaos run partition-heal --proxy redis=127.0.0.1:6379",
    )
    run.add_argument(
        "scenario", help="library scenario name (see `scenarios`) or a .yaml/.json file"
    )
    run.add_argument(
        "--proxy",
        action="append",
        default=[],
        metavar="NAME[=HOST:PORT]",
        help="bind a scenario proxy: NAME=UPSTREAM creates proxy NAME in front of UPSTREAM "
        "(or reuses it if it exists with that upstream); NAME alone uses an existing proxy. "
        "A scenario with one proxy takes any one NAME. Repeat for each proxy.",
    )
    run.add_argument(
        "--listen",
        action="append",
        default=[],
        metavar="NAME=HOST:PORT",
        help="where a proxy this command creates listens (default: a free loopback port)",
    )
    run.add_argument(
        "--toxiproxy",
        metavar="URL",
        help="'embedded' or the URL of a running Toxiproxy (http://host:port); default "
        "$SYNAPSE_TOXIPROXY, else an embedded server for the duration of the run",
    )
    run.add_argument(
        "--owner",
        default=DEFAULT_OWNER,
        help="owner tag in the names of the faults (runs sharing a server need different "
        "owners; stale faults of this owner are removed first) (default %(default)s)",
    )
    run.add_argument(
        "--timeout", type=float, default=10.0, help="seconds per API request (default 10)"
    )
    run.add_argument(
        "--json", type=Path, metavar="FILE", help="also write log and timeline as JSON"
    )
    run.add_argument("--no-progress", action="store_true", help="no live progress bar")
    run.set_defaults(handler=_run)


def _add_scenarios(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    scenarios = subparsers.add_parser(
        "scenarios",
        help="list the scenario library, or show one scenario",
        description="Without an argument, list the scenarios shipped with Synapse. With a "
        "name or file, validate it and print it (YAML, or JSON with --json).",
    )
    scenarios.add_argument("scenario", nargs="?", help="library name or .yaml/.json file")
    scenarios.add_argument("--json", action="store_true", help="print JSON instead of YAML")
    scenarios.set_defaults(handler=_scenarios)


COMMANDS: list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = [
    _add_serve,
    _add_run,
    _add_scenarios,
]
"""Functions adding a subcommand; each sets ``handler`` (args -> exit code) as its default."""


def build_parser() -> argparse.ArgumentParser:
    """Build the ``synapse-chaos`` argument parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Synapse chaos tools: Toxiproxy-compatible server, scenarios, and "
        "toxiproxy-cli's commands.",
        epilog=toxicli.commands_help(PROG),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in COMMANDS:
        add(subparsers)
    return parser


def _fail(message: str, code: int = EXIT_FAILURE) -> int:
    print(f"synapse-chaos: error: {message}", file=sys.stderr)
    return code


def _load_config(path: Path) -> list[object]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read --config {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ValueError(f"--config {path} is not valid JSON: {exc}") from None
    if not isinstance(data, list):
        raise ValueError(
            f"--config {path} must hold a JSON array of proxies "
            '([{"name": ..., "listen": ..., "upstream": ...}]), '
            f"not a {type(data).__name__}"
        )
    return data


# Underscores too: container and compose service names use them, and they resolve.
_HOSTNAME_LABEL = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)$")


def _check_host(host: str) -> str:
    """Return the address to bind for ``--host``; raise ValueError (bad input) if it is none."""
    text = host.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]  # [::1], as written in URLs
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    hint = "use an IP address of this machine (127.0.0.1, or 0.0.0.0 for every interface)"
    if not text:
        raise ValueError(f"--host must not be empty; {hint}")
    if all(char.isdigit() or char == "." for char in text):
        # Digits and dots are meant as an IPv4 address, not a host name to look up.
        raise ValueError(f"--host {host!r} is not a valid IPv4 address; {hint}")
    labels = text.rstrip(".").split(".")
    if len(text) > 253 or not all(_HOSTNAME_LABEL.match(label) for label in labels):
        raise ValueError(f"--host {host!r} is neither an IP address nor a host name; {hint}")
    try:
        socket.getaddrinfo(text, None, type=socket.SOCK_STREAM)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ValueError(f"--host {host!r} does not resolve ({reason}); {hint}") from None
    return text


def _bind_failure(args: argparse.Namespace, exc: OSError) -> int:
    where = f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}"
    if isinstance(exc, socket.gaierror):  # it resolved a moment ago: still the host's fault
        return _fail(f"{where}; check --host", EXIT_USAGE)
    if exc.errno == errno.EADDRNOTAVAIL:
        return _fail(
            f"{where}; --host {args.host} is not an address of this machine "
            "(127.0.0.1, or 0.0.0.0 for every interface)"
        )
    return _fail(f"{where}; pick another --port (0 = any free port) or stop the other server")


async def _run_server(
    args: argparse.Namespace, config: list[object] | None, limits: ServerLimits
) -> int:
    server = ChaosServer(args.host, args.port, seed=args.seed, limits=limits)
    try:
        await server.start()
    except OSError as exc:
        return _bind_failure(args, exc)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        loop.add_signal_handler(sig, stop.set)
    try:
        if config is not None:
            try:
                proxies = await server.populate(config)
            except ApiError as exc:
                # 4xx: the file's content is wrong (bad input); 5xx (an address that cannot be
                # bound...): the server failed.
                code = EXIT_USAGE if 400 <= exc.status < 500 else EXIT_FAILURE
                return _fail(f"--config {args.config}: {exc.message}", code)
            for proxy in proxies:
                print(f"  proxy {proxy.name}: {proxy.listen} -> {proxy.upstream}", flush=True)
        print(
            f"synapse-chaos serve: Toxiproxy API listening on {server.url} (Ctrl-C to stop)",
            flush=True,
        )
        await stop.wait()
    finally:
        for sig, handler in previous.items():
            loop.remove_signal_handler(sig)
            # asyncio puts back SIG_DFL (SIGTERM) and Python's default (SIGINT), not what was
            # there: a caller running main() in its own process (a pytest session with its
            # SIGTERM handling) would die on the next SIGTERM without cleaning up.
            if handler is not None:
                signal.signal(sig, handler)
        await server.stop()
    return EXIT_OK


def _serve(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        return _fail(f"--port must be 0 to 65535, got {args.port}", EXIT_USAGE)
    try:
        args.host = _check_host(args.host)
    except ValueError as exc:
        return _fail(str(exc), EXIT_USAGE)
    try:
        limits = limits_from_args(args)
    except ValueError as exc:
        return _fail(str(exc), EXIT_USAGE)
    config = None
    if args.config is not None:
        try:
            config = _load_config(args.config)
        except ValueError as exc:
            return _fail(str(exc), EXIT_USAGE)
    # The server's warnings (out of descriptors, unreachable upstreams; once per interval) go to
    # stderr with the program's name, like its errors.
    logging.basicConfig(level=logging.WARNING, format="synapse-chaos serve: %(message)s")
    with asyncio.Runner(loop_factory=asyncio.SelectorEventLoop) as runner:
        return runner.run(_run_server(args, config, limits))


def version() -> str:
    """The installed synapse-chaos version."""
    try:
        return importlib.metadata.version(PROG)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``synapse-chaos``; returns the exit code."""
    arguments = sys.argv[1:] if argv is None else list(argv)
    if toxicli.wants(arguments):
        console = toxicli.Console(sys.stdout, sys.stderr, tty=sys.stdout.isatty())
        return toxicli.run(
            arguments,
            console,
            env=os.environ,
            prog=PROG,
            version=version(),
            app_help=build_parser().format_help,
        )
    parser = build_parser()
    args = parser.parse_args(arguments)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    code: int = handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
