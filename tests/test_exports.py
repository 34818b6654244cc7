"""The curated public API: every exported name resolves, once, to one object, and is listed.

Each package's ``__all__`` is its public API. A name listed but missing (a rename that forgot the
list, a lazy name ``__getattr__`` cannot find) breaks ``from package import *`` and users'
imports; a name exported twice under two spellings by accident, or re-exported as a different
object than the one its home module defines, makes ``isinstance`` checks lie.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from types import ModuleType

import pytest

PACKAGES = (
    "synapse_core",
    "synapse_core.breaker",
    "synapse_core.breaker.shared",
    "synapse_core.health",
    "synapse_core.transport",
    "chaos",
    "chaos.control",
    "chaos.scenarios",
    "chaos.server",
    "chaos.docker",
    "pytest_synapse",
)

# Two names for one object on purpose: the original Synapse design's names, kept for its users.
ORIGINAL_NAMES = {
    ("synapse_core", "CircuitManager"): "CircuitBreakerManager",
    ("synapse_core", "EnhancedMdnsTransport"): "MdnsTransport",
    ("synapse_core.breaker", "CircuitManager"): "CircuitBreakerManager",
    ("synapse_core.transport", "EnhancedMdnsTransport"): "MdnsTransport",
}


def _package(name: str) -> ModuleType:
    return importlib.import_module(name)


@pytest.mark.parametrize("name", PACKAGES)
def test_every_exported_name_resolves(name: str) -> None:
    package = _package(name)
    missing = [n for n in package.__all__ if not hasattr(package, n)]
    assert missing == [], f"{name}.__all__ lists names it does not have"


@pytest.mark.parametrize("name", PACKAGES)
def test_every_exported_name_is_listed_once_and_in_dir(name: str) -> None:
    package = _package(name)
    assert len(package.__all__) == len(set(package.__all__)), f"{name}.__all__ repeats a name"
    assert set(package.__all__) <= set(dir(package)), f"dir({name}) hides exported names"


@pytest.mark.parametrize("name", PACKAGES)
def test_no_object_is_exported_under_two_names_by_accident(name: str) -> None:
    package = _package(name)
    by_object: dict[int, list[str]] = {}
    for exported in package.__all__:
        value = getattr(package, exported)
        if isinstance(value, type | ModuleType) or callable(value):
            by_object.setdefault(id(value), []).append(exported)
    twice = {tuple(sorted(names)) for names in by_object.values() if len(names) > 1}
    expected = {
        tuple(sorted((alias, original)))
        for (package_name, alias), original in ORIGINAL_NAMES.items()
        if package_name == name
    }
    assert twice == expected


def test_names_exported_at_two_levels_are_the_same_object() -> None:
    """``synapse_core.CircuitBreaker`` is ``synapse_core.breaker.CircuitBreaker``, and so on."""
    pairs = [
        (outer, inner, exported)
        for outer in PACKAGES
        for inner in PACKAGES
        if inner.startswith(f"{outer}.")
        for exported in set(_package(outer).__all__) & set(_package(inner).__all__)
    ]
    assert pairs, "no name is exported at two levels: the check checks nothing"
    different = [
        f"{outer}.{n} is not {inner}.{n}"
        for outer, inner, n in pairs
        if getattr(_package(outer), n) is not getattr(_package(inner), n)
    ]
    assert different == []


def test_original_names_are_the_documented_classes() -> None:
    for (package_name, alias), original in ORIGINAL_NAMES.items():
        package = _package(package_name)
        assert getattr(package, alias) is getattr(package, original)


def test_lazy_transport_names_are_listed_before_they_are_loaded() -> None:
    """``dir(synapse_core)`` shows the transport names it loads on first use (``__dir__``)."""
    script = (
        "import sys, synapse_core\n"
        "names = dir(synapse_core)\n"
        "assert 'synapse_core.transport' not in sys.modules, 'imported eagerly'\n"
        "print(sorted(set(synapse_core.__all__) - set(names)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


def test_an_unknown_name_is_an_attribute_error() -> None:
    import synapse_core

    with pytest.raises(AttributeError, match="no attribute 'Transports'"):
        synapse_core.Transports  # noqa: B018 - the lookup is the test
