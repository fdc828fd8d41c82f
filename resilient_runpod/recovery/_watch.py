"""Watching a secret file, so that a rotation written there reaches `Credentials` before a 401.

`FileWatcher` follows one file for any number of subscribers (each a `Credentials`'
push callback). It watches the file's *directory* with ``watchfiles`` (inotify, FSEvents,
ReadDirectoryChangesW; polling where those are missing) and, on any change there or
twice a second anyway, reads the file through its path and compares what it now holds:

- a temporary file renamed over the file, or the file edited in place;
- a Kubernetes Secret volume, where ``key`` is a symlink to ``..data/key`` and ``..data``
  a symlink swapped atomically to a new timestamped directory (the file itself is never
  written, only the directory entries change);
- the file deleted, then created again (nothing is pushed while it is missing).

A key is pushed only when two reads a moment apart agree (an in-place write is never
seen half done) and it differs from the last key seen. The thread is a daemon, started
with the first subscriber and stopped when the last one leaves.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path

from .._errors import InvalidKeyError
from .._files import read_secret_file
from .._keys import clean, fingerprint
from .._logging import logger
from ..typing import RecoveredKey

__all__ = ["FileWatcher"]

# Even without an event, the file is read again this often: a filesystem that sends no
# events (NFS, some container mounts) or a watched directory that was replaced is
# still followed within half a second.
_RECHECK_MS = 500
# An in-place write is read again after this long, and pushed only if both reads agree.
_SETTLE_SECONDS = 0.05
_POLL_DELAY_MS = 300

_watchers: weakref.WeakSet[FileWatcher] = weakref.WeakSet()


class FileWatcher:
    """Push each new key written to *path* to every subscriber, from a daemon thread."""

    def __init__(self, path: Path, source: str) -> None:
        self.path = path
        self.source = source
        self._lock = threading.Lock()
        self._subscribers: dict[int, Callable[[RecoveredKey], None]] = {}
        self._ids = itertools.count()
        self._stop: threading.Event | None = None
        self._thread: threading.Thread | None = None
        _watchers.add(self)

    @property
    def running(self) -> bool:
        """Whether the watcher thread is alive."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def subscribe(self, callback: Callable[[RecoveredKey], None]) -> Callable[[], None]:
        """Call *callback* with each new key; return the function that stops doing so."""
        # Read before locking: a slow filesystem must not hold up the other subscribers.
        baseline = self._read()
        with self._lock:
            token = next(self._ids)
            self._subscribers[token] = callback
            if self._stop is None:
                self._start_locked(baseline)

        def unsubscribe() -> None:
            with self._lock:
                self._subscribers.pop(token, None)
                if not self._subscribers and self._stop is not None:
                    self._stop.set()  # the thread sees it within one step and ends
                    self._stop = None

        return unsubscribe

    def _start_locked(self, baseline: str | None) -> None:
        # *baseline*, the key there now, is not news: only what changes after it is pushed.
        stop = self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run,
            args=(stop, baseline),
            name=f"resilient-runpod-watch:{self.path.name}",
            daemon=True,  # never keeps the interpreter alive
        )
        self._thread.start()

    def _after_fork_in_child(self) -> None:
        # The parent's thread does not exist here; the subscribers (inherited) still want keys.
        self._lock = threading.Lock()
        self._thread = None
        self._stop = None
        if self._subscribers:
            self._start_locked(self._read())

    def _read(self) -> str | None:
        try:
            # Never blocks on a FIFO nor reads a device without end: those are refused
            # (an OSError), and the hook itself says so when it is called.
            return clean(read_secret_file(self.path))
        except (OSError, UnicodeDecodeError, InvalidKeyError):
            return None  # missing, unreadable, refused, empty or half-written: nothing to push

    def _run(self, stop: threading.Event, last: str | None) -> None:
        try:
            self._follow(stop, last)
        except Exception as exc:  # a dead watcher falls back to recovery on 401: say so
            logger.error(
                "runpod.auth.watch_failed",
                path=str(self.path),
                error=f"{type(exc).__name__}: {exc}",
            )

    def _follow(self, stop: threading.Event, last: str | None) -> None:
        for _ in self._changes(stop):
            key = self._read()
            if key is None or key == last:
                continue
            stop.wait(_SETTLE_SECONDS)
            if self._read() != key:
                continue  # still being written; the next change or recheck sees the end
            last = key
            self._push(key)

    def _changes(self, stop: threading.Event) -> Iterator[None]:
        """Yield whenever the directory may have changed, and at least twice a second."""
        directory = self.path.parent
        force_polling: bool | None = None
        while not stop.is_set():
            try:
                identity = _identity(directory)
                yield from _watch(directory, stop, force_polling, identity)
            except FileNotFoundError:
                # The directory is gone (an unmounted volume): look again shortly.
                stop.wait(_RECHECK_MS / 1000)
                yield None
            except OSError as exc:
                if force_polling:
                    raise
                # No inotify (limits reached, an exotic filesystem): poll instead.
                logger.info(
                    "runpod.auth.watch_polling",
                    path=str(self.path),
                    reason=f"{type(exc).__name__}: {exc.strerror or exc}",
                )
                force_polling = True

    def _push(self, key: str) -> None:
        found = RecoveredKey(key, self.source)
        with self._lock:
            callbacks = list(self._subscribers.values())
        logger.info("runpod.auth.file_changed", path=str(self.path), fingerprint=fingerprint(key))
        for callback in callbacks:
            try:
                callback(found)
            except Exception as exc:  # one subscriber's failure must not stop the others
                logger.warning(
                    "runpod.auth.push_failed",
                    path=str(self.path),
                    fingerprint=fingerprint(key),
                    error=type(exc).__name__,
                )

    def __repr__(self) -> str:
        return f"<FileWatcher {self.path} subscribers={len(self._subscribers)}>"


def _identity(directory: Path) -> tuple[int, int]:
    info = directory.stat()
    return info.st_dev, info.st_ino


def _watch(
    directory: Path, stop: threading.Event, force_polling: bool | None, identity: tuple[int, int]
) -> Iterator[None]:
    import watchfiles  # noqa: PLC0415 -- imported by the watcher thread only, not at import

    for _changes in watchfiles.watch(
        directory,
        watch_filter=None,  # a Kubernetes swap touches only "..data" entries: see them all
        debounce=_RECHECK_MS,
        step=50,
        stop_event=stop,
        rust_timeout=_RECHECK_MS,
        yield_on_timeout=True,
        recursive=False,
        force_polling=force_polling,
        poll_delay_ms=_POLL_DELAY_MS,
        raise_interrupt=False,
    ):
        yield None
        with contextlib.suppress(OSError):
            if _identity(directory) != identity:
                return  # the directory was replaced: watch the new one
        # A missing directory raises FileNotFoundError at the next start; handled above.


def _after_fork_in_child() -> None:
    for watcher in list(_watchers):
        watcher._after_fork_in_child()  # noqa: SLF001 -- our own class


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_after_fork_in_child)
