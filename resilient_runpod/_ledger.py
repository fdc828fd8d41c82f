"""The key ledger: which key is current, and what RunPod has said about it.

It answers the questions the rule (`_rule`) asks, from what requests reported:

- which key to send (`current`: the key, its generation and its source, in one read);
- whether RunPod ever accepted it (`was_accepted`), and whether it did since a given
  401 (`rejected` hands each 401 a *mark*; an acceptance after it is news);
- whether some request already saw the key rejected twice in a row (known rejected);
- whether its store was found stale, since when, how many rounds, when to read again;
- whether a person was already asked about it;
- which recovered key RunPod has not accepted yet (`accepted` returns it once it is, for
  `persist` to save).

No lock and no clock of its own: `Credentials` calls it under its lock and passes the
time in. The hot path is `watching`: a request RunPod accepted costs one comparison,
unless that acceptance is news.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._keys import fingerprint
from ._rule import Rejection, pause
from .typing import RecoveredKey

__all__ = ["KeyState", "Ledger", "Stale"]


@dataclass(frozen=True, slots=True)
class KeyState:
    """The current key, its generation and its source, read together in one step."""

    key: str | None
    generation: int
    source: str

    def __repr__(self) -> str:
        return (
            f"KeyState({fingerprint(self.key)}, generation={self.generation}, "
            f"source={self.source!r})"
        )


@dataclass(slots=True)
class Stale:
    """The current key's store was read and still held it, though RunPod rejects it."""

    since: float  # when it was first found stale
    rounds: int  # stale reads so far
    next_read: float  # when the store may be read again


class Ledger:
    """What is known about the current key. Not thread-safe: the caller holds a lock."""

    __slots__ = (
        "_accepted",
        "_accepted_mark",
        "_asked",
        "_known_rejected",
        "_marks",
        "_unaccepted",
        "current",
        "stale",
        "watching",
    )

    def __init__(self, key: str | None, source: str) -> None:
        self.current = KeyState(key, 0, source)
        # The generation whose acceptance by RunPod would be news (None: none would be).
        self.watching: int | None = 0
        self._accepted = -1  # the newest generation RunPod accepted at least once
        self._marks = 0  # 401s reported so far; each request keeps the mark of its last
        self._accepted_mark = -1  # the mark when RunPod last accepted the current key
        self._known_rejected = False  # a resend of the current key was rejected too
        self._asked = False  # a person was asked about the current key
        self.stale: Stale | None = None
        # The recovered key RunPod has not accepted yet, and its generation.
        self._unaccepted: tuple[int, RecoveredKey] | None = None

    def install(self, key: str, source: str, *, recovered: bool) -> KeyState:
        """Make *key* current, as a new generation; a *recovered* one is told of when accepted."""
        state = self.current = KeyState(key, self.current.generation + 1, source)
        self.watching = state.generation
        self._known_rejected = self._asked = False
        self.stale = None
        self._unaccepted = (state.generation, RecoveredKey(key, source)) if recovered else None
        return state

    def was_accepted(self, generation: int) -> bool:
        """Whether RunPod accepted *generation*'s key at least once."""
        return self._accepted >= generation

    def accepted(self, generation: int) -> RecoveredKey | None:
        """RunPod accepted *generation*'s key (news: `watching` was it).

        Clears what its 401s suggested. Returns the recovered key to tell its hook of,
        the first time RunPod accepts it.
        """
        self.watching = None
        self._accepted = max(self._accepted, generation)
        if generation != self.current.generation:
            return None
        self._accepted_mark = self._marks
        self._known_rejected = False
        self.stale = None
        found, self._unaccepted = self._unaccepted, None
        return found[1] if found is not None and found[0] == generation else None

    def rejected(
        self, generation: int, mark: int | None, *, resendable: bool = True
    ) -> tuple[Rejection, int]:
        """A request's send with *generation* got 401; *mark* is its previous 401's (or None).

        Returns the facts about the key for `_rule.after_401` (without the flight and
        breaker, which `Credentials` adds), and this 401's mark for the request to keep.
        A request that cannot be sent again (*resendable* false) cannot probe the key:
        its facts lead to a read of the source.
        """
        self._marks += 1
        if generation != self.current.generation:
            return Rejection(replaced=True), self._marks
        self.watching = generation  # an acceptance from now on is news
        if not resendable:
            return Rejection(first=False, known_rejected=self._known_rejected), self._marks
        accepted_since = mark is not None and self.accepted_since(mark)
        if mark is not None and not accepted_since:
            self._known_rejected = True  # this request's resend was rejected as well
        facts = Rejection(
            accepted_since=accepted_since,
            # No key sent: there is nothing to probe, only something to find.
            first=mark is None and self.current.key is not None,
            known_rejected=self._known_rejected,
        )
        return facts, self._marks

    def accepted_since(self, mark: int) -> bool:
        """Whether RunPod accepted the current key since the 401 that got *mark*."""
        return self._accepted_mark >= mark

    def waiting(self, now: float) -> float:
        """Seconds until the stale store may be read again (0: due now, or not stale)."""
        return 0.0 if self.stale is None else max(0.0, self.stale.next_read - now)

    def stale_round(self, now: float) -> float:
        """The store was read and still holds the rejected key: one more round; its pause."""
        if self.stale is None:
            self.stale = Stale(since=now, rounds=0, next_read=now)
        self.stale.rounds += 1
        wait = pause(self.stale.rounds)
        self.stale.next_read = now + wait
        return wait

    def stale_for(self, now: float) -> float:
        """Seconds the store has been stale (0 if it is not)."""
        return 0.0 if self.stale is None else now - self.stale.since

    @property
    def stale_rounds(self) -> int:
        """Stale reads of the current key's store so far."""
        return 0 if self.stale is None else self.stale.rounds

    @property
    def asked(self) -> bool:
        """Whether a person was asked about the current key."""
        return self._asked

    def note_asked(self) -> None:
        """A read that may ask a person was started for the current key."""
        self._asked = True

    def forget_recovered(self) -> None:
        """The application set a key: no recovered key waits to be told of."""
        self._unaccepted = None
