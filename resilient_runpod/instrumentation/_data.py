"""What each instrumentation event carries: frozen, slotted, and never a key.

Every key appears as its fingerprint (``rpa_…9XQ2``), every URL as its host only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .._breaker import Breaker

__all__ = [
    "BreakerChanged",
    "Event",
    "RecoveryEnded",
    "RecoveryOutcome",
    "RecoveryStarted",
    "Rejected",
    "ResendReason",
    "Resent",
    "TransientRetry",
]

RecoveryOutcome = Literal[
    "recovered", "key_unchanged", "never_accepted", "source_stale", "hook_failed", "set_aside"
]
"""How a recovery ended; each but ``set_aside`` is also the name of its log event."""

ResendReason = Literal["probe", "rotation", "stale", "transient"]
"""Why a request was sent again (`Resent`)."""


@dataclass(frozen=True, slots=True)
class Rejected:
    """RunPod answered 401 to a request (``runpod.auth.rejected``).

    Attributes:
        fingerprint: The rejected key's fingerprint.
        host: The host the request went to.
        method: The request's method.
        attempt: Which send of the request this was (1: the first).
        url: The URL, without its key.
    """

    fingerprint: str
    host: str
    method: str
    attempt: int
    url: str


@dataclass(frozen=True, slots=True)
class RecoveryStarted:
    """A recovery flight started: the hook is about to read the key's source.

    Attributes:
        hook: The recovery hook's name.
        fingerprint: The rejected key's fingerprint.
        recovery: The flight's number in this process (the same in its `RecoveryEnded`
            and in the `Resent` of each request that waited for it).
    """

    hook: str
    fingerprint: str
    recovery: int


@dataclass(frozen=True, slots=True)
class RecoveryEnded:
    """A recovery flight ended, before the requests waiting for it wake.

    Attributes:
        outcome: How it ended (`RecoveryOutcome`).
        hook: The recovery hook's name.
        seconds: How long it ran.
        reads: How many times the hook was called (a failing source is read twice).
        waiters: How many requests waited for it, the one that started it included.
        fingerprint: The rejected key's fingerprint.
        new_fingerprint: The fingerprint of the key in use now (a new one if recovered).
        recovery: The flight's number, as in its `RecoveryStarted`.
    """

    outcome: RecoveryOutcome
    hook: str
    seconds: float
    reads: int
    waiters: int
    fingerprint: str
    new_fingerprint: str
    recovery: int


@dataclass(frozen=True, slots=True)
class Resent:
    """A request is sent again after a 401 or a transient failure.

    Attributes:
        reason: ``probe`` (the same key once more, after its first 401), ``rotation``
            (a newer key, found by recovery or by someone else), ``stale`` (the same key,
            after waiting for a store that still holds it) or ``transient`` (after a
            429, a 5xx or a lost connection).
        fingerprint: The fingerprint of the key it is sent with.
        host: The host the request goes to.
        method: The request's method.
        resend_count: Which resend of the request this is (1: the first), as
            OpenTelemetry's ``http.request.resend_count``.
        recovery: The number of the recovery flight the request waited for before this
            resend (`RecoveryEnded.recovery`), or ``None``.
        url: The URL, without its key: user info and secret query values removed.
    """

    reason: ResendReason
    fingerprint: str
    host: str
    method: str
    resend_count: int
    recovery: int | None
    url: str


@dataclass(frozen=True, slots=True)
class TransientRetry:
    """A transient failure will be retried after a pause (``runpod.transient.retry``).

    Attributes:
        status: The HTTP status; ``None`` for a lost connection.
        wait: Seconds before the next send.
        reason: The status as text, or the connection error's class name.
        host: The host the request went to.
        method: The request's method.
        attempt: Which transient failure of the request this was (1: the first).
        url: The URL, without its key.
    """

    status: int | None
    wait: float
    reason: str
    host: str
    method: str
    attempt: int
    url: str


@dataclass(frozen=True, slots=True)
class BreakerChanged:
    """The recovery circuit breaker changed state.

    Attributes:
        state: The new state.
        failures: Failed recoveries in a row, as counted now.
        previous: The state it left.
    """

    state: Breaker
    failures: int
    previous: Breaker


Event = Rejected | RecoveryStarted | RecoveryEnded | Resent | TransientRetry | BreakerChanged
"""Any instrumentation event: what a subscriber is called with."""
