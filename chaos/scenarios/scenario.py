"""Scenarios as data: timed fault steps on named proxies, loaded from YAML or JSON files.

A scenario file (every key is documented in ``docs/scenarios.md``)::

    name: partition-heal
    description: the service is cut off for 20 s, then the network heals
    proxies: [service]          # the proxies the steps name; bound with --proxy service=HOST:PORT
    duration: 40                # seconds; default: when the last step ends
    steps:
      - {at: 5, proxy: service, fault: latency, ms: 200, duration: 5}
      - {at: 10, proxy: service, fault: partition, mode: drop}
      - {at: 30, proxy: service, fault: heal}

Each step applies a fault at ``at`` seconds (parameters inline, as the :class:`chaos.Proxy`
method takes them) for ``duration`` seconds, or until a ``heal`` step for its proxy, or until the
scenario ends, whichever comes first. At one instant, faults end before new ones start.

Validation happens when a :class:`Scenario` is built, so a bad file fails before anything is
applied: unknown fault or parameter, negative time, a step on an undeclared proxy, two faults
that would fight over the same toxic (or the proxy's enabled state) at the same time.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Final

import yaml

from chaos.control.faultspec import (
    FAULT_KINDS,
    disables_proxy,
    normalize_params,
    short_repr,
    text_number_hint,
    toxic_plans,
)
from chaos.docker.steps import check_step
from chaos.docker.steps import resources as container_resources
from chaos.errors import InvalidFault, ScenarioError, ScenarioFileError, UnknownScenario

HEAL: Final = "heal"
"""The ``fault`` of a step that removes this scenario's faults from its proxy."""

_STEP_KEYS: Final = ("at", "proxy", "container", "fault", "duration")
_TOP_KEYS: Final = ("name", "description", "proxies", "containers", "duration", "steps")
_SUFFIXES: Final = {".yaml": "yaml", ".yml": "yaml", ".json": "json"}


def _seconds(value: object, what: str, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ScenarioError(
            f"{what} must be a number of seconds, got {short_repr(value)}" + text_number_hint(value)
        )
    try:
        number = float(value)
    except OverflowError:  # an int beyond any float
        number = math.inf
    if math.isnan(number):
        raise ScenarioError(f"{what} must be a number of seconds, got nan")
    if math.isinf(number) or number < 0 or (positive and number == 0):
        bound = "> 0" if positive else ">= 0"
        raise ScenarioError(
            f"{what} must be a finite number of seconds {bound}, got {short_repr(value)}"
        )
    return number


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (``ms: 10, ms: 20``)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping",
                        node.start_mark,
                        f"found duplicate key {key!r}",
                        key_node.start_mark,
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


@dataclasses.dataclass(frozen=True, slots=True)
class ScenarioStep:
    """At ``at`` seconds, apply ``fault`` with ``params`` to ``proxy`` (or heal it).

    Attributes:
        at: offset from the scenario's start, seconds.
        proxy: the scenario's name for the proxy (or the container, with *on_container*).
        fault: a fault kind (see :data:`chaos.FAULT_KINDS`; for a container step
            :data:`chaos.docker.steps.STEP_FAULTS`) or ``"heal"``.
        params: the fault's parameters as written (validated; see :attr:`resolved_params`).
        duration: seconds until the fault is removed; ``None``: until healed or the end.
        on_container: the step targets a container (``container:`` in files), not a proxy.
    """

    at: float
    proxy: str
    fault: str
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    duration: float | None = None
    on_container: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "at", _seconds(self.at, "at"))
        if not isinstance(self.proxy, str) or not self.proxy:
            raise ScenarioError(f"proxy must be a proxy name, got {self.proxy!r}")
        if self.duration is not None:
            object.__setattr__(self, "duration", _seconds(self.duration, "duration", positive=True))
        object.__setattr__(self, "params", dict(self.params))
        if self.fault == HEAL:
            if self.params or self.duration is not None:
                extra = sorted(self.params) + (["duration"] if self.duration is not None else [])
                raise ScenarioError(f"a heal step takes no parameters, got {', '.join(extra)}")
            return
        if self.on_container:
            try:
                check_step(self.fault, self.params)
            except InvalidFault as exc:
                raise ScenarioError(str(exc)) from None
            return
        if self.fault not in FAULT_KINDS:
            raise ScenarioError(
                f"unknown fault {self.fault!r}; use one of {', '.join(FAULT_KINDS)} or {HEAL!r}"
            )
        try:
            normalize_params(self.fault, self.params)
        except InvalidFault as exc:
            raise ScenarioError(str(exc)) from None

    @property
    def others(self) -> tuple[str, ...]:
        """The other containers a container step names (``from`` / ``towards``)."""
        return check_step(self.fault, self.params) if self.on_container and not self.is_heal else ()

    @property
    def is_heal(self) -> bool:
        """True for a ``heal`` step."""
        return self.fault == HEAL

    @property
    def resolved_params(self) -> dict[str, Any]:
        """The parameters with defaults filled in, as the fault will get them."""
        if self.is_heal:
            return {}
        if self.on_container:
            return dict(self.params)
        return normalize_params(self.fault, self.params)

    def describe(self) -> str:
        """``latency(ms=800, jitter=100) on service`` style text."""
        if self.is_heal:
            return f"heal {self.proxy}"
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        text = f"{self.fault}({args}) on {self.proxy}"
        return text if self.duration is None else f"{text} for {self.duration:g} s"

    def to_dict(self) -> dict[str, Any]:
        """The file form: ``at``, ``proxy`` (or ``container``), ``fault``, parameters inline,
        ``duration``."""
        target = "container" if self.on_container else "proxy"
        data: dict[str, Any] = {"at": _plain(self.at), target: self.proxy, "fault": self.fault}
        data.update(self.params)
        if self.duration is not None:
            data["duration"] = _plain(self.duration)
        return data


def _plain(value: float) -> float | int:
    return int(value) if float(value).is_integer() else value


def _resources(step: ScenarioStep) -> set[tuple[str, str]]:
    """What a step's fault takes over: (toxic type, stream) pairs, or the enabled state."""
    if step.on_container:
        return container_resources(step.fault, step.params)
    params = step.resolved_params
    if disables_proxy(step.fault, params):
        return {("proxy", "enabled")}
    return {(plan.type, plan.stream) for plan in toxic_plans(step.fault, params)}


def _describe_resource(kind: str, detail: str, on_container: bool) -> str:
    if on_container:
        return f"its network {detail}" if kind == "network" else f"its {detail} state"
    return "the proxy's enabled state" if kind == "proxy" else f"a {kind} toxic {detail}"


@dataclasses.dataclass(frozen=True, slots=True)
class Scenario:
    """A named list of timed fault steps; validated when built.

    Attributes:
        name: the scenario's name (library scenarios are looked up by it).
        steps: the steps, in file order.
        description: one line for ``synapse-chaos scenarios``.
        proxies: the proxy names the steps use (declared, or taken from the steps in order).
        duration: total seconds; the runner heals everything then. Computed from the steps when
            not given.
        containers: the container names the steps use (declared, or taken from the steps).
    """

    name: str
    steps: tuple[ScenarioStep, ...]
    description: str = ""
    proxies: tuple[str, ...] = ()
    duration: float = dataclasses.field(default=None)  # type: ignore[assignment]
    containers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ScenarioError("a scenario needs a name (a non-empty string)")
        object.__setattr__(self, "steps", tuple(self.steps))
        if not self.steps:
            raise ScenarioError("a scenario needs at least one step", scenario=self.name)
        for index, step in enumerate(self.steps, 1):
            if not isinstance(step, ScenarioStep):
                raise ScenarioError(
                    f"expected a ScenarioStep, got {type(step).__name__}",
                    scenario=self.name,
                    step=index,
                )
        proxies = self._declare("proxies", self.proxies, on_container=False)
        containers = self._declare("containers", self.containers, on_container=True)
        both = sorted(set(proxies) & set(containers))
        if both:
            raise ScenarioError(
                f"{both[0]!r} is declared both as a proxy and as a container; rename one",
                scenario=self.name,
            )
        latest = max(
            step.at + (step.duration or 0.0) if not step.is_heal else step.at for step in self.steps
        )
        given: object = self.duration  # None when left out (typed float once built)
        if given is None:
            object.__setattr__(self, "duration", latest)
        else:
            total = _seconds(given, "duration")
            if total < latest:
                raise ScenarioError(
                    f"duration {total:g} s ends before the steps do ({latest:g} s); "
                    "raise it or leave it out",
                    scenario=self.name,
                )
            object.__setattr__(self, "duration", total)
        self._check_overlaps()

    def _declare(self, key: str, given: tuple[str, ...], *, on_container: bool) -> tuple[str, ...]:
        """The declared proxy or container names, checked against the steps that use them."""
        kind = "proxy" if key == "proxies" else "container"
        steps = [(i, s) for i, s in enumerate(self.steps, 1) if s.on_container == on_container]
        used = [(i, name) for i, s in steps for name in (s.proxy, *s.others)]
        declared = tuple(given)
        if not declared:
            declared = tuple(dict.fromkeys(name for _, name in used))
        elif len(set(declared)) != len(declared):
            raise ScenarioError(f"{key} are listed twice: {list(declared)}", scenario=self.name)
        object.__setattr__(self, key, declared)
        for index, name in used:
            if name not in declared:
                raise ScenarioError(
                    f"step uses {kind} {name!r}, which the scenario does not declare "
                    f"({key}: {', '.join(declared) or 'none'}); add it to '{key}'",
                    scenario=self.name,
                    step=index,
                )
        return declared

    def step_end(self, index: int) -> float:
        """When the fault of step *index* (0-based) is removed: duration, heal step or the end."""
        step = self.steps[index]
        end = self.duration if step.duration is None else step.at + step.duration
        for other in self.steps:
            if other.is_heal and other.proxy == step.proxy and step.at < other.at < end:
                end = other.at
        return min(end, self.duration)

    def _check_overlaps(self) -> None:
        applies = [(i, s) for i, s in enumerate(self.steps) if not s.is_heal]
        spans = {i: (s.at, self.step_end(i)) for i, s in applies}
        for i, step in applies:
            start, end = spans[i]
            if end <= start:
                raise ScenarioError(
                    f"{step.describe()} would end as soon as it starts at {start:g} s; give it "
                    "a duration or the scenario a longer duration",
                    scenario=self.name,
                    step=i + 1,
                )
        for n, (i, first) in enumerate(applies):
            for j, second in applies[n + 1 :]:
                if (first.proxy, first.on_container) != (second.proxy, second.on_container):
                    continue
                (a0, a1), (b0, b1) = spans[i], spans[j]
                if not (a0 < b1 and b0 < a1):
                    continue
                shared = _resources(first) & _resources(second)
                if shared:
                    what = ", ".join(
                        _describe_resource(kind, s, first.on_container)
                        for kind, s in sorted(shared)
                    )
                    later, earlier = (j, i) if (b0, j) >= (a0, i) else (i, j)
                    e0, e1 = spans[earlier]
                    raise ScenarioError(
                        f"{self.steps[later].describe()} overlaps step {earlier + 1} "
                        f"({self.steps[earlier].describe()}, {e0:g} s to {e1:g} s) on "
                        f"{'container' if first.on_container else 'proxy'} {first.proxy!r}: "
                        f"both set {what}; " + self._overlap_hint(earlier, later),
                        scenario=self.name,
                        step=later + 1,
                    )

    def _overlap_hint(self, earlier: int, later: int) -> str:
        """What to change so that step *earlier* ends by the time step *later* starts."""
        first, second = self.steps[earlier], self.steps[later]
        start, end = first.at, self.step_end(earlier)
        n, m, at = earlier + 1, later + 1, second.at
        if at == start:
            # No duration or heal can end a fault before the instant it starts.
            return f"both start at {at:g} s; start step {m} later, once step {n} has ended"
        move = f"or start step {m} at {end:g} s or later"
        if first.duration is not None and end == first.at + first.duration:
            return (
                f"step {n}'s duration of {first.duration:g} s runs until {end:g} s; shorten it "
                f"to at most {at - start:g} s, {move}"
            )
        healed = any(
            other.is_heal and other.proxy == first.proxy and other.at == end for other in self.steps
        )
        if healed:
            return (
                f"step {n} lasts until the heal step at {end:g} s; move that heal step to "
                f"{at:g} s or earlier, {move}"
            )
        return (
            f"step {n} has no duration, so it lasts until the scenario ends; give it a duration "
            f"of at most {at - start:g} s or add a heal step at {at:g} s"
        )

    # -- conversions -----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The file form (see the module documentation)."""
        data: dict[str, Any] = {"name": self.name}
        if self.description:
            data["description"] = self.description
        data["proxies"] = list(self.proxies)
        if self.containers:
            data["containers"] = list(self.containers)
        data["duration"] = _plain(self.duration)
        data["steps"] = [step.to_dict() for step in self.steps]
        return data

    def to_yaml(self) -> str:
        """YAML text, one flow mapping per step."""
        head = {k: v for k, v in self.to_dict().items() if k != "steps"}
        text = yaml.safe_dump(head, sort_keys=False, default_flow_style=None, width=100)
        lines = [text.rstrip("\n"), "steps:"]
        for step in self.steps:
            flow = yaml.safe_dump(
                step.to_dict(), sort_keys=False, default_flow_style=True, width=1000
            )
            lines.append(f"  - {flow.strip()}")
        return "\n".join(lines) + "\n"

    def to_json(self) -> str:
        """JSON text (indented)."""
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write to *path*; ``.json`` gives JSON, anything else YAML."""
        target = Path(path)
        text = self.to_json() if target.suffix.lower() == ".json" else self.to_yaml()
        target.write_text(text, encoding="utf-8")
        return target

    @classmethod
    def from_dict(cls, data: object, *, source: str | None = None) -> Scenario:
        """Build from the file form; errors name *source* when given."""
        return _from_data(data, source=source, step_lines=None)


# -- loading ---------------------------------------------------------------------------------------


def _from_data(data: object, *, source: str | None, step_lines: Sequence[int] | None) -> Scenario:
    def fail(message: str, step: int | None = None, scenario: str = "") -> ScenarioError:
        line = None
        if step is not None and step_lines is not None and step <= len(step_lines):
            line = step_lines[step - 1]
        return ScenarioError(message, scenario=scenario, step=step, source=source, line=line)

    if not isinstance(data, dict):
        raise fail(
            f"a scenario is a mapping with keys {', '.join(_TOP_KEYS)}, got {type(data).__name__}"
        )
    unknown = [k for k in data if k not in _TOP_KEYS]
    if unknown:
        raise fail(f"unknown key {unknown[0]!r}; a scenario has {', '.join(_TOP_KEYS)}")
    name = data.get("name")
    if name is None and source is not None:
        name = Path(source).stem
    if not isinstance(name, str) or not name.strip():
        raise fail(f"name must be a non-empty string, got {name!r}")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise fail(f"description must be a string, got {description!r}", scenario=name)
    names: dict[str, list[str]] = {}
    for key in ("proxies", "containers"):
        given = data.get(key, [])
        if isinstance(given, str):
            given = [given]
        if not isinstance(given, list) or not all(isinstance(p, str) and p for p in given):
            what = key[:-1] if key == "containers" else "proxy"
            raise fail(f"{key} must be a list of {what} names, got {given!r}", scenario=name)
        names[key] = given
    proxies, containers = names["proxies"], names["containers"]
    raw_steps = data.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise fail("steps must be a non-empty list of steps", scenario=name)
    steps = []
    for index, raw in enumerate(raw_steps, 1):
        if not isinstance(raw, dict):
            raise fail(
                f"a step is a mapping (at, proxy, fault, parameters...), got {raw!r}", index, name
            )
        if "at" not in raw or "fault" not in raw:
            missing = "at" if "at" not in raw else "fault"
            raise fail(f"step needs {missing!r}", index, name)
        if "proxy" in raw and "container" in raw:
            raise fail("a step names a proxy or a container, not both", index, name)
        on_container = "container" in raw
        proxy = raw.get("container") if on_container else raw.get("proxy")
        if proxy is None and len(proxies) == 1:
            proxy = proxies[0]  # one declared proxy: steps may leave it out
        if proxy is None:
            raise fail(
                "step needs 'proxy' or 'container' (the scenario declares several proxies or none)",
                index,
                name,
            )
        params = {k: v for k, v in raw.items() if k not in _STEP_KEYS}
        if "params" in params and isinstance(params["params"], dict) and len(params) == 1:
            params = params["params"]
        try:
            steps.append(
                ScenarioStep(
                    at=raw["at"],
                    proxy=proxy,
                    fault=raw["fault"],
                    params=params,
                    duration=raw.get("duration"),
                    on_container=on_container,
                )
            )
        except ScenarioError as exc:
            raise fail(exc.message, index, name) from None
    try:
        return Scenario(
            name=name,
            steps=tuple(steps),
            description=description,
            proxies=tuple(proxies),
            duration=data.get("duration"),  # type: ignore[arg-type]
            containers=tuple(containers),
        )
    except ScenarioError as exc:
        raise fail(exc.message, exc.step, name) from None


def _yaml_step_lines(text: str) -> list[int] | None:
    """1-based line of each step in a YAML document (for error messages), if findable."""
    try:
        root = yaml.compose(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError:
        return None
    if not isinstance(root, yaml.MappingNode):
        return None
    for key, value in root.value:
        if getattr(key, "value", None) == "steps" and isinstance(value, yaml.SequenceNode):
            return [item.start_mark.line + 1 for item in value.value]
    return None


_JSON_SPACE: Final = re.compile(r"[ \t\n\r]*")


def _json_step_lines(text: str) -> list[int] | None:
    """1-based line of each step in a JSON document (for error messages), if findable.

    The json module reports no positions, so the top-level object is walked here, each value
    skipped with ``raw_decode``. Only called on text ``json.loads`` accepted. A ``steps`` key
    given twice counts as the last one, as ``json.loads`` keeps it.
    """
    decoder = json.JSONDecoder()

    def skip_space(pos: int) -> int:
        match = _JSON_SPACE.match(text, pos)
        return match.end() if match else pos

    def line_of(pos: int) -> int:
        return text.count("\n", 0, pos) + 1

    try:
        pos = skip_space(0)
        if text[pos : pos + 1] != "{":
            return None
        pos = skip_space(pos + 1)
        lines: list[int] | None = None
        while text[pos : pos + 1] == '"':
            key, pos = decoder.raw_decode(text, pos)
            pos = skip_space(skip_space(pos) + 1)  # past the ':'
            if key == "steps" and text[pos : pos + 1] == "[":
                lines = []
                pos = skip_space(pos + 1)
                while text[pos : pos + 1] not in ("]", ""):
                    lines.append(line_of(pos))
                    _, pos = decoder.raw_decode(text, pos)
                    pos = skip_space(pos)
                    if text[pos : pos + 1] == ",":
                        pos = skip_space(pos + 1)
                pos += 1  # past the ']'
            else:
                _, pos = decoder.raw_decode(text, pos)
            pos = skip_space(pos)
            if text[pos : pos + 1] == ",":
                pos = skip_space(pos + 1)
        return lines
    except (ValueError, RecursionError):
        return None


def parse_scenario(text: str, *, format: str = "yaml", source: str | None = None) -> Scenario:
    """Parse scenario *text* (``format`` ``"yaml"`` or ``"json"``).

    Syntax errors raise :class:`~chaos.errors.ScenarioFileError` with the line and what the
    parser expected (a key given twice in one YAML mapping, or nesting too deep to parse, is
    one too); invalid content raises :class:`~chaos.errors.ScenarioError`.
    """
    where = source or "<scenario>"
    try:
        return _parse_scenario(text, format=format, source=source, where=where)
    except RecursionError:
        raise ScenarioFileError(
            "nested too deeply to parse (a scenario needs only a few levels)", source=where
        ) from None


def _too_long(kind: str, exc: ValueError) -> str:
    # The interpreter's own advice (raise the digit limit) does not fit a scenario file.
    reason = str(exc).split(";")[0]
    return f"invalid {kind}: {reason}; no scenario value needs a number that long"


class _DuplicateKey(ValueError):
    """A JSON object names one key twice; ``json.loads`` alone would keep the last silently."""


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(f"invalid JSON: found duplicate key {key!r}")
        result[key] = value
    return result


def _parse_scenario(text: str, *, format: str, source: str | None, where: str) -> Scenario:
    if format == "json":
        try:
            data = json.loads(text, object_pairs_hook=_unique_pairs)
        except json.JSONDecodeError as exc:
            raise ScenarioFileError(
                f"invalid JSON: {exc.msg} (column {exc.colno})", source=where, line=exc.lineno
            ) from None
        except _DuplicateKey as exc:
            raise ScenarioFileError(str(exc), source=where) from None
        except ValueError as exc:  # an integer beyond Python's digit limit
            raise ScenarioFileError(_too_long("JSON", exc), source=where) from None
        return _from_data(data, source=source, step_lines=_json_step_lines(text))
    if format != "yaml":
        raise ValueError(f"format must be 'yaml' or 'json', got {format!r}")
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        problem = exc.problem or "syntax error"
        context = f" {exc.context}" if exc.context else ""
        column = f" (column {mark.column + 1})" if mark is not None else ""
        raise ScenarioFileError(
            f"invalid YAML: {problem}{context}{column}",
            source=where,
            line=mark.line + 1 if mark is not None else None,
        ) from None
    except yaml.YAMLError as exc:
        raise ScenarioFileError(f"invalid YAML: {exc}", source=where) from None
    except ValueError as exc:  # an integer beyond Python's digit limit
        raise ScenarioFileError(_too_long("YAML", exc), source=where) from None
    return _from_data(data, source=source, step_lines=_yaml_step_lines(text))


def _looks_like_path(text: str) -> bool:
    return os.sep in text or "/" in text or Path(text).suffix.lower() in _SUFFIXES


def load_scenario(path_or_name: str | os.PathLike[str]) -> Scenario:
    """Load a scenario file (``.yaml``, ``.yml``, ``.json``) or a library scenario by name.

    Raises :class:`~chaos.errors.UnknownScenario` (listing the library) if it is neither,
    :class:`~chaos.errors.ScenarioFileError` for unreadable or malformed files, and
    :class:`~chaos.errors.ScenarioError` for invalid content.
    """
    text = os.fspath(path_or_name)
    path = Path(text)
    if isinstance(path_or_name, os.PathLike) or path.is_file() or _looks_like_path(text):
        try:
            content = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise UnknownScenario(
                f"no such file {text!r}; library scenarios: {', '.join(sorted(_library()))}"
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ScenarioFileError(f"cannot read the file: {exc}", source=text) from None
        kind = "json" if path.suffix.lower() == ".json" else "yaml"
        return parse_scenario(content, format=kind, source=text)
    library = _library()
    if text in library:
        return library[text]
    raise UnknownScenario(
        f"no library scenario named {text!r} (library: {', '.join(sorted(library))}); "
        "or give the path of a .yaml or .json file"
    )


@functools.cache
def _library() -> dict[str, Scenario]:
    folder = resources.files("chaos.scenarios") / "library"
    result: dict[str, Scenario] = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith((".yaml", ".yml")):
            continue
        scenario = parse_scenario(
            entry.read_text(encoding="utf-8"), source=f"chaos/scenarios/library/{entry.name}"
        )
        result[scenario.name] = scenario
    return result


def scenario_library() -> dict[str, Scenario]:
    """The scenarios shipped with the package, by name (a new dict each call)."""
    return dict(_library())
