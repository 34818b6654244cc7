"""toxiproxy-cli 2.12.0's commands inside ``synapse-chaos``: same names, flags, output, exit codes.

``synapse-chaos list``, ``create -l ADDR -u ADDR NAME``, ``toxic add -t latency -a latency=100
redis`` ... behave as ``toxiproxy-cli`` does against any Toxiproxy API (ours or the real one),
byte for byte on stdout and stderr, so scripts and habits carry over. :func:`wants` tells the
``synapse-chaos`` entry point which command lines are toxiproxy-cli's; :func:`run` runs them.
Help texts are ours (they name ``synapse-chaos``).
"""

from __future__ import annotations

from collections.abc import Sequence

from chaos.toxicli.app import run
from chaos.toxicli.console import Console
from chaos.toxicli.goflags import FlagError, parse
from chaos.toxicli.table import APP_FLAGS, WORDS, commands_help


def wants(argv: Sequence[str]) -> bool:
    """Whether *argv* is a toxiproxy-cli command line: it starts with toxiproxy-cli's global
    flags (``--host URL``, ``-h URL``, ``--version``), or its first word is one of its commands.
    ``serve``, ``run``, ``scenarios``, ``--help`` and a lone ``-h`` stay ``synapse-chaos``'s.
    """
    if not argv:
        return False
    try:
        parsed = parse(argv, APP_FLAGS)
    except FlagError:
        # A bad global flag before one of its commands is toxiproxy-cli's usage error too.
        words = [arg for arg in argv if not arg.startswith("-")]
        return bool(words) and words[0] in WORDS
    if parsed.flag("help"):
        return False  # the same top-level help, from argparse
    if parsed.values:  # toxiproxy-cli's global flags: its rules from here on
        return True
    return bool(parsed.args) and parsed.args[0] in WORDS


__all__ = ["Console", "commands_help", "run", "wants"]
