"""Applied and healed faults are logged on synapse.chaos with stable messages and extra fields."""

from __future__ import annotations

import logging

import pytest
from chaos_helpers import EchoServer

from chaos import EmbeddedToxiproxy, Proxy, ToxiproxyUnavailable


def chaos_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "synapse.chaos"]


def test_a_fault_is_logged_when_applied_and_when_healed(
    echo_handle: Proxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="synapse.chaos")
    with echo_handle.latency(250, stream="downstream"):
        (applied,) = chaos_records(caplog)
    applied_, healed = chaos_records(caplog)
    assert applied_ is applied
    assert applied.msg == "fault %s %s %s proxy %r"
    assert applied.getMessage() == f"fault latency applied to proxy {echo_handle.name!r}"
    assert healed.getMessage() == f"fault latency healed on proxy {echo_handle.name!r}"
    assert applied.synapse_event == "fault.applied"  # type: ignore[attr-defined]
    assert healed.synapse_event == "fault.healed"  # type: ignore[attr-defined]
    assert applied.fault == "latency"  # type: ignore[attr-defined]
    assert applied.proxy == echo_handle.name  # type: ignore[attr-defined]
    assert applied.params["ms"] == 250  # type: ignore[attr-defined]
    assert len(applied.toxics) == 1  # type: ignore[attr-defined]
    assert healed.toxics == []  # type: ignore[attr-defined]


def test_a_failed_heal_is_a_warning_naming_the_error(
    echo_server: EchoServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="synapse.chaos")
    server = EmbeddedToxiproxy()
    server.start()
    try:
        client = server.client(timeout=2)
        proxy = Proxy(client, client.create_proxy("logged", echo_server.address))
        fault = proxy.blackhole().start()
    finally:
        server.stop()  # the server is gone: removing the toxics fails
    with pytest.raises(ToxiproxyUnavailable):
        fault.stop()
    failed = chaos_records(caplog)[-1]
    assert failed.levelname == "WARNING"
    assert failed.synapse_event == "fault.heal_failed"  # type: ignore[attr-defined]
    assert failed.getMessage().startswith("fault blackhole could not be healed on proxy 'logged'")
