"""The live dashboard page: one self-contained HTML file (no CDN, no build step).

The page reads nothing but its own origin's ``events`` stream (relative to where it is served),
so it works mounted under any prefix. Its Content-Security-Policy allows exactly its own inline
script and style (by hash) and connections to its own origin: nothing external can load.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
from importlib import resources

_TEMPLATE = resources.files("synapse_core.health").joinpath("dashboard.html")


def _hash(source: str) -> str:
    digest = hashlib.sha256(source.encode()).digest()
    return f"'sha256-{base64.b64encode(digest).decode()}'"


class DashboardPage:
    """The page with *title*, as bytes, and the headers that must go with it."""

    def __init__(self, title: str) -> None:
        if not isinstance(title, str) or not title:
            raise TypeError(f"title must be a non-empty str, got {title!r}")
        text = _TEMPLATE.read_text(encoding="utf-8").replace("{{TITLE}}", html.escape(title))
        scripts = re.findall(r"<script>(.*?)</script>", text, flags=re.S)
        styles = re.findall(r"<style>(.*?)</style>", text, flags=re.S)
        policy = "; ".join(
            (
                "default-src 'none'",
                "script-src " + " ".join(_hash(s) for s in scripts),
                "style-src " + " ".join(_hash(s) for s in styles),
                "connect-src 'self'",
                "img-src data:",
                "base-uri 'none'",
                "form-action 'none'",
                "frame-ancestors 'none'",
            )
        )
        self.html = text.encode("utf-8")
        self.security_headers = [
            ("Content-Security-Policy", policy),
            ("Referrer-Policy", "no-referrer"),
        ]
