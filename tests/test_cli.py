"""The `resilient-runpod` command's conventions: usage errors, entry points, output, exit codes.

Every test runs the command as a real subprocess, as a person or a script would.
"""

from __future__ import annotations

import json
import os
import pty
from pathlib import Path

import httpx
import pytest

from resilient_runpod.cli._common import use_color

from .conftest import person_env
from .helpers import run_cli, run_cli_batch
from .test_emulator import cli_emulator


def cli(*args: str, env: dict[str, str], cwd: Path | None = None, module: str = "") -> tuple:
    """Run the command; return (exit code, stdout, stderr)."""
    done = run_cli(*args, env=env, cwd=cwd, python=("-m", module or "resilient_runpod.cli"))
    return done.returncode, done.stdout, done.stderr


def test_unknown_top_level_flag_is_named(child_env):
    """`resilient-runpod --bogus` names `--bogus` (not "a COMMAND is required"), exit 2."""
    code, out, err = cli("--bogus", env=child_env)

    assert (2, "") == (code, out)
    assert err.startswith("usage: resilient-runpod [-h]")
    assert "unrecognized arguments: --bogus" in err


COMMANDS = ("doctor", "login", "demo", "emulator")
EXIT_CODES = [
    (("doctor", "--offline"), 1),  # a problem found: no key
    (("doctor", "--api-url", "localhost:8000"), 2),  # usage: no scheme
    (("login", "--stdin", "--no-validate"), 1),  # not saved: the empty stdin is no key
    (("login",), 2),  # nobody to ask: no terminal
    (("demo", "--jobs", "0"), 2),
    (("emulator", "--port", "x"), 2),
]


@pytest.fixture(scope="module")
def batch(tmp_path_factory) -> dict[tuple[str, ...], tuple[int, str, str]]:
    """Every argument list below, run in one real subprocess from a person's shell."""
    argvs = [
        *((command, "--bogus") for command in COMMANDS),
        *((command, "--help") for command in COMMANDS),
        *(args for args, _ in EXIT_CODES),
    ]
    return run_cli_batch(argvs, env=person_env(tmp_path_factory.mktemp("home")))


@pytest.mark.parametrize("command", COMMANDS)
def test_unknown_subcommand_flag_prints_that_commands_usage(batch, command):
    """`doctor --bogus` prints doctor's usage and names the flag, exit 2."""
    code, out, err = batch[command, "--bogus"]

    assert (2, "") == (code, out)
    assert err.startswith(f"usage: resilient-runpod {command} ")
    assert "unrecognized arguments: --bogus" in err


def test_no_command_is_a_usage_error(child_env):
    """With no command: exit 2 and the commands to choose from."""
    code, _, err = cli(env=child_env)

    assert 2 == code
    assert "choose a command: demo, doctor, emulator or login" in err


def test_python_m_resilient_runpod_is_the_command(child_env):
    """`python -m resilient_runpod` runs the same CLI (here: doctor --offline --json)."""
    code, out, _ = cli("doctor", "--offline", "--json", env=child_env, module="resilient_runpod")

    assert 1 == code  # no key anywhere
    assert ["no-key"] == [f["code"] for f in json.loads(out)["findings"]]


@pytest.mark.parametrize(("args", "expected"), EXIT_CODES)
def test_exit_codes_are_as_documented(batch, args, expected):
    """0 ok, 1 a problem found or not done, 2 usage error: as each command's --help says."""
    code, _, _ = batch[args]

    assert expected == code


def test_every_command_documents_its_exit_codes(batch):
    """Each command's --help states its exit codes: the single source the README points to."""
    for command in COMMANDS:
        code, out, _ = batch[command, "--help"]
        text = " ".join(out.split())

        assert 0 == code
        assert "Exit code: 0" in text, command


def test_no_color_is_honoured(monkeypatch):
    """On a real terminal output is coloured, unless NO_COLOR is set to anything non-empty."""
    leader, follower = pty.openpty()
    try:
        with os.fdopen(follower, "w", closefd=False) as terminal:
            monkeypatch.delenv("NO_COLOR", raising=False)
            coloured = use_color(terminal)
            monkeypatch.setenv("NO_COLOR", "1")
            plain = use_color(terminal)
    finally:
        os.close(leader)
        os.close(follower)

    assert (True, False) == (coloured, plain)


def test_emulator_writes_no_key_file_in_the_current_directory(child_env, tmp_path):
    """Without --key-file the key goes to a private temporary file, removed when it stops."""
    cwd = tmp_path / "project"
    cwd.mkdir()
    with cli_emulator("--json", env=child_env, cwd=cwd) as run:
        banner = json.loads(run.banner)
        key_file = Path(banner["key_file"])
        mode = key_file.stat().st_mode & 0o777
        health = httpx.get(
            f"{banner['serverless_url']}/any/health",
            headers={"Authorization": f"Bearer {key_file.read_text().strip()}"},
        )

    assert [] == list(cwd.iterdir())
    assert cwd not in key_file.parents
    assert (0o600, 200) == (mode, health.status_code)
    assert not key_file.exists()
    assert (0, "") == (run.returncode, run.rest)
    assert {"url", "sdk_env", "fingerprint", "key_file", "read_only"} <= set(banner)


def test_readme_lists_every_flag_of_every_command():
    """The README's "Command line" section names each command's every long option."""
    import argparse

    from resilient_runpod.cli import _parser

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Command line", 1)[1].split("\n## ", 1)[0]
    commands = next(
        a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction)
    ).choices
    missing = []
    for name, parser in commands.items():
        line = next((ln for ln in section.split("\n- ") if f"resilient-runpod {name} " in ln), "")
        flags = {o for a in parser._actions for o in a.option_strings if o.startswith("--")}
        missing += [f"{name} {flag}" for flag in sorted(flags - {"--help"}) if flag not in line]

    assert [] == missing


def test_emulator_refuses_a_key_file_that_is_not_a_regular_file(child_env, tmp_path):
    """--key-file naming a FIFO or a directory: exit 2 at once (no hang), nothing served."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    argvs = [["emulator", "--port", "0", "--key-file", str(path)] for path in (fifo, tmp_path)]

    results = run_cli_batch(argvs, env=child_env)

    fifo_code, fifo_out, fifo_err = results[tuple(argvs[0])]
    dir_code, _, dir_err = results[tuple(argvs[1])]
    assert (2, "") == (fifo_code, fifo_out)
    assert f"--key-file {fifo}: it is a named pipe (FIFO), not a regular file" in fifo_err
    assert 2 == dir_code
    assert "it is a directory, not a regular file" in dir_err


@pytest.mark.parametrize("bad", ["70000", "-1", "65536"])
def test_emulator_port_out_of_range_is_a_usage_error(batch_ports, bad):
    """`emulator --port` outside 0-65535: a usage error (exit 2) naming the value, no traceback."""
    code, _, err = batch_ports["emulator", "--port", bad]

    assert 2 == code
    assert f"argument --port: {bad!r} is not a port number (0 to 65535" in err
    assert "Traceback" not in err


@pytest.fixture(scope="module")
def batch_ports(tmp_path_factory) -> dict[tuple[str, ...], tuple[int, str, str]]:
    """`emulator --port` with each out-of-range value, in one real subprocess."""
    argvs = [["emulator", "--port", bad] for bad in ("70000", "-1", "65536")]
    return run_cli_batch(argvs, env=person_env(tmp_path_factory.mktemp("home")))
