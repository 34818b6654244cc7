"""What installing the ``synapse-chaos`` distribution alone brings: enough to import every package.

Regression: ``pytest`` was only a dev extra, so ``pip install synapse-chaos`` left the shipped
pytest plugin (``pytest_synapse``, loaded through the ``pytest11`` entry point) failing to import.
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata

from packaging.requirements import Requirement

DISTRIBUTION = "synapse-chaos"

# What a user's process imports: the three packages and the plugin with its fixture modules.
ENTRY_MODULES = (
    "synapse_core",
    "chaos",
    "pytest_synapse",
    "pytest_synapse.plugin",
    "pytest_synapse.fixtures",
    "pytest_synapse.docker_fixtures",
)


def _unconditional(requirements: list[str] | None) -> set[str]:
    """Names of the requirements this interpreter installs when no extra is asked for."""
    wanted = set()
    for text in requirements or []:
        requirement = Requirement(text)
        if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
            wanted.add(requirement.name.lower().replace("_", "-"))
    return wanted


def _installed_with(distribution: str) -> set[str]:
    """*distribution* and every distribution its unconditional requirements pull in."""
    seen: set[str] = set()
    todo = [distribution.lower()]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            todo.extend(_unconditional(metadata.requires(name)))
        except metadata.PackageNotFoundError:
            continue
    return seen


def _third_party_imported_by(modules: tuple[str, ...]) -> set[str]:
    """Top-level names of the non-standard modules a fresh interpreter loads for *modules*."""
    script = (
        "import importlib, json, sys\n"
        f"for name in {list(modules)!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    own = {"synapse_core", "chaos", "pytest_synapse"}
    return {
        m
        for m in json.loads(out)
        if m not in sys.stdlib_module_names and m not in own and not m.startswith("_")
    }


def test_pytest_is_a_runtime_requirement() -> None:
    assert "pytest" in _unconditional(metadata.requires(DISTRIBUTION)), (
        "the distribution ships a pytest plugin: pytest must be in [project] dependencies, "
        "not only in an extra"
    )


def test_every_module_a_user_imports_comes_with_the_distribution() -> None:
    provided = _installed_with(DISTRIBUTION)
    by_module = metadata.packages_distributions()
    missing = {
        module: dists
        for module in sorted(_third_party_imported_by(ENTRY_MODULES))
        if (dists := [d.lower().replace("_", "-") for d in by_module.get(module, [])])
        and not set(dists) & provided
    }
    assert missing == {}, (
        "imported by the packages but only installed through an extra (add them to "
        "[project] dependencies, or import them lazily where used)"
    )


def test_a_module_of_an_extra_is_reported() -> None:
    """The check above can fail: redis (an extra only) is not provided by the distribution."""
    assert "redis" in metadata.packages_distributions()
    assert "redis" not in _installed_with(DISTRIBUTION)
    assert "pytest" in _installed_with(DISTRIBUTION)
