"""chaos.Proxy and faults: validation, lifecycle, heal, timelines, stale cleanup; backends."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from typing import Any

import pytest
from chaos_helpers import EchoServer, connect_state, echoes

from chaos import (
    Backend,
    BackendError,
    ChaosError,
    EmbeddedBackend,
    ExternalBackend,
    FaultError,
    InvalidFault,
    NotFound,
    Proxy,
    ProxyExists,
    ProxyInfo,
    ScenarioError,
    ToxiproxyClient,
    ToxiproxyUnavailable,
    parse_scenario,
    resolve_backend,
)
from chaos.control.livefaults import toxic_prefix
from synapse_core import Timeline, VirtualClock

OFFLINE_INFO = ProxyInfo("svc", "127.0.0.1:1", "127.0.0.1:2", True)


@pytest.fixture
def offline_proxy() -> Proxy:
    """A handle whose server does not exist: enough for argument validation."""
    return Proxy(ToxiproxyClient("http://127.0.0.1:1", timeout=1), OFFLINE_INFO)


# -- validation ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "words"),
    [
        (lambda p: p.latency(-1), "ms must be a finite number >= 0"),
        (lambda p: p.latency("slow"), "ms must be a number, got str"),
        (lambda p: p.latency(True), "ms must be a number"),
        (lambda p: p.latency(10, stream="sideways"), "stream must be one of"),
        (lambda p: p.latency(10, toxicity=1.5), "toxicity must be between 0 and 1"),
        (lambda p: p.bandwidth(float("inf")), "rate must be a finite number"),
        (lambda p: p.flapping(0), "period must be a positive number of seconds"),
        (lambda p: p.flapping(1, down_fraction=1), "strictly between 0 and 1"),
        (lambda p: p.partition("maybe"), "mode must be one of 'drop', 'reject'"),
        (lambda p: p.fault("explode"), "unknown fault 'explode'; the faults are: latency"),
        (lambda p: p.fault("latency", ms=1, colour="red"), "latency has no parameter 'colour'"),
        (lambda p: p.fault("slicer"), "slicer needs 'average_size'; expected slicer(average_size"),
    ],
)
def test_bad_fault_arguments_are_explained(offline_proxy: Proxy, build: object, words: str) -> None:
    with pytest.raises(InvalidFault) as info:
        build(offline_proxy)  # type: ignore[operator]
    assert words in str(info.value)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, ChaosError)


def test_fault_objects_describe_themselves(offline_proxy: Proxy) -> None:
    fault = offline_proxy.latency(12.4, jitter=3)
    assert fault.kind == "latency"
    assert fault.params == {"ms": 12, "jitter": 3, "stream": "both", "toxicity": 1.0}
    assert not fault.active
    assert "latency(ms=12" in repr(fault)
    assert offline_proxy.partition().params == {"mode": "drop"}
    assert offline_proxy.down().params == {}
    assert (offline_proxy.host, offline_proxy.port) == ("127.0.0.1", 1)


def test_owner_must_fit_in_a_toxic_name() -> None:
    with pytest.raises(InvalidFault, match="owner must be"):
        Proxy(ToxiproxyClient("http://127.0.0.1:1"), OFFLINE_INFO, owner="a:b")


# -- lifecycle -------------------------------------------------------------------------------------


def test_toxics_are_named_for_their_owner_and_removed_on_stop(echo_handle: Proxy) -> None:
    fault = echo_handle.latency(10).start()
    names = sorted(t.name for t in echo_handle.toxics())
    assert len(names) == 2
    assert all(n.startswith("synapse:tests:latency:") for n in names)
    assert names[0].endswith(":downstream")
    assert names[1].endswith(":upstream")
    assert echo_handle.faults == [fault]
    with pytest.raises(FaultError, match="already active"):
        fault.start()
    fault.stop()
    fault.stop()  # idempotent
    assert echo_handle.toxics() == []
    assert echo_handle.faults == []
    fault.start()  # a stopped fault can run again
    assert len(echo_handle.toxics()) == 2
    echo_handle.heal()
    assert echo_handle.toxics() == []


def test_faults_are_removed_when_the_body_raises(echo_handle: Proxy) -> None:
    with pytest.raises(RuntimeError), echo_handle.down(), echo_handle.latency(5):
        raise RuntimeError("boom")
    assert echo_handle.toxics() == []
    assert echo_handle.refresh().enabled


def test_heal_removes_every_fault_of_the_handle(echo_handle: Proxy) -> None:
    echo_handle.latency(20).start()
    echo_handle.blackhole(stream="upstream").start()
    echo_handle.partition(mode="reject").start()
    assert connect_state(echo_handle.address) == "refused"
    assert len(echo_handle.toxics()) == 4  # 2 latency + 1 timeout + 1 marker
    echo_handle.heal()
    assert echo_handle.faults == []
    assert echo_handle.toxics() == []
    assert echoes(echo_handle.address)


def test_overlapping_disables_compose(echo_handle: Proxy) -> None:
    outage = echo_handle.down().start()
    reject = echo_handle.partition(mode="reject").start()
    outage.stop()
    assert connect_state(echo_handle.address) == "refused"  # the partition still holds
    reject.stop()
    assert echoes(echo_handle.address)


def test_partition_drop_uses_timeout_toxics_in_both_directions(echo_handle: Proxy) -> None:
    with echo_handle.partition():
        toxics = echo_handle.toxics()
    assert sorted((t.type, t.stream, dict(t.attributes)) for t in toxics) == [
        ("timeout", "downstream", {"timeout": 0}),
        ("timeout", "upstream", {"timeout": 0}),
    ]


def test_fault_on_a_deleted_proxy_fails_cleanly(echo_handle: Proxy) -> None:
    echo_handle.client.delete_proxy(echo_handle.name)
    with pytest.raises(NotFound, match="proxy not found"):
        echo_handle.latency(5).start()
    assert echo_handle.faults == []
    echo_handle.delete()  # already gone: fine


def test_timeline_spans_on_a_virtual_clock(echo_handle: Proxy) -> None:
    clock = VirtualClock(100.0)
    timeline = Timeline(clock)
    fault = echo_handle.bandwidth(50).start(timeline=timeline)
    clock.advance(2.5)
    fault.stop()
    (span,) = timeline.faults
    assert (span.fault, span.proxy, span.start, span.end) == (
        "bandwidth",
        echo_handle.name,
        100,
        102.5,
    )
    assert span.params == {"rate": 50, "stream": "downstream", "toxicity": 1.0}
    assert echo_handle.timeline.faults == []  # recorded where asked, not on the proxy's


# -- stale faults ----------------------------------------------------------------------------------

CRASHING_RUN = textwrap.dedent(
    """
    import os, sys
    from chaos import ToxiproxyClient
    proxy = ToxiproxyClient(sys.argv[1]).get_proxy(sys.argv[2], owner="tests")
    proxy.latency(50).start()
    proxy.down().start()
    os._exit(0)  # dies without cleaning up, as a killed run would
    """
)


def test_a_later_run_removes_the_stale_faults_it_owns(
    chaos_backend: Backend, echo_server: EchoServer
) -> None:
    proxy = chaos_backend.create_proxy(echo_server.address)
    client = proxy.client
    subprocess.run(
        [sys.executable, "-c", CRASHING_RUN, client.url, proxy.name],
        check=True,
        timeout=60,
        env=dict(os.environ),
    )
    assert not proxy.refresh().enabled
    left = {t.name for t in proxy.toxics()}
    assert len(left) == 3
    assert all(n.startswith(toxic_prefix("tests")) for n in left)
    # Not ours to remove: a user's toxic, another owner's, and a live fault of this process.
    client.add_toxic(proxy.name, "latency", name="users-own", attributes={"latency": 1})
    client.add_toxic(proxy.name, "latency", name="synapse:other:latency:x:downstream")
    live = proxy.slow_close(10).start()

    removed = proxy.remove_stale_faults()

    assert set(removed) == left
    assert proxy.refresh().enabled
    remaining = {t.name for t in proxy.toxics()}
    assert remaining == {"users-own", "synapse:other:latency:x:downstream", *live.toxic_names}
    assert echoes(proxy.address)


# -- backends --------------------------------------------------------------------------------------


def test_resolve_backend_choices() -> None:
    assert isinstance(resolve_backend(None, env={}), EmbeddedBackend)
    assert isinstance(resolve_backend("embedded"), EmbeddedBackend)
    external = resolve_backend(None, env={"SYNAPSE_TOXIPROXY": "http://127.0.0.1:8474/"})
    assert isinstance(external, ExternalBackend)
    assert external.target == "http://127.0.0.1:8474"
    # An argument wins over the environment variable.
    assert isinstance(
        resolve_backend("embedded", env={"SYNAPSE_TOXIPROXY": "http://x:1"}), EmbeddedBackend
    )


@pytest.mark.parametrize(
    ("spec", "env", "error", "words"),
    [
        ("toxiproxy", None, BackendError, "'toxiproxy' is not a chaos backend"),
        (None, "nonsense", BackendError, "SYNAPSE_TOXIPROXY: 'nonsense' is not a chaos backend"),
        ("https://h:1", None, BackendError, "plain HTTP"),
        ("http://host:notaport", None, BackendError, "expected http://host:port"),
    ],
)
def test_bad_backend_specs_are_explained(
    spec: str | None, env: str | None, error: type[Exception], words: str
) -> None:
    environ = {} if env is None else {"SYNAPSE_TOXIPROXY": env}
    with pytest.raises(error) as info:
        resolve_backend(spec, env=environ)
    assert words in str(info.value)


def test_unreachable_external_backend_names_the_url() -> None:
    backend = resolve_backend("http://127.0.0.1:1", timeout=2)
    start = time.monotonic()
    with pytest.raises(ToxiproxyUnavailable, match=r"http://127\.0\.0\.1:1"):
        backend.start()
    assert time.monotonic() - start < 3
    with pytest.raises(BackendError, match="not started"):
        _ = backend.client


def test_external_backend_creates_attaches_and_cleans_up(echo_server: EchoServer) -> None:
    with EmbeddedBackend() as server:
        server_client = server.client
        existing = server_client.create_proxy("theirs", upstream=echo_server.address)
        with ExternalBackend(server.url, owner="ext") as backend:
            mine = backend.create_proxy(echo_server.address, name="mine")
            attached = backend.attach("theirs")
            assert attached.listen == existing.listen
            mine.latency(5).start()
            attached.down().start()
            with pytest.raises(ProxyExists, match="use attach"):
                backend.create_proxy(echo_server.address, name="mine")
        assert set(server_client.proxies()) == {"theirs"}  # created here: deleted
        assert server_client.proxy_info("theirs").enabled  # attached: healed, kept
        assert server_client.toxics("theirs") == []


def test_failed_disable_does_not_leave_the_proxy_down(
    echo_handle: Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = echo_handle.client
    real_disable, real_enable = client.disable, client.enable

    def disable_then_lost(name: str) -> Any:
        real_disable(name)
        raise ToxiproxyUnavailable("response lost after the server applied it")

    monkeypatch.setattr(client, "disable", disable_then_lost)
    with pytest.raises(ToxiproxyUnavailable):
        echo_handle.down().start()
    assert echo_handle.refresh().enabled
    assert echo_handle.toxics() == []

    # If enabling fails too, the marker stays, so stale cleanup can re-enable the proxy.
    def enable_fails(name: str) -> Any:
        raise ToxiproxyUnavailable("no answer")

    monkeypatch.setattr(client, "enable", enable_fails)
    with pytest.raises(ToxiproxyUnavailable):
        echo_handle.partition("reject").start()
    assert not echo_handle.refresh().enabled
    monkeypatch.setattr(client, "enable", real_enable)
    assert len(echo_handle.remove_stale_faults()) == 1
    assert echo_handle.refresh().enabled
    assert echo_handle.toxics() == []


def test_interrupted_stop_leaves_nothing_stale_cleanup_cannot_remove(
    echo_handle: Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = echo_handle.client
    real_remove = client.remove_toxic
    fault = echo_handle.latency(10).start()  # two toxics

    def remove_then_interrupt(proxy: str, name: str) -> Any:
        real_remove(proxy, name)
        raise KeyboardInterrupt

    monkeypatch.setattr(client, "remove_toxic", remove_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        fault.stop()
    monkeypatch.setattr(client, "remove_toxic", real_remove)
    assert not fault.active
    assert len(echo_handle.toxics()) == 1
    assert len(echo_handle.remove_stale_faults()) == 1  # same process: no longer held as live
    assert echo_handle.toxics() == []
    fault.stop()  # the retry finds them gone: fine


def test_stop_after_a_server_error_can_be_retried(
    echo_handle: Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = echo_handle.client
    real_remove, real_enable = client.remove_toxic, client.enable

    def unavailable(*args: object) -> Any:
        raise ToxiproxyUnavailable("no answer")

    latency = echo_handle.latency(10).start()
    down = echo_handle.down().start()
    monkeypatch.setattr(client, "remove_toxic", unavailable)
    monkeypatch.setattr(client, "enable", unavailable)
    for fault in (latency, down):
        with pytest.raises(ToxiproxyUnavailable):
            fault.stop()
    monkeypatch.setattr(client, "remove_toxic", real_remove)
    monkeypatch.setattr(client, "enable", real_enable)
    assert not echo_handle.refresh().enabled
    assert len(echo_handle.toxics()) == 3
    latency.stop()
    down.stop()
    assert echo_handle.refresh().enabled
    assert echo_handle.toxics() == []
    assert latency.toxic_names == down.toxic_names == []


def test_parameter_limit_is_the_servers(echo_handle: Proxy) -> None:
    with pytest.raises(InvalidFault, match=r"2\*\*53"):
        echo_handle.slicer(2**53 + 2)
    with pytest.raises(ScenarioError, match="at must be a finite number"):
        parse_scenario("name: x\nproxies: [a]\nsteps:\n  - {at: " + "9" * 400 + ", fault: down}")
    with echo_handle.latency(2**53, stream="upstream"):  # the largest accepted is applied
        assert echo_handle.toxics()[0].attributes["latency"] == 2**53


def test_text_that_is_no_number_gets_no_hint(echo_handle: Proxy) -> None:
    with pytest.raises(InvalidFault) as info:
        echo_handle.latency("slow")  # type: ignore[arg-type]
    assert str(info.value).endswith("got str 'slow'")
    with pytest.raises(InvalidFault, match=r"write 1000 or 1\.0e\+3\)"):
        echo_handle.latency("1e3")  # type: ignore[arg-type]
