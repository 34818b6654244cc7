"""Where toxiproxy-cli's commands write, and how they stop with an exit code."""

from __future__ import annotations

import dataclasses
from typing import Final, TextIO

RED: Final = "\x1b[31m"
GREEN: Final = "\x1b[32m"
YELLOW: Final = "\x1b[33m"
BLUE: Final = "\x1b[34m"
PURPLE: Final = "\x1b[35m"
NONE: Final = "\x1b[0m"


class Exit(Exception):
    """Stop the command: *message* and a newline go to stderr, the process exits with *code*."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclasses.dataclass(slots=True)
class Console:
    """The command's output streams; *tty* (stdout is a terminal) turns on colours and hints."""

    out: TextIO
    err: TextIO
    tty: bool

    def color(self, code: str) -> str:
        return code if self.tty else ""

    def write(self, text: str) -> None:
        self.out.write(text)

    def hint(self, message: str) -> None:
        """toxiproxy-cli's hint line, shown on a terminal only."""
        if self.tty:
            self.out.write(f"\n{self.color(NONE)}Hint: {message}\n")
