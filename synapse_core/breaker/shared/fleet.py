"""What the store keeps for one shared breaker: key names, the script, the fleet's state."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from importlib import resources

from synapse_core.breaker.config import CircuitBreakerConfig
from synapse_core.breaker.state import CircuitState
from synapse_core.breaker.window import WINDOW_BUCKETS

SCHEMA = "v1"
"""In every key and channel: a store written by another layout is never misread."""

SCRIPT = resources.files(__package__).joinpath("fleet.lua").read_text(encoding="utf-8")
"""The Lua script that takes every decision on the fleet's state (``fleet.lua``)."""

_FOREVER = 1e17  # the script's "open for ever" (JSON has no infinity): over ~3 billion years


@dataclass(frozen=True, slots=True)
class Keys:
    """The keys and the channel of one breaker.

    They share the hash tag ``{<name>}``, so on Redis Cluster they live in one slot and one
    script can touch them all; ``<prefix>:v1:`` keeps stores and schema versions apart.
    """

    state: str
    window: str
    probes: str
    replicas: str
    channel: str

    @classmethod
    def of(cls, prefix: str, name: str) -> Keys:
        base = f"{prefix}:{SCHEMA}:{{{name}}}"
        return cls(
            *(f"{base}:{part}" for part in ("state", "window", "probes", "replicas", "events"))
        )

    @staticmethod
    def pattern(prefix: str) -> str:
        """The channels of every breaker of *prefix* (one ``PSUBSCRIBE`` hears them all)."""
        return f"{prefix}:{SCHEMA}:*:events"

    @staticmethod
    def name_of(channel: bytes | str, prefix: str) -> str | None:
        """The breaker a channel of *prefix* belongs to (``None``: not one of ours)."""
        text = channel.decode() if isinstance(channel, bytes) else channel
        head, tail = f"{prefix}:{SCHEMA}:{{", "}:events"
        if not (text.startswith(head) and text.endswith(tail)):
            return None
        return text[len(head) : -len(tail)]

    def all(self) -> list[str]:
        """The four keys, in the order the script takes them."""
        return [self.state, self.window, self.probes, self.replicas]


def config_args(
    config: CircuitBreakerConfig, *, ttl: float, alive_for: float
) -> tuple[list[str], str]:
    """The script's arguments 5-14 for *config* (from the bucket width to the fingerprint),
    and the fingerprint: replicas whose configs differ are told so."""
    fingerprint = hashlib.sha1(
        repr(
            (
                config.failure_threshold,
                config.minimum_requests,
                config.failure_window,
                config.recovery_timeout,
                config.half_open_max_calls,
                config.success_threshold,
                config.failure_rate_threshold,
                config.slow_call_duration,
                config.slow_call_rate_threshold,
                config.max_half_open_wait,
                config.open_backoff_multiplier,
                config.max_recovery_timeout,
            )
        ).encode()
    ).hexdigest()[:12]
    args = [
        repr(config.failure_window / WINDOW_BUCKETS),
        repr(config.recovery_timeout),
        repr(config.open_backoff_multiplier),
        repr(-1.0 if config.max_recovery_timeout is None else config.max_recovery_timeout),
        str(config.half_open_max_calls),
        str(config.half_open_success_target),
        repr(-1.0 if config.max_half_open_wait is None else config.max_half_open_wait),
        str(max(1, round(ttl * 1000))),
        repr(alive_for),
        fingerprint,
    ]
    return args, fingerprint


@dataclass(frozen=True, slots=True)
class FleetState:
    """The fleet's state in one answer (or message) of the script.

    Times are relative to the moment the script ran, so no clock has to agree with the
    store's: ``remaining`` seconds until probes are allowed (``inf`` while forced open),
    ``age`` since the last transition, ``half_open_age`` since the half-open episode began.
    """

    token: str
    epoch: int
    state: CircuitState
    remaining: float
    forced: bool
    consecutive_opens: int
    age: float
    half_open_age: float
    reason: str
    by: str
    failure_count: int
    probes_admitted: int
    probe_successes: int
    probe_failures: int
    probes_high: int
    replicas: int
    successes: int
    failures: int
    rejections: int
    ignored: int
    config: str
    granted: int
    applied: bool
    window: tuple[int, int, int] | None

    @classmethod
    def parse(cls, raw: bytes | str) -> FleetState:
        """Read the script's JSON (a ``ValueError`` if it is not one)."""
        data = json.loads(raw)
        forced = bool(data["forced"])
        remaining = float(data["remaining"])
        return cls(
            token=str(data["token"]),
            epoch=int(data["epoch"]),
            state=CircuitState(data["state"]),
            remaining=math.inf if forced or remaining >= _FOREVER else remaining,
            forced=forced,
            consecutive_opens=int(data["consec"]),
            age=max(0.0, float(data["age"])),
            half_open_age=max(0.0, float(data["ho_age"])),
            reason=str(data["reason"]),
            by=str(data["by"]),
            failure_count=int(data["fails"]),
            probes_admitted=int(data["adm"]),
            probe_successes=int(data["ok"]),
            probe_failures=int(data["bad"]),
            probes_high=int(data["high"]),
            replicas=int(data["alive"]),
            successes=int(data["n_ok"]),
            failures=int(data["n_fail"]),
            rejections=int(data["n_rej"]),
            ignored=int(data["n_ign"]),
            config=str(data["cfg"]),
            granted=int(data["granted"]),
            applied=bool(data["applied"]),
            window=(
                (int(data["win_n"]), int(data["win_f"]), int(data["win_s"]))
                if data["window"]
                else None
            ),
        )
