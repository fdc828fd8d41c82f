"""A *flight*: one recovery for one rejected key, shared by all who wait for it.

Threads wait on its `threading.Event`. Async tasks wait on a waiter made for their own
event loop, asyncio or trio, in any thread, which the flight wakes thread-safely.
Whoever settles the flight first (the hook's answer, or a waiter noticing the deadline
passed) wins; the others see the same outcome.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import math
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from ._rule import Outcome

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable

    from ._errors import AuthenticationError

__all__ = ["Flight", "on_asyncio", "on_event_loop", "remaining"]

_numbers = itertools.count(1)  # next() is atomic in CPython: no lock needed


class Flight:
    """One recovery (one read of the source) for one rejected generation, shared by all waiters."""

    __slots__ = (
        "_async_waiters",
        "deadline",
        "done",
        "error",
        "generation",
        "mark",
        "may_ask",
        "number",
        "outcome",
        "probing",
        "reads",
        "rejected_key",
        "settled",
        "started",
        "wait",
        "waiters",
    )

    def __init__(
        self,
        generation: int,
        rejected_key: str | None,
        started: float,
        deadline: float,
        *,
        mark: int,
        may_ask: bool,
        probing: bool,
    ) -> None:
        self.number = next(_numbers)  # names it in instrumentation events
        self.generation = generation
        self.rejected_key = rejected_key
        self.started = started
        self.deadline = deadline
        self.mark = mark  # the ledger's mark when it started: an acceptance after it is news
        self.may_ask = may_ask  # whether the hook may ask a person
        self.probing = probing  # the breaker's re-read: a new key or a cooldown error
        self.done = threading.Event()
        # Set under the credentials' lock by whoever settles the flight; `done` follows
        # once the outcome is logged, so a second settler (a deadline noticed meanwhile)
        # can tell it came too late.
        self.settled = False
        self.outcome = Outcome.FAILED
        self.wait = 0.0  # for `Outcome.STALE`: seconds before resending
        self.reads = 0  # calls of the hook (instrumentation)
        self.waiters = 1  # requests waiting for it, its starter included (instrumentation)
        self.error: AuthenticationError | None = None
        self._async_waiters: list[Callable[[], None]] = []

    def async_waiter(self) -> _AsyncWaiter:
        """A waiter for the running event loop (asyncio or trio)."""
        waiter: _AsyncWaiter = _AsyncioWaiter() if on_asyncio() else _TrioWaiter()
        self._async_waiters.append(waiter.wake_threadsafe)
        # `resolve` may have run between the caller's check and our append.
        if self.done.is_set():
            waiter.wake_threadsafe()
        return waiter

    def resolve(self) -> None:
        """Wake every waiter: the outcome is final."""
        self.done.set()
        for wake in self._async_waiters:
            wake()
        self._async_waiters.clear()

    def raise_if_failed(self) -> None:
        """Raise a fresh copy of the flight's error, so no two threads share a traceback."""
        if self.error is not None:
            raise copy.copy(self.error) from self.error.__cause__


def on_asyncio() -> bool:
    """Whether the caller runs on an asyncio loop (else, in async code, trio)."""
    asyncio = sys.modules.get("asyncio")
    if asyncio is None:
        return False  # no loop runs before asyncio is imported; importing it costs 30 ms
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def on_event_loop() -> bool:
    """Whether the caller runs on an event loop, asyncio's or trio's: it must not block."""
    if on_asyncio():
        return True
    trio = sys.modules.get("trio")
    return trio is not None and bool(trio.lowlevel.in_trio_run())


class _AsyncWaiter:
    """Waits on an event loop for a wake-up that may come from any thread."""

    def wake_threadsafe(self) -> None:
        raise NotImplementedError

    async def wait(self, timeout: float | None) -> bool:
        """Wait until woken (True) or until *timeout* seconds pass (False)."""
        raise NotImplementedError


class _AsyncioWaiter(_AsyncWaiter):
    __slots__ = ("_future", "_loop")

    def __init__(self) -> None:
        import asyncio  # noqa: PLC0415 -- loaded already: the caller runs on it

        self._loop = asyncio.get_running_loop()
        self._future: asyncio.Future[None] = self._loop.create_future()

    def wake_threadsafe(self) -> None:
        # A closed loop raises RuntimeError: nobody is waiting there any more.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(_set_result, self._future)

    async def wait(self, timeout: float | None) -> bool:
        import asyncio  # noqa: PLC0415 -- loaded already: the caller runs on it

        try:
            # shield: a waiter that times out or is cancelled leaves the future alone.
            await asyncio.wait_for(asyncio.shield(self._future), timeout)
        except (asyncio.TimeoutError, TimeoutError):
            return False
        return True


def _set_result(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class _TrioWaiter(_AsyncWaiter):
    __slots__ = ("_event", "_token")

    def __init__(self) -> None:
        import trio  # noqa: PLC0415 -- only ever imported where trio is already running

        self._token: Any = trio.lowlevel.current_trio_token()
        self._event: Any = trio.Event()

    def wake_threadsafe(self) -> None:
        # The run may be over (RunFinishedError): nobody is waiting there any more.
        with contextlib.suppress(RuntimeError):
            self._token.run_sync_soon(self._event.set)

    async def wait(self, timeout: float | None) -> bool:
        import trio  # noqa: PLC0415

        with trio.move_on_after(math.inf if timeout is None else timeout):
            await self._event.wait()
            return True
        return False


def remaining(flight: Flight, deadline: float | None = None) -> float | None:
    """Seconds to wait before checking whether *flight* (or the caller) should give up.

    The earlier of the flight's deadline and the caller's own *deadline*; None for
    never. Never quite zero: past the deadline, a flight settled by someone else is
    only a log line away from done, and waiters should nap, not spin, until then.
    """
    end = flight.deadline if deadline is None else min(flight.deadline, deadline)
    if end == math.inf:
        return None
    return max(_NAP, end - time.monotonic())


_NAP = 0.005
