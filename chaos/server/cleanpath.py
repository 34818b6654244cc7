"""Request paths as Toxiproxy's router (gorilla/mux) cleans them before routing.

A path with empty, ``.`` or ``..`` segments (``//proxies``, ``/proxies/./redis``) is not routed:
the router answers ``301 Moved Permanently`` with ``Location`` set to the cleaned path (query
kept), and Go's HTTP clients follow it. A trailing slash is part of the path and stays.
"""

from __future__ import annotations

import string
from typing import Final

# What Go's url.PathEscape-style path encoding leaves as is (net/url shouldEscape, encodePath).
_PATH_SAFE: Final = frozenset(string.ascii_letters + string.digits + "-_.~$&+,/:;=@")


def go_clean(path: str) -> str:
    """*path* as Go's ``path.Clean`` returns it for a rooted path (``/`` for an empty one)."""
    kept: list[str] = []
    for segment in path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if kept:
                kept.pop()
            continue
        kept.append(segment)
    return "/" + "/".join(kept)


def clean_path(path: str) -> str:
    """The path gorilla/mux routes *path* (decoded, as in ``URL.Path``) as."""
    if not path:
        return "/"
    if not path.startswith("/"):
        path = "/" + path
    cleaned = go_clean(path)
    if path.endswith("/") and cleaned != "/":
        cleaned += "/"
    return cleaned


def escape_path(path: str) -> str:
    """*path* percent-encoded as Go's ``URL.EscapedPath`` writes a path it has to encode."""
    return "".join(
        char if char in _PATH_SAFE else "".join(f"%{byte:02X}" for byte in char.encode())
        for char in path
    )


def redirect_location(path: str, query: str) -> str | None:
    """Where the router redirects a request for *path* and *query*; None if it routes it."""
    cleaned = clean_path(path)
    if cleaned == path:
        return None
    return escape_path(cleaned) + (f"?{query}" if query else "")
