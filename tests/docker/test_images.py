"""The images build with no registry, are cached per machine, and the server image is sound."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from chaos.docker import Container, engine

ROOT = Path(__file__).resolve().parents[2]


def test_a_second_build_reuses_the_cached_images(images: dict[str, str]) -> None:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, str(ROOT / "docker" / "images.py"), "chaos", "redis", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=ROOT,
    )
    assert json.loads(result.stdout) == {"chaos": images["chaos"], "redis": images["redis"]}
    assert "building" not in result.stderr
    assert time.monotonic() - started < 30  # hashing inputs and asking the engine, no build


def test_the_server_image_runs_unprivileged_with_a_healthcheck(
    images: dict[str, str], container: Callable[..., Container]
) -> None:
    attrs = engine().images.get(images["chaos"]).attrs
    assert attrs["Config"]["User"] == "10001"
    assert attrs["Config"]["Labels"]["io.synapse.image"] == "chaos"
    assert "8474/tcp" in attrs["Config"]["ExposedPorts"]
    server = container(images["chaos"], ports=[8474], wait="healthy", timeout=60)
    with urllib.request.urlopen(f"http://{server.address(8474)}/version", timeout=5) as answer:
        assert json.loads(answer.read()) == {"version": "2.12.0"}
    code, out = server.exec(["id", "-u"])
    assert (code, out.strip()) == (0, "10001")


def test_the_redis_image_is_the_base_with_redis_server(
    images: dict[str, str], container: Callable[..., Container]
) -> None:
    redis = container(
        images["redis"], command=["redis-server", "--protected-mode", "no"], wait=6379
    )
    code, out = redis.exec(["redis-cli", "ping"])
    assert (code, out.strip()) == (0, "PONG")
