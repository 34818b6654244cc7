"""The seam to the Docker engine: the ``docker`` SDK, imported lazily, and one clear error.

Importing :mod:`chaos`, :mod:`chaos.docker` or the pytest plugin never imports ``docker``:
this module loads the SDK when an engine is first asked for, and the few functions elsewhere
that need ``docker.errors`` or ``docker.types`` import them when they run. :func:`engine`
connects once per process (``docker.from_env()``: ``DOCKER_HOST`` or the local socket) and
checks the engine answers.
"""

from __future__ import annotations

import importlib
import os
import threading
from typing import Any

from chaos.errors import BackendUnavailable

_lock = threading.Lock()
_client: Any = None


class DockerUnavailable(BackendUnavailable):
    """No Docker engine can be used: the SDK is missing or the engine does not answer.

    The message says what was tried and how to fix it.
    """


def _where() -> str:
    host = os.environ.get("DOCKER_HOST", "").strip()
    return f"DOCKER_HOST={host}" if host else "the local socket unix:///var/run/docker.sock"


def engine(*, timeout: float = 60.0) -> Any:
    """The process's ``docker.DockerClient``, connected and checked.

    Raises :class:`DockerUnavailable` (what was tried, how to fix it) when there is none.
    """
    global _client
    with _lock:
        if _client is not None:
            return _client
        try:
            # By name: a checkout's docker/ folder must not shadow the SDK for type checkers.
            docker = importlib.import_module("docker")
        except ModuleNotFoundError:
            raise DockerUnavailable(
                "Docker support needs the docker package: pip install 'synapse-chaos[docker]'",
                spec="docker",
            ) from None
        try:
            client = docker.from_env(timeout=timeout)
            client.ping()
        except Exception as exc:
            raise DockerUnavailable(
                f"no Docker engine answered at {_where()} ({type(exc).__name__}: {exc}); start "
                "the engine (dockerd), point DOCKER_HOST at one, or use the embedded backend",
                spec="docker",
            ) from None
        _client = client
        return client


def engine_problem() -> str | None:
    """Why Docker cannot be used here (the :class:`DockerUnavailable` text), or ``None``.

    For skip reasons: ``pytest.skip(engine_problem())``.
    """
    try:
        engine()
    except DockerUnavailable as exc:
        return str(exc)
    return None
