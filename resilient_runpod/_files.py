"""Reading the small files keys live in, without trusting what sits at the path.

``~/.runpod/config.toml`` or a secret file may turn out to be a FIFO (reading it waits
for a writer forever), a device (``/dev/zero`` never ends) or a huge file (parsing 200 MB
of TOML takes minutes and gigabytes). `read_small_file` refuses those before reading: it
stats the path, opens it without blocking, checks again on the open file (the path may
have been swapped in between) and reads at most its cap.
"""

from __future__ import annotations

import enum
import errno
import os
import stat
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "CONFIG_LIMIT",
    "SECRET_FILE_LIMIT",
    "FileProblem",
    "FileRefusedError",
    "read_secret_file",
    "read_small_file",
    "refuse_unless_regular",
]

CONFIG_LIMIT = 64 * 1024
"""Largest config file read. RunPod's config holds a few lines per profile (about 100
bytes each); 64 KiB is hundreds of profiles with comments, and parses in milliseconds."""

SECRET_FILE_LIMIT = 16 * 1024
"""Largest secret file read. A key is 50 characters; a secret file is that and a newline,
or a template's few lines around it. 16 KiB leaves room for any such wrapping."""


class FileProblem(enum.Enum):
    """Why a file was not read."""

    NOT_REGULAR = "not_regular"
    TOO_LARGE = "too_large"


def _kind(mode: int) -> str:
    kinds = (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a named pipe (FIFO)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((name for test, name in kinds if test(mode)), "not a regular file")


class FileRefusedError(OSError):
    """A path that is not a regular file, or is larger than its cap.

    An `OSError`, so code that handles unreadable files handles these; callers turn it
    into their own error (`ConfigError`, `SourceError`) with the fix.

    Attributes:
        problem: Why, as a code.
        reason: Why, in words: ``"it is a named pipe (FIFO), not a regular file"``.
    """

    def __init__(self, path: Path, problem: FileProblem, reason: str, fix: str = "") -> None:
        code = errno.EFBIG if problem is FileProblem.TOO_LARGE else errno.EINVAL
        super().__init__(code, f"{reason}; {fix}" if fix else reason, str(path))
        self.problem = problem
        self.reason = reason


def _check(path: Path, status: os.stat_result, limit: int | None) -> None:
    if not stat.S_ISREG(status.st_mode):
        kind = _kind(status.st_mode)
        raise FileRefusedError(path, FileProblem.NOT_REGULAR, f"it is {kind}, not a regular file")
    if limit is not None and status.st_size > limit:
        raise FileRefusedError(
            path,
            FileProblem.TOO_LARGE,
            f"it is {status.st_size} bytes, more than the {limit} such a file can need",
        )


def refuse_unless_regular(path: Path) -> None:
    """Raise `FileRefusedError` if *path* exists (following links) and is not a regular file."""
    try:
        status = path.stat()
    except FileNotFoundError:
        return
    _check(path, status, None)


def read_small_file(path: Path, limit: int) -> str:
    """The UTF-8 text of the regular file at *path*, of at most *limit* bytes.

    Never blocks on a FIFO and never reads more than *limit* + 1 bytes.

    Raises:
        FileRefusedError: *path* is not a regular file, or is larger than *limit*.
        FileNotFoundError: *path* does not exist.
        OSError: *path* cannot be opened or read.
        UnicodeDecodeError: the file is not UTF-8.

    """
    _check(path, path.stat(), limit)  # before opening: opening some devices has effects
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0))
    try:
        _check(path, os.fstat(fd), limit)  # the path may have been swapped since
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    if size > limit:  # it grew after the check
        raise FileRefusedError(
            path, FileProblem.TOO_LARGE, f"it is more than the {limit} bytes such a file can need"
        )
    return _decode(b"".join(chunks))


def _decode(data: bytes) -> str:
    """*data* as UTF-8, or a `UnicodeDecodeError` that does not hold *data*.

    The codec's own error keeps the whole file in ``.object``: the key, for a key file. It
    would ride along in the ``__context__`` of every error raised while handling it. The
    one raised here holds only the bytes that could not be decoded (never a key's: keys
    are ASCII), at their position.
    """
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        start, end, reason = exc.start, exc.end, exc.reason
    # Raised outside the handler, so the codec's error is not its __context__ either.
    raise UnicodeDecodeError("utf-8", bytes(start) + data[start:end], start, end, reason)


def read_secret_file(path: Path) -> str:
    """`read_small_file` for a file holding a key, its refusals saying what to do.

    Raises:
        FileRefusedError: as `read_small_file`; its ``strerror`` says what to do.
        FileNotFoundError: *path* does not exist.
        OSError: *path* cannot be opened or read.
        UnicodeDecodeError: the file is not UTF-8.

    """
    try:
        return read_small_file(path, SECRET_FILE_LIMIT)
    except FileRefusedError as exc:
        fix = (
            "point it at the regular file that holds the key"
            if exc.problem is FileProblem.NOT_REGULAR
            else "a key file holds one key and a newline; point it at that file"
        )
        raise FileRefusedError(path, exc.problem, exc.reason, fix) from None
