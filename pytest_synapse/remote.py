"""The breakers of a service in another process, read from its ``/breakers`` endpoint.

A service that serves ``synapse_core.health`` endpoints numbers each breaker transition and
says how long ago it happened, so polling it records every transition exactly once, dated,
with the failures that tripped it, even when several happen between two polls.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

from pytest_synapse.poller import BreakerStatePoller, PolledState, PolledTransition

SCHEMA_VERSION = 1


class RemoteBreakerError(RuntimeError):
    """The URL does not answer like ``synapse_core.health``'s ``/breakers``."""


def breakers_url(url: str) -> str:
    """The ``/breakers`` URL of a service given by its base URL (or that URL itself)."""
    if not isinstance(url, str):
        raise TypeError(f"url must be a str like 'http://127.0.0.1:8000', got {url!r}")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(
            f"url must be the service's http(s) address, like 'http://127.0.0.1:8000' or "
            f"'http://127.0.0.1:8000/ops' (where its health endpoints are), got {url!r}"
        )
    path = parts.path.rstrip("/")
    if not path.endswith("/breakers"):
        path += "/breakers"
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


class RemoteBreakers:
    """What a service's ``/breakers`` says, turned into polls for a :class:`BreakerStatePoller`.

    :meth:`fetch` is the poller's fetch. Per breaker it reports the transitions not reported
    before (by their ``seq``), each with its age, reason and ``failure_count``. A breaker seen
    for the first time reports none: what it did before is history (the poller's baseline),
    unless it appeared after polling began (then it was created during the test, and all its
    transitions count). A restart of the service (a new ``instance``) starts over.
    """

    def __init__(self, url: str, *, timeout: float = 2.0) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
        self.url = breakers_url(url)
        self.timeout = timeout
        self._lock = threading.Lock()
        self._instance: str | None = None
        self._seen: dict[str, int] = {}  # name -> highest seq reported
        self._polled_once = False
        self.missed = 0
        """Transitions that happened but fell out of the service's recent list between polls."""
        self.poller: BreakerStatePoller | None = None
        """The poller recording these breakers (set by ``watch_remote``)."""

    def document(self) -> dict[str, Any]:
        """One ``GET /breakers``, checked; raises :class:`RemoteBreakerError` saying why not."""
        request = urllib.request.Request(self.url, headers={"Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:
            exc.close()
            raise RemoteBreakerError(
                f"{self.url} answered HTTP {exc.code}: is it where the service serves "
                "synapse_core.health's endpoints?"
            ) from None
        except (OSError, ValueError) as exc:
            raise RemoteBreakerError(f"{self.url} did not answer: {exc}") from None
        try:
            doc = json.loads(body)
        except ValueError:
            raise RemoteBreakerError(
                f"{self.url} did not answer JSON: is it where the service serves "
                "synapse_core.health's endpoints?"
            ) from None
        if not isinstance(doc, dict) or not isinstance(doc.get("breakers"), dict):
            raise RemoteBreakerError(
                f"{self.url} is not synapse_core.health's /breakers (no 'breakers' object)"
            )
        if doc.get("schema_version") != SCHEMA_VERSION:
            raise RemoteBreakerError(
                f"{self.url} speaks /breakers schema version {doc.get('schema_version')!r}; "
                f"this plugin reads version {SCHEMA_VERSION}"
            )
        return doc

    def fetch(self) -> Mapping[str, PolledState]:
        """The breakers now, with the transitions since the last fetch (for the poller)."""
        doc = self.document()
        with self._lock:
            instance = doc.get("instance")
            if instance != self._instance:
                # A new service instance numbers its transitions from 1 again.
                self._instance = instance if isinstance(instance, str) else None
                self._seen = {}
            baseline = not self._polled_once
            self._polled_once = True
            return {
                name: self._state_of(name, entry, baseline)
                for name, entry in doc["breakers"].items()
            }

    def _state_of(self, name: str, entry: Mapping[str, Any], baseline: bool) -> PolledState:
        recent = entry.get("recent_transitions") or []
        last = self._seen.get(name)
        if baseline:
            # Where it stands when polling began: its past is not this test's.
            self._seen[name] = int(entry.get("transitions_seen", 0))
            return PolledState(entry["state"], (), entry.get("stats"))
        since = 0 if last is None else last
        fresh = [t for t in recent if int(t["seq"]) > since]
        if fresh and int(fresh[0]["seq"]) > since + 1:
            self.missed += int(fresh[0]["seq"]) - since - 1
        if fresh:
            self._seen[name] = int(fresh[-1]["seq"])
        elif last is None:
            self._seen[name] = int(entry.get("transitions_seen", 0))
        transitions = tuple(
            PolledTransition(
                t["from_state"],
                t["to_state"],
                float(t.get("age_seconds") or 0.0),
                _detail(t),
            )
            for t in fresh
        )
        return PolledState(entry["state"], transitions, entry.get("stats"))

    # -- reading the service while a test runs

    @property
    def states(self) -> dict[str, str]:
        """The last state polled for each breaker."""
        return {} if self.poller is None else self.poller.states

    def stats(self, name: str) -> Mapping[str, Any]:
        """The last stats polled for breaker *name* (``KeyError`` naming the known ones)."""
        found = None if self.poller is None else self.poller.stats.get(name)
        if found is None:
            known = ", ".join(sorted(self.states)) or "none"
            raise KeyError(f"no breaker {name!r} at {self.url} (known: {known})")
        return found

    def poll(self) -> dict[str, str]:
        """Poll now (recording what changed); returns the states."""
        if self.poller is not None:
            self.poller.poll_once()
        return self.states

    def wait_for_state(self, name: str, state: str, *, within: float) -> float:
        """Poll until breaker *name* is in *state*; returns the seconds waited.

        Raises ``AssertionError`` naming the last state seen after *within* seconds.
        """
        started = time.monotonic()
        interval = 0.05 if self.poller is None else self.poller.interval
        while True:
            if self.poll().get(name) == state:
                return time.monotonic() - started
            if time.monotonic() - started >= within:
                seen = self.states.get(name, "never seen")
                raise AssertionError(
                    f"breaker {name!r} at {self.url} was not {state} within {within:g}s "
                    f"(last seen: {seen})"
                )
            time.sleep(interval)

    def __repr__(self) -> str:
        return f"<RemoteBreakers {self.url}>"


def _detail(transition: Mapping[str, Any]) -> dict[str, Any]:
    detail: dict[str, Any] = {
        "reason": transition.get("reason", ""),
        "remote_seq": transition["seq"],
    }
    if transition.get("failure_count") is not None:  # openings only
        detail["failure_count"] = transition["failure_count"]
    return detail
