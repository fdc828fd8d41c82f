"""Every error resilient-runpod raises.

The hierarchy::

    ResilientRunPodError
    ├── AuthenticationError        RunPod rejected the key (401) and recovery found none it accepts
    │   ├── StaleSourceError       ... and its source kept holding it for recovery_window
    │   └── CooldownError          ... and recovery is resting after repeated failures
    ├── PermissionDeniedError      the key is valid but may not do this (403): never recovered
    ├── RecoveryError              a recovery hook could not produce a key (chained as __cause__)
    │   ├── HookTimeoutError       ... because it ran past its timeout
    │   ├── SourceError            ... because its source (file, variable, command, config) failed
    │   └── NonInteractiveError    ... because it would have to ask a person and nobody can answer
    ├── InvalidKeyError            a key that cannot be sent (empty, padded, quoted, S3); ValueError
    ├── ConfigError                a config file that is not usable TOML; ValueError
    ├── TransientError             RunPod kept failing transiently (429, 5xx, lost connection),
    │                              or retrying would be unsafe (a job may already exist)
    └── BodyNotReplayableError     recovered, but the request's streamed body cannot be sent again;
                                   httpx.StreamError

Messages say what happened and what to do next. They name keys by fingerprint
(``rpa_…9XQ2``), never by value.

Where an error stands for one a client library or the runpod SDK would have raised (a
`TransientError` for requests' ``ConnectionError``, an `AuthenticationError` for the
SDK's), the adapters raise it through `also_as`: a copy that is also an instance of
those classes, so the ``except`` clauses callers already have still catch it.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import httpx

__all__ = [
    "AuthFailure",
    "AuthenticationError",
    "BodyNotReplayableError",
    "ConfigError",
    "ConfigProblem",
    "CooldownError",
    "HookTimeoutError",
    "InvalidKeyError",
    "NonInteractiveError",
    "PermissionDeniedError",
    "RecoveryError",
    "ResilientRunPodError",
    "SourceError",
    "StaleSourceError",
    "TransientError",
    "also_class",
    "install_request_redactor",
]

E = TypeVar("E", bound=BaseException)

KEYS_PAGE = "https://www.runpod.io/console/user/settings"
"""Where a person creates (and revokes) RunPod API keys."""

# The fixes RunPod's own troubleshooting page gives, in its order.
NEXT_STEPS = (
    "Check that RUNPOD_API_KEY is set and spelled right "
    "(`resilient-runpod doctor` finds near misses); "
    f"if the key was revoked or expired, create a new one at {KEYS_PAGE}; "
    "if it was pasted, copy it again without quotes, spaces or a trailing newline."
)


class ResilientRunPodError(Exception):
    """Base class of every error raised by resilient-runpod.

    Every one pickles (to cross a process pool), although most take keyword-only
    arguments that ``BaseException``'s own pickling would not pass back.
    """

    def __reduce__(self) -> tuple[Any, ...]:
        also = type(self).__dict__.get("_also_of")
        if also is not None:  # made by `also_as`: not importable by name, so rebuilt
            return (_restore_also, (*also, self.args, self.__dict__))
        return (_restore, (type(self), self.args, self.__dict__))


def _restore(cls: type[BaseException], args: tuple[Any, ...], state: dict[str, Any]) -> Any:
    """Unpickle an error without its ``__init__`` (the arguments it took are in *state*)."""
    error = cls.__new__(cls, *args)
    error.args = args
    error.__dict__.update(state)
    return error


def _restore_also(
    cls: type[BaseException],
    bases: tuple[type[BaseException], ...],
    args: tuple[Any, ...],
    state: dict[str, Any],
) -> Any:
    return _restore(also_class(cls, bases), args, state)


class AuthenticationError(ResilientRunPodError):
    """RunPod rejected the API key (HTTP 401) and recovery could not produce one it accepts.

    Attributes:
        fingerprint: The fingerprint of the last key RunPod rejected.
        attempts: How many times the request was sent.
        hooks: Names of the recovery hooks that were tried, in order.
        status_code: The HTTP status that ended the request (401).
        reason: Why recovery ended, as a code (`AuthFailure`); decide on this, not on
            the message.
        source: Where the rejected key came from, when known (``env:RUNPOD_API_KEY``,
            ``file:/var/run/secrets/runpod/api-key``, ``argument``).
    """

    def __init__(
        self,
        message: str,
        *,
        fingerprint: str,
        attempts: int = 1,
        hooks: Sequence[str] = (),
        status_code: int = 401,
        reason: AuthFailure | None = None,
        source: str = "",
    ) -> None:
        super().__init__(message)
        self.fingerprint = fingerprint
        self.attempts = attempts
        self.hooks = tuple(hooks)
        self.status_code = status_code
        self.reason = reason
        self.source = source


class AuthFailure(str, enum.Enum):
    """Why a request ended with `AuthenticationError`: a code to decide on."""

    NEVER_ACCEPTED = "never_accepted"  # RunPod never accepted the key, and nothing newer exists
    STALE_SOURCE = "stale_source"  # the source held the rejected key for recovery_window
    HOOK_FAILED = "hook_failed"  # the hook raised, timed out or answered nonsense
    STILL_REJECTED = "still_rejected"  # max_recoveries recovered keys were rejected too
    CEILING = "ceiling"  # the request reached its ceiling on sends
    COOLDOWN = "cooldown"  # the breaker is open
    DEADLINE = "deadline"  # the request's deadline passed during recovery


class StaleSourceError(AuthenticationError):
    """RunPod rejects a key it accepted before, and its source kept holding it.

    The source (a secret file, a variable, a secret manager) was read again and again
    for ``Credentials(recovery_window=...)`` seconds and never showed a new key: the
    rotation was not written there, or the key was revoked without a rotation. The
    ``source`` attribute names it.
    """


class CooldownError(AuthenticationError):
    """Recovery failed several times in a row, so it is not tried again until a cooldown ends.

    This keeps a dead key from hammering a secret store or a person. Setting a key with
    `Credentials.set_key` ends the cooldown at once.

    Attributes:
        retry_after: Seconds until recovery is tried again.
    """

    def __init__(self, message: str, *, fingerprint: str, retry_after: float) -> None:
        super().__init__(message, fingerprint=fingerprint, reason=AuthFailure.COOLDOWN)
        self.retry_after = retry_after


class PermissionDeniedError(ResilientRunPodError):
    """RunPod accepted the key but refused this operation (HTTP 403).

    The key is valid, so no recovery is attempted: another key would be needed, with more
    access, and choosing one is the key owner's decision.

    Attributes:
        fingerprint: The fingerprint of the key that was refused.
        status_code: The HTTP status (403).
        detail: What RunPod said, if it said anything short enough to quote.
    """

    def __init__(
        self, message: str, *, fingerprint: str, status_code: int = 403, detail: str | None = None
    ) -> None:
        super().__init__(message)
        self.fingerprint = fingerprint
        self.status_code = status_code
        self.detail = detail


class RecoveryError(ResilientRunPodError):
    """A recovery hook could not produce a key; chained as `AuthenticationError`'s ``__cause__``."""


class HookTimeoutError(RecoveryError):
    """A recovery hook ran past its timeout and was abandoned."""


class SourceError(RecoveryError):
    """A key source failed: a missing or unreadable file, an unset variable, a failing command."""


class NonInteractiveError(RecoveryError):
    """A prompt was needed but nobody can answer it (no terminal, CI, or prompting disabled).

    The message names the variable or file to set instead.

    Attributes:
        reason: Why nobody can answer, without the advice (``"stderr is not a terminal
            to show a prompt on"``): for callers that give advice of their own.
    """

    def __init__(self, message: str, *, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or message


class InvalidKeyError(ResilientRunPodError, ValueError):
    """A key that cannot be sent: empty, padded with whitespace, quoted, or an S3 key.

    Attributes:
        fingerprint: The fingerprint of the refused key, if it was a string.
    """

    def __init__(self, message: str, *, fingerprint: str | None) -> None:
        super().__init__(message)
        self.fingerprint = fingerprint


class ConfigProblem(str, enum.Enum):
    """Why the config file cannot be used: each cause has its own fix."""

    UNREADABLE = "unreadable"  # permissions, or another OS error
    NOT_REGULAR = "not-regular"  # a directory, a FIFO, a device
    TOO_LARGE = "too-large"
    NOT_UTF8 = "not-utf8"
    NOT_TOML = "not-toml"
    WRONG_TYPE = "wrong-type"  # an entry that is not a string, e.g. api_key = 5


class ConfigError(ResilientRunPodError, ValueError):
    """A config file that cannot be used (not TOML, unreadable, wrong types), or a bad setting.

    Attributes:
        path: The file in question (empty for a setting given in code).
        problem: What is wrong with the file, as a code (``None``: not about reading it).
    """

    def __init__(
        self, message: str, *, path: str = "", problem: ConfigProblem | None = None
    ) -> None:
        super().__init__(message)
        self.path = path
        self.problem = problem


def _keep(request: Any) -> Any:
    return request


# How `TransientError.request` makes its copy without keys: `_redact` installs its own
# when it is imported (it needs this module, so this module cannot import it). Every
# path that raises a TransientError (the engine, the adapters) imports `_redact` first.
_redact_request: Callable[[Any], Any] = _keep


def install_request_redactor(redactor: Callable[[Any], Any]) -> None:
    """Have `TransientError.request` store ``redactor(request)``: called by `_redact`."""
    global _redact_request  # noqa: PLW0603 -- set once, at the import of `_redact`
    _redact_request = redactor


class TransientError(ResilientRunPodError):
    """A transient failure (429, 502/503/504, lost connection) not retried, or no longer.

    Attributes:
        reason: Why retrying stopped: ``"exhausted"`` (the retry budget is spent),
            ``"deadline"`` (the request's deadline would pass), ``"retry_after"`` (the
            server asked for a longer wait than allowed), or ``"unsafe"`` (RunPod may
            have acted on the request, e.g. created a job, so it was not sent again).
        status_code: The last HTTP status, or ``None`` for a lost connection.
        history: What each send got and how long was waited after it, in order,
            e.g. ``(("503", 0.21), ("503", 0.48), ("503", None))``.
    """

    def __init__(
        self,
        message: str,
        *,
        reason: str,
        status_code: int | None,
        history: Sequence[tuple[str, float | None]] = (),
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.status_code = status_code
        self.history = tuple(history)

    # The client's request, where an adapter hands one over as its client would. A
    # property, so that whoever sets it (httpx's Client sets it on every RequestError that
    # passes through it) stores a copy without the key, never the request that was sent.
    @property
    def request(self) -> Any:
        """The request that failed, as a copy without keys; ``None`` if there is none."""
        return self.__dict__.get("_request")

    @request.setter
    def request(self, request: Any) -> None:
        self.__dict__["_request"] = _redact_request(request)


class BodyNotReplayableError(ResilientRunPodError, httpx.StreamError):
    """The key was recovered, but the rejected request's streamed body cannot be sent again.

    The next request will use the new key; send this one again with a body that can be
    re-read (``bytes``, ``content=``, ``json=``, ``data=`` or ``files=``).
    """


_Bases = tuple[type[BaseException], ...]
_also_classes: dict[tuple[type[BaseException], _Bases], type[BaseException]] = {}
_also_lock = threading.Lock()


def also_class(cls: type[BaseException], bases: _Bases) -> type[BaseException]:
    """The subclass of *cls* and *bases*, made once per pair; it keeps *cls*'s name."""
    made = _also_classes.get((cls, bases))
    if made is not None:
        return made
    with _also_lock:
        made = _also_classes.get((cls, bases))
        if made is None:
            also = " and a ".join(f"``{base.__module__}.{base.__qualname__}``" for base in bases)
            made = type(
                cls.__name__,
                (cls, *bases),
                {
                    "__module__": cls.__module__,
                    "__qualname__": cls.__qualname__,
                    "__doc__": f"{cls.__doc__}\n\nAlso a {also}, as the error it stands for.",
                    "_also_of": (cls, bases),  # how `__reduce__` makes it again
                },
            )
            _also_classes[cls, bases] = made
        return made
