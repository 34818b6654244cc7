"""Toxic runtimes and config parsing without sockets: seeded randomness, exact schedules."""

from __future__ import annotations

import asyncio
import json
import logging
import random

import pytest

from chaos.server import ApiError, ServerLimits
from chaos.server.config import (
    check_proxy_config,
    join_address,
    parse_populate,
    parse_proxy_config,
    split_address,
)
from chaos.server.gojson import go_text
from chaos.server.runtimes import (
    BandwidthRuntime,
    LatencyRuntime,
    LimitDataRuntime,
    SlicerRuntime,
    ToxicRuntime,
    make_runtime,
)
from chaos.server.throttle import ThrottledLog
from chaos.server.toxics import ToxicSpec, parse_new_toxic, parse_toxic_update


class FakeFlow:
    """FlowHooks on the running loop, recording what runtimes emit and ask for."""

    def __init__(self, seed: int = 0) -> None:
        self.loop = asyncio.get_running_loop()
        self.rng = random.Random(seed)
        self.closed = 0
        self.resets = 0

    def now(self) -> float:
        return self.loop.time()

    def close_connection(self) -> None:
        self.closed += 1

    def reset_connection(self) -> None:
        self.resets += 1


def spec(toxic_type: str, **attributes: int) -> ToxicSpec:
    body = json.dumps({"type": toxic_type, "attributes": attributes}).encode()
    return parse_new_toxic(body, _free)


async def run(runtime: ToxicRuntime, data: bytes, ts: float | None = None) -> list[bytes]:
    loop = asyncio.get_running_loop()
    return [chunk async for chunk, _ in runtime.process(data, loop.time() if ts is None else ts)]


@pytest.mark.asyncio
async def test_slicer_sizes_follow_the_seed() -> None:
    def sizes(seed: int) -> list[int]:
        return [len(c) for c in slices[seed]]

    slices = {}
    for seed in (1, 1, 2):
        runtime = SlicerRuntime(spec("slicer", average_size=10, size_variation=5), FakeFlow(seed))
        slices[seed] = await run(runtime, bytes(200))
    assert sum(sizes(1)) == 200
    assert all(5 <= n <= 15 for n in sizes(1)[:-1])
    assert sizes(1) != sizes(2)
    again = SlicerRuntime(spec("slicer", average_size=10, size_variation=5), FakeFlow(1))
    assert [len(c) for c in await run(again, bytes(200))] == sizes(1)


@pytest.mark.asyncio
async def test_latency_counts_from_read_time() -> None:
    flow = FakeFlow()
    runtime = LatencyRuntime(spec("latency", latency=50), flow)
    loop = asyncio.get_running_loop()
    start = loop.time()
    # read 40 ms ago: only ~10 ms left to wait
    assert await run(runtime, b"x", ts=start - 0.040) == [b"x"]
    assert loop.time() - start < 0.040


@pytest.mark.asyncio
async def test_retire_releases_a_waiting_chunk() -> None:
    runtime = LatencyRuntime(spec("latency", latency=10_000), FakeFlow())
    task = asyncio.create_task(run(runtime, b"held"))
    await asyncio.sleep(0.01)
    runtime.retire(removed=True)
    assert await asyncio.wait_for(task, 2) == [b"held"]


@pytest.mark.asyncio
async def test_bandwidth_schedule() -> None:
    runtime = BandwidthRuntime(spec("bandwidth", rate=1000), FakeFlow())  # 1 MB/s
    loop = asyncio.get_running_loop()
    start = loop.time()
    out = await run(runtime, bytes(250_000))
    elapsed = loop.time() - start
    assert [len(c) for c in out] == [100_000, 100_000, 50_000]  # 100 ms worth per slice
    assert 0.245 <= elapsed < 1.5


@pytest.mark.asyncio
async def test_limit_data_truncates_closes_and_survives_update() -> None:
    flow = FakeFlow()
    first = LimitDataRuntime(spec("limit_data", bytes=10), flow)
    assert await run(first, b"123456") == [b"123456"]
    assert flow.closed == 0
    raised = make_runtime(spec("limit_data", bytes=12), flow, first)
    assert await run(raised, b"abcdefgh") == [b"abcdef"]
    assert flow.closed == 1


def _free(name: str) -> None:
    """A toxic name check that finds every name free."""


def test_toxic_parsing_defaults_and_update() -> None:
    toxic = parse_new_toxic(b'{"type": "latency", "stream": "UPSTREAM"}', _free)
    # As Toxiproxy: any case selects the stream, which is shown (and names the toxic) as given.
    assert (toxic.name, toxic.stream, toxic.toxicity) == ("latency_UPSTREAM", "upstream", 1.0)
    assert toxic.to_json()["stream"] == "UPSTREAM"
    assert dict(toxic.attributes) == {"latency": 0, "jitter": 0}
    updated = parse_toxic_update(toxic, b'{"attributes": {"Jitter": 3}, "name": "ignored"}')
    assert dict(updated.attributes) == {"latency": 0, "jitter": 3}
    assert updated.name == "latency_UPSTREAM"
    with pytest.raises(ApiError, match=r"cannot unmarshal number 3\.0 into Go struct field"):
        parse_toxic_update(toxic, b'{"attributes": {"jitter": 3.0}}')


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:80", ("127.0.0.1", 80)),
        ("[::1]:0", ("::1", 0)),
        (":8080", ("127.0.0.1", 8080)),
        ("localhost:1", ("localhost", 1)),
    ],
)
def test_split_address(text: str, expected: tuple[str, int]) -> None:
    assert split_address(text, "listen", allow_zero_port=True) == expected


@pytest.mark.parametrize("text", ["nohost", "h:port", "h:70000", "h:"])
def test_split_address_rejects(text: str) -> None:
    with pytest.raises(ApiError) as error:
        split_address(text, "upstream", allow_zero_port=False)
    assert error.value.status == 400
    assert text in error.value.message


def test_upstream_port_zero_is_rejected() -> None:
    config = parse_proxy_config(b'{"name": "a", "upstream": "127.0.0.1:0"}')
    with pytest.raises(ApiError, match="has port 0") as error:
        check_proxy_config(config)
    assert "1 to 65535" in error.value.hint


def test_join_address() -> None:
    assert join_address("::1", 5) == "[::1]:5"
    assert join_address("127.0.0.1", 5) == "127.0.0.1:5"


@pytest.mark.parametrize(
    "fields",
    [
        {"header_timeout": 0},
        {"idle_timeout": -1},
        {"close_timeout": float("inf")},
        {"log_interval": "10"},
        {"connect_after_client_eof": -0.1},
        {"max_control_connections": 0},
        {"fd_reserve": 1.5},
        {"fd_reserve": True},
    ],
)
def test_server_limits_refuse_nonsense(fields: dict[str, object]) -> None:
    (name,) = fields
    with pytest.raises(ValueError, match=f"ServerLimits.{name} must be"):
        ServerLimits(**fields)  # type: ignore[arg-type]


def test_server_limits_accept_a_zero_grace_after_a_client_fin() -> None:
    assert ServerLimits(connect_after_client_eof=0).connect_after_client_eof == 0


def test_throttled_log_says_how_many_it_left_out(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    log = ThrottledLog(lambda: now[0], interval=10.0)
    with caplog.at_level(logging.WARNING, logger="chaos.server"):
        for t in (0.0, 1.0, 2.0, 9.9, 10.5, 11.0):
            now[0] = t
            log.warning("fds", "out of descriptors")
        log.warning("other", "another kind")
    assert [r.getMessage() for r in caplog.records] == [
        "out of descriptors",
        "out of descriptors (3 more like it in the last 10 s)",
        "another kind",
    ]


def test_names_are_capped_and_lone_surrogates_replaced() -> None:
    assert go_text("a\ud800b\U0001f600") == "a\ufffdb\U0001f600"
    name = "x" * 256
    assert parse_new_toxic(b'{"type": "noop", "name": "%s"}' % name.encode(), _free).name == name
    with pytest.raises(ApiError, match="name is 257 characters long"):
        parse_new_toxic(b'{"type": "noop", "name": "%s"}' % (b"x" * 257), _free)
    body = b'[{"name": "a", "upstream": "h:1"}, {"name": "%s", "upstream": "h:1"}]' % (b"x" * 300)
    with pytest.raises(ApiError, match="name at proxy 2 is 300 characters long"):
        parse_populate(body)
