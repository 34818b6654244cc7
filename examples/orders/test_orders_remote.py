"""The orders service in a process of its own: its breaker is seen only from outside.

This is how a real service is tested: it runs elsewhere (another process, a container), and
the test reads its breakers through the ``/breakers`` endpoint it serves
(``synapse_core.health``). ``remote_breakers(url)`` records them on the test's timeline, so
the same assertions work by name, with the failures that tripped the breaker.
"""

from __future__ import annotations

from typing import Any

import pytest

from orders.conftest import drive_until_closed, get
from pytest_synapse import BreakerTimeline
from synapse_core import default_manager

pytestmark = pytest.mark.chaos


def test_partition_seen_from_outside_the_service(
    orders_process: str,
    inventory_proxy: Any,
    remote_breakers: Any,
    breaker_timeline: BreakerTimeline,
) -> None:
    remote = remote_breakers(orders_process)
    url = f"{orders_process}/orders/apple"
    with inventory_proxy.partition():
        for _ in range(3):
            assert get(url)[0] == 502  # each waits out the 0.3 s timeout
        breaker_timeline.assert_trips_within("inventory", failures=3, seconds=5)
        # Out of process (and with the docker backend or a compose stack, through Docker's
        # port proxy, where a loaded machine showed a 207 ms 503): 250 ms, as in
        # test_orders_chaos, still fails a call that waited out the 0.3 s inventory timeout.
        breaker_timeline.assert_rejects_fast(
            "inventory", lambda: get(url), max_ms=250, calls=10, expect=None
        )
        assert get(f"{orders_process}/health")[0] == 503
    drive_until_closed(orders_process, "inventory", within=5)
    breaker_timeline.assert_closes_within("inventory", seconds=3)
    breaker_timeline.assert_half_open_probes_at_most("inventory", 2)
    assert remote.stats("inventory")["rejection_count"] >= 10
    # Nothing of it lives in this process: every figure came through /breakers.
    assert default_manager.get_breaker("inventory") is None
