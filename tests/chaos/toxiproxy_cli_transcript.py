"""toxiproxy-cli command lines, recorded from the real toxiproxy-cli 2.12.0 and replayed on ours.

``STEPS`` runs every command and alias, their output lines (plain and on a terminal, with
colours and hints), their errors and exit codes, flag errors, help requests, hosts given by
``--host``/``-h`` and by ``$TOXIPROXY_URL``, against a fresh Toxiproxy API (input that our
server refuses on purpose, docs/server.md, is left out). Ports are chosen at run time and
written back as placeholders (``{api}``, ``{free0}``, ``{held}``, ``{refused}``).

``toxiproxy_cli_transcript.json`` next to this file is what the real tools printed::

    toxiproxy-server -host 127.0.0.1 -port 18474 &
    python tests/chaos/toxiproxy_cli_transcript.py /path/to/toxiproxy-cli http://127.0.0.1:18474 \\
        > tests/chaos/toxiproxy_cli_transcript.json

Where toxiproxy-cli prints help, ``help`` names the command whose help it is and only what came
before the help (``Incorrect Usage: ...``) is recorded: help texts are each tool's own.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import re
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from toxiproxy_transcript import ports as api_ports

Cli = Callable[[list[str], dict[str, str], bool], tuple[int, str, str]]
"""Runs one command line (argv without the program, environment, on a terminal?) and returns
(exit code, stdout, stderr)."""

FREE_PORTS = 5


def _step(
    *args: str,
    host: bool = True,
    env: dict[str, str] | None = None,
    tty: bool = False,
    help: str | None = None,
    note: str = "",
) -> dict[str, Any]:
    step: dict[str, Any] = {"args": list(args), "host": host, "tty": tty}
    if env is not None:
        step["env"] = env
    if help is not None:
        step["help"] = help
    if note:
        step["note"] = note
    return step


STEPS: list[dict[str, Any]] = [
    _step("list", note="no proxies: nothing printed"),
    _step("list", tty=True),
    # -- create, its aliases and errors --------------------------------------------------------
    _step("create", "-l", "127.0.0.1:{free0}", "-u", "127.0.0.1:{refused}", "redis"),
    _step("c", "-l", "127.0.0.1:{free1}", "-u", "127.0.0.1:{refused}", "redis"),
    _step("new", "-l", "127.0.0.1:{held}", "-u", "x:1", "busy"),
    _step("create", "--listen=local373", "--upstream", "x:1", "bad"),
    _step("create", help="create"),
    _step("create", "x", help="create"),
    _step("create", "-l", "127.0.0.1:{free1}", "x", help="create"),
    _step("create", "x", "-l", "127.0.0.1:{free1}", "-u", "x:1", help="create", note="flags first"),
    _step("create", "-l", "127.0.0.1:{free1}", "-u", "127.0.0.1:{refused}", "--", "-dash"),
    _step("create", "-l", "127.0.0.1:{free2}", "-u", "x:1", "été-è", tty=True),
    _step("create", "-l", "127.0.0.1:{free3}", "-u", "cache.internal:11211", "memcached"),
    _step("create", "-l", "localhost:{free4}", "-u", "x:1", "a-rather-long-proxy-name-here"),
    _step("list", tty=True, note="column widths: names of 1, 5 (8 bytes: été-è), 9 and 29 bytes"),
    _step("delete", "memcached"),
    _step("delete", "a-rather-long-proxy-name-here"),
    # -- list and inspect ----------------------------------------------------------------------
    _step("list"),
    _step("l", tty=True),
    _step("li"),
    _step("ls"),
    _step("inspect", "redis"),
    _step("i", "redis", tty=True),
    _step("ins", "nope"),
    _step("inspect", help="inspect"),
    _step("inspect", "a b"),
    _step("inspect", "a?b"),
    _step("inspect", "a%zz"),
    _step("inspect", "a/b"),
    _step("inspect", "a#b"),
    # -- toxic add -----------------------------------------------------------------------------
    _step("toxic", "add", "-t", "latency", "-a", "latency=100", "-a", "jitter=5", "redis"),
    _step(
        "t",
        "a",
        "-t",
        "latency",
        "-n",
        "l2",
        "-a",
        "latency=1000000,jitter=5",
        "--tox",
        "0.5",
        "-u",
        "redis",
    ),
    _step("toxic", "add", "-type=slicer", "-a", "average_size=10", "-a", "delay=2.5", "redis"),
    _step("toxic", "add", "-t", "slicer", "-a", "average_size=10", "-a", "x", "redis"),
    _step("toxic", "add", "-t", "slicer", "-n", "s2", "-a", "average_size=hi", "redis"),
    _step(
        "toxic",
        "add",
        "-t",
        "bandwidth",
        "-n",
        "bw",
        "--toxicity=0.25",
        "-d",
        "-a",
        "rate=1e3",
        "redis",
    ),
    _step("toxic", "add", "-t", "nope", "redis"),
    _step("toxic", "add", "-t", "latency", "-n", "l2", "redis"),
    _step("toxic", "add", "-t", "latency", "nope"),
    _step("toxic", "add", "-t", "latency", "-u", "-d", "redis"),
    _step("toxic", "add", "-t", "latency", "-u=false", "-d=1", "-n", "l3", "redis"),
    _step("toxic", "add", "-t", "latency", "--tox", "2", "redis"),
    _step("toxic", "add", "-t", "latency", "--tox", "abc", "redis"),
    _step("toxic", "add", "-t", "latency", "--tox", "nan", "redis"),
    _step("toxic", "add", "-t", "latency", "-a", "latency=inf", "redis"),
    _step("toxic", "add", "redis", help="toxic add"),
    _step("toxic", "add", "-t", "latency", help="toxic add"),
    _step("toxic", "add", "-t", "latency", "redis", "-n", "late", note="flags first"),
    _step("inspect", "redis"),
    _step("inspect", "redis", tty=True),
    _step("list"),
    _step("list", tty=True),
    # -- toxic update and remove ---------------------------------------------------------------
    _step("toxic", "update", "-n", "l2", "-a", "latency=7", "redis"),
    _step("t", "u", "-n", "l2", "--tox", "0.3", "-a", "jitter=1", "redis"),
    _step("toxic", "update", "-n", "nope", "redis"),
    _step("toxic", "update", "-n", "l2", "--tox", "-0.5", "redis"),
    _step("toxic", "update", "-n", "l2", "-a", "latency=12", "redis", note="toxicity back to 1"),
    _step("toxic", "update", "redis"),
    _step("toxic", "update", "-n", "l2", help="toxic update"),
    _step("inspect", "redis"),
    _step("toxic", "remove", "-n", "l2", "redis"),
    _step("t", "r", "-n", "l2", "redis"),
    _step("toxic", "delete", "-n", "latency_downstream", "redis"),
    _step("toxic", "d", "-n", "x", "nope"),
    _step("toxic", "remove", "redis"),
    _step("toxic", "remove", help="toxic remove"),
    _step("inspect", "redis", tty=True),
    # -- toggle and delete ---------------------------------------------------------------------
    _step("toggle", "redis"),
    _step("list"),
    _step("tog", "redis", tty=True),
    _step("toggle", "redis", tty=True),
    _step("toggle", "nope"),
    _step("toggle", help="toggle"),
    _step("delete", "--", "-dash"),
    _step("d", "été-è"),
    _step("delete", "nope"),
    _step("delete", help="delete"),
    # -- help, flags, unknown commands ---------------------------------------------------------
    _step(help=""),
    _step("--help", help=""),
    _step("help", help=""),
    _step("h", "create", help="create"),
    _step("help", "bogus"),
    _step("bogus"),
    _step("toxic", help="toxic"),
    _step("t", "help", "add", help="toxic add"),
    _step("toxic", "bogus"),
    _step("list", "--help", help="list"),
    _step("list", "-help", help="list"),
    _step("list", "-h", help="list"),
    _step("list", "--bogus", help="list"),
    _step("list", "extra", "args"),
    _step("toxic", "add", "-u=x", "redis", help="toxic add"),
    _step("toxic", "add", "---x", "redis", help="toxic add"),
    _step("toxic", "add", "-t", help="toxic add"),
    _step("-h", help="", host=False),
    _step("--bogus", "list", help=""),
    # -- where the API is: --host, -h, $TOXIPROXY_URL ------------------------------------------
    _step("list", host=False, env={"TOXIPROXY_URL": "{api}"}),
    _step("list", host=False, env={"TOXIPROXY_URL": "http://127.0.0.1:{refused}"}),
    _step("list", env={"TOXIPROXY_URL": "http://127.0.0.1:{refused}"}, note="the flag wins"),
    _step("list", host=False, env={"TOXIPROXY_URL": ""}),
    _step("--host", "127.0.0.1:{api_port}", "list", host=False, note="no scheme: http://"),
    _step("--host=http://127.0.0.1:{refused}", "ls", host=False),
    _step("-host", "http://[::1]:{refused}", "ls", host=False),
    _step("-h", "http://a b", "list", host=False),
    _step("-h", "http://127.0.0.1:x/", "list", host=False),
    _step("-h", "https://127.0.0.1:{api_port}", "list", host=False),
    _step("-h", "http://127.0.0.1:{refused}", "toxic", "add", "-t", "latency", "p", host=False),
    _step("-h", "{api}/", "list", host=False, note="//proxies: the router's 301, followed"),
    _step("-h", "{api}/", "create", "-l", "127.0.0.1:{free3}", "-u", "x:1", "ghost", host=False),
    _step("list", note="the redirected POST became a GET: no ghost"),
    _step("delete", "redis"),
    _step("list", tty=True),
]


def ports() -> contextlib.AbstractContextManager[dict[str, int]]:
    """``{held}``: a port something listens on; ``{refused}``: bound, not listening (connects are
    refused); ``{free0}``...: ports held (bound, SO_REUSEADDR) for proxies to listen on."""
    return api_ports(FREE_PORTS, refused=True)


def _fill(text: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    return text


def _placeholders(text: str, values: dict[str, str]) -> str:
    text = text.replace(values["api"], "{api}")
    for key in ("held", "refused", *(f"free{i}" for i in range(FREE_PORTS)), "api_port"):
        text = re.sub(rf"(?<![0-9]){values[key]}(?![0-9])", "{" + key + "}", text)
    return text


def command_line(step: dict[str, Any], values: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """The argv (without the program) and the extra environment of *step*."""
    argv = [_fill(arg, values) for arg in step["args"]]
    if step["host"]:
        argv = ["-h", values["api"], *argv]
    env = {key: _fill(value, values) for key, value in step.get("env", {}).items()}
    return argv, env


def run(cli: Cli, api: str) -> list[dict[str, Any]]:
    """Play every step with *cli* against the API at *api*; the steps with what came back."""
    recorded = []
    with ports() as found:
        values = {key: str(port) for key, port in found.items()}
        values["api"] = api
        values["api_port"] = api.rsplit(":", 1)[1]
        for step in STEPS:
            argv, env = command_line(step, values)
            code, out, err = cli(argv, env, step["tty"])
            answer = {
                "exit": code,
                "stdout": _placeholders(out, values),
                "stderr": _placeholders(err, values),
            }
            recorded.append({**step, "answer": answer})
    return recorded


def help_prefix(stdout: str) -> str:
    """What toxiproxy-cli printed before its help (urfave/cli's help starts with ``NAME:``)."""
    index = stdout.find("NAME:\n")
    if index < 0:
        raise ValueError(f"no help in {stdout!r}")
    return stdout[:index]


def run_in_pty(command: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    """Run *command* with stdout on a pseudo-terminal (stderr a pipe); newlines as written."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        command, stdout=follower, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # EIO: the terminal's other side is closed
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    assert process.stderr is not None
    err = process.stderr.read()
    process.stderr.close()
    code = process.wait(30)
    out = b"".join(chunks).decode("utf-8", "surrogateescape").replace("\r\n", "\n")
    return code, out, err.decode("utf-8", "surrogateescape")


def binary_cli(program: list[str]) -> Cli:
    """A :data:`Cli` running *program* (``[path]`` or ``[python, -m, chaos]``) as a process."""

    def cli(argv: list[str], extra: dict[str, str], tty: bool) -> tuple[int, str, str]:
        env = {k: v for k, v in os.environ.items() if k != "TOXIPROXY_URL"}
        env.update(extra)
        if tty:
            return run_in_pty([*program, *argv], env)
        done = subprocess.run([*program, *argv], capture_output=True, env=env, timeout=60)
        out = done.stdout.decode("utf-8", "surrogateescape")
        return done.returncode, out, done.stderr.decode("utf-8", "surrogateescape")

    return cli


def main(binary: str, api: str) -> None:
    recorded = run(binary_cli([binary]), api)
    for step in recorded:
        if "help" in step:
            step["answer"]["stdout_before_help"] = help_prefix(step["answer"].pop("stdout"))
    json.dump(recorded, sys.stdout, indent=1, ensure_ascii=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
