"""The start/stop context-manager protocol shared by servers, backends and faults."""

from __future__ import annotations

from types import TracebackType
from typing import Self


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
