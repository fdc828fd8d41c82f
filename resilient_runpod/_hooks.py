"""Calling recovery hooks and judging their answers, for `Credentials`.

What a hook is named in events and errors, how long it may run, whether it is async,
whether its answer is a usable key, the error everyone waiting gets when it is not,
and telling a hook that RunPod accepted the key it found.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable
from typing import Any

from . import _keys
from ._errors import NEXT_STEPS, AuthenticationError, RecoveryError
from ._hosts import redact_text
from ._logging import known_keys, logger
from ._redact import scrubbed_exception
from .typing import RecoveredKey, RecoveryContext

__all__ = [
    "accept",
    "awaited",
    "describe",
    "give_up_error",
    "hook_budget",
    "hook_name",
    "is_async_callable",
    "tell_accepted",
]


def hook_name(hook: object) -> str:
    """How a hook is named in events and errors: its ``name``, else its qualified name."""
    name = getattr(hook, "name", None) or getattr(hook, "__qualname__", None)
    return str(name) if name else type(hook).__name__


def is_async_callable(obj: object) -> bool:
    """Whether calling *obj* gives a coroutine: an async function, or an async ``__call__``."""
    return inspect.iscoroutinefunction(obj) or inspect.iscoroutinefunction(
        getattr(obj, "__call__", None)  # noqa: B004 -- we want the coroutine method itself
    )


async def awaited(awaitable: Awaitable[Any]) -> Any:
    """Await *awaitable*: lets `asyncio.run` take any awaitable a hook returned."""
    return await awaitable


def hook_budget(hook_timeout: float | None, hook: object) -> float | None:
    """How long to wait for *hook*: ``hook_timeout``, stretched to cover the hook's own timeout.

    A hook that bounds itself (a prompt waiting for a person, a command with a timeout)
    declares it as ``hook.timeout``; the engine then waits a little longer than that, so
    the hook's own, more precise, error wins over an abandoned flight.
    """
    declared = getattr(hook, "timeout", None)
    if hook_timeout is None or not isinstance(declared, (int, float)):
        return hook_timeout
    return max(hook_timeout, declared + _HOOK_GRACE)


# Seconds granted beyond a hook's declared timeout, for it to report that timeout itself.
_HOOK_GRACE = 5.0


def accept(result: object, name: str) -> tuple[str, str]:
    """Check a hook's answer; return (key, source) or raise RecoveryError saying why not.

    The rejected key itself is a valid answer: the source has not changed (yet), and
    the engine decides what that means.
    """
    if result is None:
        raise RecoveryError(f"recovery hook {name!r} found no key")
    raw: object = result
    source = name
    if isinstance(result, RecoveredKey):
        raw, source = result.key, result.source
        if raw is None:
            raise RecoveryError(f"recovery hook {name!r} found no key in {source!r}")
    if not isinstance(raw, str):
        raise RecoveryError(
            f"recovery hook {name!r} returned a {type(raw).__name__}, not a key (str)"
        )
    try:
        key = _keys.clean(raw)
    except ValueError as exc:
        raise RecoveryError(f"recovery hook {name!r} returned an unusable key: {exc}") from exc
    return key, source


def describe(error: BaseException | None) -> str:
    """*error* as ``Type: message``, scrubbed of keys.

    A hook's own message may quote what it read (a key, a token): it is scrubbed before
    we repeat it.
    """
    if error is None:
        return ""
    return redact_text(f"{type(error).__name__}: {error}", known_keys())


# Why recovery failed when the person pressed Ctrl-C at the prompt.
CANCELLED = "the person cancelled the prompt"


def give_up_error(
    context: RecoveryContext, name: str, error: BaseException | None
) -> AuthenticationError:
    """The error every request waiting on a failed recovery raises, *error* as its cause."""
    if isinstance(error, KeyboardInterrupt):
        why = CANCELLED
    else:
        why = (
            redact_text(str(error), known_keys())
            if isinstance(error, RecoveryError)
            else describe(error)
        )
        why = why.rstrip(".")
    exc = AuthenticationError(
        f"RunPod rejected API key {context.fingerprint} ({context.status_code} on "
        f"{context.method} {context.url}) and recovery found no replacement: {why}. "
        f"{NEXT_STEPS}",
        fingerprint=context.fingerprint,
        attempts=context.attempt,
        hooks=(name,),
    )
    # A hook's own exception may quote what it read: chained only once scrubbed.
    exc.__cause__ = scrubbed_exception(error) if error is not None else None
    return exc


def tell_accepted(hook: object, found: RecoveredKey) -> None:
    """Tell *hook* that RunPod accepted the key it produced (`persist` saves it then)."""
    accepted = getattr(hook, "accepted", None)
    if not callable(accepted):
        return
    try:
        accepted(found)
    except Exception as exc:
        logger.warning(
            "runpod.auth.accepted_hook_failed",
            hook=hook_name(hook),
            fingerprint=_keys.fingerprint(found.key),
            error=describe(exc),
        )
