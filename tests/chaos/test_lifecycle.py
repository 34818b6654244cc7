"""chaos.lifecycle.call_all: the rule every heal and backend stop follows when a cleanup fails."""

from __future__ import annotations

import pytest

from chaos.lifecycle import call_all


def test_every_call_runs_after_a_failure_and_the_first_error_is_raised() -> None:
    """One fault that cannot be healed must not leave the faults after it in place."""
    ran: list[str] = []

    def ok(name: str) -> None:
        ran.append(name)

    def fails(name: str) -> None:
        ran.append(name)
        raise RuntimeError(f"{name} could not be stopped")

    with pytest.raises(RuntimeError, match=r"^b could not be stopped$"):
        call_all([lambda: ok("a"), lambda: fails("b"), lambda: ok("c"), lambda: fails("d")])
    assert ran == ["a", "b", "c", "d"]


def test_nothing_is_raised_when_every_call_succeeds() -> None:
    ran: list[int] = []
    call_all([lambda: ran.append(1), lambda: ran.append(2)])
    assert ran == [1, 2]


def test_an_interrupt_stops_at_once() -> None:
    """Ctrl-C is not held back until the other cleanups have run: it ends them."""
    ran: list[str] = []

    def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        call_all([lambda: ran.append("a"), interrupted, lambda: ran.append("c")])
    assert ran == ["a"]
