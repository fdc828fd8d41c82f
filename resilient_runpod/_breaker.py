"""The recovery circuit breaker: a state machine over a clock, with no lock and no I/O.

Recoveries that truly fail (the hook raised or timed out, a key never accepted, a store
stale for the whole window) in a row open the breaker for ``cooldown`` seconds. While
it is open, a rejected request fails at once with `CooldownError`, except that every
``probe_interval`` seconds one recovery may re-read the sources that cost nothing (never
a person): a new key there, accepted by RunPod, closes it. After the cooldown the next
recovery is a trial (half open): a failure opens the breaker again at once.

`Credentials` owns one and calls it under its lock.
"""

from __future__ import annotations

import enum

__all__ = ["Breaker", "CircuitBreaker", "Gate"]


class Breaker(enum.Enum):
    """The recovery circuit breaker's state."""

    CLOSED = "closed"  # recovery runs when a key is rejected
    OPEN = "open"  # recovery failed too often: rejected requests fail at once
    HALF_OPEN = "half_open"  # the rest is over: the next recovery is a trial


class Gate(enum.Enum):
    """What the breaker lets a recovery do now (`CircuitBreaker.gate`)."""

    RUN = "run"  # recover as usual
    PROBE = "probe"  # one re-read of the cheap sources; nothing else
    REFUSE = "refuse"  # fail at once with CooldownError


class CircuitBreaker:
    """Counts failed recoveries in a row and rests recovery after *threshold* of them."""

    __slots__ = (
        "_next_probe",
        "_open_until",
        "cooldown",
        "failures",
        "probe_interval",
        "state",
        "threshold",
    )

    def __init__(self, threshold: int, cooldown: float, probe_interval: float) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self.probe_interval = probe_interval
        self.state = Breaker.CLOSED
        self.failures = 0  # failed recoveries in a row
        self._open_until = 0.0
        self._next_probe = 0.0

    def seen(self, now: float) -> Breaker:
        """The state as a caller sees it at *now*: open past its cooldown is half open."""
        if self.state is Breaker.OPEN and now >= self._open_until:
            return Breaker.HALF_OPEN
        return self.state

    def gate(self, now: float) -> Gate:
        """Whether a recovery may run at *now*; a `Gate.PROBE` books the next probe time."""
        if self.state is not Breaker.OPEN:
            return Gate.RUN
        if now >= self._open_until:
            self.state = Breaker.HALF_OPEN
            return Gate.RUN
        if now >= self._next_probe:
            self._next_probe = now + self.probe_interval
            return Gate.PROBE
        return Gate.REFUSE

    def would_refuse(self, now: float) -> bool:
        """Whether `gate` would refuse at *now*, without booking anything."""
        return self.state is Breaker.OPEN and now < self._open_until and now < self._next_probe

    def retry_after(self, now: float) -> float:
        """Seconds until the breaker lets recoveries run again."""
        return max(0.0, self._open_until - now)

    def failed(self, now: float) -> None:
        """A recovery truly failed: one more in a row; open at *threshold*, or at once on trial."""
        self.failures += 1
        if self.state is not Breaker.CLOSED or self.failures >= self.threshold:
            self.state = Breaker.OPEN
            self._open_until = now + self.cooldown
            self._next_probe = now + self.probe_interval

    def recovered(self) -> None:
        """A recovery found a new key: half open until RunPod accepts it."""
        if self.state is Breaker.OPEN:
            self.state = Breaker.HALF_OPEN

    def close(self) -> None:
        """RunPod accepted a key, or the application set one: recovery works again."""
        self.state, self.failures = Breaker.CLOSED, 0
