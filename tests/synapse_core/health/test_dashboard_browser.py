"""The live dashboard in a real browser (headless Chromium from Debian, over DevTools).

The page is opened once; breakers then trip and close in this process, and the page must show
each change without a reload. A screenshot is kept next to the test's tmp files.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from browser import chromium_page, chromium_path
from health_support import Breakers, get

from synapse_core.health import HealthServer

pytestmark = pytest.mark.skipif(
    chromium_path() is None,
    reason="chromium is not installed (make test installs it through scripts/system-deps.sh)",
)

Serve = Callable[..., HealthServer]

STATE = "document.querySelector('[data-breaker=\"{}\"]')?.dataset.state"


@pytest.mark.asyncio
async def test_dashboard_shows_a_trip_live_without_a_reload(
    serve: Serve, breakers: Breakers, tmp_path: Path
) -> None:
    inventory = breakers.make("inventory")
    payments = breakers.make("payments")
    breakers.succeed(payments, 5)
    server = serve(critical=["inventory"], event_interval=0.1)
    async with chromium_page() as page:
        await page.goto(server.url + "/dashboard")
        await page.wait_for("document.getElementById('connection').dataset.status === 'live'")
        assert await page.wait_for(STATE.format("inventory")) == "closed"
        navigations = await page.evaluate("performance.getEntriesByType('navigation').length")

        tripped_at = time.time() * 1000
        await asyncio.to_thread(breakers.trip, inventory)
        assert await page.wait_for(f"{STATE.format('inventory')} === 'open'", within=5)
        received = float(
            await page.evaluate(
                "document.querySelector('[data-breaker=\"inventory\"]').dataset.received"
            )
        )
        print(f"transition reached the page {received - tripped_at:.1f} ms after the trip")
        assert await page.evaluate("document.body.dataset.open") == "1"
        first = await page.evaluate(
            "document.querySelector('[data-breaker=\"inventory\"] ol.transitions li').textContent"
        )
        assert "closed \u2192 open" in first
        assert "3 failures" in first

        await asyncio.to_thread(breakers.reject, inventory, 3)
        await asyncio.to_thread(breakers.close, inventory)
        assert await page.wait_for(f"{STATE.format('inventory')} === 'closed'", within=5)
        items = await page.evaluate(
            "[...document.querySelectorAll('[data-breaker=\"inventory\"] ol.transitions li')]"
            ".map(li => li.dataset.seq)"
        )
        assert items == ["3", "2", "1"]  # newest first, none missed
        # Call and rejection rates come from two consecutive stats events.
        await page.wait_for(
            "document.querySelector('[data-breaker=\"payments\"] [data-figure=calls]')"
            ".textContent !== '\u2013'"
        )
        # A breaker created after the page opened appears by itself.
        breakers.make("search")
        await page.wait_for(f"{STATE.format('search')} === 'closed'", within=5)

        # No reload happened, and the page asked for nothing outside the server.
        assert (
            await page.evaluate("performance.getEntriesByType('navigation').length") == navigations
        )
        assert page.requested, "no request recorded"
        assert all(url.startswith(server.url + "/") for url in page.requested), page.requested
        assert page.console == []
        shot = await page.screenshot(tmp_path / "dashboard.png")
        print(f"screenshot: {shot}")
        assert shot.stat().st_size > 10_000


def test_the_page_names_no_external_url(serve: Serve) -> None:
    """Self-contained: no http(s):// or protocol-relative URL anywhere in the page."""
    server = serve()
    status, headers, page = get(server.url + "/dashboard")
    assert status == 200
    text = page.decode()
    assert re.findall(r"(?:https?:)?//[\w.-]+\.\w", text) == []
    assert re.findall(r"\b(?:src|href)\s*=\s*\"(?!data:)", text) == []
    policy = headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy
    assert "connect-src 'self'" in policy
