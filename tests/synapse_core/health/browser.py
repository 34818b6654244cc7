"""Headless Chromium driven through the DevTools protocol (for the dashboard tests).

Debian's ``chromium`` (installed by ``scripts/system-deps.sh``) is started with
``--remote-debugging-port=0``; the page is driven over a WebSocket with aiohttp. Every URL the
page requests is recorded, so a test can check that nothing outside the server was asked for.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp


def chromium_path() -> str | None:
    """The chromium binary, or ``None``."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Page:
    """One browser tab: evaluate JavaScript, wait for conditions, take screenshots."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.requested: list[str] = []
        """Every URL the page asked for (``Network.requestWillBeSent``)."""
        self.console: list[str] = []
        """Console messages and uncaught exceptions."""
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for message in self._ws:
            if message.type is not aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(message.data)
            if "id" in data:
                future = self._pending.pop(data["id"], None)
                if future is not None and not future.done():
                    future.set_result(data)
            elif data.get("method") == "Network.requestWillBeSent":
                self.requested.append(data["params"]["request"]["url"])
            elif data.get("method") == "Runtime.consoleAPICalled":
                args = data["params"].get("args", [])
                self.console.append(" ".join(str(a.get("value", "")) for a in args))
            elif data.get("method") == "Runtime.exceptionThrown":
                self.console.append(json.dumps(data["params"]["exceptionDetails"]))
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ConnectionError("the browser closed the DevTools socket"))

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        """Call a DevTools method; returns its result (raises on a protocol error)."""
        ident = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[ident] = future
        await self._ws.send_str(json.dumps({"id": ident, "method": method, "params": params}))
        reply = await asyncio.wait_for(future, 30)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page."""
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, *, within: float = 10.0) -> Any:
        """Poll *expression* until it is truthy (every 10 ms); returns its value."""
        deadline = time.monotonic() + within
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"the page never satisfied {expression} within {within}s")
            await asyncio.sleep(0.01)

    async def goto(self, url: str) -> None:
        """Navigate and wait for the load event."""
        await self.send("Page.navigate", url=url)
        await self.wait_for("document.readyState === 'complete'")

    async def screenshot(self, path: Path) -> Path:
        """Save a PNG of the page."""
        result = await self.send("Page.captureScreenshot", format="png")
        await asyncio.to_thread(path.write_bytes, base64.b64decode(result["data"]))
        return path

    async def close(self) -> None:
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)


@contextlib.asynccontextmanager
async def chromium_page(width: int = 1280, height: int = 800) -> AsyncIterator[Page]:
    """A headless Chromium with one blank tab; everything is closed on exit."""
    binary = chromium_path()
    assert binary is not None, "chromium is not installed (scripts/system-deps.sh installs it)"
    with tempfile.TemporaryDirectory(prefix="synapse-chromium-") as profile:
        process = await asyncio.to_thread(
            subprocess.Popen,
            [
                binary,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--metrics-recording-only",
                "--hide-scrollbars",
                f"--window-size={width},{height}",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                f"--user-data-dir={profile}",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            port = await asyncio.to_thread(_devtools_port, process)
            async with aiohttp.ClientSession() as session:
                async with session.get(f"http://127.0.0.1:{port}/json/list") as response:
                    targets = await response.json()
                target = next(t for t in targets if t["type"] == "page")
                async with session.ws_connect(
                    target["webSocketDebuggerUrl"], max_msg_size=64 * 1024 * 1024
                ) as ws:
                    page = Page(ws)
                    try:
                        await page.send("Network.enable")
                        await page.send("Runtime.enable")
                        await page.send("Page.enable")
                        yield page
                    finally:
                        await page.close()
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
            assert process.stderr is not None
            process.stderr.close()


def _devtools_port(process: subprocess.Popen[str]) -> int:
    assert process.stderr is not None
    seen = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        seen.append(line)
        match = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
        if match:
            return int(match.group(1))
    raise RuntimeError("chromium did not start its DevTools server:\n" + "".join(seen[-20:]))
