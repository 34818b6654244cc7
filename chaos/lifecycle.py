"""The start/stop context-manager protocol shared by servers, backends and faults, and the rule
their cleanup follows."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Self


def call_all(calls: Iterable[Callable[[], object]]) -> None:
    """Call each of *calls* in order, also after one raised; then raise the first error.

    Cleanup's rule: one fault or proxy that cannot be stopped does not leave the others in
    place. Only an ``Exception`` is held back; Ctrl-C (any other ``BaseException``) stops at once.
    """
    first_error: Exception | None = None
    for call in calls:
        try:
            call()
        except Exception as exc:
            first_error = first_error or exc
    if first_error is not None:
        raise first_error


class StartStop:
    """Mixin: ``with thing:`` calls ``thing.start()`` and, on exit, ``thing.stop()``.

    ``stop()`` runs also when the block raises, so whoever starts a thing with ``with`` also
    cleans it up.
    """

    def start(self) -> Self:
        """Start; returns ``self``."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop (idempotent in every subclass)."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
