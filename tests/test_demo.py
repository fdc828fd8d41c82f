"""`resilient-runpod demo`: jobs survive revoked keys, counted from real counters."""

from __future__ import annotations

import io
import json
import os
import re
import sys
from pathlib import Path

import pytest
import structlog

from resilient_runpod.cli._demo_run import MAX_JOBS, run_demo

from .helpers import ISOLATED_VARIABLES, run_cli, run_cli_batch

# Any whole key, shaped like RunPod's: must never appear in the demo's output.
WHOLE_KEY = re.compile(r"rpa_[A-Za-z0-9]{20,}")


def demo_env():
    """This environment without anything RunPod's (the demo makes its own keys) or CI's.

    Module-scoped fixtures run outside each test's isolated environment: filter here.
    """
    return {
        k: v
        for k, v in os.environ.items()
        if "RUNPOD" not in k.upper() and k not in ISOLATED_VARIABLES
    }


def demo_process(*args, python=("-m", "resilient_runpod.cli")):
    """Run `demo ARGS` in a child; *python* is what starts the CLI there."""
    return run_cli("demo", *args, env=demo_env(), python=python)


USAGE_ERRORS = [["--jobs", "1"], ["--jobs", "many"], ["--jobs", "10001"]]


@pytest.fixture(scope="module")
def refused():
    """The demo's usage errors, run in one real subprocess (see helpers.run_cli_batch)."""
    argvs = [("demo", *args) for args in [*USAGE_ERRORS, ["--interactive"]]]
    return run_cli_batch(argvs, env=demo_env())


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
    # Before the SDK's slow import, a line says what is loading (no silent pause).
    loading = result.stdout.index("loading the runpod SDK")
    assert loading < result.stdout.index("via=runpod.Endpoint")
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


@pytest.mark.parametrize("jobs", [1, MAX_JOBS + 1])
def test_run_demo_refuses_too_few_or_too_many_jobs(jobs):
    """Fewer than 2 jobs leaves no room to revoke the key between jobs; the cap is 10,000."""
    with pytest.raises(ValueError, match="2 to 10000 jobs per stage"):
        run_demo(jobs=jobs, sdk=False, out=io.StringIO())


def test_the_cli_cap_is_the_demo_cap():
    """`--jobs` accepts what the demo runs: one number, said in two modules."""
    from resilient_runpod.cli import _demo

    assert MAX_JOBS == _demo.MAX_JOBS == 10_000


def test_more_than_100_jobs_run():
    """A run beyond the old cap of 100 jobs per stage completes, every job counted."""
    summary = run_demo(jobs=101, sdk=False, quiet=True, out=io.StringIO())

    assert (202, 202, 0) == (summary.submitted, summary.completed, summary.lost)


@pytest.mark.parametrize("args", USAGE_ERRORS)
def test_demo_usage_errors_exit_2(refused, args):
    """A bad --jobs is a usage error."""
    code, _, err = refused[("demo", *args)]

    assert 2 == code
    assert "--jobs" in err


def test_interactive_without_a_terminal_exits_2(refused):
    """--interactive with nobody at a terminal says so and exits 2 instead of hanging."""
    code, out, err = refused["demo", "--interactive"]

    assert 2 == code
    assert "--interactive asks you to paste the new key" in err
    assert "nobody can be asked here (stdin is not a terminal)" in err
    # The demo makes its own keys: advice to set one would send the person astray.
    assert "RUNPOD_API_KEY" not in err
    assert "" == out


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
    # Per revocation two hook calls: the first read of a key RunPod accepted before may not
    # ask a person (the 401s could be spurious), the next one, after a round of waiting,
    # asks. Two prompts were answered: one per revocation.
    assert (0, 4, 2) == (counts["jobs lost"], counts["hook calls"], counts["recoveries"])
    assert "source=prompt:terminal" in screen
    assert [] == [key for key in typed if key in screen]


def lines_of(output: str) -> list[str]:
    return output.splitlines()


def test_demo_logs_in_the_order_things_happen():
    """A job is shown submitted before the 401 it meets, then the recovery, then completed."""
    out = io.StringIO()

    run_demo(jobs=4, sdk=False, out=out)

    lines = lines_of(out.getvalue())
    order = [
        next(i for i, line in enumerate(lines) if needle in line)
        for needle in (
            "demo.key.revoked",
            "demo.job.submitted             job=3 ",
            "runpod.auth.rejected",
            "runpod.auth.recovered",
            "demo.job.completed             job=3 ",
        )
    ]
    assert sorted(order) == order


def test_demo_console_lines_are_short_and_say_the_secret_path_once():
    """Console events keep the fields that tell the story: no 300-character line, no repeats."""
    out = io.StringIO()

    run_demo(jobs=4, sdk=False, out=out)

    text = out.getvalue()
    path = re.search(r"reads the secret file (\S+)", text)
    assert path is not None
    assert 1 == text.count(path[1])
    assert [] == [line for line in lines_of(text) if len(line) > 120]
    recovered = next(line for line in lines_of(text) if "runpod.auth.recovered" in line)
    assert "source=" not in recovered
    assert "hook=" not in recovered


def test_demo_json_keeps_every_field():
    """--json: one JSON object per event with the long fields, then the summary object."""
    out = io.StringIO()

    run_demo(jobs=2, sdk=False, as_json=True, out=out)

    records = [json.loads(line) for line in lines_of(out.getvalue())]
    recovered = next(r for r in records if r.get("event") == "runpod.auth.recovered")
    assert {"hook", "source", "duration", "rejected", "fingerprint"} <= set(recovered)
    summary = records[-1]["summary"]
    assert (True, 4, 0) == (summary["ok"], summary["submitted"], summary["lost"])


def test_timeline_adds_up_to_the_summary():
    """The per-second timeline's columns sum to the emulator's counts and the recoveries."""
    out = io.StringIO()

    summary = run_demo(jobs=3, sdk=False, out=out)

    rows = summary.timeline
    assert summary.rejected == sum(r[2] for r in rows)
    assert summary.recoveries == sum(r[3] for r in rows)
    # Each job: one submit and at least one status check, plus each 401's retry.
    assert sum(r[1] for r in rows) >= 2 * summary.submitted + summary.rejected
    assert "Timeline (one line per second)" in out.getvalue()
    assert len(rows) == 1 + rows[-1][0] - rows[0][0]


def test_sdk_stage_says_it_was_skipped_and_why():
    """--no-sdk: stage 3 is announced as skipped, with the reason."""
    out = io.StringIO()

    run_demo(jobs=2, sdk=False, out=out)

    assert "3/3 runpod.Endpoint: skipped as asked (--no-sdk)" in out.getvalue()


def test_without_the_sdk_extra_the_stage_is_skipped_with_the_install_hint():
    """With runpod not importable (as without the extra), the demo says so and still passes."""
    without_runpod = (
        "import sys; sys.modules['runpod'] = None\n"
        "from resilient_runpod.cli import main\n"
        "sys.exit(main(sys.argv[1:]))"
    )
    result = demo_process("--jobs", "2", python=("-c", without_runpod))

    assert 0 == result.returncode, result.stderr
    assert (
        "3/3 runpod.Endpoint: skipped: the runpod SDK is not installed "
        "(pip install 'resilient-runpod[sdk]')"
    ) in result.stdout
    assert "jobs lost        0" in result.stdout
