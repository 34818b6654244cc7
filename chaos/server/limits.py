"""Bounds that keep the server answering whatever its clients and peers do."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Final

COUNT_FIELDS: Final = ("max_control_connections", "fd_reserve")
ZERO_OK_FIELDS: Final = ("connect_after_client_eof",)

LIMIT_HELP: Final[Mapping[str, str]] = {
    "header_timeout": "seconds a control request may take to arrive once its first byte did",
    "idle_timeout": "seconds an idle control connection is kept open",
    "max_control_connections": "open control connections at most (one more closes the one "
    "idle the longest)",
    "fd_reserve": "descriptors the data plane leaves free for the control API",
    "close_timeout": "seconds a closing proxied connection may deliver nothing to a peer that "
    "does not read before it is reset",
    "connect_after_client_eof": "seconds a pending upstream connect goes on after the client's "
    "FIN (0: give up at once)",
    "log_interval": "seconds between two log lines about the same kind of failure",
}
"""One line per field, for command-line help."""


@dataclasses.dataclass(frozen=True, slots=True)
class ServerLimits:
    """Time and resource bounds of one :class:`~chaos.server.ChaosServer`.

    The defaults follow Toxiproxy where it has an equivalent (its HTTP server's 15 s read
    timeout and 60 s idle timeout); the rest keep a misbehaving client or peer from holding
    descriptors or the control API for good. Set them with ``ChaosServer(limits=...)``,
    ``EmbeddedToxiproxy(limits=...)`` or ``synapse-chaos serve --header-timeout ...`` (every
    field is an option: ``--`` and the field name with dashes).

    Attributes:
        header_timeout: seconds a control request may take to arrive once its first byte did
            (head and body); a slower one has its connection closed.
        idle_timeout: seconds an idle control connection (keep-alive, or connected and silent)
            is kept open.
        max_control_connections: open control connections at most; one more closes the
            connection that has been idle the longest (or itself, if none is idle), so
            half-sent requests can never lock other clients out.
        fd_reserve: descriptors the data plane leaves free for the control API: when it would
            dip into them, new proxied connections are refused (reset) instead.
        close_timeout: seconds a closing proxied connection may go without delivering anything
            to a peer that does not read, before it is reset.
        connect_after_client_eof: seconds an upstream connect still pending may go on once the
            client sent its FIN. The client may have closed for good or only half-closed to
            wait for an answer; the proxy cannot tell, so it waits this long, not the kernel's
            two minutes. A client that resets ends the attempt at once.
        log_interval: seconds between two log lines about the same kind of failure (running
            out of descriptors, unreachable upstreams); the lines in between are counted.

    Raises:
        ValueError: a field out of range, naming it.
    """

    header_timeout: float = 15.0
    idle_timeout: float = 60.0
    max_control_connections: int = 64
    fd_reserve: int = 16
    close_timeout: float = 10.0
    connect_after_client_eof: float = 5.0
    log_interval: float = 10.0

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            problem = limit_problem(field.name, getattr(self, field.name))
            if problem:
                raise ValueError(f"ServerLimits.{field.name} {problem}")

    def as_options(self) -> list[str]:
        """The ``synapse-chaos serve`` options that set the fields differing from the defaults."""
        default = ServerLimits()
        options: list[str] = []
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value != getattr(default, field.name):
                options += [option_name(field.name), repr(value)]
        return options


def option_name(field: str) -> str:
    """The command-line option of field *field* (``--header-timeout``)."""
    return "--" + field.replace("_", "-")


def limit_problem(field: str, value: object) -> str:
    """What is wrong with *value* for field *field* (``"must be ..., got ..."``), or ``""``."""
    if field in COUNT_FIELDS:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            return f"must be an integer >= 1, got {value!r}"
        return ""
    zero = field in ZERO_OK_FIELDS
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
        or (value == 0 and not zero)
    ):
        bound = ">= 0" if zero else "> 0"
        return f"must be a finite number of seconds {bound}, got {value!r}"
    return ""
