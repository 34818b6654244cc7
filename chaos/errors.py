"""Exceptions of the ``chaos`` package.

:class:`ToxiproxyError` and its subclasses carry the HTTP ``status`` and the server's ``message``;
they are raised by :class:`chaos.ToxiproxyClient` for our server and the real Toxiproxy alike.
The names match the ``toxiproxy-python`` package (``ProxyExists``, ``NotFound``, ``InvalidToxic``).
"""

from __future__ import annotations


class ChaosError(Exception):
    """Base class of every error raised by the ``chaos`` package."""


class ToxiproxyError(ChaosError):
    """The Toxiproxy API refused a request or could not be reached.

    Attributes:
        status: HTTP status code, or ``None`` when no response arrived.
        message: the server's ``error`` text (or what went wrong locally): Toxiproxy's exact
            words, from the real server and Synapse's alike (``proxy already exists``).
        method: HTTP method of the request.
        url: full URL of the request.
        hint: what to do about it: the ``hint`` Synapse's server adds beside Toxiproxy's
            ``error`` (``""`` from a real Toxiproxy), or a local one; shown after the message.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        method: str = "",
        url: str = "",
        hint: str = "",
    ) -> None:
        self.status = status
        self.message = message
        self.method = method
        self.url = url
        self.hint = hint
        super().__init__(message)

    def __str__(self) -> str:
        where = f"{self.method} {self.url}".strip()
        status = f" -> {self.status}" if self.status is not None else ""
        text = f"{where}{status}: {self.message}" if where else self.message
        return f"{text} ({self.hint})" if self.hint else text

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.message!r}, status={self.status!r}, "
            f"method={self.method!r}, url={self.url!r})"
        )


class ProxyExists(ToxiproxyError):
    """409: a proxy (or toxic) with that name already exists."""


class NotFound(ToxiproxyError):
    """404: no proxy or toxic with that name (or no such endpoint)."""


class InvalidToxic(ToxiproxyError):
    """400: the request body was rejected (bad toxic type, stream, attribute or field)."""


class ToxiproxyUnavailable(ToxiproxyError):
    """No answer: the server refused the connection or did not respond within the timeout.

    Attributes:
        timed_out: no answer came within the timeout (rather than a refused connection).
        hint: what to do about it; a program with its own timeout setting (the CLI's
            ``--timeout``) replaces the default, which names the Python API.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        method: str = "",
        url: str = "",
        timed_out: bool = False,
        hint: str = "",
    ) -> None:
        super().__init__(message, status=status, method=method, url=url, hint=hint)
        self.timed_out = timed_out


class EmbeddedServerError(ChaosError):
    """The embedded server could not be started or stopped."""


class InvalidFault(ChaosError, ValueError):
    """A fault was given an argument it cannot take (unknown name, wrong type, out of range).

    Also a ``ValueError``, so ``except ValueError`` catches it as for any bad argument.

    Attributes:
        fault: the fault kind (``"latency"``, ``"down"``...).
        param: the offending parameter, or ``""`` when the fault kind itself is unknown.
    """

    def __init__(self, message: str, *, fault: str = "", param: str = "") -> None:
        self.fault = fault
        self.param = param
        super().__init__(message)


class FaultError(ChaosError):
    """A fault could not be used as asked (started twice, started on a deleted proxy...)."""


class BackendError(ChaosError):
    """A chaos backend specification is invalid or the backend cannot be used.

    Attributes:
        spec: the specification as given (``"embedded"``, ``"http://host:port"``, ``"docker"``).
        source: where it came from (``"argument"`` or ``"SYNAPSE_TOXIPROXY"``).
    """

    def __init__(self, message: str, *, spec: str = "", source: str = "") -> None:
        self.spec = spec
        self.source = source
        super().__init__(message)


class BackendUnavailable(BackendError):
    """The backend named exists in the design but is not available (e.g. ``docker`` for now)."""


class ScenarioError(ChaosError):
    """A scenario is invalid: bad step, unknown fault, negative time, conflicting faults.

    Attributes:
        scenario: name of the scenario (``""`` if unknown yet).
        step: 1-based index of the offending step, or ``None``.
        source: file the scenario came from, or ``None``.
        line: 1-based line in *source*, or ``None``.
    """

    def __init__(
        self,
        message: str,
        *,
        scenario: str = "",
        step: int | None = None,
        source: str | None = None,
        line: int | None = None,
    ) -> None:
        self.scenario = scenario
        self.step = step
        self.source = source
        self.line = line
        self.message = message
        super().__init__(message)

    def __str__(self) -> str:
        where = ""
        if self.source:
            where = self.source if self.line is None else f"{self.source}:{self.line}"
        elif self.scenario:
            where = f"scenario {self.scenario!r}"
        if self.step is not None:
            where = f"{where}, step {self.step}" if where else f"step {self.step}"
        return f"{where}: {self.message}" if where else self.message


class ScenarioFileError(ScenarioError):
    """A scenario file cannot be read or parsed (syntax error: file, line and what was expected)."""


class UnknownScenario(ScenarioError):
    """No library scenario has that name and no such file exists."""


class ScenarioBindingError(ScenarioError):
    """The proxies given to a runner do not match the proxies a scenario declares."""


def error_for_status(status: int) -> type[ToxiproxyError]:
    """Return the exception class for an HTTP error *status*."""
    if status == 409:
        return ProxyExists
    if status == 404:
        return NotFound
    if status == 400:
        return InvalidToxic
    return ToxiproxyError
