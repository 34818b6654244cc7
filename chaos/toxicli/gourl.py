"""URLs as Go's ``net/url`` parses them for an HTTP request, with its error texts.

toxiproxy-cli joins the host flag and the path as text (``http://host:8474`` + ``/proxies/`` +
a proxy name) and lets Go parse the result, so a name with ``?`` or ``#`` loses what follows, a
space is sent as ``%20``, and ``%zz`` or a space in the host is an error
(``parse "http://a b/proxies": invalid character " " in host name``). This module covers what
such URLs can hold; userinfo and IPv6 zones are taken as they come.
"""

from __future__ import annotations

import dataclasses
import re
import string
from typing import Final

from chaos.toxicli.gofmt import go_quote

_UNRESERVED: Final = frozenset(string.ascii_letters + string.digits + "-_.~")
# Characters a path may hold unescaped when Go re-encodes it (shouldEscape, encodePath).
_PATH_KEEP: Final = _UNRESERVED | frozenset("$&+,/:;=@")
# Characters Go accepts as they are in a path it was given (validEncoded).
_PATH_VALID: Final = _PATH_KEEP | frozenset("!'()*[]")
# ASCII characters allowed in a host (shouldEscape, encodeHost, plus '%' escapes).
_HOST_KEEP: Final = _UNRESERVED | frozenset("!$&'()*+,;=:[]<>\"")
_PORT: Final = re.compile(r":[0-9]*\Z")


class UrlError(ValueError):
    """A URL Go refuses; ``str()`` is Go's ``parse "URL": reason``."""


@dataclasses.dataclass(frozen=True, slots=True)
class GoUrl:
    """A parsed http(s) URL: what to connect to and what to ask for."""

    scheme: str
    host: str  # as written, brackets of an IPv6 literal removed
    port: int
    authority: str  # host[:port] as written
    request_path: str  # path and query, escaped as Go sends them
    fragment: str

    def __str__(self) -> str:
        """The URL as Go's ``URL.String()`` writes it (in its error texts)."""
        fragment = f"#{self.fragment}" if self.fragment else ""
        return f"{self.scheme}://{self.authority}{self.request_path}{fragment}"


def _unescape_errors(text: str, *, host: bool) -> str | None:
    """Go's complaint about *text*'s %-escapes (and, in a host, its characters), if any."""
    i = 0
    while i < len(text):
        char = text[i]
        if char == "%":
            escape = text[i : i + 3]
            if len(escape) < 3 or not all(c in string.hexdigits for c in escape[1:]):
                return f"invalid URL escape {go_quote(escape)}"
            i += 3
            continue
        if host and ord(char) < 0x80 and char not in _HOST_KEEP:
            return f"invalid character {go_quote(char)} in host name"
        i += 1
    return None


def _unescape(text: str) -> str:
    raw = bytearray()
    i = 0
    data = text.encode("utf-8", "surrogateescape")
    while i < len(data):
        if data[i] == ord("%"):
            raw.append(int(data[i + 1 : i + 3], 16))
            i += 3
        else:
            raw.append(data[i])
            i += 1
    return raw.decode("utf-8", "surrogateescape")


def _escape_path(path: str) -> str:
    return "".join(
        char
        if char in _PATH_KEEP
        else "".join(f"%{b:02X}" for b in char.encode("utf-8", "surrogateescape"))
        for char in path
    )


def _request_path(raw_path: str) -> str:
    """The path as Go sends it: as written if it is validly encoded, else re-encoded."""
    if all(c in _PATH_VALID or c == "%" for c in raw_path):
        return raw_path or "/"
    return _escape_path(_unescape(raw_path)) or "/"


def parse(url: str) -> GoUrl:
    """Parse an ``http://`` or ``https://`` URL as Go would; UrlError with Go's text."""

    def fail(reason: str) -> UrlError:
        return UrlError(f"parse {go_quote(url)}: {reason}")

    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise fail("net/url: invalid control character in URL")
    rest, _, fragment = url.partition("#")
    problem = _unescape_errors(fragment, host=False)
    if problem:
        raise fail(problem)
    scheme, _, rest = rest.partition("://")
    query = ""
    if rest.endswith("?") and rest.count("?") == 1:
        rest, query = rest[:-1], "?"
    elif "?" in rest:
        rest, query = rest.split("?", 1)
        query = "?" + query
    authority, slash, path = rest.partition("/")
    path = slash + path
    hostport = authority.rpartition("@")[2]
    if hostport.startswith("["):
        close = hostport.find("]")
        if close < 0:
            raise fail("missing ']' in host")
        host, port_part = hostport[1:close], hostport[close + 1 :]
        if port_part and not _PORT.match(port_part):
            raise fail(f"invalid port {go_quote(port_part)} after host")
    else:
        colon = hostport.rfind(":")
        port_part = hostport[colon:] if colon >= 0 else ""
        if port_part and not _PORT.match(port_part):
            raise fail(f"invalid port {go_quote(port_part)} after host")
        host = hostport[:colon] if colon >= 0 else hostport
    problem = _unescape_errors(host, host=True) or _unescape_errors(path, host=False)
    if problem:
        raise fail(problem)
    default = 443 if scheme.lower() == "https" else 80
    port = int(port_part[1:]) if len(port_part) > 1 else default
    return GoUrl(
        scheme=scheme,
        host=_unescape(host),
        port=port,
        authority=authority,
        request_path=_request_path(path) + query,
        fragment=fragment,
    )


def resolve(base: GoUrl, location: str) -> str:
    """A redirect's ``Location`` as an absolute URL (absolute, or a path on *base*'s server)."""
    if "://" in location.split("/", 1)[0] or location.startswith(("http://", "https://")):
        return location
    if location.startswith("//"):
        return f"{base.scheme}:{location}"
    if not location.startswith("/"):
        directory = base.request_path.split("?", 1)[0].rsplit("/", 1)[0]
        location = f"{directory}/{location}"
    return f"{base.scheme}://{base.authority}{location}"
