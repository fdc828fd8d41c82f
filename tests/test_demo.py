"""`resilient-runpod demo`: jobs survive revoked keys, counted from real counters."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import structlog

from resilient_runpod.cli._demo_run import run_demo

# Any whole key, shaped like RunPod's: must never appear in the demo's output.
WHOLE_KEY = re.compile(r"rpa_[A-Za-z0-9]{20,}")


def demo_process(*args):
    env = {k: v for k, v in os.environ.items() if "RUNPOD" not in k.upper()}
    return subprocess.run(
        [sys.executable, "-m", "resilient_runpod.cli", "demo", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def summary_counts(output: str) -> dict[str, int]:
    names = "jobs submitted|jobs completed|401s seen|recoveries|hook calls|jobs lost"
    found = re.findall(rf"^  ({names}) +(\d+)$", output, re.MULTILINE)
    return {name: int(value) for name, value in found}


def test_demo_command_recovers_and_loses_nothing():
    """The README's command, without a terminal: exit 0, 0 jobs lost, at least one recovery."""
    result = demo_process()
    counts = summary_counts(result.stdout)

    assert 0 == result.returncode, result.stderr
    assert 0 == counts["jobs lost"]
    assert counts["jobs submitted"] == counts["jobs completed"]
    assert counts["recoveries"] >= 1
    assert counts["401s seen"] >= counts["recoveries"]
    assert "runpod.auth.rejected" in result.stdout
    assert "runpod.auth.recovered" in result.stdout
    assert "runpod.Endpoint" in result.stdout
    assert [] == WHOLE_KEY.findall(result.stdout + result.stderr)


def test_run_demo_counts_from_the_emulator_and_the_hook():
    """Two stages, two revocations: two hook calls and two recoveries, however many 401s."""
    out = io.StringIO()

    summary = run_demo(jobs=3, sdk=False, out=out)

    assert (6, 6, 0) == (summary.submitted, summary.completed, summary.lost)
    assert (2, 2) == (summary.hook_calls, summary.recoveries)
    # The sync stage's revocation costs one 401; the async stage's at least one (the
    # requests already in flight with the old key are rejected too, yet the hook runs once).
    assert summary.rejected >= 2
    assert ("httpx.Client", "httpx.AsyncClient") == summary.stages
    assert summary.ok
    assert "Every job completed" in out.getvalue()


def test_run_demo_puts_the_callers_structlog_setup_back():
    """The demo configures structlog for its own output only."""
    structlog.configure(processors=[structlog.processors.JSONRenderer()])
    before = structlog.get_config()

    run_demo(jobs=2, sdk=False, out=io.StringIO(), quiet=True)

    assert before == structlog.get_config()


def test_run_demo_refuses_too_few_jobs():
    """Fewer than 2 jobs per stage leaves no room to revoke the key between jobs."""
    with pytest.raises(ValueError, match="at least 2 jobs"):
        run_demo(jobs=1, sdk=False, out=io.StringIO())


@pytest.mark.parametrize("args", [["--jobs", "1"], ["--jobs", "many"]])
def test_demo_usage_errors_exit_2(args):
    """A bad --jobs is a usage error."""
    result = demo_process(*args)

    assert 2 == result.returncode
    assert "--jobs" in result.stderr


def test_interactive_without_a_terminal_exits_2():
    """--interactive with nobody at a terminal says so and exits 2 instead of hanging."""
    result = demo_process("--interactive")

    assert 2 == result.returncode
    assert "--interactive needs a person at a terminal" in result.stderr
    assert "" == result.stdout


def test_interactive_demo_in_a_real_terminal(tmp_path):
    """--interactive at a terminal: the person is prompted per revocation, and nothing is lost."""
    pexpect = pytest.importorskip("pexpect")
    env = {k: v for k, v in os.environ.items() if "RUNPOD" not in k.upper()}
    for name in ("CI", "GITHUB_ACTIONS", "GITLAB_CI", "BUILDKITE", "JENKINS_URL", "TF_BUILD"):
        env.pop(name, None)
    # Without this prompt_toolkit waits for a cursor-position reply pexpect never sends.
    env.update(NO_COLOR="1", PROMPT_TOOLKIT_NO_CPR="1", TERM="xterm", HOME=str(tmp_path))
    child = pexpect.spawn(
        sys.executable,
        ["-m", "resilient_runpod.cli", "demo", "--interactive", "--no-sdk", "--jobs", "2"],
        env=env,
        encoding="utf-8",
        timeout=60,
    )
    child.logfile_read = io.StringIO()
    typed = []
    for _ in range(2):
        child.expect(r"file=(\S+runpod-api-key)")
        secret = child.match.group(1)
        child.expect("key:")
        typed.append(Path(secret).read_text(encoding="ascii").strip())
        child.send(typed[-1] + "\r")
    child.expect(pexpect.EOF)
    child.close()
    screen = child.logfile_read.getvalue()
    counts = summary_counts(screen.replace("\r\n", "\n"))

    assert 0 == child.exitstatus
    assert (0, 2, 2) == (counts["jobs lost"], counts["hook calls"], counts["recoveries"])
    assert "source=prompt:terminal" in screen
    assert [] == [key for key in typed if key in screen]
