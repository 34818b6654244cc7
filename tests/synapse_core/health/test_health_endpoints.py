"""The health endpoints over real HTTP: /metrics, /health, /breakers, methods and paths."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from health_support import Breakers, Down, get, get_json
from prometheus_client.parser import text_string_to_metric_families

from synapse_core import CircuitBreakerConfig, CircuitBreakerManager, default_manager
from synapse_core.health import HealthEndpoints, HealthServer

SCHEMA = json.loads(
    (Path(__file__).parents[3] / "docs" / "breakers.schema.json").read_text(encoding="utf-8")
)

Serve = Callable[..., HealthServer]


def scrape(server: HealthServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``{(sample name, sorted labels): value}`` of one real scrape, parsed by prometheus_client."""
    status, headers, body = get(server.url + "/metrics")
    assert status == 200
    assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def state_of(samples: dict[Any, float], breaker: str) -> str:
    states = [
        s
        for s in ("closed", "open", "half_open")
        if value(samples, "synapse_circuit_breaker_state", breaker=breaker, state=s) == 1.0
    ]
    assert len(states) == 1, states  # one-hot
    return states[0]


def test_metrics_follow_a_breaker_through_trip_half_open_and_close(
    serve: Serve, breakers: Breakers
) -> None:
    server = serve()
    inventory = breakers.make("inventory")
    breakers.make("payments")
    before = scrape(server)
    assert state_of(before, "inventory") == "closed"
    assert (
        value(
            before,
            "synapse_circuit_breaker_transitions_total",
            breaker="inventory",
            from_state="closed",
            to_state="open",
        )
        == 0.0
    )

    breakers.succeed(inventory, 4)
    breakers.trip(inventory)
    breakers.reject(inventory, 5)
    opened = scrape(server)
    assert state_of(opened, "inventory") == "open"
    assert state_of(opened, "payments") == "closed"
    calls = "synapse_circuit_breaker_calls_total"
    assert value(opened, calls, breaker="inventory", outcome="success") == 4
    assert value(opened, calls, breaker="inventory", outcome="failure") == 3
    assert value(opened, calls, breaker="inventory", outcome="timeout") == 0
    assert value(opened, "synapse_circuit_breaker_rejected_calls_total", breaker="inventory") == 5
    assert value(opened, "synapse_circuit_breaker_retry_after_seconds", breaker="inventory") == 5.0
    transitions = "synapse_circuit_breaker_transitions_total"
    assert (
        value(opened, transitions, breaker="inventory", from_state="closed", to_state="open") == 1
    )

    breakers.half_open(inventory)
    probing = scrape(server)
    assert state_of(probing, "inventory") == "half_open"
    assert (
        value(probing, transitions, breaker="inventory", from_state="open", to_state="half_open")
        == 1
    )

    breakers.trip(payments := breakers.manager["payments"])
    breakers.close(payments)
    closed = scrape(server)
    assert state_of(closed, "payments") == "closed"
    assert (
        value(closed, transitions, breaker="payments", from_state="half_open", to_state="closed")
        == 1
    )
    assert value(closed, "synapse_circuit_breaker_failure_rate", breaker="payments") == 0.0


def test_failure_rate_and_forced_open_in_metrics(serve: Serve, breakers: Breakers) -> None:
    server = serve()
    db = breakers.make("db")
    breakers.succeed(db, 3)
    with contextlib.suppress(TimeoutError):
        db.call(lambda: (_ for _ in ()).throw(TimeoutError("slow")))
    samples = scrape(server)
    assert value(samples, "synapse_circuit_breaker_failure_rate", breaker="db") == 0.25
    assert (
        value(samples, "synapse_circuit_breaker_calls_total", breaker="db", outcome="timeout") == 1
    )
    assert (
        value(samples, "synapse_circuit_breaker_calls_total", breaker="db", outcome="failure") == 0
    )
    db.force_open("maintenance")
    forced = scrape(server)
    assert value(forced, "synapse_circuit_breaker_retry_after_seconds", breaker="db") == float(
        "inf"
    )


def test_ignored_exceptions_are_their_own_outcome_in_metrics(
    serve: Serve, breakers: Breakers
) -> None:
    """An exception listed in ignore_exceptions is outcome="ignored", never a failure or a
    success, and stays out of the failure rate (before, no test set the ignored count above 0,
    so a collector that dropped or misfiled it passed)."""

    class Cancelled(Exception):
        """What the caller raises when it gives up itself: not the dependency's fault."""

    def cancelled() -> None:
        raise Cancelled("caller gave up")

    server = serve()
    config = CircuitBreakerConfig(
        failure_threshold=3, minimum_requests=3, recovery_timeout=5, ignore_exceptions=(Cancelled,)
    )
    search = breakers.make("search", config)
    breakers.succeed(search, 2)
    for _ in range(4):
        with contextlib.suppress(Cancelled):
            search.call(cancelled)
    with contextlib.suppress(Down):
        search.call(_fail)
    samples = scrape(server)
    calls = "synapse_circuit_breaker_calls_total"
    assert value(samples, calls, breaker="search", outcome="ignored") == 4
    assert value(samples, calls, breaker="search", outcome="success") == 2
    assert value(samples, calls, breaker="search", outcome="failure") == 1
    assert value(samples, calls, breaker="search", outcome="timeout") == 0
    # One failure among three judged outcomes; the four ignored ones are not in the window.
    assert value(samples, "synapse_circuit_breaker_failure_rate", breaker="search") == 1 / 3
    assert state_of(samples, "search") == "closed"


def _fail() -> None:
    raise Down("dependency down")


def test_openmetrics_when_asked(serve: Serve, breakers: Breakers) -> None:
    breakers.make("inventory")
    server = serve()
    status, headers, body = get(
        server.url + "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert status == 200
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    assert body.decode().rstrip().endswith("# EOF")


def test_health_flips_to_503_when_a_breaker_opens_and_back_when_it_closes(
    serve: Serve, breakers: Breakers
) -> None:
    server = serve()
    inventory = breakers.make("inventory")
    assert get_json(server.url + "/health") == (
        200,
        {"status": "ok", "breakers": {"inventory": "closed"}, "open": [], "critical_open": []},
    )
    breakers.trip(inventory)
    status, body = get_json(server.url + "/health")
    assert (status, body["status"], body["breakers"]) == (503, "unavailable", {"inventory": "open"})
    assert body["critical_open"] == ["inventory"]
    probe = breakers.half_open(inventory)  # half-open counts as up: the service is probing
    assert get_json(server.url + "/health")[0] == 200
    probe.success()
    breakers.succeed(inventory)
    assert get_json(server.url + "/health")[1]["breakers"] == {"inventory": "closed"}


def test_only_critical_breakers_make_health_fail(serve: Serve, breakers: Breakers) -> None:
    server = serve(critical=["payments"])
    recommendations = breakers.make("recommendations")
    payments = breakers.make("payments")
    breakers.trip(recommendations)
    status, body = get_json(server.url + "/health")
    assert (status, body["open"], body["critical_open"]) == (200, ["recommendations"], [])
    breakers.trip(payments)
    status, body = get_json(server.url + "/health")
    assert (status, body["critical_open"]) == (503, ["payments"])
    by_predicate = serve(critical=lambda name: name.startswith("rec"))
    assert get_json(by_predicate.url + "/health")[1]["critical_open"] == ["recommendations"]


def test_critical_given_as_one_string_is_an_error(manager: CircuitBreakerManager) -> None:
    with pytest.raises(TypeError, match=r"critical=\['payments'\]"):
        HealthEndpoints(manager, critical="payments")
    with pytest.raises(TypeError, match="CircuitBreakerManager"):
        HealthEndpoints({"a": 1})  # type: ignore[arg-type]


def test_breakers_document_matches_its_schema_and_the_breakers(
    serve: Serve, breakers: Breakers
) -> None:
    server = serve(critical=["inventory"])
    inventory = breakers.make("inventory")
    breakers.make("search")
    breakers.trip(inventory)
    breakers.reject(inventory, 2)
    breakers.close(inventory)
    status, doc = get_json(server.url + "/breakers")
    assert status == 200
    jsonschema.validate(doc, SCHEMA)
    assert doc["schema_version"] == 1
    entry = doc["breakers"]["inventory"]
    assert (entry["state"], entry["critical"]) == ("closed", True)
    assert doc["breakers"]["search"]["critical"] is False
    assert entry["stats"]["rejection_count"] == 2
    assert entry["stats"]["failure_count"] == 3
    assert entry["config"]["failure_threshold"] == 3
    assert entry["config"]["failure_exceptions"] == ["Exception"]
    assert [
        (t["from_state"], t["to_state"], t["failure_count"]) for t in entry["recent_transitions"]
    ] == [("closed", "open", 3), ("open", "half_open", None), ("half_open", "closed", None)]
    assert [t["seq"] for t in entry["recent_transitions"]] == [1, 2, 3]
    assert entry["transitions_seen"] == 3
    assert {(c["from_state"], c["to_state"], c["count"]) for c in entry["transition_counts"]} == {
        ("closed", "open", 1),
        ("open", "half_open", 1),
        ("half_open", "closed", 1),
    }
    # A breaker held open by hand has no time to retry: null, not Infinity (invalid JSON).
    inventory.force_open()
    status, doc = get_json(server.url + "/breakers")
    jsonschema.validate(doc, SCHEMA)
    assert doc["breakers"]["inventory"]["stats"]["retry_after"] is None
    assert doc["breakers"]["inventory"]["stats"]["forced"] is True


def test_another_manager_or_an_unregistered_breaker_is_not_reported(
    serve: Serve, breakers: Breakers
) -> None:
    """The journal only keeps transitions of the served manager's breakers."""
    server = serve()
    other = CircuitBreakerManager(clock=breakers.clock).get_or_create("inventory")
    mine = breakers.make("inventory")
    breakers.trip(other)
    _, doc = get_json(server.url + "/breakers")
    assert doc["breakers"]["inventory"]["recent_transitions"] == []
    assert doc["breakers"]["inventory"]["state"] == "closed"
    breakers.trip(mine)
    _, doc = get_json(server.url + "/breakers")
    assert len(doc["breakers"]["inventory"]["recent_transitions"]) == 1


def test_other_methods_get_405_and_other_paths_404(serve: Serve) -> None:
    server = serve()
    status, headers, body = get(server.url + "/health", method="POST")
    assert status == 405
    assert headers["Allow"] == "GET, HEAD"
    assert json.loads(body)["error"] == "POST is not allowed here"
    assert get(server.url + "/breakers", method="DELETE")[0] == 405
    status, _, body = get(server.url + "/nope")
    assert status == 404
    assert json.loads(body)["paths"] == [
        "/health",
        "/breakers",
        "/metrics",
        "/dashboard",
        "/events",
    ]
    assert get(server.url + "/")[0] == 404
    assert get(server.url + "/health/")[0] == 404


def test_head_answers_headers_without_a_body(serve: Serve, breakers: Breakers) -> None:
    breakers.make("inventory")
    server = serve()
    status, headers, body = get(server.url + "/health", method="HEAD")
    assert (status, body) == (200, b"")
    assert int(headers["Content-Length"]) == len(get(server.url + "/health")[2])
    status, headers, body = get(server.url + "/events", method="HEAD")
    assert (status, headers["Content-Type"], body) == (200, "text/event-stream; charset=utf-8", b"")


def test_the_server_binds_loopback_by_default(serve: Serve) -> None:
    server = serve()
    assert server.host == "127.0.0.1"
    assert server.url == f"http://127.0.0.1:{server.port}"


def test_default_manager_is_served_by_default() -> None:
    name = "health-default-manager-test"
    default_manager.get_or_create(name)
    try:
        endpoints = HealthEndpoints()
        try:
            assert name in endpoints.breakers()["breakers"]
        finally:
            endpoints.close()
    finally:
        default_manager.remove_breaker(name)


def test_concurrent_scrapes_while_breakers_change_state(serve: Serve, breakers: Breakers) -> None:
    """Four clients scrape all three documents while another thread cycles 20 breakers."""
    server = serve()
    names = [f"dep-{i}" for i in range(20)]
    for name in names:
        breakers.make(name)
    cycles = 15
    stop = threading.Event()
    problems: list[str] = []

    def churn() -> None:
        try:
            for _ in range(cycles):
                for name in names:
                    breakers.trip(breakers.manager[name])
                breakers.clock.advance(5)
                for name in names:
                    breakers.succeed(breakers.manager[name], 2)
        except Exception as exc:  # surfaced below
            problems.append(f"churn: {exc!r}")
        finally:
            stop.set()

    def scraper() -> None:
        while not stop.is_set():
            try:
                samples = scrape(server)
                for name in names:
                    state_of(samples, name)
                status, doc = get_json(server.url + "/breakers")
                jsonschema.validate(doc, SCHEMA)
                status, body = get_json(server.url + "/health")
                assert status in (200, 503)
                assert (status == 503) == bool(body["open"]), body
            except Exception as exc:
                problems.append(f"scrape: {exc!r}")
                return

    threads = [threading.Thread(target=scraper) for _ in range(4)]
    writer = threading.Thread(target=churn)
    for thread in [*threads, writer]:
        thread.start()
    for thread in [writer, *threads]:
        thread.join(timeout=60)
    assert problems == []
    final = scrape(server)
    for name in names:
        assert state_of(final, name) == "closed"
        assert (
            value(
                final,
                "synapse_circuit_breaker_transitions_total",
                breaker=name,
                from_state="closed",
                to_state="open",
            )
            == cycles
        )
