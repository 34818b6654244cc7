"""The requests toxiproxy-cli makes, and its error texts, as its Go client (2.12.0) words them.

Each call sends what the Go client sends (``POST /proxies`` with the whole proxy, toggles as a
``POST`` of the proxy, toxic updates as ``PATCH``) and fails with a :class:`GoError` whose text
is the Go client's, wrappers included: ``Create: HTTP 409: proxy already exists``,
``fail to request: Get "http://localhost:8474/proxies": dial tcp 127.0.0.1:8474: connect:
connection refused``. An error answer's body is decoded as the Go client decodes it (its first
JSON value into ``{"error", "status"}``), so a plain-text 404 gives ``json: cannot unmarshal
number into Go value of type toxiproxy.ApiError``, as from the real tool.
"""

from __future__ import annotations

import dataclasses
import errno
import http.client
import math
import os
import socket
import ssl
import time
from collections.abc import Callable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Final

from chaos.server import gojson
from chaos.server.gojson import ANY, BOOL, FLOAT32, INT, STRING, GoJsonError
from chaos.toxicli import gourl
from chaos.toxicli.gofmt import format_g, go_quote

TIMEOUT: Final = 30.0  # the Go client's http.Client timeout
MAX_REDIRECTS: Final = 10
_AWAITING_HEADERS: Final = "Client.Timeout exceeded while awaiting headers"

API_ERROR: Final = gojson.go_struct(
    "ApiError", "toxiproxy.ApiError", {"error": STRING, "status": INT}
)
TOXIC: Final = gojson.go_struct(
    "Toxic",
    "toxiproxy.Toxic",
    {
        "name": STRING,
        "type": STRING,
        "stream": STRING,
        "toxicity": FLOAT32,
        "attributes": gojson.map_of(ANY, "toxiproxy.Attributes"),
    },
)
PROXY: Final = gojson.go_struct(
    "Proxy",
    "toxiproxy.Proxy",
    {
        "name": STRING,
        "listen": STRING,
        "upstream": STRING,
        "enabled": BOOL,
        "toxics": gojson.slice_of(TOXIC, "toxiproxy.Toxics"),
    },
)
PROXIES: Final = gojson.map_of(PROXY, "map[string]*toxiproxy.Proxy")


class GoError(Exception):
    """A failed call; ``str()`` is the Go client's error text."""


@dataclasses.dataclass(slots=True)
class Toxic:
    """A toxic as the Go client holds it (attributes decoded as ``interface{}``: floats)."""

    name: str = ""
    type: str = ""
    stream: str = ""
    toxicity: float = 0.0
    attributes: dict[str, object] | None = None

    @classmethod
    def from_go(cls, fields: Mapping[str, object]) -> Toxic:
        toxic = cls()
        for key, value in fields.items():
            setattr(toxic, key, value)
        return toxic

    def marshal(self) -> str:
        """As ``json.Marshal`` of the Go client's Toxic (stream omitted when empty)."""
        members = [f'"name":{gojson.encode(self.name)}', f'"type":{gojson.encode(self.type)}']
        if self.stream:
            members.append(f'"stream":{gojson.encode(self.stream)}')
        members.append(f'"toxicity":{marshal_float32(self.toxicity)}')
        members.append(f'"attributes":{marshal_any(self.attributes)}')
        return "{" + ",".join(members) + "}"


@dataclasses.dataclass(slots=True)
class Proxy:
    """A proxy as the Go client holds it; ``toxics`` is None until the server sent some."""

    name: str = ""
    listen: str = ""
    upstream: str = ""
    enabled: bool = False
    toxics: list[Toxic] | None = None

    @classmethod
    def from_go(cls, fields: Mapping[str, object]) -> Proxy:
        proxy = cls()
        for key, value in fields.items():
            if key == "toxics":
                assert isinstance(value, list)
                proxy.toxics = [Toxic.from_go(t) if isinstance(t, dict) else Toxic() for t in value]
            else:
                setattr(proxy, key, value)
        return proxy

    def marshal(self) -> str:
        toxics = (
            "null"
            if self.toxics is None
            else "[" + ",".join(t.marshal() for t in self.toxics) + "]"
        )
        return (
            f'{{"name":{gojson.encode(self.name)},"listen":{gojson.encode(self.listen)},'
            f'"upstream":{gojson.encode(self.upstream)},"enabled":{gojson.encode(self.enabled)},'
            f'"toxics":{toxics}}}'
        )


def marshal_float64(value: float) -> str:
    """A float64 as ``json.Marshal`` writes it (100, 0.5, 1e-7, 1e+21); GoError for Inf/NaN."""
    if math.isnan(value) or math.isinf(value):
        raise GoError(f"json: unsupported value: {format_g(value)}")
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    if 1e-6 <= abs(value) < 1e21:
        text = format(Decimal(repr(value)), "f")
        return text.rstrip("0").rstrip(".") if "." in text else text
    digits, exponent = repr(value).split("e")  # shortest digits, as Go's
    # Go writes e-07 as e-7 (encoding/json's cleanup of strconv's 'e' form); e+21 and up stay.
    return f"{digits.removesuffix('.0')}e{exponent[0]}{exponent[1:].lstrip('0')}"


def marshal_float32(value: float) -> str:
    """A float32 as ``json.Marshal`` writes it; GoError for NaN (the only non-finite one here)."""
    if math.isnan(value) or math.isinf(value):
        raise GoError(f"json: unsupported value: {format_g(value)}")
    return gojson.format_float32(value)


def marshal_any(value: object) -> str:
    """``json.Marshal`` of an ``interface{}`` holding what toxiproxy-cli builds (maps sorted)."""
    if isinstance(value, dict):
        members = (f"{gojson.encode(key)}:{marshal_any(value[key])}" for key in sorted(value))
        return "{" + ",".join(members) + "}"
    if isinstance(value, list):
        return "[" + ",".join(marshal_any(item) for item in value) + "]"
    if isinstance(value, float) and not isinstance(value, bool):
        return marshal_float64(value)
    return gojson.encode(value)


def _nameserver() -> str:
    """The DNS server Go names in ``lookup x on 10.0.0.2:53: no such host``."""
    try:
        lines = Path("/etc/resolv.conf").read_text(encoding="utf-8").splitlines()
    except OSError:
        lines = []
    for line in lines:
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            address = fields[1]
            return f"[{address}]:53" if ":" in address else f"{address}:53"
    return "127.0.0.1:53"


def _errno_text(error: OSError) -> str:
    """An errno as Go's syscall.Errno prints it (strerror, first letter lower case)."""
    code = error.errno or errno.EIO
    text = os.strerror(code)
    return text[:1].lower() + text[1:]


def _hostport(address: tuple[object, ...], family: int) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"


class _Timeout(Exception):
    pass


class Client:
    """toxiproxy-cli's API client: one endpoint, the Go client's requests and errors."""

    def __init__(
        self,
        endpoint: str,
        user_agent: str,
        *,
        timeout: float = TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not endpoint.startswith(("https://", "http://")):
            endpoint = "http://" + endpoint
        self.endpoint = endpoint
        self.user_agent = user_agent
        self.timeout = timeout
        self.clock = clock

    # -- what the commands call -----------------------------------------------------------

    def proxies(self) -> dict[str, Proxy]:
        found = self._decode(self._send("GET", "/proxies"), PROXIES)
        assert found is None or isinstance(found, dict)
        return {
            name: Proxy.from_go(value) if isinstance(value, dict) else Proxy()
            for name, value in (found or {}).items()
        }

    def proxy(self, name: str) -> Proxy:
        found = self._decode(self._send("GET", "/proxies/" + name), PROXY)
        return Proxy.from_go(found) if isinstance(found, dict) else Proxy()

    def save(self, proxy: Proxy, *, created: bool) -> Proxy:
        """POST the proxy (``/proxies/NAME`` when it exists, else ``/proxies``), as Save()."""
        path = "/proxies/" + proxy.name if created else "/proxies"
        answer = self._send("POST", path, proxy.marshal().encode())
        found = self._decode(answer, PROXY)
        if not isinstance(found, dict):
            return proxy
        # json.Unmarshal into the same struct: fields in the answer replace the sent ones
        answered = Proxy.from_go(found)
        return dataclasses.replace(proxy, **{key: getattr(answered, key) for key in found})

    def create_proxy(self, name: str, listen: str, upstream: str) -> Proxy:
        try:
            return self.save(Proxy(name, listen, upstream, True), created=False)
        except GoError as exc:
            raise GoError(f"Create: {exc}") from None

    def delete_proxy(self, name: str) -> None:
        try:
            self._send("DELETE", "/proxies/" + name)
        except GoError as exc:
            raise GoError(f"Delete: {exc}") from None

    def add_toxic(self, proxy_name: str, toxic: Toxic) -> Toxic:
        try:
            proxy = self.proxy(proxy_name)
        except GoError as exc:
            raise GoError(f"failed to retrieve proxy with name `{proxy_name}`: {exc}") from None
        try:
            body = toxic.marshal().encode()
            try:
                answer = self._send("POST", "/proxies/" + proxy.name + "/toxics", body)
            except GoError as exc:
                raise GoError(f"AddToxic: {exc}") from None
            found = self._decode(answer, TOXIC)
        except GoError as exc:
            raise GoError(f"failed to add toxic to proxy {proxy_name}: {exc}") from None
        return Toxic.from_go(found) if isinstance(found, dict) else Toxic()

    def update_toxic(
        self, proxy_name: str, toxic_name: str, toxicity: float, attributes: dict[str, object]
    ) -> Toxic:
        try:
            proxy = self.proxy(proxy_name)
        except GoError as exc:
            raise GoError(f"failed to retrieve proxy with name `{proxy_name}`: {exc}") from None
        try:
            # a Go map: keys sorted by json.Marshal
            body = (
                f'{{"attributes":{marshal_any(attributes)},"toxicity":{marshal_float32(toxicity)}}}'
            )
            answer = self._send(
                "PATCH", f"/proxies/{proxy.name}/toxics/{toxic_name}", body.encode()
            )
            found = self._decode(answer, TOXIC)
        except GoError as exc:
            raise GoError(
                f"failed to update toxic '{toxic_name}' of proxy '{proxy_name}': {exc}"
            ) from None
        return Toxic.from_go(found) if isinstance(found, dict) else Toxic()

    def remove_toxic(self, proxy_name: str, toxic_name: str) -> None:
        try:
            proxy = self.proxy(proxy_name)
        except GoError as exc:
            raise GoError(f"failed to retrieve proxy with name `{proxy_name}`: {exc}") from None
        try:
            self._send("DELETE", f"/proxies/{proxy.name}/toxics/{toxic_name}")
        except GoError as exc:
            raise GoError(
                f"failed to remove toxic '{toxic_name}' from proxy '{proxy_name}': {exc}"
            ) from None

    # -- HTTP as Go's client does it --------------------------------------------------------

    @staticmethod
    def _decode(body: bytes, go_type: gojson.GoType) -> object:
        try:
            return gojson.unmarshal(gojson.decode_document(body), go_type)
        except GoJsonError as exc:
            raise GoError(str(exc)) from None

    def _send(self, method: str, path: str, body: bytes | None = None) -> bytes:
        try:
            url = gourl.parse(self.endpoint + path)
        except gourl.UrlError as exc:
            raise GoError(str(exc)) from None
        deadline = self.clock() + self.timeout
        try:
            status, answer = self._follow(method, url, body, deadline)
        except GoError as exc:
            raise GoError(f"fail to request: {exc}") from None
        if 200 <= status < 300:
            return answer
        raise GoError(self._api_error(answer))

    @staticmethod
    def _api_error(body: bytes) -> str:
        """validateResponse: the body's first JSON value as an ApiError, or Go's complaint."""
        try:
            found = gojson.unmarshal(gojson.decode(body), API_ERROR)
        except GoJsonError as exc:
            return str(exc)
        fields = found if isinstance(found, dict) else {}
        return f"HTTP {fields.get('status', 0)}: {fields.get('error', '')}"

    def _follow(
        self, method: str, url: gourl.GoUrl, body: bytes | None, deadline: float
    ) -> tuple[int, bytes]:
        for _ in range(MAX_REDIRECTS + 1):
            op = method[:1] + method[1:].lower()
            try:
                status, headers, answer = self._round_trip(method, url, body, deadline)
            except GoError as exc:
                raise GoError(f"{op} {go_quote(str(url))}: {exc}") from None
            location = headers.get("location")
            if status not in (301, 302, 303, 307, 308) or location is None:
                return status, answer
            if status in (301, 302, 303) and method not in ("GET", "HEAD"):
                method, body = "GET", None
            try:
                url = gourl.parse(gourl.resolve(url, location))
            except gourl.UrlError as exc:
                raise GoError(
                    f"{op} {go_quote(str(url))}: failed to parse Location header: {exc}"
                ) from None
        raise GoError(f"{op} {go_quote(str(url))}: stopped after {MAX_REDIRECTS} redirects")

    def _round_trip(
        self, method: str, url: gourl.GoUrl, body: bytes | None, deadline: float
    ) -> tuple[int, dict[str, str], bytes]:
        if url.scheme.lower() not in ("http", "https"):
            raise GoError(f"unsupported protocol scheme {go_quote(url.scheme)}")
        if not url.host:
            raise GoError("http: no Host in request URL")
        sock = self._dial(url, deadline)
        try:
            if url.scheme.lower() == "https":
                sock = self._tls(sock, url)
            connection = http.client.HTTPConnection(url.host, url.port)
            connection.sock = sock
            sock.settimeout(max(0.001, deadline - self.clock()))
            headers = {
                "Host": url.authority.rpartition("@")[2],
                "User-Agent": self.user_agent,
                "Content-Type": "application/json",
                "Accept-Encoding": "gzip",
            }
            try:
                connection.putrequest(
                    method, url.request_path, skip_host=True, skip_accept_encoding=True
                )
                for name, value in headers.items():
                    connection.putheader(name, value)
                if body is not None:
                    connection.putheader("Content-Length", str(len(body)))
                connection.endheaders(body)
                response = connection.getresponse()
            except TimeoutError:
                raise GoError(f"context deadline exceeded ({_AWAITING_HEADERS})") from None
            except (http.client.RemoteDisconnected, http.client.IncompleteRead):
                raise GoError("EOF") from None
            except http.client.HTTPException as exc:
                raise GoError(f"malformed HTTP response: {exc}") from None
            except OSError as exc:
                raise GoError(self._socket_error(exc, sock)) from None
            try:
                answer = response.read()
            except TimeoutError:
                raise GoError(
                    "context deadline exceeded (Client.Timeout or context cancellation while "
                    "reading body)"
                ) from None
            except (http.client.HTTPException, OSError):
                raise GoError("unexpected EOF") from None
            return response.status, {k.lower(): v for k, v in response.getheaders()}, answer
        finally:
            sock.close()

    @staticmethod
    def _socket_error(exc: OSError, sock: socket.socket) -> str:
        try:
            local = _hostport(sock.getsockname(), sock.family)
            remote = _hostport(sock.getpeername(), sock.family)
        except OSError:
            return _errno_text(exc)
        return f"read tcp {local}->{remote}: read: {_errno_text(exc)}"

    def _dial(self, url: gourl.GoUrl, deadline: float) -> socket.socket:
        try:
            found = socket.getaddrinfo(url.host, url.port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            if exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", -5)):
                raise GoError(
                    f"dial tcp: lookup {url.host} on {_nameserver()}: no such host"
                ) from None
            raise GoError(f"dial tcp: lookup {url.host}: {exc.strerror}") from None
        # Go dials the first address family first and reports that family's first error.
        first_family = found[0][0]
        ordered = [a for a in found if a[0] == first_family] + [
            a for a in found if a[0] != first_family
        ]
        first_error: str | None = None
        for family, kind, proto, _, address in ordered:
            where = _hostport(address, family)
            sock = socket.socket(family, kind, proto)
            sock.settimeout(max(0.001, deadline - self.clock()))
            try:
                sock.connect(address)
                return sock
            except TimeoutError:
                sock.close()
                error = f"dial tcp {where}: i/o timeout ({_AWAITING_HEADERS})"
            except OSError as exc:
                sock.close()
                error = f"dial tcp {where}: connect: {_errno_text(exc)}"
            first_error = first_error or error
            if self.clock() >= deadline:
                break
        raise GoError(first_error or f"dial tcp: lookup {url.host}: no such host")

    @staticmethod
    def _tls(sock: socket.socket, url: gourl.GoUrl) -> socket.socket:
        context = ssl.create_default_context()
        try:
            return context.wrap_socket(sock, server_hostname=url.host)
        except ssl.SSLCertVerificationError as exc:
            sock.close()
            raise GoError(
                f"tls: failed to verify certificate: x509: {exc.verify_message}"
            ) from None
        except ssl.SSLError as exc:
            sock.close()
            if exc.reason == "WRONG_VERSION_NUMBER":
                raise GoError("http: server gave HTTP response to HTTPS client") from None
            raise GoError(f"remote error: tls: {(exc.reason or str(exc)).lower()}") from None
