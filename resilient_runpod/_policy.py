"""`RetryPolicy`: which transient failures are retried, how often, and for how long.

RunPod's serverless routes answer 429 when rate-limited; Cloudflare in front of them
answers 502, 503 and 504 during incidents. Whether a request may be sent again depends
on whether RunPod could have acted on it:

- 429: never processed; always safe.
- a connection that failed before the request was sent: never processed; always safe.
- 502/503/504, or a connection lost after sending: safe only for requests that can be
  repeated without effect: GET, HEAD, OPTIONS, and RunPod's status, stream, health,
  cancel and purge-queue routes. ``POST …/run`` and ``…/runsync`` may already have
  created a job, so they are retried only when the caller opts in. A GraphQL read
  (``POST …/graphql`` whose document holds queries only) changes nothing and is
  retried; a mutation may have been carried out, and is not.

A route is recognised only as whole path segments in its place,
``/v2/{endpoint}/{route}[/{job}]`` at the end of the path: the endpoint id is the user's
to choose, and ``/v2/healthz01/run`` creates a job however its id reads. A path that
is not recognised counts as not repeatable. A GraphQL document is read conservatively:
one that names ``mutation`` or ``subscription`` anywhere, even inside a string, counts
as a mutation (a read is then not retried, never the other way round).
"""

from __future__ import annotations

import enum
import json
import math
import re
import time
from dataclasses import dataclass, field
from typing import Final

import tenacity

__all__ = ["DEFAULT_POLICY", "RetryPolicy", "Verdict"]

_ALWAYS_SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
# Serverless routes that change nothing when repeated (cancel and purge are idempotent),
# and whether a job id follows them: /v2/{endpoint}/{route}[/{job}].
_IDEMPOTENT_ROUTES: Final = {
    "status": True,
    "stream": True,
    "cancel": True,
    "health": False,
    "purge-queue": False,
}
_VERSION_SEGMENT: Final = "v2"
_GRAPHQL_SEGMENT: Final = "graphql"
# A document that starts as a query (its keyword, or the "{" shorthand), after any
# comments and commas, the GraphQL grammar's ignored tokens besides white space.
_STARTS_AS_READ: Final = re.compile(r"(?:[\s,\ufeff]|#[^\n\r]*)*(?:query\b|\{)")
_WRITES: Final = re.compile(r"\b(?:mutation|subscription)\b")
_TOO_MANY_REQUESTS: Final = 429


class Verdict(enum.Enum):
    """What to do about one transient failure."""

    RETRY = "retry"
    UNSAFE = "unsafe"  # the request may have been acted on, and the caller did not opt in
    FINAL = "final"  # not a transient failure: the answer stands


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How transient failures (429, 502/503/504, lost connections) are retried.

    The same budget covers key recovery: a 401 inside a transient retry, or a 429 inside
    a recovery, is one loop with one count of sends and one deadline.

    Args:
        attempts: Sends per request for transient failures, the first included (``1``
            turns transient retries off).
        max_sends: The ceiling on sends per request: a flapping server never loops a
            request for ever. A send that met a rotation (recovery found a newer key) is
            refunded, up to a hard limit of four times this. At a 10 % rate of spurious
            401s, the default of 8 loses about one request in a hundred million.
        deadline: Seconds a request may take in all, recovery included; ``None``: no limit
            beyond the counts.
        max_retry_after: The longest ``Retry-After`` honoured, in seconds; longer ones
            give up at once.
        retry_unsafe: Also retry ``POST …/run``, ``…/runsync`` and GraphQL mutations after
            a 5xx or a lost connection (the job may then exist twice).
        statuses: The statuses that count as transient.
        backoff: The wait between transient retries when the server names none:
            exponential with full jitter, so a fleet does not retry in lockstep.
    """

    attempts: int = 5
    max_sends: int = 8
    deadline: float | None = None
    max_retry_after: float = 60.0
    retry_unsafe: bool = False
    statuses: frozenset[int] = frozenset({429, 502, 503, 504})
    backoff: tenacity.wait.wait_base = field(
        default_factory=lambda: tenacity.wait_random_exponential(multiplier=0.25, max=10.0)
    )

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1 (1 turns transient retries off)")
        if self.max_sends < max(2, self.attempts):
            raise ValueError("max_sends must be at least 2, and at least attempts")
        if self.deadline is not None and self.deadline <= 0:
            raise ValueError("deadline must be a positive number of seconds, or None")

    def verdict(
        self,
        method: str,
        path: str,
        status: int | None,
        *,
        sent: bool,
        body: bytes | None = None,
    ) -> Verdict:
        """Whether a failure may be retried.

        Args:
            method: The request's method.
            path: The request's URL path.
            status: The HTTP status, or ``None`` for a lost connection.
            sent: For a lost connection, whether any of the request may have gone out.
            body: The request's body, if the adapter holds it whole: tells a GraphQL
                read from a mutation.
        """
        if status is not None and status not in self.statuses:
            return Verdict.FINAL
        if status == _TOO_MANY_REQUESTS or (status is None and not sent):
            return Verdict.RETRY
        if self.retry_unsafe or _repeatable(method, path, body):
            return Verdict.RETRY
        return Verdict.UNSAFE

    def wait(self, transient_round: int, retry_after: str | None) -> float:
        """Seconds before transient retry number *transient_round* (1-based); inf: give up."""
        named = parse_retry_after(retry_after)
        if named is not None:
            return named if named <= self.max_retry_after else math.inf
        state = tenacity.RetryCallState(_NO_RETRYING, None, (), {})
        state.attempt_number = transient_round
        return float(self.backoff(state))


DEFAULT_POLICY: Final = RetryPolicy()
# Wait strategies read only the attempt number from the state they are given.
_NO_RETRYING: Final = tenacity.Retrying()


def _repeatable(method: str, path: str, body: bytes | None) -> bool:
    method = method.upper()
    if method in _ALWAYS_SAFE_METHODS:
        return True
    return _idempotent_route(path) or (method == "POST" and _graphql_read(path, body))


def _graphql_read(path: str, body: bytes | None) -> bool:
    """Whether *body*, posted to *path*, is a GraphQL document of queries only.

    ``…/graphql`` as the last whole segment, a JSON object body whose ``query`` starts as
    a query and nowhere names a mutation or a subscription. A batch (a JSON list), a body
    we were not given, or one that does not parse counts as a mutation.
    """
    if not body or path.rstrip("/").rsplit("/", 1)[-1] != _GRAPHQL_SEGMENT:
        return False
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return False
    query = document.get("query") if isinstance(document, dict) else None
    return (
        isinstance(query, str)
        and _STARTS_AS_READ.match(query) is not None
        and _WRITES.search(query) is None
    )


def _idempotent_route(path: str) -> bool:
    """Whether *path* ends in one of RunPod's idempotent serverless routes.

    ``…/v2/{endpoint}/{route}`` for a route without a job (health, purge-queue), and
    ``…/v2/{endpoint}/{route}/{job}`` for one with (status, stream, cancel); every
    segment whole and none empty. Anything else, ``/v2/healthz01/run`` included, is not.
    """
    segments = path.split("/")
    for takes_job in (False, True):
        tail = 4 if takes_job else 3
        if len(segments) <= tail:
            continue
        version, endpoint, route, *job = segments[-tail:]
        if (
            version == _VERSION_SEGMENT
            and endpoint
            and all(job)
            and _IDEMPOTENT_ROUTES.get(route) is takes_job
        ):
            return True
    return False


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds: a number, or an HTTP date from now; None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    import email.utils  # noqa: PLC0415 -- rarely needed: most servers send seconds

    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
