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
        message: the server's ``error`` text (or what went wrong locally).
        method: HTTP method of the request.
        url: full URL of the request.
    """

    def __init__(
        self, message: str, *, status: int | None = None, method: str = "", url: str = ""
    ) -> None:
        self.status = status
        self.message = message
        self.method = method
        self.url = url
        super().__init__(message)

    def __str__(self) -> str:
        where = f"{self.method} {self.url}".strip()
        status = f" -> {self.status}" if self.status is not None else ""
        return f"{where}{status}: {self.message}" if where else self.message

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
    """No answer: the server refused the connection or did not respond within the timeout."""


class EmbeddedServerError(ChaosError):
    """The embedded server could not be started or stopped."""


def error_for_status(status: int) -> type[ToxiproxyError]:
    """Return the exception class for an HTTP error *status*."""
    if status == 409:
        return ProxyExists
    if status == 404:
        return NotFound
    if status == 400:
        return InvalidToxic
    return ToxiproxyError
