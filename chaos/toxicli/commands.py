"""toxiproxy-cli 2.12.0's commands: what each asks the API and prints, byte for byte.

Output lines, their order, tabs, colours (on a terminal only), hints and error texts are the
real tool's, so scripts that read them work unchanged; where the real tool prints its program
name (hints, help) ours names ``synapse-chaos``. Errors end with the newline(s) the real tool
prints (several of its messages carry their own newline, so they are followed by a blank line).
"""

from __future__ import annotations

import dataclasses
import math
import struct
from collections.abc import Callable

from chaos.toxicli.console import BLUE, GREEN, NONE, PURPLE, RED, YELLOW, Console, Exit
from chaos.toxicli.goclient import Client, GoError, Proxy, Toxic
from chaos.toxicli.goflags import Parsed
from chaos.toxicli.gofmt import go_value, parse_float64


@dataclasses.dataclass(slots=True)
class Context:
    """What a command runs with: its parsed flags, the console, the API client."""

    console: Console
    parsed: Parsed
    client: Client
    prog: str
    show_help: Callable[[], None]

    def first_arg(self) -> str:
        return self.parsed.args[0] if self.parsed.args else ""

    def required(self, name: str) -> str:
        value = self.parsed.string(name)
        if value == "":
            self.show_help()
            raise Exit(f"Required argument '{name}' was empty.\n")
        return value

    def proxy_name(self, missing: str = "Proxy name is required as the first argument.\n") -> str:
        name = self.first_arg()
        if name == "":
            self.show_help()
            raise Exit(missing)
        return name

    def fetch_proxy(self, name: str) -> Proxy:
        """Proxy *name* as the server has it (the Go client's ``Proxy(name)``); a failure is
        the exit toxiproxy-cli makes."""
        try:
            return self.client.proxy(name)
        except GoError as exc:
            raise Exit(f"Failed to retrieve proxy {name}: {exc}\n") from None


def _enabled_color(console: Console, enabled: bool) -> str:
    return console.color(GREEN if enabled else RED)


def _enabled_text(enabled: bool) -> str:
    return "enabled" if enabled else "disabled"


def _print_width(console: Console, color: str, text: str, tabs: int) -> None:
    if console.tty:
        tabs = max(0, tabs - (len(text.encode("utf-8", "surrogateescape")) // 8 + 1))
    else:
        tabs = 0
    console.write(f"{console.color(color)}{text}{console.color(NONE)}\t{chr(9) * tabs}")


def list_proxies(ctx: Context) -> None:
    """``list``: one line per proxy, sorted by name (name, listen, upstream, state, toxics)."""
    c = ctx.console
    try:
        proxies = ctx.client.proxies()
    except GoError as exc:
        raise Exit(f"Failed to retrieve proxies: {exc}") from None
    names = sorted(proxies, key=lambda name: name.encode("utf-8", "surrogateescape"))
    if c.tty:
        c.write(
            f"{c.color(GREEN)}Name\t\t\t{c.color(BLUE)}Listen\t\t{c.color(YELLOW)}Upstream\t\t"
            f"{c.color(PURPLE)}Enabled\t\t{c.color(RED)}Toxics\n{c.color(NONE)}"
        )
        c.write(f"{c.color(NONE)}{'=' * 86}\n")
        if not names:
            c.write(f"{c.color(RED)}no proxies\n{c.color(NONE)}")
            c.hint(f"create a proxy with `{ctx.prog} create`")
            return
    for name in names:
        proxy = proxies[name]
        count = str(len(proxy.toxics or []))
        if count == "0" and c.tty:
            count = "None"
        _print_width(c, _enabled_color(c, proxy.enabled), proxy.name, 3)
        _print_width(c, BLUE, proxy.listen, 2)
        _print_width(c, YELLOW, proxy.upstream, 3)
        _print_width(c, PURPLE, _enabled_text(proxy.enabled), 2)
        c.write(f"{c.color(RED)}{count}{c.color(NONE)}\n")
    c.hint(f"inspect toxics with `{ctx.prog} inspect <proxyName>`")


def _list_toxics(c: Console, toxics: list[Toxic], stream: str) -> None:
    if c.tty:
        c.write(f"{c.color(GREEN)}{stream} toxics:\n{c.color(NONE)}")
        if not toxics:
            c.write(f"{c.color(RED)}Proxy has no {stream} toxics enabled.\n{c.color(NONE)}")
            return
    for toxic in toxics:
        if c.tty:
            c.write(f"{c.color(BLUE)}{toxic.name}:{c.color(NONE)}\t")
        else:
            c.write(f"{toxic.name}\t")
        c.write(f"type={toxic.type}\tstream={toxic.stream}\ttoxicity={toxic.toxicity:.2f}\t")
        c.write("attributes=[")
        attributes = toxic.attributes or {}
        for key in sorted(attributes, key=lambda k: k.encode("utf-8", "surrogateescape")):
            c.write(f"\t{key}={go_value(attributes[key])}")
        c.write("\t]\n")


def inspect_proxy(ctx: Context) -> None:
    """``inspect NAME``: the proxy's toxics, one line each (on a terminal: by direction)."""
    c = ctx.console
    name = ctx.proxy_name()
    proxy = ctx.fetch_proxy(name)
    toxics = proxy.toxics or []
    if not c.tty:
        _list_toxics(c, toxics, "")
        return
    c.write(f"{c.color(PURPLE)}Name: {c.color(NONE)}{proxy.name}\t")
    c.write(f"{c.color(BLUE)}Listen: {c.color(NONE)}{proxy.listen}\t")
    c.write(f"{c.color(YELLOW)}Upstream: {c.color(NONE)}{proxy.upstream}\n")
    c.write(f"{c.color(NONE)}{'=' * 70}\n")
    if not toxics:
        c.write(f"{c.color(RED)}Proxy has no toxics enabled.\n{c.color(NONE)}")
    else:
        _list_toxics(c, [t for t in toxics if t.stream == "upstream"], "Upstream")
        c.write("\n")
        _list_toxics(c, [t for t in toxics if t.stream != "upstream"], "Downstream")
    c.hint(f"add a toxic with `{ctx.prog} toxic add`")


def toggle_proxy(ctx: Context) -> None:
    """``toggle NAME``: enable a disabled proxy, disable an enabled one."""
    c = ctx.console
    name = ctx.proxy_name()
    proxy = ctx.fetch_proxy(name)
    proxy.enabled = not proxy.enabled
    try:
        proxy = ctx.client.save(proxy, created=True)
    except GoError as exc:
        raise Exit(f"Failed to toggle proxy {name}: {exc}\n") from None
    color = _enabled_color(c, proxy.enabled)
    none = c.color(NONE)
    c.write(f"Proxy {color}{name}{none} is now {color}{_enabled_text(proxy.enabled)}{none}\n")


def create_proxy(ctx: Context) -> None:
    """``create -l ADDR -u ADDR NAME``."""
    name = ctx.proxy_name()
    listen = ctx.required("listen")
    upstream = ctx.required("upstream")
    try:
        ctx.client.create_proxy(name, listen, upstream)
    except GoError as exc:
        raise Exit(f"Failed to create proxy: {exc}\n") from None
    ctx.console.write(f"Created new proxy {name}\n")


def delete_proxy(ctx: Context) -> None:
    """``delete NAME``."""
    name = ctx.proxy_name()
    proxy = ctx.fetch_proxy(name)
    try:
        ctx.client.delete_proxy(proxy.name)
    except GoError as exc:
        raise Exit(f"Failed to delete proxy: {exc}\n") from None
    ctx.console.write(f"Deleted proxy {name}\n")


def _toxicity(ctx: Context) -> float:
    """``--toxicity``: a float32 from 0 to 1 (default 1)."""
    text = ctx.parsed.string("toxicity")
    if text == "":
        return 1.0
    value = parse_float64(text)
    if value is not None and not math.isnan(value):
        try:
            value = float(struct.unpack("f", struct.pack("f", value))[0])
        except OverflowError:
            value = None  # beyond float32: ParseFloat(s, 32) fails
    if value is None or value > 1 or value < 0:
        raise Exit("toxicity should be a float between 0 and 1.\n")
    return value


def _attributes(ctx: Context) -> dict[str, object]:
    """``-a key=value`` pairs; a value Go reads as a float is sent as a number."""
    parsed: dict[str, object] = {}
    for raw in ctx.parsed.strings("attribute"):
        key, equals, value = raw.partition("=")
        if not equals:
            continue
        number = parse_float64(value)  # inf and nan too: Go then fails to encode them
        parsed[key] = value if number is None else number
    return parsed


def add_toxic(ctx: Context) -> None:
    """``toxic add -t TYPE [-n NAME] [-a k=v]... [--tox F] [-u|-d] PROXY``."""
    proxy = ctx.proxy_name("Proxy name is missing.\n")
    name = ctx.parsed.string("toxicName")
    kind = ctx.required("type")
    upstream, downstream = ctx.parsed.flag("upstream"), ctx.parsed.flag("downstream")
    if upstream and downstream:
        raise Exit("Only one should be specified: upstream or downstream.\n")
    stream = "upstream" if upstream else "downstream"
    toxicity = _toxicity(ctx)
    attributes = _attributes(ctx)
    try:
        toxic = ctx.client.add_toxic(proxy, Toxic(name, kind, stream, toxicity, attributes))
    except GoError as exc:
        raise Exit(f"Failed to add toxic: {exc}\n") from None
    ctx.console.write(
        f"Added {toxic.stream} {toxic.type} toxic '{toxic.name}' on proxy '{proxy}'\n"
    )


def update_toxic(ctx: Context) -> None:
    """``toxic update -n NAME [-a k=v]... [--tox F] PROXY`` (toxicity back to 1 unless given)."""
    proxy = ctx.proxy_name("Proxy name is missing.\n")
    name = ctx.parsed.string("toxicName")
    toxicity = _toxicity(ctx)
    attributes = _attributes(ctx)
    try:
        toxic = ctx.client.update_toxic(proxy, name, toxicity, attributes)
    except GoError as exc:
        raise Exit(f"Failed to update toxic: {exc}\n") from None
    ctx.console.write(f"Updated toxic '{toxic.name}' on proxy '{proxy}'\n")


def remove_toxic(ctx: Context) -> None:
    """``toxic remove -n NAME PROXY``."""
    proxy = ctx.proxy_name("Proxy name is missing.\n")
    name = ctx.parsed.string("toxicName")
    try:
        ctx.client.remove_toxic(proxy, name)
    except GoError as exc:
        raise Exit(f"Failed to remove toxic: {exc}\n") from None
    ctx.console.write(f"Removed toxic '{name}' on proxy '{proxy}'\n")


__all__ = [
    "Context",
    "Proxy",
    "add_toxic",
    "create_proxy",
    "delete_proxy",
    "inspect_proxy",
    "list_proxies",
    "remove_toxic",
    "toggle_proxy",
    "update_toxic",
]
