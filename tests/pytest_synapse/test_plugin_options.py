"""Options (command line > env > ini > default), the header, skipping and marker validation."""

from __future__ import annotations

import re

import pytest

CHAOS_TEST = """
import pytest

@pytest.mark.chaos
def test_chaos():
    pass

def test_plain():
    pass
"""


def test_chaos_tests_are_skipped_without_the_flag(synapse_pytester: pytest.Pytester) -> None:
    synapse_pytester.makepyfile(CHAOS_TEST)
    result = synapse_pytester.runpytest("-rs")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*--synapse-chaos*SYNAPSE_CHAOS=1*"])


@pytest.mark.parametrize(
    ("args", "env", "ini", "runs"),
    [
        (["--synapse-chaos"], None, None, True),
        ([], "1", None, True),
        ([], "0", "true", False),  # env beats ini
        ([], None, "true", True),
        ([], None, None, False),
    ],
)
def test_chaos_flag_precedence(
    synapse_pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    env: str | None,
    ini: str | None,
    runs: bool,
) -> None:
    if env is not None:
        monkeypatch.setenv("SYNAPSE_CHAOS", env)
    if ini is not None:
        synapse_pytester.makeini(
            f"[pytest]\nasyncio_default_fixture_loop_scope = function\nsynapse_chaos = {ini}\n"
        )
    synapse_pytester.makepyfile(CHAOS_TEST)
    result = synapse_pytester.runpytest(*args)
    result.assert_outcomes(passed=2 if runs else 1, skipped=0 if runs else 1)


def test_header_names_each_value_and_its_source(
    synapse_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SYNAPSE_SEED", "7")
    monkeypatch.setenv("SYNAPSE_GATES", "all_recovered; max_trip_seconds<=3")
    synapse_pytester.makepyfile("def test_ok(): pass")
    result = synapse_pytester.runpytest("--synapse-toxiproxy=http://127.0.0.1:9")
    result.stdout.fnmatch_lines(
        [
            "synapse: chaos=False (default), "
            "toxiproxy=http://127.0.0.1:9 (command line --synapse-toxiproxy), "
            "report=None (default), html=None (default), "
            "gates=all_recovered; max_trip_seconds<=3 (env SYNAPSE_GATES), "
            "watch_breakers=False (default), seed=7 (env SYNAPSE_SEED)"
        ]
    )


def test_bad_values_are_usage_errors_naming_the_source(
    synapse_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    synapse_pytester.makepyfile("def test_ok(): pass")
    monkeypatch.setenv("SYNAPSE_SEED", "abc")
    result = synapse_pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*synapse: env SYNAPSE_SEED: expected an integer, got 'abc'*"])
    assert "Traceback" not in result.stderr.str()
    monkeypatch.delenv("SYNAPSE_SEED")
    monkeypatch.setenv("SYNAPSE_CHAOS", "maybe")
    result = synapse_pytester.runpytest()
    result.stderr.fnmatch_lines(["*env SYNAPSE_CHAOS: expected a boolean*"])


def test_report_path_is_relative_to_the_start_directory(
    synapse_pytester: pytest.Pytester,
) -> None:
    synapse_pytester.makepyfile(
        """
        def test_breaker(circuit_breaker):
            circuit_breaker("db").force_open()
            circuit_breaker("db").force_close()
        """
    )
    sub = synapse_pytester.mkdir("sub")
    result = synapse_pytester.runpytest("--synapse-report=out/r.json", "--rootdir", str(sub))
    result.assert_outcomes(passed=1)
    assert (synapse_pytester.path / "out" / "r.json").is_file()


@pytest.mark.parametrize(
    ("marker", "message"),
    [
        ("@pytest.mark.chaos(scenari='x')", "unknown argument(s) scenari"),
        ("@pytest.mark.chaos(scenario=42)", "scenario must be a library name"),
        ("@pytest.mark.chaos('a', 'b')", "at most one positional argument"),
        ("@pytest.mark.chaos(proxies=['x'])", "proxies= maps each proxy name of the scenario"),
        (
            "@pytest.mark.chaos(proxies={'db': 'db'})",
            "'db': 'db' is not an upstream address (expected 'host:port', e.g. "
            "db='127.0.0.1:6379'; to use a proxy that already exists, pass its chaos.Proxy)",
        ),
    ],
)
def test_chaos_marker_arguments_are_validated(
    synapse_pytester: pytest.Pytester, marker: str, message: str
) -> None:
    """A bad marker is one collection error naming the marker, test and reason."""
    synapse_pytester.makepyfile(f"import pytest\n\n{marker}\ndef test_x():\n    pass\n")
    result = synapse_pytester.runpytest("--synapse-gate=all_recovered")
    assert result.ret == pytest.ExitCode.INTERRUPTED  # pytest's status for collection errors
    result.stdout.fnmatch_lines(["*ERROR collecting*", f"@pytest.mark.chaos on test_*{message}*"])
    assert "see --synapse-chaos" not in result.stdout.str()  # not blamed on a missing flag


def test_a_bad_marker_is_the_same_collection_error_under_xdist(
    synapse_pytester: pytest.Pytester,
) -> None:
    """Under ``-n 2`` a bad marker gave ~45 INTERNALERROR lines ending in an assertion about
    the test id, never the reason, with exit status 3."""
    synapse_pytester.makepyfile(
        "import pytest\n\n@pytest.mark.chaos(proxies=['db'])\ndef test_x():\n    pass\n"
    )
    result = synapse_pytester.runpytest("-n", "2", "--synapse-chaos")
    assert result.ret == pytest.ExitCode.TESTS_FAILED  # xdist's status for collection errors
    out = result.stdout.str()
    assert "INTERNALERROR" not in out + result.stderr.str()
    result.stdout.fnmatch_lines(
        ["*ERROR collecting*", "@pytest.mark.chaos on test_*proxies= maps each proxy name*"]
    )


def test_markers_are_registered_with_signatures(synapse_pytester: pytest.Pytester) -> None:
    result = synapse_pytester.runpytest("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.chaos(scenario=None, proxies=None, reason=None)*"])


def test_importing_the_plugin_is_cheap() -> None:
    import subprocess
    import sys

    code = (
        "import sys, pytest_synapse.plugin; "
        "heavy = [m for m in ('chaos', 'aiohttp', 'hypothesis', 'zeroconf', 'docker') "
        "if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


def test_bad_toxiproxy_spec_is_a_usage_error(synapse_pytester: pytest.Pytester) -> None:
    synapse_pytester.makepyfile("def test_ok(): pass")
    result = synapse_pytester.runpytest("--synapse-toxiproxy=localhost:8474")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*command line --synapse-toxiproxy: expected 'embedded', 'docker' or the URL*"]
    )


def test_unreachable_toxiproxy_errors_without_a_traceback(
    synapse_pytester: pytest.Pytester,
) -> None:
    synapse_pytester.makepyfile(
        """
        def test_a(toxiproxy):
            pass

        def test_b(chaos_proxy):
            pass
        """
    )
    # Port 9 on loopback: nothing listens there.
    result = synapse_pytester.runpytest("--synapse-toxiproxy=http://127.0.0.1:9")
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(["*synapse: command line --synapse-toxiproxy:*127.0.0.1:9*"])
    assert "Traceback" not in result.stdout.str()


GATED_INI = """
[pytest]
asyncio_default_fixture_loop_scope = function
synapse_gates =
    trips >= 1
"""


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--synapse-gate="], None, "command line --synapse-gate: gate 1 of 1 is empty"),
        (["--synapse-gate", "  "], None, "command line --synapse-gate: gate 1 of 1 is empty"),
        (
            ["--synapse-gate=all_recovered", "--synapse-gate="],
            None,
            "command line --synapse-gate: gate 2 of 2 is empty",
        ),
        ([], ";", "env SYNAPSE_GATES: gate 1 of 2 in ';' is empty"),
        ([], "all_recovered; ", "env SYNAPSE_GATES: gate 2 of 2 in 'all_recovered; ' is empty"),
    ],
)
def test_an_empty_gate_is_a_usage_error_naming_its_source(
    synapse_pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    env: str | None,
    message: str,
) -> None:
    """An empty gate used to replace the env and ini gates with nothing: the job went green
    (``--synapse-gate "$GATE"`` with GATE unset turned every gate off)."""
    if env is not None:
        monkeypatch.setenv("SYNAPSE_GATES", env)
    synapse_pytester.makeini(GATED_INI)
    synapse_pytester.makepyfile("def test_ok(): pass")
    result = synapse_pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*synapse: {message}*"])
    assert "Traceback" not in result.stderr.str()


def test_an_unset_gate_variable_leaves_the_ini_gates_in_force(
    synapse_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A source replaces a lower one only when it holds a gate: ``SYNAPSE_GATES=`` is unset."""
    monkeypatch.setenv("SYNAPSE_GATES", "")
    synapse_pytester.makeini(GATED_INI)
    synapse_pytester.makepyfile("def test_ok(): pass")
    result = synapse_pytester.runpytest()
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["gate FAIL: trips >= 1  -> 0 violates >= 1"])


@pytest.mark.parametrize("limit", ["\u0665", "\uff15", "1\u0660"])
def test_gate_numbers_are_ascii(synapse_pytester: pytest.Pytester, limit: str) -> None:
    """An Arabic-Indic (U+0665) or full-width (U+FF15) five used to be read as the number 5."""
    synapse_pytester.makepyfile("def test_ok(): pass")
    result = synapse_pytester.runpytest(f"--synapse-gate=trips<={limit}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*malformed gate*write numbers with the ASCII digits 0-9*"])


def test_seed_is_ascii_digits_only(
    synapse_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SYNAPSE_SEED", "\u0665")
    synapse_pytester.makepyfile("def test_ok(): pass")
    result = synapse_pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*env SYNAPSE_SEED: expected an integer*"])


@pytest.mark.parametrize(
    ("var", "value"),
    [("SYNAPSE_GATES", "bogus"), ("SYNAPSE_GATES", ";"), ("SYNAPSE_SEED", "x")],
)
def test_help_works_whatever_the_settings(
    synapse_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, var: str, value: str
) -> None:
    """A bad SYNAPSE_GATES made ``pytest --help`` exit 4 without showing the help."""
    monkeypatch.setenv(var, value)
    result = synapse_pytester.runpytest("--help")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*--synapse-gate=EXPR*"])


def test_chaos_marker_settings_merge_across_levels(synapse_pytester: pytest.Pytester) -> None:
    synapse_pytester.makepyfile(
        """
        import pytest

        pytestmark = pytest.mark.chaos(scenario="partition-heal")

        @pytest.mark.chaos(reason="slow network")
        def test_marked(chaos_scenario):
            with pytest.raises(Exception, match="no proxy given for 'service'"):
                chaos_scenario()   # the module's scenario reached the fixture
        """
    )
    result = synapse_pytester.runpytest("-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*slow network: chaos test: run with --synapse-chaos*"])
    synapse_pytester.runpytest("--synapse-chaos").assert_outcomes(passed=1)


def test_no_flag_beats_the_environment(
    synapse_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SYNAPSE_CHAOS", "1")
    monkeypatch.setenv("SYNAPSE_REPORT", "")  # empty counts as unset
    synapse_pytester.makepyfile("import pytest\n\n@pytest.mark.chaos\ndef test_x():\n    pass\n")
    synapse_pytester.runpytest("--no-synapse-chaos").assert_outcomes(skipped=1)
    synapse_pytester.runpytest().assert_outcomes(passed=1)
    monkeypatch.setenv("SYNAPSE_SEED", "nope")
    assert synapse_pytester.runpytest("--help").ret == 0  # help works despite a bad env var


def test_ini_booleans_are_validated_with_the_key(synapse_pytester: pytest.Pytester) -> None:
    synapse_pytester.makeini("[pytest]\nsynapse_chaos = maybe\n")
    synapse_pytester.makepyfile("def test_x(): pass")
    result = synapse_pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*ini synapse_chaos: expected a boolean*"])


def test_an_unreachable_server_is_reported_once_without_a_traceback(
    synapse_pytester: pytest.Pytester,
) -> None:
    synapse_pytester.makepyfile("def test_x(toxiproxy):\n    pass\n")
    result = synapse_pytester.runpytest("--synapse-toxiproxy=http://127.0.0.1:1")
    result.assert_outcomes(errors=1)
    out = result.stdout.str()
    assert "During handling of the above exception" not in out
    assert out.count("http://127.0.0.1:1") >= 1
    assert "Traceback" not in out


def test_the_plugin_registers_each_fixture_its_session_module_names(
    synapse_pytester: pytest.Pytester,
) -> None:
    """The fixture modules are plugins of their own (the plugin used to import every fixture by
    name, and the fixtures imported the plugin back); session.SYNAPSE_FIXTURES, the one list of
    fixtures that make a test recorded, names each of them but the session's Docker network."""
    from pytest_synapse.session import SYNAPSE_FIXTURES

    synapse_pytester.makepyfile("def test_x(): pass")
    result = synapse_pytester.runpytest("--fixtures", "-v")
    registered = set(
        re.findall(
            r"^(\w+)(?: \[\w+ scope\])? -- \S*pytest_synapse/\w*fixtures\.py:\d+$",
            result.stdout.str(),
            re.MULTILINE,
        )
    )
    assert registered == SYNAPSE_FIXTURES | {"docker_network"}
