"""What the plugin and its fixtures share: the session behind one stash key, and fixture names.

The plugin (:mod:`pytest_synapse.plugin`) puts its session in ``config.stash[SESSION]`` when
pytest configures; the fixtures (:mod:`pytest_synapse.fixtures`,
:mod:`pytest_synapse.docker_fixtures`) read it from there, so neither imports the other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import pytest

from pytest_synapse.run import TestRun, current_run

if TYPE_CHECKING:
    from pytest_synapse.ledger import WorkerLedger
    from pytest_synapse.options import SynapseSettings

SYNAPSE_FIXTURES = frozenset(
    {
        "virtual_clock",
        "circuit_breaker",
        "breaker_timeline",
        "remote_breakers",
        "chaos_proxy",
        "toxiproxy",
        "chaos_scenario",
        "synapse_backend",
        "container",
        "chaos_container",
        "compose_stack",
    }
)
"""The fixtures that make a test recorded (its breakers and faults go to the report)."""

VIRTUAL_CLOCK_FIXTURES = frozenset({"virtual_clock", "circuit_breaker"})
"""The fixtures that put the test's timeline on its virtual clock."""


class Session(Protocol):
    """The part of the plugin's session the fixtures use."""

    settings: SynapseSettings
    ledger: WorkerLedger | None

    def start_run(self, item: pytest.Item, *, virtual: bool) -> TestRun: ...

    def close(self) -> None: ...


SESSION = pytest.StashKey[Session]()


def session_of(config: pytest.Config) -> Session | None:
    """The plugin's session, or ``None`` when the plugin is not active."""
    return config.stash.get(SESSION, None)


def settings_of(config: pytest.Config) -> SynapseSettings:
    """The resolved Synapse settings of this pytest run."""
    return config.stash[SESSION].settings


def run_of(request: pytest.FixtureRequest, *, virtual: bool = False) -> TestRun:
    """The test's recording; *virtual*: the caller needs the timeline on the virtual clock."""
    run = current_run()
    if run is None or run.nodeid != request.node.nodeid:
        session = session_of(request.config)
        if session is None or not isinstance(request.node, pytest.Item):
            raise RuntimeError(
                "Synapse fixtures need the pytest_synapse plugin's per-test hooks; "
                "is the plugin disabled with -p no:synapse?"
            )
        # Asked for late (request.getfixturevalue): collection did not see the fixture name.
        return session.start_run(request.node, virtual=virtual)
    if virtual:
        run.use_virtual_clock()
    return run
