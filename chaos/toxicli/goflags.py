"""Command-line flags parsed as toxiproxy-cli parses them (Go's ``flag`` package under urfave/cli).

What that means for a user, and what this module reproduces:

* flags come before the positional arguments: parsing stops at the first argument that is not a
  flag (``create redis -l ...`` leaves ``-l`` as an argument), and at ``--``;
* ``-name`` and ``--name`` are the same, a value follows as ``-l ADDR`` or ``-l=ADDR``; a boolean
  flag takes no separate value (``-u``, ``-u=false``);
* a repeated string flag keeps the last value; a repeated list flag (``-a``) collects every value,
  and each value is also split at commas (``-a latency=100,jitter=5`` is two attributes);
* errors are Go's texts: ``flag provided but not defined: -x``, ``flag needs an argument: -l``,
  ``bad flag syntax: ---x``, ``invalid boolean value "x" for -u: parse error``; ``-h`` or
  ``-help`` where no such flag exists is ``flag: help requested``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Final, Literal

from chaos.toxicli.gofmt import go_quote

Kind = Literal["string", "bool", "list"]

HELP_REQUESTED: Final = "flag: help requested"

_TRUE: Final = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE: Final = frozenset({"0", "f", "F", "FALSE", "false", "False"})


class FlagError(ValueError):
    """Arguments Go's flag parser refuses; ``str()`` is its text."""


@dataclasses.dataclass(frozen=True, slots=True)
class Flag:
    """One flag: its name, its aliases (each usable with one or two dashes), its kind."""

    name: str
    aliases: tuple[str, ...] = ()
    kind: Kind = "string"
    usage: str = ""
    metavar: str = "value"

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)


@dataclasses.dataclass(slots=True)
class Parsed:
    """What :func:`parse` found: flag values by flag name, and the arguments left."""

    values: dict[str, str | bool | list[str]]
    args: list[str]

    def string(self, name: str) -> str:
        value = self.values.get(name, "")
        return value if isinstance(value, str) else ""

    def flag(self, name: str) -> bool:
        return self.values.get(name) is True

    def strings(self, name: str) -> list[str]:
        value = self.values.get(name, [])
        return value if isinstance(value, list) else []


def parse(args: Sequence[str], flags: Sequence[Flag]) -> Parsed:
    """Parse *args* against *flags* as Go's ``FlagSet.Parse``; FlagError with Go's text."""
    by_name = {name: flag for flag in flags for name in flag.names}
    values: dict[str, str | bool | list[str]] = {}
    rest = list(args)
    while rest:
        arg = rest[0]
        if len(arg) < 2 or not arg.startswith("-"):
            break
        dashes = 2 if arg[1] == "-" else 1
        if arg == "--":
            rest.pop(0)
            break
        name = arg[dashes:]
        if not name or name[0] in "-=":
            raise FlagError(f"bad flag syntax: {arg}")
        rest.pop(0)
        name, equals, value = name.partition("=")
        flag = by_name.get(name)
        if flag is None:
            if name in ("help", "h"):
                raise FlagError(HELP_REQUESTED)
            raise FlagError(f"flag provided but not defined: -{name}")
        if flag.kind == "bool":
            if not equals:
                values[flag.name] = True
            elif value in _TRUE or value in _FALSE:
                values[flag.name] = value in _TRUE
            else:
                raise FlagError(f"invalid boolean value {go_quote(value)} for -{name}: parse error")
            continue
        if not equals:
            if not rest:
                raise FlagError(f"flag needs an argument: -{name}")
            value = rest.pop(0)
        if flag.kind == "list":
            collected = values.setdefault(flag.name, [])
            assert isinstance(collected, list)
            collected.extend(part.strip() for part in value.split(","))
        else:
            values[flag.name] = value
    return Parsed(values, rest)
