"""`recovery.shared`: one recovery per rejected key for all the worker processes of a host."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import signal
import stat
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from resilient_runpod import (
    Credentials,
    RecoveryContext,
    ResilientTransport,
    SourceError,
    recovery,
)
from resilient_runpod._keys import fingerprint, key_id
from resilient_runpod.recovery._shared import runtime_dir

from .conftest import EmulatorProcess
from .helpers import make_key, wait_for

WORKERS = 4  # benchmarks/ runs more; four already share one lock file
ROTATIONS = 2
# Bounds on waits that failed; nothing here is timed.
PATIENCE = 60.0


@pytest.fixture(autouse=True)
def runtime_base(tmp_path, monkeypatch) -> Path:
    """Each test shares recoveries in its own runtime directory, as a login session would."""
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(run))
    return run


def context_for(key: str, attempt: int = 1) -> RecoveryContext:
    return RecoveryContext(
        fingerprint(key), attempt, 401, "GET", "https://api.runpod.ai/v2/ep/health", key_id(key)
    )


class SecretFileHook:
    """Reads the key from a secret file and appends one line per call to a calls file.

    Picklable, so that workers started with ``spawn`` build the same hook; its repr (the
    default shared name) is the same in every process. With *hang*, the first call on the
    host writes its pid there and hangs, to be killed or outwaited.
    """

    def __init__(
        self, secret: Path, calls: Path, hang: Path | None = None, timeout: float | None = None
    ) -> None:
        self.secret, self.calls, self.hang = str(secret), str(calls), hang
        if timeout is not None:
            self.timeout = timeout

    def __call__(self, context: RecoveryContext) -> str:
        with Path(self.calls).open("a") as handle:
            handle.write(f"{os.getpid()}\n")
        if self.hang is not None and len(Path(self.calls).read_text().splitlines()) == 1:
            self.hang.write_text(str(os.getpid()))
            time.sleep(600)
        return Path(self.secret).read_text().strip()

    def __repr__(self) -> str:
        return f"SecretFileHook({self.secret!r})"


def hook_calls(calls: Path) -> int:
    return len(calls.read_text().splitlines()) if calls.exists() else 0


# -- one process ------------------------------------------------------------------------


def test_a_recorded_answer_is_used_without_calling_the_hook(tmp_path):
    """A second process (here: a second hook object) rejected with the same key reuses the
    first one's answer; the hook runs once.
    """
    secret, calls = tmp_path / "key", tmp_path / "calls"
    new = make_key()
    secret.write_text(new)
    old = make_key()

    first = recovery.shared(SecretFileHook(secret, calls))(context_for(old))
    with capture_logs() as events:
        second = recovery.shared(SecretFileHook(secret, calls))(context_for(old))

    assert (new, new, 1) == (first.key, second.key, hook_calls(calls))
    reused = [e for e in events if e["event"] == "runpod.auth.shared_reused"]
    assert [fingerprint(new)] == [e["fingerprint"] for e in reused]
    assert new not in repr(events)


def test_answers_are_per_rejected_key(tmp_path):
    """A different rejected key is a different recovery: the hook runs again."""
    secret, calls = tmp_path / "key", tmp_path / "calls"
    secret.write_text(make_key())
    hook = recovery.shared(SecretFileHook(secret, calls))

    hook(context_for(make_key()))
    hook(context_for(make_key()))

    assert 2 == hook_calls(calls)


def test_the_rejected_key_itself_is_not_recorded(tmp_path):
    """A source not updated yet returns the rejected key: returned, but never shared."""
    secret, calls = tmp_path / "key", tmp_path / "calls"
    old = make_key()
    secret.write_text(old)
    hook = recovery.shared(SecretFileHook(secret, calls))

    found = hook(context_for(old))
    again = hook(context_for(old))

    assert (old, old, 2) == (found.key, again.key, hook_calls(calls))
    assert [] == list(runtime_dir().glob("*.json"))


def test_the_answer_file_is_private(tmp_path, runtime_base):
    """The directory is 0700 and the answer (and lock) files 0600."""
    secret = tmp_path / "key"
    secret.write_text(make_key())

    recovery.shared(recovery.from_file(secret))(context_for(make_key()))

    directory = runtime_dir()
    modes = {stat.S_IMODE(p.stat().st_mode) for p in directory.iterdir()}
    assert (runtime_base / "resilient-runpod", 0o700) == (
        directory,
        stat.S_IMODE(directory.stat().st_mode),
    )
    assert {0o600} == modes
    assert {".json", ".lock"} == {p.suffix for p in directory.iterdir()}


def test_without_xdg_runtime_dir_a_per_user_temporary_directory_is_used(tmp_path, monkeypatch):
    """No XDG_RUNTIME_DIR: a 0700 directory named after the user in the temporary directory."""
    import tempfile

    monkeypatch.delenv("XDG_RUNTIME_DIR")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    directory = runtime_dir()

    assert (tmp_path / f"resilient-runpod-{os.getuid()}", 0o700) == (
        directory,
        stat.S_IMODE(directory.stat().st_mode),
    )


def _squat(directory: Path, how: str, tmp_path: Path) -> None:
    """Put at *directory* what another user of the host could have put there first."""
    if how == "open":  # made first by someone, open to all: anyone can swap the files in it
        directory.mkdir()
        directory.chmod(0o777)
    else:  # a link to a directory of the squatter's
        elsewhere = tmp_path / "squatter"
        elsewhere.mkdir()
        directory.symlink_to(elsewhere)


@pytest.mark.parametrize("how", ["open", "symlink"])
def test_a_squatted_temporary_directory_costs_no_recovery(
    how: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without XDG_RUNTIME_DIR, a ``resilient-runpod-<uid>`` made first by someone else is
    passed over, with an event, for the user's own cache directory: the recovery succeeds,
    and processes still share it there.
    """
    import tempfile

    monkeypatch.delenv("XDG_RUNTIME_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    squatted = temporary / f"resilient-runpod-{os.getuid()}"
    _squat(squatted, how, tmp_path)
    secret, calls = tmp_path / "key", tmp_path / "calls"
    new, old = make_key(), make_key()
    secret.write_text(new)

    with capture_logs() as events:
        first = recovery.shared(SecretFileHook(secret, calls))(context_for(old))
        second = recovery.shared(SecretFileHook(secret, calls))(context_for(old))

    private = tmp_path / "cache" / "resilient-runpod" / "shared"
    refused = [e["directory"] for e in events if e["event"] == "runpod.auth.shared_dir_refused"]
    assert (new, new, 1) == (first.key, second.key, hook_calls(calls))
    assert [str(squatted), str(squatted)] == refused
    assert (private, 0o700) == (runtime_dir(), stat.S_IMODE(private.stat().st_mode))
    assert [] == list(squatted.iterdir())


def test_without_any_private_directory_the_recovery_runs_unshared(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When no candidate directory is private (here: none belongs to the user), the hook
    runs in this process, unshared, with a warning event; its key is used.
    """
    secret, calls = tmp_path / "key", tmp_path / "calls"
    new = make_key()
    secret.write_text(new)
    monkeypatch.setattr(os, "getuid", lambda: os.geteuid() + 1)

    with capture_logs() as events:
        found = recovery.shared(SecretFileHook(secret, calls))(context_for(make_key()))

    unavailable = [e for e in events if e["event"] == "runpod.auth.shared_unavailable"]
    assert (new, 1, 1) == (found.key, hook_calls(calls), len(unavailable))
    assert "warning" == unavailable[0]["log_level"]


def test_stale_answers_are_neither_used_nor_kept(tmp_path, monkeypatch):
    """An answer older than ten minutes is ignored and the hook runs; old files are deleted."""
    from resilient_runpod.recovery import _shared

    secret, calls = tmp_path / "key", tmp_path / "calls"
    new = make_key()
    secret.write_text(new)
    hook = recovery.shared(SecretFileHook(secret, calls))
    old = make_key()
    hook(context_for(old))
    answer = next(runtime_dir().glob("*.json"))
    stale = json.loads(answer.read_text())
    stale["at"] -= 601
    answer.write_text(json.dumps(stale))
    other = answer.with_name(f"{answer.name.split('-')[0]}-{'0' * 24}.json")
    other.write_text(json.dumps({"key": make_key(), "source": "x", "at": time.time() - 3600}))
    os.utime(other, (time.time() - 3600, time.time() - 3600))
    monkeypatch.setattr(_shared, "_ANSWER_MAX_AGE", 600.0)

    found = hook(context_for(old))

    assert (new, 2, False) == (found.key, hook_calls(calls), other.exists())


def _answer_path(hook: Any, rejected: str) -> Path:
    return runtime_dir() / f"{hook._stem}-{key_id(rejected)}.json"


def _plant(path: Path, kind: str, tmp_path: Path, planted_key: str) -> None:
    """Put at the answer *path* something that is not a record to trust."""
    record = json.dumps({"key": planted_key, "source": "planted", "at": time.time()})
    if kind == "fifo":  # read_text would wait for a writer for ever
        os.mkfifo(path, 0o600)
    elif kind == "dev_zero":  # read_text would never end
        path.symlink_to("/dev/zero")
    elif kind == "symlink":  # a link to a key others can read
        planted = tmp_path / "planted.json"
        planted.write_text(record)
        planted.chmod(0o644)
        path.symlink_to(planted)
    elif kind == "readable":  # a key others could have read, or put there
        path.write_text(record)
        path.chmod(0o644)
    elif kind == "huge":
        with path.open("wb") as handle:
            handle.truncate(300 * 1024 * 1024)  # sparse: the disk holds none of it
        path.chmod(0o600)
    elif kind == "not_utf8":
        path.write_bytes(b'{"key": "\xff\xfe"}')
        path.chmod(0o600)
    else:  # a directory: the answer can be neither read nor written
        path.mkdir(mode=0o700)


PLANTED = {
    "fifo": "not_regular",
    "dev_zero": "symlink",
    "symlink": "symlink",
    "readable": "not_private",
    "huge": "too_large",
    "not_utf8": "not_utf8",
    "directory": "not_regular",
}


@pytest.mark.parametrize("kind", sorted(PLANTED))
def test_a_record_that_is_not_a_small_private_file_of_ours_is_ignored(
    kind: str, tmp_path: Path
) -> None:
    """A FIFO, a link (to /dev/zero, to a planted key), a file others can read, a huge or
    undecodable file, or a directory at the answer's path is ignored with an event, without
    blocking or reading it whole; the hook runs and its key is used.
    """
    secret, calls = tmp_path / "key", tmp_path / "calls"
    new, old = make_key(), make_key()
    secret.write_text(new)
    hook = recovery.shared(SecretFileHook(secret, calls))
    _plant(_answer_path(hook, old), kind, tmp_path, make_key())

    with capture_logs() as events, ThreadPoolExecutor(1) as pool:
        # A safety net, not a timing: before, a FIFO there hung the recovery for ever.
        found = pool.submit(hook, context_for(old)).result(timeout=PATIENCE)

    ignored = [e["problem"] for e in events if e["event"] == "runpod.auth.shared_record_ignored"]
    assert (new, 1) == (found.key, hook_calls(calls))
    assert PLANTED[kind] == ignored[0]


def test_a_record_that_cannot_be_written_costs_no_recovery(tmp_path: Path) -> None:
    """A directory where the answer goes: the key the hook found is returned all the same,
    and the failed write is an event.
    """
    secret, calls = tmp_path / "key", tmp_path / "calls"
    new, old = make_key(), make_key()
    secret.write_text(new)
    hook = recovery.shared(SecretFileHook(secret, calls))
    _answer_path(hook, old).mkdir(mode=0o700)

    with capture_logs() as events:
        found = hook(context_for(old))

    failed = [e for e in events if e["event"] == "runpod.auth.shared_record_failed"]
    assert (new, 1) == (found.key, len(failed))


@pytest.mark.parametrize("record", ["error", "key"])
def test_a_record_dated_in_the_future_blocks_nothing(record: str, tmp_path: Path) -> None:
    """An error record (or an answer) dated a day ahead, by a clock set back or a planted
    date, is not taken as news: the hook runs and its key is used.
    """
    secret, calls = tmp_path / "key", tmp_path / "calls"
    new, old = make_key(), make_key()
    secret.write_text(new)
    hook = recovery.shared(SecretFileHook(secret, calls))
    answer = _answer_path(hook, old)
    future = time.time() + 86400
    body = {"error": "vault is sealed"} if record == "error" else {"key": make_key(), "source": "x"}
    answer.write_text(json.dumps({**body, "at": future}))
    answer.chmod(0o600)

    found = hook(context_for(old))

    assert (new, 1) == (found.key, hook_calls(calls))


@pytest.mark.parametrize(
    ("outcome", "said"),
    [("raise", "SourceError: vault is sealed"), ("none", "found no key")],
)
def test_a_failure_is_shared_with_those_who_waited_for_it(outcome, said, tmp_path, caplog):
    """The hook fails, or finds nothing, while others wait on the lock: they get that
    outcome as a SourceError, not a hook call each.
    """
    # filelock logs each attempt at a lock (logger "filelock", DEBUG): a waiter's attempt
    # at the lock the holder keeps is what shows that waiter blocked on it.
    caplog.set_level(logging.DEBUG, logger="filelock")
    calls = tmp_path / "calls"
    release = threading.Event()
    entered = threading.Event()

    class Failing:
        def __call__(self, context: RecoveryContext) -> str | None:
            with calls.open("a") as handle:
                handle.write("call\n")
            entered.set()
            assert release.wait(PATIENCE)
            if outcome == "raise":
                raise SourceError("vault is sealed")
            return None

        def __repr__(self) -> str:
            return "Failing()"

    old = make_key()
    errors: list[str] = []
    asking = threading.Semaphore(0)

    def ask() -> None:
        asking.release()
        try:
            recovery.shared(Failing())(context_for(old))
        except SourceError as exc:
            errors.append(str(exc))

    holder = threading.Thread(target=ask)
    holder.start()
    assert entered.wait(PATIENCE)
    [held] = runtime_dir().glob("*-0.lock")
    waiters = [threading.Thread(target=ask, name=f"waiter-{n}") for n in range(3)]
    for t in waiters:
        t.start()
    assert all(asking.acquire(timeout=PATIENCE) for _ in range(4))

    def blocked() -> set[str | None]:
        return {r.threadName for r in list(caplog.records) if str(held) in r.getMessage()}

    # One arriving after the failure would show as a 2nd call: all three wait first.
    assert wait_for(lambda: {t.name for t in waiters} <= blocked())
    release.set()
    for t in [holder, *waiters]:
        t.join(PATIENCE)

    assert 1 == hook_calls(calls)
    assert [f"Failing failed in another process just now: {said}"] * 3 == [
        e for e in errors if "another process" in e
    ]


def test_default_names_are_the_same_in_every_process(tmp_path):
    """The default shared name is the hook's repr, never an address that differs per process."""

    def fetch() -> str:
        return make_key()

    assert (
        f"from_file({str(tmp_path / 'k')!r})"
        == recovery.shared(recovery.from_file(tmp_path / "k")).share
    )
    assert f"{__name__}.test_default_names_are_the_same_in_every_process.<locals>.fetch" == (
        recovery.shared(fetch).share
    )
    assert "runpod" == recovery.shared(fetch, name="runpod").share


# -- many processes -----------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """What a worker process is told: where RunPod is, its first key, its hook, its rounds."""

    url: str
    host: str
    key: str
    hook: SecretFileHook
    rounds: int


def _worker(job: Job, start: Any, results: Any) -> None:
    """One worker process: its own Credentials and client, one request per round."""
    url, host, key, hook, rounds = job.url, job.host, job.key, job.hook, job.rounds
    credentials = Credentials(key, recovery.shared(hook), hosts=[host])
    with httpx.Client(transport=ResilientTransport(credentials), timeout=PATIENCE) as client:
        for round_ in range(rounds):
            start.wait(PATIENCE)
            try:
                status: int | str = client.get(f"{url}/v2/ep/health").status_code
            except Exception as exc:
                status = type(exc).__name__
            results.put((os.getpid(), round_, status))


class Fleet:
    """Worker processes started with one method, driven round by round from the test."""

    def __init__(self, method: str, emulator: EmulatorProcess, hook: SecretFileHook, rounds: int):
        context = multiprocessing.get_context(method)
        self.start = context.Barrier(WORKERS + 1)
        self.results = context.Queue()
        job = Job(emulator.url, emulator.host, emulator.key, hook, rounds)
        self.processes = [
            context.Process(
                target=_worker,
                args=(job, self.start, self.results),
                daemon=True,
            )
            for _ in range(WORKERS)
        ]
        for process in self.processes:
            process.start()

    def round(self, expected: int = WORKERS, before_collect: Any = None) -> list[Any]:
        """Let every worker send one request; return the statuses of *expected* of them."""
        self.start.wait(PATIENCE)
        if before_collect is not None:
            before_collect()
        return sorted(str(self.results.get(timeout=PATIENCE)[2]) for _ in range(expected))

    def close(self) -> None:
        for process in self.processes:
            process.join(PATIENCE)
            if process.is_alive():
                process.kill()
                process.join()


def _rotate(emulator: EmulatorProcess, secret: Path, old: str) -> str:
    """A hard rotation: the new key in the secret store, the old one revoked at once."""
    new = emulator.add_key()
    secret.write_text(new)
    emulator.revoke(old)
    return new


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_workers_share_one_recovery_per_rotation(method, emulator_process, tmp_path):
    """WORKERS worker processes, ROTATIONS rotations, every worker rejected each time:
    one hook call per rotation in all, and every request succeeds.

    Each worker's request meets each rotation with two 401s: its send with the old key and
    its probe. Nothing tells a worker of another's recovery before its own probe (the
    hook announces no keys), so the probe always carries the old key, and its 401 has the
    worker ask the shared hook, which answers all but the first from the recorded answer.
    """
    secret, calls = tmp_path / "key", tmp_path / "calls"
    secret.write_text(emulator_process.key)
    fleet = Fleet(method, emulator_process, SecretFileHook(secret, calls), ROTATIONS + 1)
    try:
        statuses = [fleet.round()]  # every worker is up and its key accepted
        old = emulator_process.key
        for _ in range(ROTATIONS):
            old = _rotate(emulator_process, secret, old)
            statuses.append(fleet.round())
    finally:
        fleet.close()

    assert [["200"] * WORKERS] * (ROTATIONS + 1) == statuses
    assert ROTATIONS == hook_calls(calls)
    assert 2 * WORKERS * ROTATIONS == emulator_process.status_counts()[401]


def test_a_holder_killed_while_holding_the_lock_does_not_wedge_the_others(
    emulator_process, tmp_path
):
    """The worker running the hook is SIGKILLed mid-call: the kernel frees its lock, one of
    the others runs the hook, and all seven survivors' requests succeed.
    """
    secret, calls, hang = tmp_path / "key", tmp_path / "calls", tmp_path / "holder"
    secret.write_text(emulator_process.key)
    # A hook timeout far beyond the test's patience: only the kernel's release of the dead
    # holder's lock, not a takeover after the timeout, can let the survivors through.
    hook = SecretFileHook(secret, calls, hang, timeout=PATIENCE * 10)
    fleet = Fleet("fork", emulator_process, hook, 2)
    killed: list[int] = []

    def kill_the_holder() -> None:
        assert wait_for(lambda: hang.exists() and hang.read_text()), "no worker ran the hook"
        killed.append(int(hang.read_text()))
        os.kill(killed[0], signal.SIGKILL)

    try:
        first = fleet.round()
        _rotate(emulator_process, secret, emulator_process.key)
        survivors = fleet.round(WORKERS - 1, before_collect=kill_the_holder)
    finally:
        fleet.close()

    assert (["200"] * WORKERS, ["200"] * (WORKERS - 1)) == (first, survivors)
    assert 2 == hook_calls(calls)  # the killed call, and the one that replaced it
    exit_codes = {p.pid: p.exitcode for p in fleet.processes}
    assert -signal.SIGKILL == exit_codes[killed[0]]


def test_a_holder_stuck_past_the_hook_timeout_is_taken_over(emulator_process, tmp_path):
    """The worker running the hook hangs, alive, past the hook's 1 s timeout: the others take
    the recovery over, with one more hook call between them, and succeed.
    """
    secret, calls, hang = tmp_path / "key", tmp_path / "calls", tmp_path / "holder"
    secret.write_text(emulator_process.key)
    hook = SecretFileHook(secret, calls, hang, timeout=1.0)
    fleet = Fleet("fork", emulator_process, hook, 2)
    try:
        fleet.round()
        _rotate(emulator_process, secret, emulator_process.key)
        survivors = fleet.round(WORKERS - 1)
        stuck = int(hang.read_text())
        os.kill(stuck, signal.SIGKILL)
    finally:
        fleet.close()

    assert ["200"] * (WORKERS - 1) == survivors
    assert 2 == hook_calls(calls)


# -- quiet guests -------------------------------------------------------------------------


def test_no_key_in_events_records_errors_or_reprs(runpod_emulator, tmp_path, caplog):
    """A recovery run, one reused and one pushed by a watched file: no key appears in any
    event, log record, repr or error, though the answer file holds one.
    """
    import logging

    secret = tmp_path / "key"
    old = runpod_emulator.api_key
    secret.write_text(old)
    shown: list[object] = []
    with caplog.at_level(logging.DEBUG), capture_logs() as events:
        # Not watched: a watcher could push the new key before the requests are rejected.
        pair = [
            Credentials(
                old, recovery.shared(recovery.from_file(secret)), hosts=[runpod_emulator.host]
            )
            for _ in range(2)
        ]
        new = runpod_emulator.rotate(old)
        secret.write_text(new)
        # Both are rejected: one runs the hook, the other reuses its answer.
        for credentials in pair:
            with httpx.Client(transport=ResilientTransport(credentials)) as client:
                shown.append(client.get(f"{runpod_emulator.serverless_url}/ep/health"))
        watched = Credentials(
            new,
            recovery.shared(recovery.from_file(secret, watch=True)),
            hosts=[runpod_emulator.host],
        )
        pushed = runpod_emulator.add_key()
        secret.write_text(pushed)
        assert wait_for(lambda: watched.api_key == pushed)
        try:
            recovery.shared(recovery.from_command(["false"]))(context_for(new))
        except SourceError as exc:
            shown.append(exc)
        shown += [*pair, watched, *(c.recovery for c in (*pair, watched))]
    names = {e["event"] for e in events}

    assert {"runpod.auth.shared_reused", "runpod.auth.key_pushed"} <= names
    assert [new, new, pushed] == [c.api_key for c in (*pair, watched)]
    haystack = repr(events) + "".join(r.getMessage() for r in caplog.records)
    haystack += "".join(f"{o!s}{o!r}" for o in shown)
    assert [] == [fingerprint(k) for k in (old, new, pushed) if k in haystack]


def test_importing_the_package_loads_no_fleet_library(child_env):
    """filelock, watchfiles and boto3 load only when a shared, watched or AWS hook runs."""
    import subprocess
    import sys

    program = (
        "import sys, resilient_runpod\n"
        "from resilient_runpod import recovery\n"
        "print(sorted(m for m in ('filelock', 'watchfiles', 'boto3') if m in sys.modules))\n"
    )
    env = {**child_env, "PYTHONPATH": os.pathsep.join(sys.path)}

    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, env=env, check=True
    )

    assert "[]\n" == done.stdout
