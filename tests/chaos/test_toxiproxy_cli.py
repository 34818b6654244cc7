"""synapse-chaos speaks toxiproxy-cli 2.12.0: every command line of a transcript recorded from the
real toxiproxy-cli (``toxiproxy_cli_transcript.json``) gives the same exit code, stdout and stderr
byte for byte, here against the embedded server.

Before: ``synapse-chaos`` had no ``list``, ``create``, ``toxic add``... at all (an argparse error,
exit 2), so scripts written for toxiproxy-cli could not use it.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from toxiproxy_cli_transcript import STEPS, run, run_in_pty

from chaos import EmbeddedToxiproxy
from chaos.cli import PROG, build_parser, main, version
from chaos.toxicli import Console, wants
from chaos.toxicli import run as run_cli
from chaos.toxicli.goclient import marshal_float64
from chaos.toxicli.gofmt import format_g, go_quote, parse_float64
from chaos.toxicli.table import COMMANDS, command_help

TRANSCRIPT = Path(__file__).with_name("toxiproxy_cli_transcript.json")


def in_process(argv: list[str], env: dict[str, str], tty: bool) -> tuple[int, str, str]:
    """Run a command line through chaos.toxicli in this process (real sockets, real server)."""
    out, err = io.StringIO(), io.StringIO()
    code = run_cli(
        argv,
        Console(out, err, tty=tty),
        env=env,
        prog=PROG,
        version=version(),
        app_help=build_parser().format_help,
    )
    return code, out.getvalue(), err.getvalue()


def help_text(words: str) -> str:
    """Our help for the command *words* (``"toxic add"``); the top-level help for ``""``."""
    if not words:
        return build_parser().format_help()
    path = []
    choices = COMMANDS
    for word in words.split():
        command = next(c for c in choices if word in c.names)
        path.append(command)
        choices = command.subcommands
    return command_help(PROG, tuple(path))


def differences(step: dict[str, Any], real: dict[str, Any], ours: dict[str, Any]) -> list[str]:
    """How our answer to *step* differs from toxiproxy-cli's (our name written as its name)."""
    found = []
    if real["exit"] != ours["exit"]:
        found.append(f"exit code: toxiproxy-cli {real['exit']}, ours {ours['exit']}")
    for stream in ("stdout", "stderr"):
        expected = real.get(stream)
        if stream == "stdout" and "help" in step:
            expected = real["stdout_before_help"] + help_text(step["help"])
            got = ours[stream]
        else:
            got = ours[stream].replace(PROG, "toxiproxy-cli")
        if expected != got:
            found.append(
                f"{stream}:\n      toxiproxy-cli {expected!r}\n      ours          {got!r}"
            )
    return found


def test_the_script_is_the_one_recorded() -> None:
    recorded = json.loads(TRANSCRIPT.read_text(encoding="utf-8"))
    assert [{k: v for k, v in s.items() if k != "answer"} for s in recorded] == STEPS


def test_every_command_line_matches_toxiproxy_cli_2_12() -> None:
    recorded = json.loads(TRANSCRIPT.read_text(encoding="utf-8"))
    with EmbeddedToxiproxy(seed=1) as server:
        answers = run(in_process, server.url)
    report = []
    for number, (real, ours) in enumerate(zip(recorded, answers, strict=True)):
        found = differences(real, real["answer"], ours["answer"])
        if found:
            line = " ".join(real["args"])
            report.append(f"step {number}: {line}\n    " + "\n    ".join(found))
    assert not report, f"{len(report)} command lines differ from toxiproxy-cli:\n" + "\n".join(
        report
    )


@pytest.mark.parametrize(
    ("real", "ours", "expected"),
    [
        (
            {"exit": 1, "stdout": "", "stderr": "x\n"},
            {"exit": 0, "stdout": "", "stderr": "x\n"},
            "exit code",
        ),
        (
            {"exit": 0, "stdout": "a\tb\n", "stderr": ""},
            {"exit": 0, "stdout": "a b\n", "stderr": ""},
            "stdout",
        ),
    ],
)
def test_a_difference_is_reported(
    real: dict[str, Any], ours: dict[str, Any], expected: str
) -> None:
    assert differences({}, real, ours)[0].startswith(expected)


# -- the synapse-chaos program itself: routing, terminal detection, exit codes ----------------

PROGRAM = [sys.executable, "-m", "chaos"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TOXIPROXY_URL"}
    return {**env, **extra}


def test_on_a_terminal_the_program_colours_its_output() -> None:
    """stdout on a real pseudo-terminal: colours and hints, as toxiproxy-cli; a pipe: none."""
    with EmbeddedToxiproxy() as server:
        server.client().create_proxy("redis", upstream="127.0.0.1:1")
        code, out, err = run_in_pty([*PROGRAM, "-h", server.url, "ls"], _env())
        piped = subprocess.run(
            [*PROGRAM, "ls"], capture_output=True, text=True, env=_env(TOXIPROXY_URL=server.url)
        )
    assert (code, err) == (0, "")
    assert out.startswith("\x1b[32mName\t\t\t\x1b[34mListen")
    assert "\x1b[32mredis\x1b[0m\t\t\t" in out
    assert out.endswith("Hint: inspect toxics with `synapse-chaos inspect <proxyName>`\n")
    assert piped.returncode == 0
    assert re.fullmatch(r"redis\t127\.0\.0\.1:\d+\t127\.0\.0\.1:1\tenabled\t0\n", piped.stdout)


def test_exit_codes_reach_the_shell() -> None:
    with EmbeddedToxiproxy() as server:
        missing = subprocess.run(
            [*PROGRAM, "-h", server.url, "inspect", "nope"],
            capture_output=True,
            text=True,
            env=_env(),
        )
        unknown = subprocess.run(
            [*PROGRAM, "--host", server.url, "bogus"], capture_output=True, text=True, env=_env()
        )
    assert (missing.returncode, missing.stdout) == (1, "")
    assert missing.stderr == "Failed to retrieve proxy nope: HTTP 404: proxy not found\n\n"
    assert (unknown.returncode, unknown.stderr) == (3, "No help topic for 'bogus'\n")


def test_synapse_chaos_own_commands_and_help_are_unchanged() -> None:
    """``-h`` is the host flag of toxiproxy-cli's commands, but ``--help``, a lone ``-h`` and the
    subcommands serve/run/scenarios keep working as before."""
    for argv in (["--help"], ["-h"], ["serve", "--help"], ["scenarios", "-h"]):
        out, err = io.StringIO(), io.StringIO()
        with (
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
            pytest.raises(SystemExit) as stop,
        ):
            main(argv)
        assert stop.value.code == 0, argv
        assert out.getvalue().startswith("usage: synapse-chaos"), argv
    assert "list, l, li, ls" in build_parser().format_help()
    assert wants(["-h", "http://x:1", "list"])
    assert wants(["toxic", "add", "-t", "latency", "p"])
    assert wants(["-v"])
    assert not wants(["serve", "--port", "0"])
    assert not wants(["-h"])
    assert wants(["--bogus", "list"])
    assert not wants(["--bogus", "serve"])
    assert not wants(["run", "partition-heal", "--proxy", "list=127.0.0.1:1"])


def test_version_names_our_program(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"synapse-chaos version {version()}\n"
    assert main(["-v", "list"]) == 0
    assert capsys.readouterr().out.startswith("synapse-chaos version ")


# -- Go's formatting, as the real tool prints and sends values ---------------------------------
# Expected texts were printed by Go 1.19 (fmt %v, encoding/json, strconv.Quote, ParseFloat).


@pytest.mark.parametrize(
    ("value", "printed", "marshalled"),
    [
        (100.0, "100", "100"),
        (0.5, "0.5", "0.5"),
        (1e6, "1e+06", "1000000"),
        (123456.0, "123456", "123456"),
        (1234567.0, "1.234567e+06", "1234567"),
        (1e21, "1e+21", "1e+21"),
        (1e20, "1e+20", "100000000000000000000"),
        (0.0001, "0.0001", "0.0001"),
        (0.00001, "1e-05", "0.00001"),
        (1.5e-7, "1.5e-07", "1.5e-7"),
        (-3.25, "-3.25", "-3.25"),
        (12345678901234567890.0, "1.2345678901234567e+19", "12345678901234567000"),
        (5e-324, "5e-324", "5e-324"),
        (999999.5, "999999.5", "999999.5"),
    ],
)
def test_numbers_as_go_prints_and_sends_them(value: float, printed: str, marshalled: str) -> None:
    """inspect prints attributes with %v (1e+06); toxic add sends them as json.Marshal does."""
    assert format_g(value) == printed
    assert marshal_float64(value) == marshalled


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("1", 1.0),
        ("1.", 1.0),
        (".5", 0.5),
        ("1e5", 100000.0),
        ("0x1p-2", 0.25),
        ("0x1.8p1", 3.0),
        ("+.5e-3", 0.0005),
        ("1_000", 1000.0),
        ("inf", math.inf),
        ("-Infinity", -math.inf),
        (" 1", None),
        ("1e400", None),
        ("abc", None),
        ("", None),
        ("1e", None),
        ("0x10", None),
        ("1__0", None),
    ],
)
def test_attribute_values_go_reads_as_numbers(text: str, number: float | None) -> None:
    """``-a k=v``: a value strconv.ParseFloat accepts is sent as a number, else as a string."""
    assert parse_float64(text) == number


def test_quoting_as_go() -> None:
    assert go_quote('a "b" \\ é \x01 \u2028 \udcff') == '"a \\"b\\" \\\\ é \\x01 \\u2028 \\xff"'
    assert go_quote("tab\there\u00ad") == '"tab\\there\\u00ad"'
