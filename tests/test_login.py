"""`resilient-runpod login`: ask, check with RunPod (the emulator), save; never show the key."""

from __future__ import annotations

import io
import json
import os
import stat
import sys
from pathlib import Path

import pexpect
import pytest

from resilient_runpod.cli import main

from .helpers import make_key, run_cli, run_cli_batch


def login(args: list[str], env: dict[str, str]):
    child = pexpect.spawn(
        sys.executable,
        ["-m", "resilient_runpod.cli", "login", *args],
        env=env,
        encoding="utf-8",
        timeout=60,
    )
    child.logfile_read = io.StringIO()
    return child


def saved(home: Path) -> str:
    return (home / ".runpod" / "config.toml").read_text()


def test_login_validates_and_saves_without_showing_the_key(tmp_path, child_env, runpod_emulator):
    """The typed key is checked with RunPod, saved 0600 as [default].api_key, never shown."""
    key = runpod_emulator.api_key
    child = login(["--api-url", runpod_emulator.api_url], child_env)
    child.expect("key:")
    child.send(key + "\r")
    child.expect(pexpect.EOF)
    child.close()
    screen = child.logfile_read.getvalue()
    assert 0 == child.exitstatus
    assert f'[default]\napi_key = "{key}"\n' == saved(tmp_path)
    assert 0o600 == stat.S_IMODE((tmp_path / ".runpod" / "config.toml").stat().st_mode)
    assert key not in screen
    assert f"Saved API key rpa_…{key[-4:]}" in screen


def test_login_asks_again_when_runpod_rejects_the_key(tmp_path, child_env, runpod_emulator):
    """A rejected key is refused with the reason; the next one is saved under --profile."""
    dead = runpod_emulator.add_key()
    runpod_emulator.revoke(dead)
    good = runpod_emulator.api_key
    child = login(["--api-url", runpod_emulator.api_url, "--profile", "work"], child_env)
    child.expect("key:")
    child.send(dead + "\r")
    child.expect("rejected that key too")
    child.expect("key:")
    child.send(good + "\r")
    child.expect(pexpect.EOF)
    child.close()
    assert 0 == child.exitstatus
    assert f'[work]\napi_key = "{good}"\n' == saved(tmp_path)
    assert dead not in child.logfile_read.getvalue()


def test_login_ctrl_c_saves_nothing(tmp_path, child_env, runpod_emulator):
    """Ctrl-C cancels: exit 1, nothing written."""
    child = login(["--api-url", runpod_emulator.api_url], child_env)
    child.expect("key:")
    child.sendcontrol("c")
    child.expect(pexpect.EOF)
    child.close()
    assert 1 == child.exitstatus
    assert "cancelled; nothing was saved" in child.logfile_read.getvalue()
    assert not (tmp_path / ".runpod").exists()


def test_login_without_a_terminal_says_what_to_do(tmp_path, child_env):
    """With stdin /dev/null, login exits 2 at once, pointing at --stdin, not at itself."""
    done = run_cli("login", env=child_env)
    assert 2 == done.returncode
    assert "stdin is not a terminal" in done.stderr
    assert "| resilient-runpod login --stdin" in done.stderr
    assert "`resilient-runpod login`" not in done.stderr


@pytest.mark.parametrize(
    ("extra_env", "reason"),
    [
        ({}, "cannot ask for a key here: stderr is not a terminal to show a prompt on."),
        (
            {"CI": "true"},
            "cannot ask for a key here: nobody can answer a prompt in CI ($CI is set).",
        ),
    ],
)
def test_login_that_cannot_prompt_gives_the_real_reason(tmp_path, child_env, extra_env, reason):
    """A terminal on stdin but none on stderr (or CI) is reported as that, not as another cause."""
    terminal, stdin = os.openpty()
    try:
        done = run_cli("login", env={**child_env, **extra_env}, stdin=stdin)
    finally:
        os.close(stdin)
        os.close(terminal)
    assert 2 == done.returncode
    assert reason in done.stderr
    assert "RESILIENT_RUNPOD_NO_PROMPT" not in done.stderr
    assert "| resilient-runpod login --stdin" in done.stderr
    assert not (tmp_path / ".runpod").exists()


def test_login_from_stdin(monkeypatch, capsys, runpod_emulator):
    """--stdin reads a piped key (padded by echo), validates and saves it; prints no key."""
    key = runpod_emulator.api_key
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"  {key}\n"))
    assert 0 == main(["login", "--stdin", "--api-url", runpod_emulator.api_url])
    out = capsys.readouterr()
    assert key not in out.out + out.err
    assert f'[default]\napi_key = "{key}"\n' == saved(Path.home())


def test_login_from_stdin_rejected_key_is_not_saved(monkeypatch, capsys, runpod_emulator):
    """A key RunPod rejects is not saved; exit 1."""
    dead = runpod_emulator.add_key()
    runpod_emulator.revoke(dead)
    monkeypatch.setattr(sys, "stdin", io.StringIO(dead))
    assert 1 == main(["login", "--stdin", "--api-url", runpod_emulator.api_url])
    assert "not saved" in capsys.readouterr().err
    assert not (Path.home() / ".runpod").exists()


def test_login_unreachable_api_is_not_saved_unless_asked(monkeypatch, capsys, tmp_path):
    """If RunPod cannot be asked, nothing is saved; --no-validate saves anyway."""
    key = make_key()
    nowhere = "http://127.0.0.1:9"  # the discard port: nothing listens
    monkeypatch.setattr(sys, "stdin", io.StringIO(key))
    assert 1 == main(["login", "--stdin", "--api-url", nowhere])
    assert not (Path.home() / ".runpod").exists()
    assert "add --no-validate to save it unchecked" in capsys.readouterr().err
    monkeypatch.setattr(sys, "stdin", io.StringIO(key))
    target = tmp_path / "key-file"
    assert 0 == main(["login", "--stdin", "--no-validate", "--to", str(target)])
    assert key + "\n" == target.read_text()
    assert key not in capsys.readouterr().err


def test_login_keeps_a_broken_config_untouched(monkeypatch, capsys, runpod_emulator):
    """A config file that is not TOML is reported and left as it was; exit 1."""
    path = Path.home() / ".runpod" / "config.toml"
    path.parent.mkdir()
    path.write_text("[default\n")
    monkeypatch.setattr(sys, "stdin", io.StringIO(runpod_emulator.api_key))
    assert 1 == main(["login", "--stdin", "--api-url", runpod_emulator.api_url])
    assert "not valid TOML" in capsys.readouterr().err
    assert "[default\n" == path.read_text()


def test_login_api_url_without_scheme_is_a_usage_error(capsys):
    """`--api-url 127.0.0.1:8000` is caught as a usage error (exit 2), not a network failure."""
    with pytest.raises(SystemExit) as exited:
        main(["login", "--stdin", "--api-url", "127.0.0.1:8000"])

    assert 2 == exited.value.code
    err = capsys.readouterr().err
    assert err.startswith("usage: resilient-runpod login ")
    assert "'127.0.0.1:8000' is not an http:// or https:// URL" in err


def test_login_json_reports_the_outcome(monkeypatch, capsys, tmp_path):
    """--json: one JSON object on stdout saying saved, the fingerprint and where; no key."""
    key = make_key()
    target = tmp_path / "key-file"
    monkeypatch.setattr(sys, "stdin", io.StringIO(key))

    assert 0 == main(["login", "--stdin", "--no-validate", "--to", str(target), "--json"])

    out = capsys.readouterr().out
    assert {
        "saved": True,
        "exit_code": 0,
        "fingerprint": f"rpa_…{key[-4:]}",
        "where": str(target),
        "validated": False,
    } == json.loads(out)
    assert key not in out


def key_on_stdin(tmp_path: Path, key: str) -> int:
    """A file descriptor reading *key* and a newline, as a pipe from a secret manager gives it."""
    path = tmp_path / "piped-key"
    path.write_text(key + "\n")
    return os.open(path, os.O_RDONLY)


def test_login_empty_to_is_a_usage_error_and_saves_nothing(tmp_path, child_env):
    """`--to ''` is refused (exit 2) instead of saving into the SDK's [default].api_key."""
    stdin = key_on_stdin(tmp_path, make_key())
    try:
        done = run_cli("login", "--stdin", "--no-validate", "--to", "", env=child_env, stdin=stdin)
    finally:
        os.close(stdin)
    assert 2 == done.returncode
    assert "argument --to: cannot be empty" in done.stderr
    assert not (tmp_path / ".runpod").exists()


def test_blank_to_and_profile_are_usage_errors(tmp_path, child_env):
    """A blank --to or --profile (login, and doctor's --profile, by one rule) exits 2, naming it."""
    argvs = [
        ["login", "--stdin", "--no-validate", "--to", "  "],
        ["login", "--stdin", "--no-validate", "--profile", ""],
        ["login", "--stdin", "--no-validate", "--profile", " "],
        ["doctor", "--offline", "--profile", ""],
    ]
    results = run_cli_batch(argvs, env=child_env)
    for argv in argvs:
        code, _, err = results[tuple(argv)]
        assert 2 == code, argv
        assert f"argument {argv[-2]}: cannot be empty" in err, argv
    assert not (tmp_path / ".runpod").exists()


def login_piped(tmp_path: Path, env: dict[str, str], key: str, *args: str):
    """`login --stdin --json ARGS` in a process, *key* piped in: (exit code, JSON, stderr)."""
    stdin = key_on_stdin(tmp_path, key)
    try:
        done = run_cli("login", "--stdin", "--json", *args, env=env, stdin=stdin)
    finally:
        os.close(stdin)
    assert key not in done.stdout + done.stderr
    return done.returncode, json.loads(done.stdout), done.stderr


def test_login_403_is_saved_with_a_note_not_as_accepted(tmp_path, child_env, runpod_emulator):
    """RunPod's own 403: saved, but said to be a 403 (not "accepted") and `validated: false`."""
    key = runpod_emulator.add_key(scope="read")
    runpod_emulator.inject(403, path_prefix="/graphql")

    code, result, err = login_piped(tmp_path, child_env, key, "--api-url", runpod_emulator.api_url)

    assert (0, True, False) == (code, result["saved"], result["validated"])
    assert "RunPod answered 403 (HTTP 403: the key lacks permission)" in err
    assert "RunPod accepted it" not in err
    assert f'[default]\napi_key = "{key}"\n' == saved(tmp_path)


def test_login_read_only_key_is_accepted(tmp_path, child_env, runpod_emulator):
    """A read-only key passes RunPod's `myself` check: saved as accepted."""
    key = runpod_emulator.add_key(scope="read")

    code, result, err = login_piped(tmp_path, child_env, key, "--api-url", runpod_emulator.api_url)

    assert (0, True, True) == (code, result["saved"], result["validated"])
    assert "RunPod accepted it" in err


def test_login_firewall_page_is_not_saved(tmp_path, child_env, runpod_emulator):
    """A firewall's HTML 403 says nothing about the key: not saved, exit 1, the firewall named."""
    runpod_emulator.inject(403, path_prefix="/graphql", firewall=True)

    code, result, err = login_piped(
        tmp_path, child_env, runpod_emulator.api_key, "--api-url", runpod_emulator.api_url
    )

    assert (1, False, False) == (code, result["saved"], result["validated"])
    assert "a firewall or proxy in front of RunPod refused the request" in err
    assert not (tmp_path / ".runpod").exists()


def test_login_stdin_from_a_terminal_is_refused(tmp_path, child_env):
    """`login --stdin` with a terminal on stdin would echo the key: exit 2, naming the prompt."""
    terminal, stdin = os.openpty()
    try:
        done = run_cli("login", "--stdin", "--no-validate", env=child_env, stdin=stdin)
    finally:
        os.close(stdin)
        os.close(terminal)
    assert 2 == done.returncode
    assert "stdin is a terminal, where the key would be shown as it is typed" in done.stderr
    assert "without --stdin for the hidden prompt" in done.stderr
    assert not (tmp_path / ".runpod").exists()
