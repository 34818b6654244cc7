"""pytester-based tests of the Synapse plugin."""

from __future__ import annotations

import pytest

INI = """
[pytest]
asyncio_default_fixture_loop_scope = function
filterwarnings = error
"""


@pytest.fixture
def synapse_pytester(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A pytester with a clean Synapse environment and a strict ini."""
    for var in (
        "SYNAPSE_CHAOS",
        "SYNAPSE_TOXIPROXY",
        "SYNAPSE_REPORT",
        "SYNAPSE_HTML",
        "SYNAPSE_GATES",
        "SYNAPSE_SEED",
    ):
        monkeypatch.delenv(var, raising=False)
    pytester.makeini(INI)
    return pytester
