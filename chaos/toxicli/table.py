"""toxiproxy-cli's command tree: names, aliases, flags, and the help we show for each."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Final

from chaos.server.toxics import TOXIC_ATTRIBUTES
from chaos.toxicli import commands
from chaos.toxicli.goflags import Flag

HOST_DEFAULT: Final = "http://localhost:8474"
HOST_ENV: Final = "TOXIPROXY_URL"

HELP: Final = Flag("help", kind="bool", usage="show help")
APP_FLAGS: Final = (
    Flag(
        "host",
        ("h",),
        usage=f"Toxiproxy API to talk to (default {HOST_DEFAULT}, or ${HOST_ENV})",
        metavar="URL",
    ),
    HELP,
    Flag("version", ("v",), kind="bool", usage="print the version"),
)


@dataclasses.dataclass(frozen=True, slots=True)
class Command:
    """A command: how it is called, what it does, its flags, its action or subcommands."""

    name: str
    aliases: tuple[str, ...]
    summary: str
    usage: str
    flags: tuple[Flag, ...] = ()
    action: Callable[[commands.Context], None] | None = None
    subcommands: tuple[Command, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)

    def find(self, name: str) -> Command | None:
        return next((sub for sub in self.subcommands if name in sub.names), None)


_TOXIC_NAME = Flag("toxicName", ("n",), usage="name of the toxic", metavar="NAME")
_TOXICITY = Flag(
    "toxicity",
    ("tox",),
    usage="probability the toxic applies to a connection, 0 to 1 (default 1)",
    metavar="F",
)
_ATTRIBUTE = Flag(
    "attribute",
    ("a",),
    kind="list",
    usage="toxic attribute as key=value (repeat, or separate with commas)",
    metavar="KEY=VALUE",
)

TOXIC_COMMANDS: Final = (
    Command(
        "add",
        ("a",),
        "add a toxic to a proxy (name defaults to TYPE_STREAM, stream to downstream)",
        "toxic add -t TYPE [-n NAME] [-a KEY=VALUE]... [--tox F] [-u|-d] PROXY",
        (
            _TOXIC_NAME,
            Flag(
                "type",
                ("t",),
                usage="toxic type: latency, bandwidth, slow_close, timeout, "
                "reset_peer, slicer, limit_data",
                metavar="TYPE",
            ),
            _TOXICITY,
            _ATTRIBUTE,
            Flag("upstream", ("u",), kind="bool", usage="on data from the client to the upstream"),
            Flag(
                "downstream", ("d",), kind="bool", usage="on data from the upstream to the client"
            ),
        ),
        commands.add_toxic,
    ),
    Command(
        "update",
        ("u",),
        "change a toxic's attributes (toxicity goes back to 1 unless --tox is given)",
        "toxic update -n NAME [-a KEY=VALUE]... [--tox F] PROXY",
        (_TOXIC_NAME, _TOXICITY, _ATTRIBUTE),
        commands.update_toxic,
    ),
    Command(
        "remove",
        ("r", "delete", "d"),
        "remove a toxic",
        "toxic remove -n NAME PROXY",
        (_TOXIC_NAME,),
        commands.remove_toxic,
    ),
)

COMMANDS: Final = (
    Command("list", ("l", "li", "ls"), "list the proxies", "list", action=commands.list_proxies),
    Command(
        "inspect",
        ("i", "ins"),
        "show a proxy and its toxics",
        "inspect PROXY",
        action=commands.inspect_proxy,
    ),
    Command(
        "create",
        ("c", "new"),
        "create a proxy",
        "create --listen ADDR --upstream ADDR PROXY",
        (
            Flag("listen", ("l",), usage="address the proxy listens on", metavar="ADDR"),
            Flag("upstream", ("u",), usage="address the proxy forwards to", metavar="ADDR"),
        ),
        commands.create_proxy,
    ),
    Command(
        "toggle",
        ("tog",),
        "enable or disable a proxy",
        "toggle PROXY",
        action=commands.toggle_proxy,
    ),
    Command("delete", ("d",), "delete a proxy", "delete PROXY", action=commands.delete_proxy),
    Command(
        "toxic",
        ("t",),
        "add, update or remove a toxic (see `toxic help`)",
        "toxic COMMAND [options] PROXY",
        subcommands=TOXIC_COMMANDS,
    ),
)

HELP_NAMES: Final = ("help", "h")

WORDS: Final = frozenset(name for command in COMMANDS for name in command.names) | frozenset(
    HELP_NAMES
)
"""Every first word that makes ``synapse-chaos`` act as toxiproxy-cli."""


def find(name: str) -> Command | None:
    return next((command for command in COMMANDS if name in command.names), None)


def _flag_lines(flags: tuple[Flag, ...]) -> list[str]:
    lines = []
    for flag in (*flags, HELP):
        spellings = [f"{'-' if len(n) == 1 else '--'}{n}" for n in flag.names]
        value = "" if flag.kind == "bool" else f" {flag.metavar}"
        lines.append((", ".join(s + value for s in spellings), flag.usage))
    width = max(len(left) for left, _ in lines)
    return [f"   {left:<{width}}  {usage}" for left, usage in lines]


# Units of the attributes, for the help (docs/server.md has the full table).
_UNITS: Final = {
    ("latency", "latency"): "ms",
    ("latency", "jitter"): "ms",
    ("bandwidth", "rate"): "KB/s",
    ("slow_close", "delay"): "ms",
    ("timeout", "timeout"): "ms",
    ("reset_peer", "timeout"): "ms",
    ("slicer", "average_size"): "bytes",
    ("slicer", "size_variation"): "bytes",
    ("slicer", "delay"): "us",
    ("limit_data", "bytes"): "bytes",
}


def _toxic_types() -> list[str]:
    lines = ["", "toxic types and their attributes (-a NAME=VALUE, whole numbers, default 0):"]
    width = max(len(kind) for kind in TOXIC_ATTRIBUTES)
    for kind, names in TOXIC_ATTRIBUTES.items():
        described = ", ".join(
            f"{name} ({_UNITS[kind, name]})" if (kind, name) in _UNITS else name for name in names
        )
        described = described or "none"
        lines.append(f"   {kind:<{width}}  {described}")
    return lines


def command_help(prog: str, path: tuple[Command, ...]) -> str:
    """Help for the command at *path* (``(toxic, add)``), in our words."""
    command = path[-1]
    words = " ".join(c.name for c in path)
    parts = [f"{prog} {words} - {command.summary}", ""]
    parts.append(f"usage: {prog} [--host URL] {command.usage}")
    if command.aliases:
        parts.append(f"aliases: {', '.join(command.aliases)}")
    if command.subcommands:
        parts += ["", "commands:"]
        width = max(len(", ".join(sub.names)) for sub in command.subcommands)
        for sub in command.subcommands:
            parts.append(f"   {', '.join(sub.names):<{width}}  {sub.summary}")
        parts.append(f"   {'help, h':<{width}}  help for one of these commands")
    parts += ["", "options:", *_flag_lines(command.flags)]
    if command.name in ("toxic", "add", "update"):
        parts += _toxic_types()
        parts.append(f"   example: {prog} toxic add -t latency -a latency=100 -a jitter=10 redis")
    parts.append("")
    parts.append(
        "As toxiproxy-cli 2.12: same flags, output lines and exit codes "
        "(flags go before the arguments)."
    )
    return "\n".join(parts) + "\n"


def commands_help(prog: str) -> str:
    """The toxiproxy-cli part of the top-level help."""
    width = max(len(", ".join(c.names)) for c in COMMANDS)
    lines = [
        "toxiproxy-cli commands (same names, flags, output and exit codes as toxiproxy-cli 2.12;",
        f"before the command: --host/-h URL, default {HOST_DEFAULT} or ${HOST_ENV}):",
    ]
    lines += [f"  {', '.join(c.names):<{width}}  {c.summary}" for c in COMMANDS]
    lines.append(f"  {'help, h':<{width}}  help for one of these commands ({prog} help create)")
    return "\n".join(lines) + "\n"
