"""The control API's error type, with Toxiproxy's exact error texts and our hints beside them.

Toxiproxy answers every failure with ``{"error": "<message>", "status": <code>}``, and clients
and their test suites compare the message: ``proxy already exists``, ``toxic not found``,
``bad request body: unexpected EOF``. So ``error`` carries Toxiproxy's text exactly (for a
failure Toxiproxy would have too), and what we can add (which proxy, what to do) goes in an
extra ``hint`` member, which every client ignores, and in the server log.
"""

from __future__ import annotations

from typing import Final

BAD_REQUEST_BODY: Final = "bad request body"
MISSING_FIELD: Final = "missing required field"
PROXY_NOT_FOUND: Final = "proxy not found"
PROXY_EXISTS: Final = "proxy already exists"
INVALID_STREAM: Final = "stream was invalid, can be either upstream or downstream"
INVALID_TOXIC_TYPE: Final = "invalid toxic type"
TOXIC_EXISTS: Final = "toxic already exists"
TOXIC_NOT_FOUND: Final = "toxic not found"


class ApiError(Exception):
    """A failure to report as ``{"error": message, "status": status, "hint": hint}``.

    Attributes:
        message: the ``error`` text: Toxiproxy's own where it has one.
        status: the HTTP status code.
        hint: our explanation (what was wrong, what to do); ``""`` for none.
    """

    def __init__(self, message: str, status: int, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.hint = hint

    def to_json(self) -> dict[str, object]:
        """The JSON body: Toxiproxy's members in its order, then ``hint`` if there is one."""
        body: dict[str, object] = {"error": self.message, "status": self.status}
        if self.hint:
            body["hint"] = self.hint
        return body

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message

    def __repr__(self) -> str:
        return f"ApiError({self.message!r}, status={self.status}, hint={self.hint!r})"


def bad_request(detail: str, hint: str) -> ApiError:
    """A 400 ``bad request body: <detail>`` (Go's decoding error text, or a check of ours)."""
    return ApiError(f"{BAD_REQUEST_BODY}: {detail}", 400, hint)


def missing_field(field: str, hint: str) -> ApiError:
    """A 400 for a required field that is absent or empty (``name``, ``upstream at proxy 2``)."""
    return ApiError(f"{MISSING_FIELD}: {field}", 400, hint)


def proxy_not_found(name: str) -> ApiError:
    """A 404 for a proxy name that is not registered."""
    return ApiError(
        PROXY_NOT_FOUND, 404, f"no proxy named {name!r}; GET /proxies lists the existing ones"
    )


def proxy_exists(name: str) -> ApiError:
    """A 409 for creating a proxy under a name that is taken."""
    return ApiError(
        PROXY_EXISTS,
        409,
        f"a proxy named {name!r} is already registered; delete it first, or use POST /populate "
        "to replace it",
    )


def toxic_not_found(proxy: str, name: str) -> ApiError:
    """A 404 for a toxic name that the proxy does not have."""
    return ApiError(
        TOXIC_NOT_FOUND,
        404,
        f"proxy {proxy!r} has no toxic named {name!r}; GET /proxies/{proxy}/toxics lists its "
        "toxics",
    )


def toxic_exists(proxy: str, name: str) -> ApiError:
    """A 409 for adding a toxic under a name the proxy already uses."""
    return ApiError(
        TOXIC_EXISTS,
        409,
        f"proxy {proxy!r} already has a toxic named {name!r}; update it with PATCH or give the "
        "new toxic another name",
    )


def listen_failed(text: str, listen: str, proxy: str) -> ApiError:
    """A 500 with Go's text for a listen address that cannot be used (the proxy not started)."""
    return ApiError(
        text,
        500,
        f"proxy {proxy!r} cannot listen on {listen!r}; give host:port with a free port of this "
        "machine (port 0 for any free port), or stop whatever uses it",
    )
