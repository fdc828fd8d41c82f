"""`recovery.from_file(path, watch=True)`: a key written to the file reaches `Credentials` first."""

from __future__ import annotations

import gc
import multiprocessing
import os
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import httpx
import pytest

from resilient_runpod import Credentials, ResilientTransport, SourceError, fingerprint, recovery
from resilient_runpod.typing import RecoveredKey

from .helpers import make_key, wait_for
from .test_files import KINDS, _finishes

# Generous bounds for a loaded machine: they end a wait that failed, nothing is timed.
PATIENCE = 15.0


class Pushed:
    """A subscriber that records each pushed key and lets a test wait for them."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.sources: list[str] = []
        self._cond = threading.Condition()

    def __call__(self, found: RecoveredKey) -> None:
        with self._cond:
            self.keys.append(found.key)
            self.sources.append(found.source)
            self._cond.notify_all()

    def wait_for(self, count: int) -> list[str]:
        with self._cond:
            self._cond.wait_for(lambda: len(self.keys) >= count, PATIENCE)
            return list(self.keys)


# -- the ways a secret file really changes ------------------------------------------------


class Plain:
    """A file replaced atomically: a temporary file renamed over it (what editors and agents do)."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "api-key"

    def write(self, key: str) -> None:
        temporary = self.path.with_name(".api-key.tmp")
        temporary.write_text(key + "\n")
        temporary.replace(self.path)


class InPlace(Plain):
    """A file truncated and written again where it is."""

    def write(self, key: str) -> None:
        with self.path.open("w") as handle:
            handle.write(key + "\n")


class Recreated(Plain):
    """A file deleted, then created again."""

    def write(self, key: str) -> None:
        self.path.unlink(missing_ok=True)
        self.path.write_text(key + "\n")


class KubernetesSecret:
    """A Secret volume as the kubelet lays it out and updates it.

    ``key -> ..data/key``, ``..data -> ..<timestamp>``; an update writes a new timestamped
    directory, points a new ``..data_tmp`` symlink at it, renames that over ``..data``
    (atomic), then deletes the old directory. The file ``key`` itself is never written.
    """

    def __init__(self, directory: Path) -> None:
        self.root = directory
        self.path = directory / "key"
        self._n = 0
        self._current: Path | None = None

    def write(self, key: str) -> None:
        self._n += 1
        version = self.root / f"..2026_11_28_02_00_{self._n:02d}.{self._n:09d}"
        version.mkdir()
        (version / "key").write_text(key)
        if not self.path.is_symlink():
            self.path.symlink_to("..data/key")
        temporary = self.root / "..data_tmp"
        temporary.symlink_to(version.name)
        temporary.replace(self.root / "..data")
        if self._current is not None:
            (self._current / "key").unlink()
            self._current.rmdir()
        self._current = version


LAYOUTS = [Plain, InPlace, Recreated, KubernetesSecret]


@pytest.mark.parametrize(
    ("layout", "mode"),
    [
        *((layout, "notify") for layout in LAYOUTS),
        (Plain, "polling"),
        (KubernetesSecret, "polling"),
    ],
    ids=lambda p: p if isinstance(p, str) else p.__name__,
)
def test_each_new_key_is_pushed(layout, mode, tmp_path, monkeypatch):
    """Every way a file changes pushes each new key once, in order, with the file's source,
    with inotify and with the polling fallback.
    """
    monkeypatch.setenv("WATCHFILES_FORCE_POLLING", "1" if mode == "polling" else "false")
    secret = layout(tmp_path)
    first, second, third = make_key(), make_key(), make_key()
    secret.write(first)
    hook = recovery.from_file(secret.path, watch=True)
    pushed = Pushed()
    unsubscribe = hook.subscribe(pushed)
    try:
        secret.write(second)
        assert [second] == pushed.wait_for(1)
        secret.write(third)
        assert [second, third] == pushed.wait_for(2)
    finally:
        unsubscribe()

    assert {f"file:{secret.path}"} == set(pushed.sources)


def test_unchanged_empty_and_unusable_contents_push_nothing(tmp_path):
    """The same key again, an empty file and a non-key are not pushed; the next key is."""
    secret = Plain(tmp_path)
    first, second = make_key(), make_key()
    secret.write(first)
    hook = recovery.from_file(secret.path, watch=True)
    pushed = Pushed()
    unsubscribe = hook.subscribe(pushed)
    try:
        secret.write(first)
        secret.path.write_text("")
        secret.path.write_text("not a key, it has spaces")
        secret.write(second)
        # Changes are handled in order: anything pushed before `second` would come first.
        assert [second] == pushed.wait_for(1)
    finally:
        unsubscribe()


def test_a_missing_file_is_followed_until_it_appears(tmp_path):
    """Watching starts before the file exists; its first key is pushed when it appears."""
    secret = Plain(tmp_path)
    hook = recovery.from_file(secret.path, watch=True)
    pushed = Pushed()
    unsubscribe = hook.subscribe(pushed)
    key = make_key()
    try:
        secret.write(key)
        assert [key] == pushed.wait_for(1)
    finally:
        unsubscribe()


def test_without_watch_the_hook_has_nothing_to_subscribe_to(tmp_path):
    """Plain from_file() stays a hook read on demand: no thread, no subscribe."""
    hook = recovery.from_file(tmp_path / "key")

    assert (False, None) == (hook.watch, getattr(hook, "subscribe", None))


@pytest.mark.parametrize(
    "wrap",
    [
        lambda hook, tmp: hook,
        lambda hook, tmp: recovery.chain(recovery.from_env(), hook),
        lambda hook, tmp: recovery.persist(hook, tmp / "saved"),
        lambda hook, tmp: recovery.shared(hook, name=f"watch-{tmp.name}"),
    ],
    ids=["alone", "chain", "persist", "shared"],
)
def test_credentials_follow_the_file(wrap, tmp_path, monkeypatch):
    """Credentials given a watched file, alone or wrapped, take the new key as set_key would."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    secret = Plain(tmp_path)
    old, new = make_key(), make_key()
    secret.write(old)
    credentials = Credentials(old, wrap(recovery.from_file(secret.path, watch=True), tmp_path))
    generation = credentials.generation

    secret.write(new)

    assert wait_for(lambda: credentials.api_key == new)
    assert (generation + 1, f"file:{secret.path}") == (credentials.generation, credentials.source)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_watched_path_that_is_not_a_small_regular_file_is_refused_not_read(tmp_path, kind):
    """A FIFO, /dev/zero or a huge file with watch=True: Credentials() returns, the hook
    raises the same SourceError as plain from_file, and the watcher thread keeps running."""
    path = tmp_path / "secret"
    KINDS[kind](path)
    hook = recovery.from_file(path, watch=True)
    made: list[Credentials] = []

    assert _finishes(lambda: made.append(Credentials(make_key(), hook))) is None
    error = _finishes(hook)
    plain = _finishes(recovery.from_file(path))

    assert isinstance(error, SourceError)
    assert str(plain) == str(error)
    assert hook._watcher.running


def test_the_watcher_stops_when_the_credentials_are_collected(tmp_path):
    """The thread starts with the first Credentials and ends once it is garbage-collected."""
    secret = Plain(tmp_path)
    secret.write(make_key())
    hook = recovery.from_file(secret.path, watch=True)
    credentials = Credentials(make_key(), hook)
    watcher = hook._watcher
    thread = watcher._thread
    assert thread is not None
    assert thread.is_alive()

    del credentials
    gc.collect()
    thread.join(PATIENCE)

    assert (False, False) == (thread.is_alive(), watcher.running)


def test_the_watcher_does_not_keep_the_interpreter_alive(tmp_path, child_env):
    """A program whose Credentials watch a file exits normally when its main thread ends."""
    secret = Plain(tmp_path)
    secret.write(make_key())
    program = (
        "import sys\n"
        "from resilient_runpod import Credentials, recovery\n"
        "hook = recovery.from_file(sys.argv[1], watch=True)\n"
        "credentials = Credentials(sys.argv[2], hook)\n"
        "assert hook._watcher.running\n"
        "print('done', flush=True)\n"
    )
    env = {**child_env, "PYTHONPATH": os.pathsep.join(sys.path)}

    done = subprocess.run(
        [sys.executable, "-c", program, str(secret.path), make_key()],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )

    assert (0, "done\n") == (done.returncode, done.stdout), done.stderr


def _forked_child(credentials: Credentials, ready, new: str, result) -> None:
    ready.set()
    result.put(wait_for(lambda: credentials.api_key == new, PATIENCE))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() is POSIX only")
def test_a_forked_child_keeps_watching(tmp_path):
    """A worker forked after the Credentials were made gets the pushed keys too."""
    secret = Plain(tmp_path)
    old, new = make_key(), make_key()
    secret.write(old)
    credentials = Credentials(old, recovery.from_file(secret.path, watch=True))
    context = multiprocessing.get_context("fork")
    ready, result = context.Event(), context.Queue()
    child = context.Process(target=_forked_child, args=(credentials, ready, new, result))
    with warnings.catch_warnings():
        # Python 3.12+ warns about forking a process that runs threads: that is the point.
        warnings.filterwarnings("ignore", "This process .* is multi-threaded", DeprecationWarning)
        child.start()
    assert ready.wait(PATIENCE)

    secret.write(new)
    got = result.get(timeout=PATIENCE + 5)
    child.join(PATIENCE)

    assert (True, 0) == (got, child.exitcode)


@pytest.mark.parametrize("layout", [Plain, KubernetesSecret], ids=lambda c: c.__name__)
def test_graceful_rotations_cause_no_401(layout, runpod_emulator, tmp_path):
    """About 50 requests a second through 2 rotations, each revoking the old key once a
    request with the new one was answered: the emulator answers no 401 at all.
    """
    secret = layout(tmp_path)
    old = runpod_emulator.api_key
    secret.write(old)
    credentials = Credentials(
        old, recovery.from_file(secret.path, watch=True), hosts=[runpod_emulator.host]
    )
    statuses: list[int] = []
    stop = threading.Event()
    client = httpx.Client(
        transport=ResilientTransport(credentials), base_url=runpod_emulator.serverless_url
    )

    def traffic() -> None:
        while not stop.is_set():
            statuses.append(client.get("/ep/health").status_code)
            stop.wait(0.02)

    def answered(key: str) -> int:
        """Requests with *key* the emulator answered 200."""
        by_key = runpod_emulator.counters().by_key_status
        return by_key.get(fingerprint(key), {}).get(200, 0)

    sender = threading.Thread(target=traffic)
    sender.start()
    try:
        for _ in range(2):
            new = runpod_emulator.add_key()
            secret.write(new)
            assert wait_for(lambda new=new: credentials.api_key == new)
            # The rotation's grace period: the old key goes once RunPod has answered the
            # new one and nothing is in flight, so no request stamped with the old key
            # just before the push can arrive after the revoke (one sender, in order).
            assert wait_for(lambda new=new: answered(new) > 0 and 0 == runpod_emulator.in_flight)
            runpod_emulator.revoke(old)
            old = new
            since = answered(new)
            assert wait_for(lambda new=new, since=since: answered(new) >= since + 5)
    finally:
        stop.set()
        sender.join()
        client.close()
    counts = runpod_emulator.counters().by_status

    assert (0, {200}) == (counts.get(401, 0), set(statuses))
    assert (len(statuses), old) == (counts[200], credentials.api_key)
