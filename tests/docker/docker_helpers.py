"""Small programs the Docker tests run inside containers (Python from the Debian base image)."""

from __future__ import annotations

ECHO_SERVER = """
import socket, threading
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", 7000)); srv.listen(64)
def serve(conn):
    with conn:
        while data := conn.recv(65536):
            conn.sendall(data)
while True:
    threading.Thread(target=serve, args=(srv.accept()[0],), daemon=True).start()
"""

# Connects to HOST:PORT COUNT times (timeout TIMEOUT s each). Mode "connect": a connect is
# enough; otherwise the text is sent and the answer must start with it ("echo") or with what
# follows the "=" ("PING=+PONG"). Prints how many tries failed.
PROBE = """
import socket, sys
host, port, count, timeout, mode = sys.argv[1:6]
port, count, timeout = int(port), int(count), float(timeout)
send, _, expect = mode.partition("=")
expect = (expect or send).encode()
failed = 0
for _ in range(count):
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            if mode != "connect":
                s.settimeout(timeout); s.sendall(send.encode() + b"\\r\\n")
                got = b""
                while len(got) < len(expect) and (chunk := s.recv(64)):
                    got += chunk
                if not got.startswith(expect):
                    failed += 1
    except OSError:
        failed += 1
print(failed)
"""


def echo_command() -> list[str]:
    return ["python3", "-c", ECHO_SERVER]


def probe(
    container: object,
    address: str,
    *,
    count: int = 1,
    timeout: float = 1.0,
    mode: str = "echo",
) -> int:
    """How many of *count* tries from inside *container* to *address* (``host:port``) failed."""
    host, _, port = address.rpartition(":")
    code, out = container.exec(  # type: ignore[attr-defined]
        ["python3", "-c", PROBE, host, port, str(count), str(timeout), mode]
    )
    assert code == 0, out
    return int(out.strip().splitlines()[-1])


def reaches(container: object, address: str, timeout: float = 1.0) -> bool:
    """One echo round trip from *container* to *address* works."""
    return probe(container, address, timeout=timeout) == 0
