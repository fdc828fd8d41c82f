"""The recovery rule as two decision tables, with no I/O, no clock and no locks.

`after_401` decides what a request does when RunPod answers 401 to a key; `after_read`
decides what a recovery makes of what the key's source said. Both take plain facts and
return a code; `Credentials` gathers the facts under its lock and carries the code out,
and the engine (`_engine`) sends. The README's "Turbulence" section shows the same two
tables, and ``tests/test_rule.py`` checks them row by row.

Three ideas carry the tables:

- **A 401 means nothing was processed**, so the same request may always be sent again.
  The first 401 on a key is answered by sending the request once more with that key:
  that resend is the probe. A spurious 401 ends there, with no source read and no
  prompt, and no connection of the library's own is ever opened to ask RunPod.
- **"Nothing new" is one answer**, whatever the hook: the rejected key again, no key,
  a `chain` whose hooks had nothing newer, a prompt that cannot ask. What it means
  depends only on the key's history: a key RunPod never accepted is wrong (fail at
  once); a key it accepted before may be revoked ahead of its store (wait for the store,
  resending, for at most ``recovery_window`` seconds).
- **A person is asked only about a key known to be bad**: one never accepted, or one
  still rejected after a round of waiting for its store, and once per key.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "FIRST_PAUSE",
    "MAX_PAUSE",
    "Act",
    "Found",
    "Outcome",
    "Read",
    "Rejection",
    "after_401",
    "after_read",
    "may_ask",
    "pause",
]


class Act(enum.Enum):
    """What a request does after a 401 (`after_401`)."""

    RESEND_CURRENT = "resend_current"  # a newer key is current: send with it, free
    RESEND = "resend"  # send the same key again: the probe, or the key works after all
    JOIN = "join"  # a recovery for this key is running: wait for its outcome
    COOLDOWN = "cooldown"  # the breaker is open: fail at once with CooldownError
    WAIT = "wait"  # the store is stale and its next read is not due: pause, then resend
    READ = "read"  # ask the source: one flight, shared by every request rejected meanwhile


@dataclass(frozen=True, slots=True)
class Rejection:
    """The facts `after_401` decides on, gathered when a request's send got 401.

    Attributes:
        replaced: The key sent is no longer the current one.
        recovering: A recovery for the current key is running.
        cooling: The breaker is open and no re-read of a cheap source is due.
        accepted_since: RunPod accepted the key since this request's previous 401 with it.
        first: This is the request's first 401 with this key.
        known_rejected: Some request's resend of this key was rejected too, and RunPod
            accepted the key nowhere since.
        waiting: The key's store was read and found stale, and the next read is not due.
    """

    replaced: bool = False
    recovering: bool = False
    cooling: bool = False
    accepted_since: bool = False
    first: bool = True
    known_rejected: bool = False
    waiting: bool = False


# The table `after_401` reads top to bottom; the first row whose condition holds decides.
_AFTER_401: Final[tuple[tuple[str, Callable[[Rejection], bool], Act], ...]] = (
    ("the key was already replaced", lambda f: f.replaced, Act.RESEND_CURRENT),
    ("a recovery for the key is running", lambda f: f.recovering, Act.JOIN),
    ("RunPod accepted the key since", lambda f: f.accepted_since, Act.RESEND),
    ("a first 401 on a key not known bad", lambda f: f.first and not f.known_rejected, Act.RESEND),
    ("the breaker is open", lambda f: f.cooling, Act.COOLDOWN),
    ("the store is stale, next read not due", lambda f: f.waiting, Act.WAIT),
    ("otherwise", lambda _f: True, Act.READ),
)


def after_401(facts: Rejection) -> Act:
    """What a request does when RunPod answered 401 to its key: the first matching row."""
    return next(act for _, applies, act in _AFTER_401 if applies(facts))


class Found(enum.Enum):
    """What one read of the key's source gave."""

    NEW = "new"  # a key other than the rejected one
    NOTHING_NEW = "nothing_new"  # the rejected key, no key, or nobody to ask
    FAILED = "failed"  # the hook raised or timed out


class Outcome(enum.Enum):
    """What a recovery (one read of the source) means for every request waiting on it."""

    NEW = "new"  # adopt the new key and resend
    STALE = "stale"  # pause, then resend the same key: the store may not show the new key yet
    NEVER_ACCEPTED = "never_accepted"  # fail at once: the key was wrong from the start
    STALE_TOO_LONG = "stale_too_long"  # fail: the store held the rejected key for the window
    FAILED = "failed"  # fail: the hook raised, timed out or answered nonsense


@dataclass(frozen=True, slots=True)
class Read:
    """The facts `after_read` decides on.

    Attributes:
        found: What the source gave.
        accepted_before: RunPod accepted the rejected key at some point.
        window_open: The store has been stale for less than ``recovery_window`` seconds
            (or this is its first stale read).
        stale_episode: The source was already read and found stale for this key; a hook
            failing now may be a store caught mid-update.
    """

    found: Found
    accepted_before: bool = False
    window_open: bool = True
    stale_episode: bool = False


# The table `after_read` reads top to bottom; the first row whose condition holds decides.
_AFTER_READ: Final[tuple[tuple[str, Callable[[Read], bool], Outcome], ...]] = (
    ("a new key", lambda f: f.found is Found.NEW, Outcome.NEW),
    (
        "the hook failed, outside a stale episode",
        lambda f: f.found is Found.FAILED and not f.stale_episode,
        Outcome.FAILED,
    ),
    (
        "nothing new, on a key never accepted",
        lambda f: f.found is Found.NOTHING_NEW and not f.accepted_before,
        Outcome.NEVER_ACCEPTED,
    ),
    ("the hook failed, on a key never accepted", lambda f: not f.accepted_before, Outcome.FAILED),
    ("stale, within the window", lambda f: f.window_open, Outcome.STALE),
    ("stale, past the window", lambda _f: True, Outcome.STALE_TOO_LONG),
)


def after_read(facts: Read) -> Outcome:
    """What a read of the source means: the first matching row."""
    return next(outcome for _, applies, outcome in _AFTER_READ if applies(facts))


def may_ask(*, accepted_before: bool, stale_rounds: int, asked: bool, probing: bool) -> bool:
    """Whether this read may ask a person (`prompt`), or only read sources that cost nothing.

    A person is asked about a key known to be bad: one RunPod never accepted, or one
    still rejected after a round of waiting for its store. Once per key, and never by
    the breaker's periodic re-reads.
    """
    if asked or probing:
        return False
    return not accepted_before or stale_rounds >= 1


# The pause before resending a key whose store was found stale: the first round waits
# this long, each next one twice as long, up to the maximum.
FIRST_PAUSE: Final = 0.1
MAX_PAUSE: Final = 5.0


def pause(stale_rounds: int) -> float:
    """Seconds to wait after the *stale_rounds*-th stale read (1 for the first) before resending."""
    return float(min(FIRST_PAUSE * 2.0 ** max(0, stale_rounds - 1), MAX_PAUSE))
