"""SIGTERM handled like Ctrl-C: the run stops, cleans up, and reports that it was interrupted.

CI cancellation and ``docker stop`` send SIGTERM. Python's default is to die on the spot: no
fixture teardown (faults and proxies stay on a shared Toxiproxy and break the next run), no
report. :class:`TermHandler` turns the first SIGTERM into :class:`pytest.exit`, which pytest
handles like Ctrl-C: fixtures are torn down, the session finishes (Synapse writes its report,
marked interrupted) and the exit status is 2 (interrupted). Further SIGTERMs while the run is
cleaning up are noted and ignored, so cleanup is not cut short; SIGKILL still ends it.

A SIGTERM handler someone else installed (the user's, another plugin's) is left in place.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType
from typing import Any

import pytest


class TermHandler:
    """Installs and removes the SIGTERM handler; remembers whether SIGTERM arrived."""

    def __init__(self) -> None:
        self.received = False
        self.stopping = False
        self._previous: Any = None
        self._installed = False

    def install(self) -> None:
        """Handle SIGTERM from now on, unless another handler is already there."""
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return
        self._previous = signal.signal(signal.SIGTERM, self._handle)
        self._installed = True

    def uninstall(self) -> None:
        """Put back the handler that was there before :meth:`install`."""
        if self._installed and signal.getsignal(signal.SIGTERM) == self._handle:
            signal.signal(signal.SIGTERM, self._previous)
        self._installed = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received or self.stopping:
            # Already stopping: let the cleanup that is under way finish.
            self.received = True
            print("synapse: SIGTERM received again; still cleaning up", file=sys.stderr)
            return
        self.received = True
        pytest.exit(
            "synapse: SIGTERM received: stopping the run, removing its faults and proxies",
            returncode=pytest.ExitCode.INTERRUPTED,
        )
