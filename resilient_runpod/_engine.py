"""A request's loop, in one place: what to do when RunPod rejects a key or fails for a moment.

Three parts, each written once:

- `rule`: a generator that knows nothing about I/O. It yields *commands* and is sent
  their results.

  - `Send` (key): send the request with this key; reply with a `Reply`.
  - `DISCARD`: close the response last sent back; it will not be returned. Reply
    with what its body said (`said`), or ``None``.
  - `Recover`: key generation *g* was rejected; reply with what to do next (`Next`),
    which `Credentials.rejected` decides by the tables in `_rule`.
  - `Sleep`: wait this many seconds.

  When it returns, the last response is the answer. When it raises
  (`AuthenticationError`, `PermissionDeniedError`, `TransientError`,
  `BodyNotReplayableError`), that is the answer.
- The drivers, one per I/O mode: `run_sync` and `run_async` send the first request
  without building any of this (a request RunPod accepts costs one send, one status
  check and one comparison), then drive `rule`: sends and discards through the
  adapter's `Wire`, recovery and pauses through `carry_out` / `acarry_out` (blocking,
  or awaiting on asyncio or trio). httpx's auth flows drive `rule` the same way, with
  their sends yielded to httpx.
- The adapters' `Wire`: one small object per request that stamps the key, sends, and
  reads a status; nothing else.

The loop is a tenacity `Retrying` whose sleep is handed back to the driver, so sync and
async share one set of stop and wait strategies, and one budget covers key recovery and
transient retries alike (`RetryPolicy`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar, final

import tenacity

from ._answers import HTML_PAGE
from ._errors import (
    NEXT_STEPS,
    AuthenticationError,
    AuthFailure,
    BodyNotReplayableError,
    CooldownError,
    PermissionDeniedError,
    RecoveryError,
    TransientError,
)
from ._hooks import give_up_error, hook_name
from ._hosts import AnyURL, as_httpx_url, redact_url
from ._keys import fingerprint, key_id
from ._logging import logger
from ._policy import Verdict
from ._redact import scrubbed_cause
from ._rule import Act
from .instrumentation import _subscribers as _instrumented
from .instrumentation._data import Rejected, ResendReason, Resent, TransientRetry
from .instrumentation._subscribers import ResendSpan
from .typing import RecoveryContext

if TYPE_CHECKING:
    from ._credentials import Credentials
    from ._ledger import KeyState

__all__ = [
    "DISCARD",
    "FORBIDDEN",
    "UNAUTHORIZED",
    "AsyncWire",
    "Command",
    "Flow",
    "Recover",
    "Reply",
    "Send",
    "Sleep",
    "Wire",
    "acarry_out",
    "carry_out",
    "resending",
    "rule",
    "run_async",
    "run_sync",
    "stands",
    "warn_foreign_401",
]

R = TypeVar("R")

UNAUTHORIZED: Final = 401
FORBIDDEN: Final = 403
_ENGINE_STATUSES: Final = frozenset({UNAUTHORIZED, FORBIDDEN})


@dataclass(frozen=True, slots=True)
class Send:
    """Send the request with *key* (``None``: without one) and reply with a `Reply`.

    *resent* is the `Resent` event of a resend, when anyone subscribes: a driver sends
    within `instrumentation._subscribers.resend_span` of it.
    """

    key: str | None = None
    resent: Resent | None = None

    def __repr__(self) -> str:
        return f"Send({fingerprint(self.key)})"


@dataclass(frozen=True, slots=True)
class Recover:
    """RunPod rejected *generation*'s key: reply with what to do next (`Next`)."""

    generation: int
    context: RecoveryContext
    mark: int | None  # the request's previous 401 on this key (`Next.mark`), if any
    resendable: bool
    deadline: float | None


@dataclass(frozen=True, slots=True)
class Sleep:
    """Wait *seconds* before the next send."""

    seconds: float


class _Discard:
    __slots__ = ()

    def __repr__(self) -> str:
        return "DISCARD"


DISCARD: Final = _Discard()

Command = Send | _Discard | Recover | Sleep


@dataclass(frozen=True, slots=True)
class Reply:
    """What one send got: a status, or a lost connection.

    Attributes:
        status: The HTTP status; ``None`` when the connection was lost.
        retry_after: The response's ``Retry-After`` header, if any.
        error: The connection error, when there was no response.
        sent: For a lost connection, whether any of the request may have gone out.
    """

    status: int | None
    retry_after: str | None = None
    error: BaseException | None = None
    sent: bool = True


# What `rule` returns: the generator the drivers call `flow`.
Flow = Generator[Command, Any, None]


class _Again(Exception):  # noqa: N818 -- a signal between sends, never seen by users
    """Send again: tenacity retries on it; if its stop ends the loop, it is re-raised."""

    def __init__(self, reply: Reply, wait: float = 0.0) -> None:
        super().__init__()
        self.reply = reply
        self.wait = wait


def _wait(state: tenacity.RetryCallState) -> float:
    outcome = state.outcome
    error = outcome.exception() if outcome is not None else None
    return error.wait if isinstance(error, _Again) else 0.0


def _log_wait(state: tenacity.RetryCallState) -> None:
    logger.debug("runpod.retry.wait", send=state.attempt_number, seconds=state.upcoming_sleep)


# Before asking for a key again after a recovered key was rejected: exponential with
# jitter, so a fleet rejected at once does not ask its secret store in lockstep.
_DEFAULT_WAIT = tenacity.wait_exponential(multiplier=0.1, max=5.0) + tenacity.wait_random(0, 0.1)


class _Ceiling(tenacity.stop.stop_base):
    """The bounds on a request's sends, counted in one place.

    - Every send is *charged*, except one that met a rotation (recovery or another
      request found a newer key) or waited for a stale store: a request that lives
      through many rotations loses nothing to them. At `RetryPolicy.max_sends` charged
      sends the request stops, so a server that keeps refusing a valid key, or keeps
      failing, ends it.
    - A hard limit of four times that bounds the sends that were not stale-store
      resends, even for a key that rotates faster than requests complete.
    - Stale-store resends are bounded by ``recovery_window``: the flight that finds the
      store stale past it fails every request waiting.
    """

    def __init__(self, max_sends: int) -> None:
        self.max_sends = max_sends
        self.charged = 1  # the first send
        self.stale = 0  # resends made while waiting for a stale store

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        return (
            self.charged >= self.max_sends
            or retry_state.attempt_number - self.stale >= _HARD_LIMIT * self.max_sends
        )


_HARD_LIMIT = 4


def _retrying(
    credentials: Credentials, ceiling: _Ceiling, sleep: Callable[[float], None]
) -> tenacity.Retrying:
    """The one place the send loop is configured. Sleeping is the driver's job."""
    stop: tenacity.stop.stop_base = ceiling
    if credentials.stop is not None:
        stop = stop | credentials.stop
    return tenacity.Retrying(
        stop=stop,
        wait=_wait,
        retry=tenacity.retry_if_exception_type(_Again),
        sleep=sleep,
        reraise=True,
        before_sleep=_log_wait,
    )


def rule(  # noqa: C901, PLR0912, PLR0915 -- the rule, read top to bottom
    credentials: Credentials,
    method: str,
    raw_url: AnyURL,
    state: KeyState,
    first: Reply,
    *,
    replayable: bool = True,
    body: bytes | None = None,
) -> Flow:
    """Drive one request, whose first send got *first* with *state*'s key, to its answer.

    Only requests that were not simply accepted get here: the drivers handle those.
    """
    policy = credentials.retry
    parsed = as_httpx_url(raw_url)
    url = redact_url(parsed)
    host = parsed.host
    # Routes are matched as sent: an endpoint id with an encoded "/" is not a route.
    path = parsed.raw_path.split(b"?", 1)[0].decode("ascii", "replace")
    deadline = None if policy.deadline is None else time.monotonic() + policy.deadline
    reply = first
    history: list[tuple[str, float | None]] = []
    transient_rounds = 0
    recovered: int | None = None  # the generation of a recovered key this request was handed
    rejected_recovered = 0  # recovered keys this request saw rejected
    mark: int | None = None  # the ledger's mark of this request's last 401 (`Next.mark`)
    waiting = False  # the next send is a resend made while waiting for a stale store
    marked: int | None = None  # ... and the generation it was for
    pending: list[float] = []
    why: ResendReason = "probe"  # why the next send is a resend (`Resent`)
    waited_on: int | None = None  # ... and the recovery flight it waited for, if any
    try:
        ceiling = _Ceiling(policy.max_sends)
        for attempt in _retrying(credentials, ceiling, pending.append):
            with attempt:
                if pending:
                    yield Sleep(pending.pop())
                waiting_send, waiting = waiting, False
                if attempt.retry_state.attempt_number > 1:
                    state = credentials.current
                    ceiling.charged += 1
                    resent = None
                    if _instrumented.subscribers:
                        resent = Resent(
                            why,
                            fingerprint(state.key),
                            host,
                            method,
                            attempt.retry_state.attempt_number - 1,
                            waited_on,
                            url,
                        )
                        _instrumented.emit(resent)
                    reply = yield Send(state.key, resent)
                status = reply.status
                if status == UNAUTHORIZED:
                    yield DISCARD
                    generation = state.generation
                    if (
                        recovered == generation
                        and marked == generation
                        and not credentials.was_accepted(generation)
                    ):
                        # A recovered key nobody got through with, rejected again after
                        # its probe (one 401 alone may be spurious): counted once.
                        recovered = None
                        rejected_recovered += 1
                        if rejected_recovered >= credentials.max_recoveries:
                            raise _still_rejected(
                                credentials,
                                state.key,
                                method,
                                url,
                                (rejected_recovered, attempt.retry_state.attempt_number),
                            )
                        yield Sleep((credentials.wait or _DEFAULT_WAIT)(attempt.retry_state))
                    context = RecoveryContext(
                        fingerprint(state.key),
                        attempt.retry_state.attempt_number,
                        UNAUTHORIZED,
                        method,
                        url,
                        key_id(state.key),
                    )
                    _log_rejected(context, host)
                    try:
                        then = yield Recover(
                            generation,
                            context,
                            mark if marked == generation else None,
                            replayable,
                            deadline,
                        )
                    except AuthenticationError as exc:
                        _log_give_up(_why(exc), context)
                        raise
                    mark, marked = then.mark, generation
                    if not replayable:
                        raise _not_replayable(context, method, url, credentials)
                    why, waited_on = "probe", then.recovery
                    if then.act is Act.RESEND_CURRENT:
                        why = "rotation"
                        ceiling.charged -= 1  # a rotation made this 401: not the request's
                        if then.recovered:
                            recovered = credentials.current.generation
                    elif then.act is Act.WAIT:
                        why = "stale"
                        ceiling.charged -= 1  # the store is late: bounded by its window
                        ceiling.stale += 1
                        if deadline is not None and time.monotonic() + then.wait > deadline:
                            raise _deadline_passed(context, credentials)
                        waiting = True
                        raise _Again(reply, then.wait)  # noqa: TRY301 -- tenacity sends again
                    raise _Again(reply)  # noqa: TRY301 -- tenacity sends again
                if status == FORBIDDEN:
                    detail = yield DISCARD
                    raise _forbidden(state.key, method, url, detail)
                if status is not None and status not in policy.statuses:
                    credentials.accepted(state.generation)
                    return
                # A transient failure: 429, 502/503/504, or a lost connection.
                if status is not None:
                    yield DISCARD
                verdict = policy.verdict(method, path, status, sent=reply.sent, body=body)
                if waiting_send:
                    # A resend made while waiting for a stale store is the library's, not
                    # the request's: its failure is retried without charge, once a round.
                    ceiling.charged -= 1
                else:
                    transient_rounds += 1
                wait = policy.wait(max(1, transient_rounds), reply.retry_after)
                if verdict is Verdict.UNSAFE:
                    raise _transient("unsafe", method, url, reply, history)
                if transient_rounds >= policy.attempts:
                    raise _transient("exhausted", method, url, reply, history)
                if wait == float("inf"):
                    raise _transient("retry_after", method, url, reply, history)
                if deadline is not None and time.monotonic() + wait > deadline:
                    raise _transient("deadline", method, url, reply, history)
                if not replayable:
                    raise BodyNotReplayableError(
                        f"{method} {url} failed with {_what(reply)} and would be retried, but "
                        "its body was a stream that cannot be sent again. Send it again with "
                        "a body that can be re-read (bytes, json=, data=)."
                    )
                history.append((_what(reply), round(wait, 3)))
                if _instrumented.subscribers:  # the log among them: `runpod.transient.retry`
                    _instrumented.emit(
                        TransientRetry(
                            status,
                            round(wait, 3),
                            _what(reply),
                            host,
                            method,
                            transient_rounds,
                            url,
                        )
                    )
                why, waited_on = "transient", None
                raise _Again(reply, wait)  # noqa: TRY301 -- tenacity sends again
    except _Again as exc:
        sends = attempt.retry_state.attempt_number
        # The loop's bounds ended it: the ceiling on sends, or the user's stop.
        if exc.reply.status == UNAUTHORIZED:
            raise _ceiling_reached(credentials, state.key, method, url, sends) from None
        # The cause is the last lost connection, if that was the last failure.
        raise _transient("exhausted", method, url, exc.reply, history) from exc.reply.error


def _what(reply: Reply) -> str:
    if reply.status is not None:
        return str(reply.status)
    return type(reply.error).__name__


def _transient(
    reason: str, method: str, url: str, reply: Reply, history: list[tuple[str, float | None]]
) -> TransientError:
    why = {
        "unsafe": "and was not sent again: RunPod may already have acted on it (a job may "
        "exist). Check the job's status, or opt in with RetryPolicy(retry_unsafe=True)",
        "exhausted": "and kept failing until the retry budget was spent",
        "retry_after": "and RunPod asked to wait longer than RetryPolicy(max_retry_after=...)",
        "deadline": "and waiting again would pass the request's deadline",
    }[reason]
    trail = [*history, (_what(reply), None)]
    shown = ", ".join(w if s is None else f"{w} (waited {s:g} s)" for w, s in trail)
    logger.error("runpod.transient.gave_up", method=method, url=url, reason=reason, history=shown)
    error = TransientError(
        f"{method} {url} failed with {_what(reply)} {why}. History: {shown}.",
        reason=reason,
        status_code=reply.status,
        history=trail,
    )
    error.__cause__ = scrubbed_cause(reply.error)
    return error


def _log_rejected(context: RecoveryContext, host: str) -> None:
    if _instrumented.subscribers:  # the log among them: `runpod.auth.rejected`
        _instrumented.emit(
            Rejected(context.fingerprint, host, context.method, context.attempt, context.url)
        )


def _forbidden(key: str | None, method: str, url: str, detail: str | None) -> PermissionDeniedError:
    shown = fingerprint(key)
    logger.error(
        "runpod.auth.forbidden",
        method=method,
        url=url,
        status=FORBIDDEN,
        fingerprint=shown,
        detail=detail,
    )
    if detail == HTML_PAGE:
        what = (
            "The answer was an HTML page: that is usually a firewall or proxy in front of "
            "RunPod (Cloudflare), not the key. Check the network, VPN or proxy, and try again. "
        )
    else:
        what = (
            "RunPod answers 403 to a valid key that lacks permission for this (a read-only or "
            "restricted key?). No recovery was attempted. Use a key with the needed access "
            "(RunPod console > Settings > API Keys). "
        )
    said = f" ({detail!r})" if detail and detail != HTML_PAGE else ""
    return PermissionDeniedError(
        f"{method} {url} was refused with 403 Forbidden for API key {shown}{said}. {what}"
        "Recovery does not run on a 403.",
        fingerprint=shown,
        detail=detail,
    )


def _why(error: AuthenticationError) -> str:
    """The ``reason`` of a ``runpod.auth.recovery_failed`` event for *error*."""
    if isinstance(error, CooldownError):
        return "cooldown"
    return error.reason.value if error.reason is not None else "hook_failed"


def _not_replayable(
    context: RecoveryContext, method: str, url: str, credentials: Credentials
) -> BodyNotReplayableError:
    return BodyNotReplayableError(
        f"RunPod rejected key {context.fingerprint} on {method} {url}; recovery has a key "
        f"to send ({credentials.fingerprint}), but this request's body was a stream that "
        "cannot be sent again. Send the request again (the key is in place) with a body "
        "that can be re-read (bytes, json=, data=)."
    )


def _deadline_passed(context: RecoveryContext, credentials: Credentials) -> AuthenticationError:
    name = hook_name(credentials.recovery)
    error = give_up_error(
        context,
        name,
        RecoveryError("the request's deadline passed while waiting for the key's source"),
    )
    error.reason = AuthFailure.DEADLINE
    _log_give_up("deadline", context)
    return error


def _log_give_up(reason: str, context: RecoveryContext) -> None:
    logger.error(
        "runpod.auth.recovery_failed",
        reason=reason,
        method=context.method,
        url=context.url,
        status=context.status_code,
        attempt=context.attempt,
        fingerprint=context.fingerprint,
    )


def _still_rejected(
    credentials: Credentials, key: str | None, method: str, url: str, counts: tuple[int, int]
) -> AuthenticationError:
    recovered, sends = counts
    shown = fingerprint(key)
    name = hook_name(credentials.recovery)
    context = RecoveryContext(shown, sends, UNAUTHORIZED, method, url, key_id(key))
    _log_give_up("still_rejected", context)
    return AuthenticationError(
        f"RunPod rejected API key {shown} on {method} {url}, and kept rejecting the keys "
        f"recovery by {name!r} produced ({recovered} recovered key(s) rejected). {NEXT_STEPS}",
        fingerprint=shown,
        attempts=sends,
        hooks=(name,),
        reason=AuthFailure.STILL_REJECTED,
    )


def _ceiling_reached(
    credentials: Credentials, key: str | None, method: str, url: str, sends: int
) -> AuthenticationError:
    shown = fingerprint(key)
    name = hook_name(credentials.recovery)
    context = RecoveryContext(shown, sends, UNAUTHORIZED, method, url, key_id(key))
    _log_give_up("ceiling", context)
    return AuthenticationError(
        f"RunPod kept answering 401 to {method} {url} ({sends} sends, the last with API key "
        f"{shown}, the key {name!r} holds): the request reached its ceiling on sends "
        "(RetryPolicy.max_sends). If the key works elsewhere, RunPod or a proxy is refusing it "
        f"here; else it was revoked and its source not updated. {NEXT_STEPS}",
        fingerprint=shown,
        attempts=sends,
        hooks=(name,),
        reason=AuthFailure.CEILING,
    )


# -- what an adapter hands the engine ----------------------------------------------------


class _Wire(Generic[R]):
    """What sync and async wires share: the request, and how its answers read."""

    __slots__ = ()
    method: str = "GET"
    url: AnyURL = ""
    replayable: bool = True
    body: bytes | None = None
    lost: tuple[type[BaseException], ...] = ()

    def stamp(self, key: str | None) -> None:
        """Put *key* on the request (``None``: remove it)."""
        raise NotImplementedError

    def status(self, response: R) -> int:
        """A response's HTTP status."""
        raise NotImplementedError

    def retry_after(self, response: R) -> str | None:
        """A response's ``Retry-After`` header."""
        return None

    def unsent(self, error: BaseException) -> bool:
        """Whether a connection error was raised before anything was sent."""
        return False


class Wire(_Wire[R]):
    """One request, as one client library sends it: all the engine asks of an adapter.

    An adapter makes one per request (a subclass with ``__slots__``) and passes it to
    `run_sync`. The defaults suit a send that cannot fail halfway (the SDK's calls).

    Attributes:
        method: The request's method.
        url: The request's URL; a host outside the policy gets the request untouched.
        replayable: Whether the body can be sent again.
        body: The body, when the adapter holds it whole (``None`` otherwise): the
            retry policy reads it to tell a GraphQL read from a mutation.
        lost: The client's connection errors: retried where repeating is safe.
    """

    __slots__ = ()

    def send(self) -> R:
        """Send the request as it now is."""
        raise NotImplementedError

    def discard(self, response: R) -> str | None:
        """Close a response that will not be returned; what its body said (`said`), or None."""
        return None


class AsyncWire(_Wire[R]):
    """`Wire` for async clients (`run_async`): `send` and `discard` are awaited."""

    __slots__ = ()

    async def send(self) -> R:
        """Send the request as it now is."""
        raise NotImplementedError

    async def discard(self, response: R) -> str | None:
        """Close a response that will not be returned; what its body said (`said`), or None."""
        return None


# -- the drivers: carry out what the rule asks -------------------------------------------


def carry_out(credentials: Credentials, flow: Flow, command: Command) -> object:
    """Carry out a `Recover` or `Sleep` by blocking; return what to send back to *flow*.

    An `AuthenticationError` from recovery is thrown into *flow*, which reports it and
    raises it again.
    """
    if type(command) is Sleep:
        if command.seconds > 0:
            time.sleep(command.seconds)
        return None
    assert type(command) is Recover  # noqa: S101 -- the rule yields nothing else here
    try:
        return credentials.rejected(
            command.generation,
            command.context,
            mark=command.mark,
            resendable=command.resendable,
            deadline=command.deadline,
        )
    except AuthenticationError as exc:
        return flow.throw(exc)


async def acarry_out(credentials: Credentials, flow: Flow, command: Command) -> object:
    """`carry_out` for asyncio and trio: nothing here blocks the event loop."""
    if type(command) is Sleep:
        if command.seconds > 0:
            import anyio  # noqa: PLC0415 -- asyncio or trio; loaded only to back off

            await anyio.sleep(command.seconds)
        return None
    assert type(command) is Recover  # noqa: S101
    try:
        return await credentials.arejected(
            command.generation,
            command.context,
            mark=command.mark,
            resendable=command.resendable,
            deadline=command.deadline,
        )
    except AuthenticationError as exc:
        return flow.throw(exc)


@final
class resending:  # noqa: N801 -- used as a statement, like `contextlib.suppress`
    """The span around the resend a `Send` makes, if anyone traces resends.

    ::

        with resending(command, current=True) as trace:
            ...send...
            trace.got(reply)

    *current*: whether it is the current span while the request is sent, so that the
    HTTP client's own instrumentation nests in it. Leaving the block without `got`
    (an exception, a generator closed) ends the span with that error. Tracing never
    fails a request: a tracer that raises is logged.
    """

    __slots__ = ("_span",)

    def __init__(self, command: Send, *, current: bool) -> None:
        self._span: ResendSpan | None = None
        open_span = _instrumented.resend_span
        if command.resent is None or open_span is None:
            return
        try:
            self._span = open_span(command.resent, current)
        except Exception as exc:
            _instrumented.failed(open_span, "Resent", exc)

    def __enter__(self) -> resending:
        return self

    def got(self, reply: Reply) -> Reply:
        """The resend got *reply*: end the span with it. Returns *reply*."""
        self._end(reply.status, reply.error)
        return reply

    def __exit__(self, kind: object, error: BaseException | None, traceback: object) -> None:
        self._end(None, error)

    def _end(self, status: int | None, error: BaseException | None) -> None:
        span, self._span = self._span, None
        if span is None:
            return
        try:
            span.end(status, error)
        except Exception as exc:
            _instrumented.failed(span.end, "Resent", exc)


def stands(credentials: Credentials, state: KeyState, status: int) -> bool:
    """Whether the first answer, *status*, to a request sent with *state*'s key is final.

    A final answer confirms the key. Otherwise the adapter runs `rule` with it. For
    adapters that cannot hand their sends to `run_sync` / `run_async` (httpx's auth flows).
    """
    if status not in _ENGINE_STATUSES and status not in credentials.retry.statuses:
        credentials.accepted(state.generation)
        return True
    return False


def _first(wire: _Wire[R], response: R | None, error: BaseException | None) -> Reply:
    if error is not None:
        return Reply(None, error=error, sent=not wire.unsent(error))
    return Reply(wire.status(response), wire.retry_after(response))  # type: ignore[arg-type]


def run_sync(credentials: Credentials, wire: Wire[R], *, check_host: bool = True) -> R:
    """Send one request through the rule with a blocking client; return the final response.

    A request RunPod accepts costs one send, one status check and one comparison.

    Args:
        credentials: The key and the policy.
        wire: The request and how to send it.
        check_host: Whether the URL decides if the key is sent (`retry_init` sends nothing).
    """
    if check_host and not credentials.hosts.allows(wire.url):
        untouched = wire.send()
        if wire.status(untouched) == UNAUTHORIZED:
            warn_foreign_401(wire.url)
        return untouched
    state = credentials.current
    wire.stamp(state.key)
    response: R | None = None
    try:
        response = wire.send()
    except wire.lost as exc:
        first = _first(wire, None, exc)
    else:
        if stands(credentials, state, wire.status(response)):
            return response
        first = _first(wire, response, None)
    return _drive(credentials, wire, state, first, response)


def _drive(
    credentials: Credentials, wire: Wire[R], state: KeyState, first: Reply, response: R | None
) -> R:
    """Drive `rule` for a request whose first send got *first*: the I/O, recovery and pauses."""
    flow = rule(
        credentials,
        wire.method,
        wire.url,
        state,
        first,
        replayable=wire.replayable,
        body=wire.body,
    )
    reply: object = None
    try:
        while True:
            command = flow.send(reply)
            if command is DISCARD:
                reply = wire.discard(response)  # type: ignore[arg-type]  # follows a response
            elif type(command) is Send:
                wire.stamp(command.key)
                with resending(command, current=True) as trace:
                    try:
                        response = wire.send()
                    except wire.lost as exc:
                        response, reply = None, trace.got(_first(wire, None, exc))
                    else:
                        reply = trace.got(_first(wire, response, None))
            else:
                reply = carry_out(credentials, flow, command)
    except StopIteration:
        pass
    finally:
        flow.close()
    if response is None:  # pragma: no cover -- the rule never ends on a lost connection
        raise RuntimeError("the request ended without a response")
    return response


async def run_async(credentials: Credentials, wire: AsyncWire[R], *, check_host: bool = True) -> R:
    """`run_sync` for async clients (asyncio or trio)."""
    if check_host and not credentials.hosts.allows(wire.url):
        untouched = await wire.send()
        if wire.status(untouched) == UNAUTHORIZED:
            warn_foreign_401(wire.url)
        return untouched
    state = credentials.current
    wire.stamp(state.key)
    response: R | None = None
    try:
        response = await wire.send()
    except wire.lost as exc:
        first = _first(wire, None, exc)
    else:
        if stands(credentials, state, wire.status(response)):
            return response
        first = _first(wire, response, None)
    return await _adrive(credentials, wire, state, first, response)


async def _adrive(
    credentials: Credentials, wire: AsyncWire[R], state: KeyState, first: Reply, response: R | None
) -> R:
    """Drive `rule` for a request whose first send got *first*: the I/O, recovery and pauses."""
    flow = rule(
        credentials,
        wire.method,
        wire.url,
        state,
        first,
        replayable=wire.replayable,
        body=wire.body,
    )
    reply: object = None
    try:
        while True:
            command = flow.send(reply)
            if command is DISCARD:
                reply = await wire.discard(response)  # type: ignore[arg-type]
            elif type(command) is Send:
                wire.stamp(command.key)
                with resending(command, current=True) as trace:
                    try:
                        response = await wire.send()
                    except wire.lost as exc:
                        response, reply = None, trace.got(_first(wire, None, exc))
                    else:
                        reply = trace.got(_first(wire, response, None))
            else:
                reply = await acarry_out(credentials, flow, command)
    except StopIteration:
        pass
    finally:
        flow.close()
    if response is None:  # pragma: no cover
        raise RuntimeError("the request ended without a response")
    return response


_warned = False


def warn_foreign_401(url: AnyURL) -> None:
    """Say once per process when a RunPod-looking API outside the host policy answers 401.

    The key was not sent there (it is not an allowed host), which is usually the reason
    for the 401: an emulator or proxy that was not added with ``hosts=``.
    """
    global _warned  # noqa: PLW0603 -- once per process, by design
    if _warned:
        return
    parsed = as_httpx_url(url)
    if not (parsed.path.startswith("/v2/") or parsed.path.startswith("/graphql")):
        return
    _warned = True
    origin = f"{parsed.host}:{parsed.port}" if parsed.port else parsed.host
    logger.warning(
        "runpod.auth.foreign_host",
        url=redact_url(parsed),
        status=UNAUTHORIZED,
        hint=f"the key is only sent to RunPod's hosts and those listed in "
        f"Credentials(hosts=[...]); add {origin!r} there if it is yours (an emulator, a proxy)",
    )
