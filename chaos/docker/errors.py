"""Errors of the Docker support."""

from __future__ import annotations

from chaos.errors import ChaosError


class ContainerFaultError(ChaosError):
    """A container fault could not be applied or healed; the message says what is left."""


class ContainerNotReady(ChaosError):
    """A container did not become ready (running, healthy, listening, a log line) in time."""
