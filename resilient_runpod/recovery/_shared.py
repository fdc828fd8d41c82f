"""`shared`: one recovery per rejected key for all the processes of a user on one host.

Worker processes (gunicorn, Celery prefork, a multiprocessing pool) each hold their own
`Credentials`, so single flight stops at the process boundary: without this, a rotation
runs the hook once per process. `shared` puts a file lock and a result file in front of
the hook, both named after the hook and the rejected key's irreversible id:

- The first process to ask about rejected key K takes K's lock and runs the hook; the
  others wait on that lock and then read the key it found from K's result file.
- The result file holds a key, so it lives in a per-user directory that nobody else can
  enter (``$XDG_RUNTIME_DIR/resilient-runpod`` or a 0700 directory under the temporary
  directory), is written atomically with mode 0600, and is deleted once stale. A
  directory another user made first (or can write to) is passed over for the next one,
  down to the user's own cache directory; with none usable, the recovery runs unshared.
- Records are opened without following links and without blocking, and read only when
  they are small regular files of ours that nobody else can read or write. A record
  dated in the future counts for nothing: no clock blocks a recovery.
- The lock is ``filelock``'s ``fcntl``/``msvcrt`` lock: the kernel releases it when its
  holder dies, so a crashed or SIGKILLed holder never wedges the others. A holder that
  is alive but stuck past the hook's timeout is taken over: the waiters move to a
  second lock for the same key, and one of them runs the hook.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import os
import stat
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from .._errors import InvalidKeyError, SourceError
from .._hooks import describe, hook_name, tell_accepted
from .._hosts import redact_text
from .._keys import clean, fingerprint, key_id
from .._logging import logger
from ..typing import HookResult, RecoveredKey, RecoveryContext, RecoveryHook
from ._sources import _as_key, _resolve, _resolve_async, any_async, subscribe_all

__all__ = ["RUNTIME_SUBDIR", "AsyncShared", "Shared", "runtime_dir", "shared"]

RUNTIME_SUBDIR = "resilient-runpod"
# What a hook that declares no timeout is waited for: `Credentials`' default hook_timeout.
_DEFAULT_HOOK_SECONDS = 30.0
# An answer older than this is not reused: the key it names may have rotated again since.
_ANSWER_MAX_AGE = 600.0
# Lock 0 is the normal one; lock 1 is where waiters go when lock 0's holder is stuck.
_LOCK_LEVELS = 2
_PRIVATE = 0o077


def runtime_dir() -> Path:
    """The private per-user directory for shared recoveries, created 0700 if missing.

    ``$XDG_RUNTIME_DIR/resilient-runpod`` where the session has one (a tmpfs only this
    user can enter), else ``resilient-runpod-<uid>`` in the temporary directory. One that
    is not private (another user made it first, or others can enter it) is passed over,
    with a ``runpod.auth.shared_dir_refused`` event, for
    ``$XDG_CACHE_HOME/resilient-runpod/shared`` (``~/.cache`` by default): every process
    of the user passes over the same ones, so they still meet in the same directory.

    Raises:
        SourceError: no candidate is private; no key was written to any of them.
    """
    refusals: list[str] = []
    for directory in _candidates():
        try:
            _make_private(directory)
        except SourceError as exc:
            logger.warning(
                "runpod.auth.shared_dir_refused", directory=str(directory), error=str(exc)
            )
            refusals.append(str(exc))
            continue
        return directory
    raise SourceError("no private directory to share recoveries in: " + "; ".join(refusals))


def _candidates() -> list[Path]:
    candidates = []
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base and Path(base).is_dir():
        candidates.append(Path(base) / RUNTIME_SUBDIR)
    else:
        user = os.getuid() if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")
        candidates.append(Path(tempfile.gettempdir()) / f"{RUNTIME_SUBDIR}-{user}")
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    candidates.append(Path(cache) / RUNTIME_SUBDIR / "shared")
    return candidates


def _make_private(directory: Path) -> None:
    try:
        directory.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        directory.mkdir(mode=0o700)
        directory.chmod(0o700)  # mkdir's mode is filtered by the umask
    except FileExistsError:
        pass
    except OSError as exc:
        raise SourceError(f"cannot create {directory}: {exc.strerror or exc}") from None
    try:
        _check_private(directory)
    except OSError as exc:  # removed meanwhile
        raise SourceError(f"cannot look at {directory}: {exc.strerror or exc}") from None


def _check_private(directory: Path) -> None:
    info = directory.lstat()
    fix = (
        "remove it or set XDG_RUNTIME_DIR to a private directory; "
        f"no key was written to {directory}"
    )
    if not stat.S_ISDIR(info.st_mode):
        raise SourceError(f"{directory} is not a directory (a symlink?): {fix}")
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise SourceError(f"{directory} belongs to another user (uid {info.st_uid}): {fix}")
    if hasattr(os, "getuid") and stat.S_IMODE(info.st_mode) & _PRIVATE:
        raise SourceError(
            f"{directory} can be entered by other users (mode "
            f"{stat.S_IMODE(info.st_mode):04o}): chmod 700 it, or {fix}"
        )


def _identity(hook: object) -> str:
    """What names *hook* the same way in every process: a repr, never an address."""
    if inspect.isfunction(hook) or inspect.ismethod(hook) or inspect.isbuiltin(hook):
        return f"{hook.__module__}.{hook.__qualname__}"
    if type(hook).__repr__ is object.__repr__:  # "<X object at 0x…>" differs per process
        return f"{type(hook).__module__}.{type(hook).__qualname__}:{hook_name(hook)}"
    return repr(hook)


class Shared:
    """A hook wrapper whose recovery is shared by the processes on a host. See `shared`."""

    def __init__(self, hook: RecoveryHook, *, name: str | None = None) -> None:
        self.hook = hook
        self.share = name if name is not None else _identity(hook)
        self.name = hook_name(hook)
        declared = getattr(hook, "timeout", None)
        # How long a holder may keep the lock before it counts as stuck: the hook's own bound.
        self.lock_timeout = (
            float(declared) if isinstance(declared, (int, float)) else _DEFAULT_HOOK_SECONDS
        )
        # Worst case: wait out a stuck holder, then wait for (or be) the one who takes over.
        self.timeout = self.lock_timeout * _LOCK_LEVELS
        self.interactive: bool = getattr(hook, "interactive", False)
        self._stem = hashlib.sha256(self.share.encode()).hexdigest()[:16]

    def __call__(self, context: RecoveryContext) -> HookResult:
        """Return the key another process found for this rejected key, else run the hook.

        Raises:
            SourceError: the hook failed in the process that ran it while this one
                waited, or the lock was held by stuck processes at every level. (With no
                private directory to share in, the hook runs in this process, unshared.)
        """
        return self._share(context, partial(_resolve, self.hook, context))

    def _share(self, context: RecoveryContext, run_hook: Callable[[], object]) -> HookResult:
        """`__call__`, with *run_hook* to call the hook when this process is the one to."""
        # Imported here: a program that never shares a recovery never loads it.
        from filelock import FileLock, Timeout  # noqa: PLC0415

        try:
            directory = runtime_dir()
        except SourceError as exc:
            # Not sharing costs a hook call per process; failing would cost the recovery.
            logger.warning("runpod.auth.shared_unavailable", hook=self.name, error=str(exc))
            return _as_key(run_hook(), self.name)
        slot = context.key_id or "nokey"
        answer_file = directory / f"{self._stem}-{slot}.json"
        asked = time.time()
        found = self._answer(answer_file, context, asked)
        if found is not None:
            return found
        for level in range(_LOCK_LEVELS):
            lock = FileLock(directory / f"{self._stem}-{slot}-{level}.lock", mode=0o600)
            try:
                lock.acquire(timeout=self.lock_timeout)
            except Timeout:
                logger.warning(
                    "runpod.auth.shared_lock_taken_over",
                    hook=self.name,
                    fingerprint=context.fingerprint,
                    waited=self.lock_timeout,
                )
                continue
            try:
                found = self._answer(answer_file, context, asked)
                if found is not None:
                    return found
                return self._run(answer_file, context, directory, run_hook)
            finally:
                lock.release()
        raise SourceError(
            f"the shared recovery {redact_text(self.share)!r} stayed locked by other processes for "
            f"{self.timeout:.0f} seconds without an answer; look for a stuck process "
            f"running {self.name!r}"
        )

    def _answer(
        self, answer_file: Path, context: RecoveryContext, asked: float
    ) -> RecoveredKey | None:
        """What another process recorded for this rejected key, if still fresh."""
        record = _read_record(answer_file, self.name)
        if record is None:
            return None
        at, now = record.get("at"), time.time()
        # A record dated in the future (a clock set back, a planted date) counts for
        # nothing: were it believed, it would block recoveries until that date.
        if not isinstance(at, (int, float)) or not 0 <= now - at <= _ANSWER_MAX_AGE:
            return None
        error = record.get("error")
        if isinstance(error, str) and at >= asked:
            # It failed while we waited for it: that was our recovery too. Say so, without
            # hammering the same broken source once per process.
            raise SourceError(f"{self.name} failed in another process just now: {error}")
        key, source = record.get("key"), record.get("source")
        if not isinstance(key, str) or not isinstance(source, str):
            return None
        if key_id(key) == context.key_id:
            return None
        logger.info(
            "runpod.auth.shared_reused",
            hook=self.name,
            rejected=context.fingerprint,
            fingerprint=fingerprint(key),
        )
        return RecoveredKey(key, source)

    def _run(
        self,
        answer_file: Path,
        context: RecoveryContext,
        directory: Path,
        run_hook: Callable[[], object],
    ) -> HookResult:
        try:
            found = _as_key(run_hook(), self.name)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:
            self._record(answer_file, {"error": describe(exc), "at": time.time()})
            raise
        if found is None:
            # Those waiting for this recovery learn that it found nothing, as they would in
            # one process, instead of each asking the same empty source again.
            self._record(answer_file, {"error": "found no key", "at": time.time()})
            return None
        try:
            key = clean(found.key)
        except InvalidKeyError:
            return found  # Credentials refuses it and says why; nothing worth sharing
        if key_id(key) != context.key_id:
            # The same key back means the source has not changed yet: not an answer to share.
            self._record(answer_file, {"key": key, "source": found.source, "at": time.time()})
        _remove_stale(directory, self._stem)
        return RecoveredKey(key, found.source)

    def _record(self, answer_file: Path, record: dict[str, Any]) -> None:
        # A record that cannot be written costs the other processes a hook call each, no more.
        try:
            _write_record(answer_file, json.dumps(record))
        except OSError as exc:
            logger.warning(
                "runpod.auth.shared_record_failed",
                hook=self.name,
                error=f"{type(exc).__name__}: {exc.strerror or exc}",
            )

    def accepted(self, found: RecoveredKey) -> None:
        """Pass RunPod's acceptance of *found* on to the wrapped hook."""
        tell_accepted(self.hook, found)

    def subscribe(self, callback: Callable[[RecoveredKey], None]) -> Callable[[], None]:
        """Forward to the wrapped hook, if it can announce new keys (a watched file)."""
        return subscribe_all((self.hook,), callback)

    def __repr__(self) -> str:
        # A command's argv may carry a token: shown scrubbed, as from_command shows it.
        return redact_text(f"shared({_identity(self.hook)}, name={self.share!r})")


class AsyncShared(Shared):
    """A `Shared` around an async hook: the hook runs on the caller's event loop. See `shared`."""

    # The same hook, awaited: `shared` returns this class only around an async hook.
    async def __call__(self, context: RecoveryContext) -> HookResult:  # type: ignore[override]
        """As `Shared`; the file locks are waited for in a worker thread, not on the loop."""
        import anyio.from_thread  # noqa: PLC0415 -- loaded by the caller's loop already
        import anyio.to_thread  # noqa: PLC0415

        # The worker thread hands the hook back to this loop, where it may use what
        # lives there (an aiohttp session).
        run_hook = partial(anyio.from_thread.run, _resolve_async, self.hook, context)
        return await anyio.to_thread.run_sync(self._share, context, run_hook)


# A record is a key, a source's name and a date, or an error's description: far below this.
_RECORD_LIMIT = 16 * 1024
_NO_FOLLOW = getattr(os, "O_NOFOLLOW", 0)


class _RecordRefusedError(Exception):
    """A record that is not read; *problem* says why, as a code for the event."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


def _read_record(path: Path, hook: str) -> dict[str, Any] | None:
    """The JSON object at *path*, if it is a small private regular file of ours; else None.

    Anything else (a link, a FIFO, a device, a directory, someone else's file, a file
    others can read or write, a large file, text that is not UTF-8 JSON) is ignored with
    a ``runpod.auth.shared_record_ignored`` event: the hook runs as if there were none.
    """
    problem = None
    try:
        record = json.loads(_read_private(path).decode("utf-8"))
    except FileNotFoundError:
        return None
    except _RecordRefusedError as exc:
        problem = exc.problem
    except UnicodeDecodeError:  # before ValueError, which it is
        problem = "not_utf8"
    except ValueError:
        problem = "not_json"  # writes are atomic: not one of ours
    if problem is None and not isinstance(record, dict):
        problem = "not_json"
    if problem is not None:
        logger.warning(
            "runpod.auth.shared_record_ignored", hook=hook, file=path.name, problem=problem
        )
        return None
    return record  # type: ignore[no-any-return]


def _read_private(path: Path) -> bytes:
    """*path*'s bytes, opened without following a link or blocking on a FIFO.

    Raises:
        FileNotFoundError: nothing is at *path*.
        _RecordRefusedError: something is there that is not to be read.
    """
    flags = os.O_RDONLY | _NO_FOLLOW | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise
    except OSError:  # ELOOP for a link; EACCES for a file not ours
        raise _RecordRefusedError("symlink" if path.is_symlink() else "unreadable") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise _RecordRefusedError("not_regular")
        if hasattr(os, "getuid") and info.st_uid != os.getuid():
            raise _RecordRefusedError("not_owned")
        if hasattr(os, "getuid") and stat.S_IMODE(info.st_mode) & _PRIVATE:
            raise _RecordRefusedError("not_private")
        if info.st_size > _RECORD_LIMIT:
            raise _RecordRefusedError("too_large")
        data = os.read(fd, _RECORD_LIMIT + 1)
    except OSError:
        raise _RecordRefusedError("unreadable") from None
    finally:
        os.close(fd)
    if len(data) > _RECORD_LIMIT:  # it grew after the check
        raise _RecordRefusedError("too_large")
    return data


def _write_record(path: Path, text: str) -> None:
    """Write *text* to *path* atomically, mode 0600, replacing whatever is there (a link too)."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        Path(temporary).replace(path)  # replaces a link itself, never what it points to
    except BaseException:
        with contextlib.suppress(OSError):
            Path(temporary).unlink()
        raise


def _remove_stale(directory: Path, stem: str) -> None:
    """Delete this share's answers and locks older than an answer may be reused."""
    cutoff = time.time() - max(_ANSWER_MAX_AGE, 4 * _DEFAULT_HOOK_SECONDS)
    for path in directory.glob(f"{stem}-*"):
        with contextlib.suppress(OSError):
            if path.lstat().st_mtime < cutoff:
                path.unlink()


def shared(hook: RecoveryHook, *, name: str | None = None) -> Shared:
    """Share *hook*'s recoveries among the processes of this user on this host.

    Each worker process of a server or a pool has its own `Credentials`; wrapped in
    ``shared``, their hook runs once per rejected key on the host, not once per process::

        Credentials(recovery=recovery.shared(recovery.from_command(["vault", ...])))

    The first process rejected with key K runs the hook while holding a file lock;
    the others wait on that lock and use the key it found. Processes share when they
    use the same *name*; by default it is the hook's repr, e.g.
    ``from_file('/run/secrets/runpod')``. A process that dies holding the lock releases
    it; one stuck past the hook's ``timeout`` (30 s if it declares none) is taken over.

    The found key is kept for the others in a file of mode 0600 in a 0700 per-user
    directory (`runtime_dir`). An answer older than 10 minutes is not used, and the next
    recovery deletes it.

    Around an async hook, the wrapper is async too (an `AsyncShared`): used by an async
    client, the hook runs on that client's event loop.
    """
    return AsyncShared(hook, name=name) if any_async((hook,)) else Shared(hook, name=name)
