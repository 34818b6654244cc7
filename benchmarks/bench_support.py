"""What several benchmarks need alike: a free loopback port, the real Toxiproxy binary, and a
helper process that prints the port it listens on.

Not a benchmark (``make bench`` does not run it); the scripts beside it import it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listened on a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def toxiproxy_binary() -> str | None:
    """The real ``toxiproxy-server``: ``TOXIPROXY_SERVER``, else
    ``/work/toxiproxy/toxiproxy-server``, else one on ``PATH``; ``None`` if none runs here."""
    binary = os.environ.get("TOXIPROXY_SERVER") or "/work/toxiproxy/toxiproxy-server"
    if os.access(binary, os.X_OK):
        return binary
    return shutil.which("toxiproxy-server")


@contextmanager
def port_printing_process(script: str) -> Iterator[int]:
    """Run ``python -c script`` (which prints its port on its first line); yield that port.

    The process is killed on exit.
    """
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        yield int(process.stdout.readline())
    finally:
        process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()
