"""The control API's error type and the Toxiproxy error messages it keeps for compatibility.

Toxiproxy answers every failure with ``{"error": "<message>", "status": <code>}``. Clients match on
the status code, and people match on the message, so each message here starts with Toxiproxy's own
wording and then names what was wrong and what to do about it.
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
    """A failure to report to the API caller as ``{"error": message, "status": status}``."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.message = message
        self.status = status

    def to_json(self) -> dict[str, object]:
        """Return the Toxiproxy-shaped JSON body for this error."""
        return {"error": self.message, "status": self.status}

    def __repr__(self) -> str:
        return f"ApiError({self.message!r}, status={self.status})"


def bad_request(detail: str) -> ApiError:
    """A 400 for a body that is not valid JSON or has a field of the wrong type or range."""
    return ApiError(f"{BAD_REQUEST_BODY}: {detail}", 400)


def missing_field(field: str) -> ApiError:
    """A 400 for a required field that is absent or empty."""
    return ApiError(f"{MISSING_FIELD}: {field}", 400)


def proxy_not_found(name: str) -> ApiError:
    """A 404 for a proxy name that is not registered."""
    return ApiError(
        f"{PROXY_NOT_FOUND}: no proxy named {name!r}; GET /proxies lists the existing ones", 404
    )


def proxy_exists(name: str) -> ApiError:
    """A 409 for creating a proxy under a name that is taken."""
    return ApiError(
        f"{PROXY_EXISTS}: a proxy named {name!r} is already registered; "
        "delete it first or use POST /populate to replace it",
        409,
    )


def toxic_not_found(proxy: str, name: str) -> ApiError:
    """A 404 for a toxic name that the proxy does not have."""
    return ApiError(
        f"{TOXIC_NOT_FOUND}: proxy {proxy!r} has no toxic named {name!r}; "
        f"GET /proxies/{proxy}/toxics lists its toxics",
        404,
    )


def toxic_exists(proxy: str, name: str) -> ApiError:
    """A 409 for adding a toxic under a name the proxy already uses."""
    return ApiError(
        f"{TOXIC_EXISTS}: proxy {proxy!r} already has a toxic named {name!r}; "
        "update it with PATCH or give the new toxic another name",
        409,
    )
