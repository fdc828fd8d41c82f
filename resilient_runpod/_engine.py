"""The rule, in one place: a 401 leads to one shared recovery, then a bounded retry.

`negotiate` is a generator that knows nothing about I/O. It yields *commands* and the
adapter (httpx transport or auth, requests, aiohttp, the SDK wrappers) carries them out
with its own client, sync or async:

- `Send` (key): send the request with this key; reply with the HTTP status.
- `DISCARD`: close the response last sent back; it will not be returned.
- `Recover`: key generation *g* was rejected; call ``credentials.recover`` (or ``arecover``).
- `Sleep`: back off this many seconds (``time.sleep`` or ``asyncio.sleep``).

When the generator returns, the last response is the answer. When it raises
(`AuthenticationError`, `PermissionDeniedError`, `BodyNotReplayableError`), that is
the answer. `run_sync` and `run_async` are the two drivers adapters that can call
their client use; httpx's auth flows drive the generator themselves.

The retry rounds are a tenacity `Retrying` whose sleep is handed back to the driver,
so sync and async share the same stop and wait strategies.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, TypeVar

import httpx
import tenacity

from ._errors import (
    NEXT_STEPS,
    AuthenticationError,
    BodyNotReplayableError,
    CooldownError,
    PermissionDeniedError,
)
from ._hooks import hook_name
from ._hosts import redact_url
from ._keys import fingerprint, key_id
from ._logging import logger
from .typing import RecoveryContext

if TYPE_CHECKING:
    from ._credentials import Credentials

__all__ = [
    "DISCARD",
    "FORBIDDEN",
    "UNAUTHORIZED",
    "Command",
    "Recover",
    "Send",
    "Sleep",
    "negotiate",
    "run_async",
    "run_sync",
]

UNAUTHORIZED: Final = 401
FORBIDDEN: Final = 403


@dataclass(frozen=True, slots=True)
class Send:
    """Send the request with *key* (``None``: without one) and reply with its status."""

    key: str | None = None

    def __repr__(self) -> str:
        return f"Send({fingerprint(self.key)})"


@dataclass(frozen=True, slots=True)
class Recover:
    """Get a key newer than *generation* from the credentials."""

    generation: int
    context: RecoveryContext


@dataclass(frozen=True, slots=True)
class Sleep:
    """Wait *seconds* before the next round."""

    seconds: float


class _Discard:
    __slots__ = ()

    def __repr__(self) -> str:
        return "DISCARD"


DISCARD: Final = _Discard()

Command = Send | _Discard | Recover | Sleep
Negotiation = Generator[Command, "int | None", None]


class _StillRejected(Exception):  # noqa: N818 -- a signal between rounds, never seen by users
    """The key a recovery produced was rejected too: another round, if the bounds allow."""


# Exponential backoff with jitter, so a fleet rejected at once does not retry in lockstep.
_DEFAULT_WAIT = tenacity.wait_exponential(multiplier=0.1, max=5.0) + tenacity.wait_random(0, 0.1)


def _retrying(credentials: Credentials, sleep: Callable[[float], None]) -> tenacity.Retrying:
    """The one place retry rounds are configured. Sleeping is the driver's job."""
    stop: tenacity.stop.stop_base = tenacity.stop_after_attempt(credentials.max_recoveries)
    if credentials.stop is not None:
        stop = stop | credentials.stop
    return tenacity.Retrying(
        stop=stop,
        # The first round runs at once (the rounds count starts after it); later ones back off.
        wait=credentials.wait or _DEFAULT_WAIT,
        retry=tenacity.retry_if_exception_type(_StillRejected),
        sleep=sleep,
        reraise=True,
        before_sleep=_log_backoff,
    )


def _log_backoff(state: tenacity.RetryCallState) -> None:
    logger.debug(
        "runpod.auth.backoff",
        round=state.attempt_number,
        seconds=round(state.upcoming_sleep, 3),
    )


def negotiate(
    credentials: Credentials, method: str, raw_url: httpx.URL | str, *, replayable: bool = True
) -> Negotiation:
    """Drive one request through rejection, recovery and retry.

    *raw_url* is redacted here, and only once something has to be reported: a request
    that succeeds pays nothing for it.
    """
    current = credentials._current  # noqa: SLF001 -- the engine and credentials are one unit
    status = yield Send(current.key)
    if status != UNAUTHORIZED and status != FORBIDDEN:  # noqa: PLR1714 -- hot path, no tuple
        credentials._confirm(current.generation)  # noqa: SLF001
        return
    url = redact_url(raw_url)
    if status == FORBIDDEN:
        yield DISCARD
        raise _forbidden(current.key, method, url)

    pending: list[float] = []
    rounds = 0
    try:
        for attempt in _retrying(credentials, pending.append):
            with attempt:
                if pending:
                    yield Sleep(pending.pop())
                rounds += 1
                yield DISCARD
                context = RecoveryContext(
                    fingerprint=fingerprint(current.key),
                    attempt=rounds,
                    status_code=UNAUTHORIZED,
                    method=method,
                    url=url,
                    key_id=key_id(current.key),
                )
                logger.warning(
                    "runpod.auth.rejected",
                    method=method,
                    url=url,
                    status=UNAUTHORIZED,
                    attempt=rounds,
                    fingerprint=context.fingerprint,
                )
                try:
                    yield Recover(current.generation, context)
                except AuthenticationError as exc:
                    reason = "cooldown" if isinstance(exc, CooldownError) else "hook_failed"
                    _log_give_up(reason, context, rounds)
                    raise
                if not replayable:
                    raise BodyNotReplayableError(
                        f"RunPod rejected key {context.fingerprint} on {method} {url}; recovery "
                        f"produced a new key ({credentials.fingerprint}), but this request's "
                        "body was a stream that cannot be sent again. Send the request again "
                        "(the new key is in place) with a body that can be re-read "
                        "(bytes, json=, data=)."
                    )
                current = credentials._current  # noqa: SLF001
                status = yield Send(current.key)
                if status == UNAUTHORIZED:
                    raise _StillRejected  # noqa: TRY301 -- tenacity retries on it
                if status == FORBIDDEN:
                    yield DISCARD
                    raise _forbidden(current.key, method, url)
                credentials._confirm(current.generation)  # noqa: SLF001
                return
    except _StillRejected:
        yield DISCARD
        logger.warning(
            "runpod.auth.rejected",
            method=method,
            url=url,
            status=UNAUTHORIZED,
            attempt=rounds + 1,
            fingerprint=fingerprint(current.key),
        )
        raise _still_rejected(credentials, current.key, method, url, rounds) from None


def _forbidden(key: str | None, method: str, url: str) -> PermissionDeniedError:
    print_ = fingerprint(key)
    logger.error(
        "runpod.auth.forbidden", method=method, url=url, status=FORBIDDEN, fingerprint=print_
    )
    return PermissionDeniedError(
        f"RunPod accepted API key {print_} but refused {method} {url} (403 Forbidden): the key "
        "is valid and lacks permission for this (a read-only or restricted key?). No recovery "
        "was attempted. Use a key with the needed access (RunPod console > Settings > API Keys).",
        fingerprint=print_,
    )


def _log_give_up(reason: str, context: RecoveryContext, rounds: int) -> None:
    logger.error(
        "runpod.auth.recovery_failed",
        reason=reason,
        method=context.method,
        url=context.url,
        status=context.status_code,
        attempt=rounds,
        fingerprint=context.fingerprint,
    )


def _still_rejected(
    credentials: Credentials, key: str | None, method: str, url: str, rounds: int
) -> AuthenticationError:
    print_ = fingerprint(key)
    name = hook_name(credentials.recovery)
    context = RecoveryContext(print_, rounds, UNAUTHORIZED, method, url)
    _log_give_up("still_rejected", context, rounds)
    return AuthenticationError(
        f"RunPod rejected API key {print_} on {method} {url} after {rounds} recovery "
        f"round(s) by {name!r}: every key recovery produced was rejected too. {NEXT_STEPS}",
        fingerprint=print_,
        attempts=rounds + 1,
        hooks=(name,),
    )


R = TypeVar("R")


def run_sync(  # noqa: PLR0917 -- an adapter's three callables, in the order it writes them
    credentials: Credentials,
    method: str,
    url: httpx.URL | str,
    send: Callable[[str | None], R],
    status_of: Callable[[R], int],
    discard: Callable[[R], None],
    *,
    replayable: bool = True,
) -> R:
    """Carry out `negotiate`'s commands with a blocking client; return the final response."""
    flow = negotiate(credentials, method, url, replayable=replayable)
    response: R | None = None
    reply: int | None = None
    try:
        while True:
            command = flow.send(reply)
            reply = None
            if type(command) is Send:
                response = send(command.key)
                reply = status_of(response)
            elif command is DISCARD:
                discard(response)  # type: ignore[arg-type]
            elif type(command) is Recover:
                try:
                    credentials.recover(command.generation, command.context)
                except AuthenticationError as exc:
                    flow.throw(exc)  # the engine reports it, then re-raises it
            elif type(command) is Sleep:
                time.sleep(command.seconds)
    except StopIteration:
        return response  # type: ignore[return-value]
    finally:
        flow.close()


async def run_async(  # noqa: PLR0917 -- as run_sync
    credentials: Credentials,
    method: str,
    url: httpx.URL | str,
    send: Callable[[str | None], Awaitable[R]],
    status_of: Callable[[R], int],
    discard: Callable[[R], Awaitable[None]],
    *,
    replayable: bool = True,
) -> R:
    """`run_sync` for asyncio clients: nothing here blocks the event loop."""
    flow = negotiate(credentials, method, url, replayable=replayable)
    response: R | None = None
    reply: int | None = None
    try:
        while True:
            command = flow.send(reply)
            reply = None
            if type(command) is Send:
                response = await send(command.key)
                reply = status_of(response)
            elif command is DISCARD:
                await discard(response)  # type: ignore[arg-type]
            elif type(command) is Recover:
                try:
                    await credentials.arecover(command.generation, command.context)
                except AuthenticationError as exc:
                    flow.throw(exc)  # the engine reports it, then re-raises it
            elif type(command) is Sleep:
                await asyncio.sleep(command.seconds)
    except StopIteration:
        return response  # type: ignore[return-value]
    finally:
        flow.close()
