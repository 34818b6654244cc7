"""The Docker tier: real engine, images built offline (cached per machine), real containers.

Every test here is marked ``docker`` and skips, with the reason, only when no engine can be
reached (or the ``docker`` package is missing). Building the images is part of the tier: the
first run on a machine builds them (a few minutes), later runs reuse them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.docker)


@pytest.fixture(scope="session")
def engine_ready() -> None:
    """Skip (with the reason) when no Docker engine can be used."""
    from chaos.docker import engine_problem

    problem = engine_problem()
    if problem is not None:
        pytest.skip(f"docker: {problem}")


_IMAGES = pytest.StashKey[dict[str, str] | str]()


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build the images once collection says Docker tests will run (cached per machine).

    Done here rather than in a fixture so the build (minutes on a new machine) is not counted
    against one test's timeout; a failure is reported by every Docker test.
    """
    here = Path(__file__).parent
    if not any(here in item.path.parents for item in session.items):
        return
    from chaos.docker import engine_problem

    if engine_problem() is not None:
        return  # the tests skip with the reason
    command = [sys.executable, str(ROOT / "docker" / "images.py"), "chaos", "base", "redis"]
    try:
        result = subprocess.run(
            [*command, "--json"],
            capture_output=True,
            text=True,
            timeout=1500,
            check=False,
            cwd=ROOT,
        )
    except subprocess.TimeoutExpired:
        session.config.stash[_IMAGES] = "building the images took more than 25 minutes"
        return
    if result.returncode != 0:
        session.config.stash[_IMAGES] = f"building the images failed:\n{result.stderr[-3000:]}"
        return
    session.config.stash[_IMAGES] = json.loads(result.stdout)


@pytest.fixture(scope="session")
def images(engine_ready: None, pytestconfig: pytest.Config) -> dict[str, str]:
    """Tags of the chaos, base and redis images (docker/images.py, built at collection)."""
    built = pytestconfig.stash.get(_IMAGES, "the images were not built (no Docker test collected)")
    if isinstance(built, str):
        pytest.fail(built, pytrace=False)
    return built


@pytest.fixture
def docker_env(images: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Point the docker backend at the freshly built chaos image."""
    monkeypatch.setenv("SYNAPSE_DOCKER_IMAGE", images["chaos"])
    return images


@pytest.fixture
def leftovers(engine_ready: None) -> Iterator[None]:
    """Fail if this run's labelled containers outlive the test (networks are per session)."""
    from chaos.docker import RUN_LABEL, engine, run_id

    yield
    label = f"{RUN_LABEL}={run_id()}"
    names = [c.name for c in engine().containers.list(all=True, filters={"label": label})]
    assert not names, f"left behind: {names}"
