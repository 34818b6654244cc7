"""The Synapse pytest plugin: chaos fixtures, breaker assertions, reports and CI gates.

The plugin itself (``pytest_synapse.plugin``) is loaded by pytest through its ``pytest11``
entry point. This package exports what tests import directly.
"""

from pytest_synapse.assertions import (
    BreakerAssertionError,
    NotObservableError,
    assert_closes_within,
    assert_half_open_probes_at_most,
    assert_no_calls_while_open,
    assert_rejects_fast,
    assert_rejects_fast_async,
    assert_trips_within,
)
from pytest_synapse.fixtures import BreakerTimeline
from pytest_synapse.poller import BreakerStatePoller
from pytest_synapse.render import side_by_side

__all__ = [
    "BreakerAssertionError",
    "BreakerStatePoller",
    "BreakerTimeline",
    "NotObservableError",
    "assert_closes_within",
    "assert_half_open_probes_at_most",
    "assert_no_calls_while_open",
    "assert_rejects_fast",
    "assert_rejects_fast_async",
    "assert_trips_within",
    "side_by_side",
]
