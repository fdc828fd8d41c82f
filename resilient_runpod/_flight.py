"""A *flight*: one run of the recovery hook for one rejected key, shared by all who wait.

Threads wait on its `threading.Event`; asyncio tasks, on any loop in any thread, wait on
a future the flight resolves thread-safely. Whoever settles the flight first (the
hook's answer, or a waiter noticing the deadline passed) wins; the others see the
same outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time

from ._errors import AuthenticationError, CooldownError

__all__ = ["Flight", "remaining"]


class Flight:
    """One run of the recovery hook for one rejected generation, shared by all waiters."""

    __slots__ = (
        "_async_waiters",
        "deadline",
        "done",
        "error",
        "generation",
        "rejected_key",
        "settled",
    )

    def __init__(self, generation: int, rejected_key: str | None, deadline: float) -> None:
        self.generation = generation
        self.rejected_key = rejected_key
        self.deadline = deadline
        self.done = threading.Event()
        # Set under the credentials' lock by whoever settles the flight; `done` follows
        # once the outcome is logged, so a second settler (a deadline noticed meanwhile)
        # can tell it came too late.
        self.settled = False
        self.error: AuthenticationError | None = None
        self._async_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def async_waiter(self) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._async_waiters.append((loop, future))
        # `resolve` may have run between the caller's check and our append.
        if self.done.is_set():
            _wake(future)
        return future

    def resolve(self) -> None:
        self.done.set()
        for loop, future in self._async_waiters:
            # A closed loop raises RuntimeError: nobody is waiting there any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_wake, future)
        self._async_waiters.clear()

    def raise_if_failed(self) -> None:
        """Raise a fresh copy of the flight's error, so no two threads share a traceback."""
        if self.error is not None:
            error = self.error
            copy = (
                CooldownError(
                    str(error), fingerprint=error.fingerprint, retry_after=error.retry_after
                )
                if isinstance(error, CooldownError)
                else AuthenticationError(
                    str(error),
                    fingerprint=error.fingerprint,
                    hooks=error.hooks,
                    attempts=error.attempts,
                )
            )
            raise copy from error.__cause__


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def remaining(flight: Flight) -> float | None:
    """Seconds to wait before checking whether *flight* may be abandoned; None for never.

    Never quite zero: past the deadline, a flight settled by someone else is only a log
    line away from done, and waiters should nap, not spin, until then.
    """
    if flight.deadline == math.inf:
        return None
    return max(_NAP, flight.deadline - time.monotonic())


_NAP = 0.005
