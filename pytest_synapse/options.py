"""Synapse's pytest options: one definition each, resolved command line > env > ini > default.

Every option has a command-line flag, an environment variable and an ini key. The resolved
value remembers where it came from, so errors and the pytest header can say so.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest

from pytest_synapse.gates import parse_gate

OptionKind = Literal["bool", "str", "int", "path", "list"]
"""How a setting's text is read: a flag, text, an integer, a path or a list of lines."""


@dataclass(frozen=True)
class OptionSpec:
    """How one setting is spelled in each place it can come from."""

    dest: str
    flag: str
    env: str
    ini: str
    help: str
    kind: OptionKind
    default: Any = None


SPECS: tuple[OptionSpec, ...] = (
    OptionSpec(
        "chaos",
        "--synapse-chaos",
        "SYNAPSE_CHAOS",
        "synapse_chaos",
        "run tests marked chaos (skipped otherwise)",
        "bool",
        False,
    ),
    OptionSpec(
        "toxiproxy",
        "--synapse-toxiproxy",
        "SYNAPSE_TOXIPROXY",
        "synapse_toxiproxy",
        "Toxiproxy to use: embedded (default), http://host:port of a running one, or docker",
        "str",
        "embedded",
    ),
    OptionSpec(
        "report",
        "--synapse-report",
        "SYNAPSE_REPORT",
        "synapse_report",
        "write the JSON resilience report to PATH (relative to the start directory)",
        "path",
        None,
    ),
    OptionSpec(
        "html",
        "--synapse-html",
        "SYNAPSE_HTML",
        "synapse_html",
        "write the HTML resilience report to PATH",
        "path",
        None,
    ),
    OptionSpec(
        "gates",
        "--synapse-gate",
        "SYNAPSE_GATES",
        "synapse_gates",
        "CI gate over the session's report, e.g. 'max_recovery_seconds<=15' "
        "(repeatable; env separates with ';', ini takes one per line)",
        "list",
        (),
    ),
    OptionSpec(
        "watch_breakers",
        "--synapse-watch-breakers",
        "SYNAPSE_WATCH_BREAKERS",
        "synapse_watch_breakers",
        "record every pybreaker/aiobreaker/purgatory breaker a test creates, and every "
        "circuitbreaker one, without watch() calls (as @pytest.mark.synapse_watch_breakers)",
        "bool",
        False,
    ),
    OptionSpec(
        "seed",
        "--synapse-seed",
        "SYNAPSE_SEED",
        "synapse_seed",
        "seed for fault randomness (toxicity rolls, jitter, schedules)",
        "int",
        None,
    ),
)

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class Setting:
    """A resolved value and where it came from (command line, env, ini or default)."""

    value: Any
    source: str


@dataclass(frozen=True)
class SynapseSettings:
    """Every Synapse option, resolved."""

    chaos: Setting
    toxiproxy: Setting
    report: Setting
    html: Setting
    gates: Setting
    watch_breakers: Setting
    seed: Setting
    values: Mapping[str, Setting] = field(default_factory=dict)

    def header_lines(self) -> list[str]:
        """Lines for the pytest header."""
        parts = []
        for spec in SPECS:
            setting: Setting = getattr(self, spec.dest)
            value = setting.value
            if spec.kind == "list":
                value = "; ".join(value) if value else "none"
            parts.append(f"{spec.dest}={value} ({setting.source})")
        return ["synapse: " + ", ".join(parts)]

    @property
    def recording(self) -> bool:
        """Whether the session aggregates a resilience report."""
        return bool(self.chaos.value or self.report.value or self.html.value or self.gates.value)


def add_options(parser: pytest.Parser) -> None:
    """Register the flags and ini keys."""
    group = parser.getgroup("synapse", "Synapse resilience testing")
    for spec in SPECS:
        if spec.kind == "bool":
            group.addoption(
                spec.flag,
                action="store_true",
                default=None,
                dest=f"synapse_{spec.dest}",
                help=f"{spec.help} [env {spec.env}, ini {spec.ini}]",
            )
            group.addoption(
                spec.flag.replace("--", "--no-", 1),
                action="store_false",
                dest=f"synapse_{spec.dest}",
                help=f"do not {spec.help} (overrides env and ini)",
            )
        elif spec.kind == "list":
            group.addoption(
                spec.flag,
                action="append",
                default=None,
                dest=f"synapse_{spec.dest}",
                metavar="EXPR",
                help=f"{spec.help} [env {spec.env}, ini {spec.ini}]",
            )
        else:
            group.addoption(
                spec.flag,
                action="store",
                default=None,
                dest=f"synapse_{spec.dest}",
                metavar="N" if spec.kind == "int" else "VALUE",
                help=f"{spec.help} [env {spec.env}, ini {spec.ini}]",
            )
        # Booleans are read as strings so a bad value is reported with the ini key's name.
        ini_type = "linelist" if spec.kind == "list" else "string"
        parser.addini(spec.ini, help=spec.help, type=ini_type, default=None)  # type: ignore[arg-type]


def resolve(
    config: pytest.Config, environ: Mapping[str, str] | None = None, *, lenient: bool = False
) -> SynapseSettings:
    """Resolve every option; a bad value raises ``pytest.UsageError`` naming its source.

    With *lenient* (for ``pytest --help``), a bad value falls back to the default instead.
    """
    env = os.environ if environ is None else environ
    start_dir = Path(config.invocation_params.dir)
    resolved: dict[str, Setting] = {}
    for spec in SPECS:
        raw, source = _raw(config, env, spec)
        try:
            resolved[spec.dest] = Setting(_convert(spec, raw, source, start_dir), source)
        except pytest.UsageError:
            if not lenient:
                raise
            resolved[spec.dest] = Setting(spec.default, f"default ({source} ignored)")
    return SynapseSettings(values=resolved, **resolved)


def _raw(config: pytest.Config, env: Mapping[str, str], spec: OptionSpec) -> tuple[Any, str]:
    cli = config.getoption(f"synapse_{spec.dest}")
    if cli is not None:
        return cli, f"command line {spec.flag}"
    if env.get(spec.env, "").strip():  # set but empty counts as unset
        return env[spec.env], f"env {spec.env}"
    ini = config.getini(spec.ini)
    if ini is not None and ini != []:
        return ini, f"ini {spec.ini}"
    return spec.default, "default"


def _convert(spec: OptionSpec, raw: Any, source: str, start_dir: Path) -> Any:
    if raw is None or (source == "default" and spec.kind != "list"):
        return raw
    converters: dict[OptionKind, Callable[[Any], Any]] = {
        "bool": _to_bool,
        "str": _to_backend if spec.dest == "toxiproxy" else _to_str,
        "int": _to_int,
        "path": lambda v: _to_path(v, start_dir),
        "list": lambda v: _to_gates(v, source),
    }
    try:
        return converters[spec.kind](raw)
    except ValueError as exc:
        raise pytest.UsageError(f"synapse: {source}: {exc}") from None


def _to_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"expected a boolean (1/0, true/false, yes/no, on/off), got {raw!r}")


def _to_str(raw: Any) -> str:
    text = str(raw).strip()
    if not text:
        raise ValueError("expected a value, got an empty string")
    return text


def _to_backend(raw: Any) -> str:
    text = _to_str(raw)
    if text.lower() in ("embedded", "docker") or re.fullmatch(r"http://[^/\s:]+:\d{1,5}/?", text):
        return text
    raise ValueError(
        f"expected 'embedded', 'docker' or the URL of a running Toxiproxy (http://host:port), "
        f"got {text!r}"
    )


def _to_path(raw: Any, start_dir: Path) -> Path:
    text = str(raw).strip()
    if not text:
        raise ValueError("expected a file path, got an empty string")
    path = Path(text).expanduser()
    return path if path.is_absolute() else start_dir / path


def _to_int(raw: Any) -> int:
    text = str(raw).strip()
    # ASCII only: int() also reads Arabic-Indic or full-width digits, which no one means here.
    if not re.fullmatch(r"[-+]?[0-9]+", text):
        raise ValueError(f"expected an integer, got {raw!r}")
    return int(text)


def _to_gates(raw: Any, source: str) -> tuple[str, ...]:
    """Split and check the gates of one source; an empty or blank gate is an error.

    A blank gate is nearly always an unset variable (``--synapse-gate "$GATE"``). Accepting it
    would let this source replace the env and ini gates with nothing, and the job go green.
    """
    if isinstance(raw, str):
        items = raw.split(";") if source.startswith("env") else raw.splitlines()
    else:
        items = list(raw)
    for position, item in enumerate(items, 1):
        if not item.strip():
            raise ValueError(_empty_gate(source, position, len(items), raw))
        parse_gate(item)
    return tuple(item.strip() for item in items)


def _empty_gate(source: str, position: int, count: int, raw: Any) -> str:
    if source.startswith("env"):
        return (
            f"gate {position} of {count} in {raw!r} is empty; separate gates with ';' and "
            "leave none empty, e.g. 'all_recovered; max_recovery_seconds<=15'"
        )
    return (
        f'gate {position} of {count} is empty (was the variable in --synapse-gate "$VAR" '
        "unset?); give a gate such as 'max_recovery_seconds<=15', or leave the option out"
    )
