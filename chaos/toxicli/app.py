"""Run a toxiproxy-cli command line: global flags, command lookup, help, version, exit codes.

The flow is urfave/cli 2.27's as toxiproxy-cli 2.12.0 uses it, because scripts see its effects:
a flag error prints ``Incorrect Usage: ...`` and the help on stdout and exits 0; an unknown
command is ``No help topic for 'x'`` on stderr, exit 3; a failed command prints its error on
stderr and exits 1; ``--host`` beats ``$TOXIPROXY_URL``, which beats the default.
"""

from __future__ import annotations

import platform
import sys
from collections.abc import Callable, Mapping, Sequence

from chaos.toxicli import table
from chaos.toxicli.commands import Context
from chaos.toxicli.console import Console, Exit
from chaos.toxicli.goclient import Client
from chaos.toxicli.goflags import FlagError, parse

EXIT_NO_HELP_TOPIC = 3

_GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "i686": "386", "armv7l": "arm"}


def _user_agent(prog: str, version: str) -> str:
    machine = platform.machine().lower()
    return f"{prog}/{version} ({sys.platform}/{_GOARCH.get(machine, machine)})"


class _Run:
    def __init__(
        self,
        console: Console,
        env: Mapping[str, str],
        prog: str,
        version: str,
        app_help: Callable[[], str],
    ) -> None:
        self.console = console
        self.env = env
        self.prog = prog
        self.version = version
        self.app_help = app_help
        self.host = table.HOST_DEFAULT

    def show_app_help(self) -> None:
        self.console.write(self.app_help())

    def show_help(self, path: tuple[table.Command, ...]) -> None:
        self.console.write(table.command_help(self.prog, path))

    def no_help_topic(self, name: str) -> int:
        raise Exit(f"No help topic for '{name}'", EXIT_NO_HELP_TOPIC)

    def help_for(self, parent: tuple[table.Command, ...], name: str) -> int:
        """``help NAME`` at the top level or under ``toxic``."""
        command = table.find(name) if not parent else parent[-1].find(name)
        if command is None:
            return self.no_help_topic(name)
        self.show_help((*parent, command))
        return 0

    def app(self, argv: Sequence[str]) -> int:
        try:
            parsed = parse(argv, table.APP_FLAGS)
        except FlagError as exc:
            self.console.write(f"Incorrect Usage: {exc}\n\n")
            self.show_app_help()
            return 0
        if parsed.flag("help"):
            self.show_app_help()
            return 0
        if parsed.flag("version"):
            self.console.write(f"{self.prog} version {self.version}\n")
            return 0
        if "host" in parsed.values:
            self.host = parsed.string("host")
        elif table.HOST_ENV in self.env:
            self.host = self.env[table.HOST_ENV]
        if not parsed.args:
            self.show_app_help()
            return 0
        name, rest = parsed.args[0], parsed.args[1:]
        if name in table.HELP_NAMES:
            if rest:
                return self.help_for((), rest[0])
            self.show_app_help()
            return 0
        command = table.find(name)
        if command is None:
            return self.no_help_topic(name)
        return self.command((command,), rest)

    def command(self, path: tuple[table.Command, ...], argv: Sequence[str]) -> int:
        command = path[-1]
        try:
            parsed = parse(argv, (*command.flags, table.HELP))
        except FlagError as exc:
            self.console.write(f"Incorrect Usage: {exc}\n\n")
            self.show_help(path)
            return 0
        if parsed.flag("help"):
            self.show_help(path)
            return 0
        if command.subcommands:
            if not parsed.args:
                self.show_help(path)
                return 0
            name, rest = parsed.args[0], parsed.args[1:]
            if name in table.HELP_NAMES:
                if rest:
                    return self.help_for(path, rest[0])
                self.show_help(path)
                return 0
            sub = command.find(name)
            if sub is None:
                return self.no_help_topic(name)
            return self.command((*path, sub), rest)
        assert command.action is not None
        client = Client(self.host, _user_agent(self.prog, self.version))
        context = Context(self.console, parsed, client, self.prog, lambda: self.show_help(path))
        command.action(context)
        return 0


def run(
    argv: Sequence[str],
    console: Console,
    *,
    env: Mapping[str, str],
    prog: str,
    version: str,
    app_help: Callable[[], str],
) -> int:
    """Run toxiproxy-cli's command line *argv* (without the program name); the exit code.

    *env* supplies ``TOXIPROXY_URL``; *app_help* the top-level help text (``synapse-chaos``'s).
    """
    try:
        return _Run(console, env, prog, version, app_help).app(argv)
    except Exit as stop:
        console.err.write(stop.message + "\n")
        return stop.code
