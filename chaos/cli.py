"""The ``synapse-chaos`` command line.

``synapse-chaos serve`` runs the Toxiproxy-compatible server until SIGINT/SIGTERM. Further
subcommands register themselves in :func:`build_parser` through :data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from chaos.server import ApiError, ChaosServer
from chaos.server.config import LOOPBACK

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
    serve.set_defaults(handler=_serve)


COMMANDS: list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = [_add_serve]
"""Functions adding a subcommand; each sets ``handler`` (args -> exit code) as its default."""


def build_parser() -> argparse.ArgumentParser:
    """Build the ``synapse-chaos`` argument parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="synapse-chaos", description="Synapse chaos tools: Toxiproxy-compatible server."
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


async def _run_server(args: argparse.Namespace, config: list[object] | None) -> int:
    server = ChaosServer(args.host, args.port, seed=args.seed)
    try:
        await server.start()
    except OSError as exc:
        return _fail(
            f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}; "
            "pick another --port (0 = any free port) or stop the other server"
        )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        if config is not None:
            try:
                proxies = await server.populate(config)
            except ApiError as exc:
                return _fail(f"--config {args.config}: {exc.message}", EXIT_USAGE)
            for proxy in proxies:
                print(f"  proxy {proxy.name}: {proxy.listen} -> {proxy.upstream}", flush=True)
        print(
            f"synapse-chaos serve: Toxiproxy API listening on {server.url} (Ctrl-C to stop)",
            flush=True,
        )
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await server.stop()
    return EXIT_OK


def _serve(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        return _fail(f"--port must be 0 to 65535, got {args.port}", EXIT_USAGE)
    config = None
    if args.config is not None:
        try:
            config = _load_config(args.config)
        except ValueError as exc:
            return _fail(str(exc), EXIT_USAGE)
    return asyncio.run(_run_server(args, config))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``synapse-chaos``; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    code: int = handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
