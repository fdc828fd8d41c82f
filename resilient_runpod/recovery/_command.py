"""`from_command`: ask a secret manager's CLI (vault, op, aws, gcloud, ...) for the key."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from .._errors import InvalidKeyError, SourceError
from .._hosts import redact_text
from .._keys import clean
from ..typing import RecoveredKey, RecoveryContext

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["FromCommand", "from_command"]

# Enough of a failing command's stderr to say what went wrong, not a wall of text.
_STDERR_LIMIT = 500


class FromCommand:
    """Run a command without a shell and take its stdout as the key. See `from_command`."""

    def __init__(self, argv: Sequence[str], *, timeout: float = 30.0) -> None:
        if isinstance(argv, (str, bytes)):
            raise TypeError(
                "from_command() takes the command as a list of arguments, "
                "e.g. ['vault', 'kv', 'get', '-field=key', 'secret/runpod'], not a string"
            )
        if not argv:
            raise ValueError("from_command() needs a command to run")
        if timeout <= 0:
            raise ValueError("timeout must be a positive number of seconds")
        self.argv = tuple(os.fspath(a) for a in argv)
        self.timeout = timeout
        self.name = f"command:{Path(self.argv[0]).name}"

    @property
    def _shown(self) -> str:
        return redact_text(shlex.join(self.argv))

    def __call__(self, context: RecoveryContext | None = None) -> RecoveredKey:
        """Run the command; return its stdout, stripped, as the key.

        Raises:
            SourceError: the command is missing, exits non-zero, times out or prints no
                key. The message carries the command's stderr (never its stdout).

        """
        try:
            done = subprocess.run(
                self.argv,
                stdin=subprocess.DEVNULL,  # a secret manager that wants to ask must fail, not hang
                capture_output=True,
                timeout=self.timeout,
                check=False,
            )
        except FileNotFoundError:
            raise SourceError(
                f"cannot run `{self._shown}`: {self.argv[0]} was not found (is it installed "
                "and on PATH?)"
            ) from None
        except PermissionError:
            raise SourceError(f"cannot run `{self._shown}`: permission denied") from None
        except subprocess.TimeoutExpired as exc:
            raise SourceError(
                f"`{self._shown}` did not finish within {self.timeout} seconds and was killed"
                + _stderr_note(exc.stderr, exc.stdout)
            ) from None
        except OSError as exc:
            raise SourceError(f"cannot run `{self._shown}`: {exc.strerror or exc}") from None
        if done.returncode != 0:
            raise SourceError(
                f"`{self._shown}` failed with exit status {done.returncode}"
                + _stderr_note(done.stderr, done.stdout)
            )
        text = done.stdout.decode("utf-8", errors="replace")
        if not text.strip():
            raise SourceError(
                f"`{self._shown}` printed nothing on stdout" + _stderr_note(done.stderr, b"")
            )
        try:
            key = clean(text)
        except InvalidKeyError as exc:
            raise SourceError(f"`{self._shown}` printed an unusable key: {exc}") from None
        return RecoveredKey(key, self.name)

    def __repr__(self) -> str:
        # An argument may be the secret itself (a token flag): show none of them raw.
        argv = [redact_text(argument) for argument in self.argv]
        return f"from_command({argv!r}, timeout={self.timeout!r})"


def _stderr_note(stderr: bytes | str | None, stdout: bytes | str | None) -> str:
    """The tail of the command's stderr, with anything it printed on stdout removed."""
    err = _text(stderr).strip()
    if not err:
        return ""
    # Whatever reached stdout might be a key: never let it travel in an error message.
    known = tuple(line.strip() for line in _text(stdout).splitlines() if line.strip())
    err = redact_text(err, known)
    if len(err) > _STDERR_LIMIT:
        err = "…" + err[-_STDERR_LIMIT:]
    return f"; it said: {err}"


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data if isinstance(data, str) else data.decode("utf-8", errors="replace")


def from_command(argv: Sequence[str], *, timeout: float = 30.0) -> FromCommand:
    """A hook that runs a secret manager's CLI, without a shell, and reads the key from stdout.

    ::

        recovery.from_command(["vault", "kv", "get", "-field=api_key", "secret/runpod"])
        recovery.from_command(["op", "read", "op://ops/runpod/credential"])
        recovery.from_command(["aws", "secretsmanager", "get-secret-value",
                               "--secret-id", "runpod", "--query", "SecretString",
                               "--output", "text"])

    The command runs afresh on each recovery with stdin closed. A missing program, a
    non-zero exit, a timeout or empty output raises `SourceError` with the command's
    stderr; what it printed on stdout never appears in an error.
    """
    return FromCommand(argv, timeout=timeout)
