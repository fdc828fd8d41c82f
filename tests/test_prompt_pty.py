"""The prompt in a real terminal (a pty driven by pexpect), and where nobody is there at all."""

from __future__ import annotations

import io
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import pexpect
import pytest

if TYPE_CHECKING:
    from pathlib import Path

    from resilient_runpod.testing import Emulator

# A program a person runs: one request with a key RunPod has revoked; the prompt recovers.
SCRIPT = """
import asyncio, sys, termios
import httpx
from resilient_runpod import (
    AsyncResilientTransport, AuthenticationError, Credentials, NonInteractiveError,
    ResilientTransport, recovery,
)

mode, url, host, old = sys.argv[1:5]
timeout, attempts = (float(sys.argv[5]), int(sys.argv[6])) if len(sys.argv) > 5 else (60, 3)
tty_before = termios.tcgetattr(0) if sys.stdin.isatty() else None
credentials = Credentials(
    old, recovery=recovery.prompt(timeout=timeout, attempts=attempts), hosts=[host]
)

async def in_loop():
    async with httpx.AsyncClient(transport=AsyncResilientTransport(credentials)) as client:
        return await client.get(url)

try:
    if mode == "async":
        response = asyncio.run(in_loop())
    else:
        with httpx.Client(transport=ResilientTransport(credentials)) as client:
            response = client.get(url)
except AuthenticationError as exc:
    print("FAILED", type(exc.__cause__).__name__, exc.__cause__, flush=True)
else:
    print("STATUS", response.status_code, "SOURCE", credentials.source, flush=True)
if tty_before is not None:
    print("TTY RESTORED", termios.tcgetattr(0) == tty_before, flush=True)
"""


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "program.py"
    path.write_text(SCRIPT)
    return path


def spawn(script: Path, mode: str, emulator: Emulator, old: str, env: dict[str, str], *extra: str):
    url = f"{emulator.serverless_url}/{emulator.endpoint_id}/health"
    child = pexpect.spawn(
        sys.executable,
        [str(script), mode, url, emulator.host, old, *extra],
        env=env,
        encoding="utf-8",
        timeout=60,
    )
    child.logfile_read = io.StringIO()  # every byte the terminal showed
    return child


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_terminal_prompt_recovers_a_revoked_key(script, child_env, runpod_emulator, mode):
    """A 401 at a terminal prompts; the typed key is used; it never shows on the screen."""
    old = runpod_emulator.api_key
    new = runpod_emulator.rotate(old)
    child = spawn(script, mode, runpod_emulator, old, child_env)
    child.expect("key:")
    child.send(new + "\r")
    child.expect(pexpect.EOF)
    child.close()
    screen = child.logfile_read.getvalue()
    assert "STATUS 200 SOURCE prompt:terminal" in screen
    assert "TTY RESTORED True" in screen
    assert new not in screen
    assert f"rpa_…{old[-4:]}" in screen
    assert 0 == child.exitstatus


def test_the_timeout_is_one_deadline_for_all_the_answers(script, child_env, runpod_emulator):
    """timeout= bounds the whole exchange: answers each quicker than it still end at it.

    An empty (refused) answer, then a good key, each typed 1.5 s after its prompt with timeout=2:
    the good key comes after the deadline, so the prompt ends with its own typed error
    (within the engine's budget of timeout + 5 s) and the key is not installed.
    """
    old = runpod_emulator.api_key
    new = runpod_emulator.rotate(old)
    child = spawn(script, "sync", runpod_emulator, old, child_env, "2", "5")
    child.expect("key:")
    time.sleep(1.5)  # drives the scenario; nothing is timed
    child.send("\r")  # an empty answer: refused, and asked again
    if 0 == child.expect(["key:", pexpect.EOF]):  # asked again, with what is left
        time.sleep(1.5)
        child.send(new + "\r")
        child.expect(pexpect.EOF)
    child.close()
    screen = child.logfile_read.getvalue()
    expected = (
        "FAILED HookTimeoutError no usable key was typed at the prompt for a RunPod API key "
        "within 2.0 seconds"
    )
    assert expected in screen
    assert "STATUS" not in screen
    assert "TTY RESTORED True" in screen


def test_ctrl_c_ends_recovery_cleanly(script, child_env, runpod_emulator):
    """Ctrl-C at the prompt fails the request with AuthenticationError; the tty is restored."""
    old = runpod_emulator.api_key
    runpod_emulator.revoke(old)
    child = spawn(script, "sync", runpod_emulator, old, child_env)
    child.expect("key:")
    child.sendcontrol("c")
    child.expect(pexpect.EOF)
    child.close()
    screen = child.logfile_read.getvalue()
    assert "FAILED KeyboardInterrupt the prompt for a RunPod API key was cancelled" in screen
    assert "TTY RESTORED True" in screen


def test_ci_under_a_pty_fails_at_once(script, child_env, runpod_emulator):
    """CI=true means nobody answers, even with a terminal: NonInteractiveError, no prompt."""
    old = runpod_emulator.api_key
    runpod_emulator.revoke(old)
    child = spawn(script, "sync", runpod_emulator, old, {**child_env, "CI": "true"})
    child.expect(pexpect.EOF)
    child.close()
    screen = child.logfile_read.getvalue()
    assert "FAILED NonInteractiveError nobody can answer a prompt in CI ($CI is set)" in screen
    assert "key:" not in screen


def test_opt_out_variable_under_a_pty_fails_at_once(script, child_env, runpod_emulator):
    """RESILIENT_RUNPOD_NO_PROMPT=1 turns the prompt off and is named in the error."""
    old = runpod_emulator.api_key
    runpod_emulator.revoke(old)
    env = {**child_env, "RESILIENT_RUNPOD_NO_PROMPT": "1"}
    child = spawn(script, "sync", runpod_emulator, old, env)
    child.expect(pexpect.EOF)
    child.close()
    screen = child.logfile_read.getvalue()
    expected = "FAILED NonInteractiveError prompting is turned off by $RESILIENT_RUNPOD_NO_PROMPT"
    assert expected in screen


def test_stdin_dev_null_fails_at_once(script, child_env, runpod_emulator):
    """With stdin /dev/null the prompt raises NonInteractiveError instead of reading."""
    old = runpod_emulator.api_key
    runpod_emulator.revoke(old)
    url = f"{runpod_emulator.serverless_url}/{runpod_emulator.endpoint_id}/health"
    done = subprocess.run(
        [sys.executable, str(script), "sync", url, runpod_emulator.host, old],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=child_env,
        timeout=60,
        check=False,
    )
    assert "FAILED NonInteractiveError stdin is not a terminal" in done.stdout


def test_open_pipe_that_never_sends_fails_at_once(script, child_env, runpod_emulator, tmp_path):
    """A stdin pipe held open and silent does not hang the program: NonInteractiveError."""
    old = runpod_emulator.api_key
    runpod_emulator.revoke(old)
    url = f"{runpod_emulator.serverless_url}/{runpod_emulator.endpoint_id}/health"
    out = tmp_path / "out.txt"
    with out.open("w") as sink:
        process = subprocess.Popen(
            [sys.executable, str(script), "sync", url, runpod_emulator.host, old],
            stdin=subprocess.PIPE,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=child_env,
        )
        try:
            # The pipe stays open (we never write or close it) while the program runs.
            process.wait(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            assert process.stdin is not None
            process.stdin.close()
    assert "FAILED NonInteractiveError stdin is not a terminal" in out.read_text()
