"""`Credentials`: the current key, its generation, and single-flight recovery.

Every adapter (httpx, requests, aiohttp, the SDK wrappers) holds one `Credentials`
and asks it two things: "which key now?" (`_current`, lock-free) and "key generation
*g* was rejected: get me a newer one" (`recover` / `arecover`).

Recovery is single-flight. The first caller to report generation *g* starts a
*flight* that runs the hook; everyone else who reports *g* while it runs waits for
that same flight, threads on a `threading.Event`, asyncio tasks (on any loop, in any
thread) on a future the flight resolves thread-safely. A caller reporting a
generation that is already old returns at once: a newer key is there to retry with.
The hook runs outside the lock, in its own thread (sync hooks) or task (async hooks),
so neither waiting requests nor unrelated ones are blocked by it, and a waiter that
is cancelled or interrupted does not abandon the flight for the others.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import os
import threading
import time
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import _keys
from ._config import keys_in_config
from ._errors import (
    NEXT_STEPS,
    CooldownError,
    HookTimeoutError,
    InvalidKeyError,
    RecoveryError,
)
from ._flight import Flight, remaining
from ._hooks import (
    accept,
    awaited,
    describe,
    give_up_error,
    hook_budget,
    hook_name,
    is_async_callable,
    tell_accepted,
)
from ._hosts import HostPolicy
from ._logging import logger, remember_key
from ._validate import Validation, checked_graphql_url, validate, validate_async
from .recovery import default
from .typing import RecoveredKey, RecoveryContext, RecoveryHook

if TYPE_CHECKING:
    import tenacity

__all__ = ["Credentials", "KeyState"]


@dataclass(frozen=True, slots=True)
class KeyState:
    """The current key, its generation and its source, read together in one step."""

    key: str | None
    generation: int
    source: str

    def __repr__(self) -> str:
        return (
            f"KeyState({_keys.fingerprint(self.key)}, generation={self.generation}, "
            f"source={self.source!r})"
        )


_live: weakref.WeakSet[Credentials] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # A lock held, or a flight run, by a thread of the parent does not exist in the child.
    for credentials in list(_live):
        credentials._lock = threading.Lock()  # noqa: SLF001 -- our own class
        credentials._flight = None  # noqa: SLF001


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_after_fork_in_child)


class Credentials:
    """The RunPod API key a program uses, and how to get a new one when RunPod rejects it.

    Args:
        api_key: The key. ``None`` resolves it as RunPod's tools do: ``RUNPOD_API_KEY``,
            then ``~/.runpod/config.toml`` (``[profile].api_key``, then runpodctl's
            ``apiKey``). No key at all is allowed: the first 401 then runs recovery.
        recovery: The hook run when RunPod rejects the key (see `RecoveryHook`).
            ``None`` uses `resilient_runpod.recovery.default`.
        hosts: Extra hosts that may receive the key, e.g. an emulator's ``"127.0.0.1:8000"``
            (RunPod's own hosts and the SDK's ``RUNPOD_*_BASE_URL`` hosts always may).
        profile: The config-file profile to read.
        max_recoveries: Recovery rounds per request before it fails with `AuthenticationError`.
        stop: An extra tenacity stop condition for those rounds (e.g. ``stop_after_delay(30)``);
            it can end them sooner, never later than *max_recoveries*.
        wait: A tenacity wait strategy between rounds after the first (which is immediate).
        hook_timeout: Seconds a hook may run before it is abandoned; ``None`` waits forever.
        failure_threshold: Failed recoveries in a row after which recovery rests.
        cooldown: Seconds recovery rests; requests rejected meanwhile fail at once.

    Raises:
        InvalidKeyError: *api_key* (or the resolved key) cannot be sent.
        ConfigError: the key had to come from a config file that is not TOML.
    """

    def __init__(
        self,
        api_key: str | None = None,
        recovery: RecoveryHook | None = None,
        *,
        hosts: Iterable[str] = (),
        profile: str = "default",
        max_recoveries: int = 2,
        stop: tenacity.stop.stop_base | None = None,
        wait: tenacity.wait.wait_base | None = None,
        hook_timeout: float | None = 30.0,
        failure_threshold: int = 3,
        cooldown: float = 60.0,
    ) -> None:
        if max_recoveries < 1:
            raise ValueError("max_recoveries must be at least 1")
        if recovery is None:
            recovery = default(profile=profile)
        if api_key is None:
            key, source = _resolve_key(profile)
        else:
            key, source = _keys.check(api_key), "argument"
        remember_key(key)
        self._current = KeyState(key, 0, source)
        self._hook: RecoveryHook = recovery
        self.hosts = HostPolicy(hosts)
        self.max_recoveries = max_recoveries
        self.stop = stop
        self.wait = wait
        self.hook_timeout = hook_timeout
        self.failure_threshold = failure_threshold
        self.cooldown = cooldown
        self._lock = threading.Lock()
        self._flight: Flight | None = None
        self._streak = 0  # recoveries in a row that produced no accepted key
        self._cooldown_until = 0.0
        self._recovered_gen: int | None = None  # produced by recovery, not yet accepted
        self._watch: int | None = None  # a success with this generation resets the streak
        # The recovered key RunPod has not accepted yet, and its generation (see `accepted`).
        self._unaccepted: tuple[int, RecoveredKey] | None = None
        _live.add(self)
        self._subscribe(recovery)

    # -- what callers read -------------------------------------------------------------

    @property
    def current(self) -> KeyState:
        """The key, its generation and its source, as one consistent snapshot."""
        return self._current

    @property
    def api_key(self) -> str | None:
        """The current key itself. Handle with care: never log or print it."""
        return self._current.key

    @property
    def fingerprint(self) -> str:
        """The current key's fingerprint, e.g. ``rpa_…9XQ2``: safe to show anywhere."""
        return _keys.fingerprint(self._current.key)

    @property
    def generation(self) -> int:
        """How many times the key has changed since this object was made."""
        return self._current.generation

    @property
    def source(self) -> str:
        """Where the current key came from (``env:RUNPOD_API_KEY``, ``argument``, ...)."""
        return self._current.source

    @property
    def recovery(self) -> RecoveryHook:
        """The hook run when RunPod rejects the key."""
        return self._hook

    def __repr__(self) -> str:
        return (
            f"<Credentials {self.fingerprint} source={self.source!r} "
            f"generation={self.generation} recovery={hook_name(self._hook)!r}>"
        )

    __str__ = __repr__

    # -- checking the key --------------------------------------------------------------

    def validate(self, api_url: str | None = None) -> Validation:
        """Ask RunPod (GraphQL ``myself { id }``) whether the current key works.

        Tells an accepted key from a rejected one (401), one without permission (403),
        no key at all, and a failure to reach RunPod. Runs no recovery; never raises
        for HTTP or network failures.

        Args:
            api_url: RunPod's API base (default: ``RUNPOD_API_BASE_URL`` or RunPod's own);
                an emulator's ``api_url`` in tests.

        Raises:
            ValueError: *api_url* is not a host this key may be sent to (see *hosts*).
        """
        return validate(self._current.key, checked_graphql_url(self.hosts, api_url))

    async def avalidate(self, api_url: str | None = None) -> Validation:
        """`validate` for asyncio."""
        return await validate_async(self._current.key, checked_graphql_url(self.hosts, api_url))

    # -- rotation pushed by the application --------------------------------------------

    def set_key(self, api_key: str, *, source: str = "set_key") -> None:
        """Use *api_key* from now on, e.g. when the application learns of a rotation.

        Requests in flight with the old key that get 401 retry with this one without
        running the hook. Ends a recovery cooldown. A recovery still running will not
        overwrite this key when it finishes.

        Raises:
            InvalidKeyError: *api_key* cannot be sent.
        """
        key = _keys.check(api_key)
        remember_key(key)
        with self._lock:
            self._install_locked(key, source)
            self._streak, self._cooldown_until = 0, 0.0
            self._recovered_gen = self._watch = self._unaccepted = None

    def _subscribe(self, hook: object) -> None:
        """Follow a hook that announces new keys (a watched file): each one is `set_key`."""
        subscribe = getattr(hook, "subscribe", None)
        if not callable(subscribe):
            return
        # The hook holds only a weak reference: subscribing must not keep us alive.
        ref = weakref.ref(self)

        def push(found: RecoveredKey) -> None:
            credentials = ref()
            if credentials is None or found.key == credentials.api_key:
                return
            try:
                credentials.set_key(found.key, source=found.source)
            except InvalidKeyError as exc:
                logger.warning(
                    "runpod.auth.pushed_key_refused",
                    source=found.source,
                    problem=str(exc),
                )
                return
            logger.info(
                "runpod.auth.key_pushed",
                source=found.source,
                fingerprint=credentials.fingerprint,
            )

        unsubscribe = subscribe(push)
        if callable(unsubscribe):
            weakref.finalize(self, unsubscribe)

    def _install_locked(self, key: str, source: str) -> None:
        self._current = KeyState(key, self._current.generation + 1, source)

    def _confirm(self, generation: int) -> None:
        """A request sent with *generation* was not rejected: that key is accepted."""
        if generation != self._watch:
            return  # the hot path: one comparison
        with self._lock:
            if generation != self._watch:
                return
            self._streak = 0
            self._watch = self._recovered_gen = None
            found, self._unaccepted = self._unaccepted, None
        if found is not None and found[0] == generation:
            tell_accepted(self._hook, found[1])

    # -- recovery ----------------------------------------------------------------------

    def recover(self, generation: int, context: RecoveryContext) -> None:
        """Block until a key newer than *generation* is current, running the hook if needed.

        Raises:
            AuthenticationError: the hook could not produce a usable key (its error is
                the ``__cause__``), or recovery is cooling down (`CooldownError`).
        """
        while True:
            flight = self._join(generation, context, asynchronous=False)
            if flight is None:
                return
            while not flight.done.wait(remaining(flight)):
                self._expire(flight, context)
            flight.raise_if_failed()
            generation = flight.generation  # a newer key is in; the loop returns at once

    async def arecover(self, generation: int, context: RecoveryContext) -> None:
        """`recover` for asyncio: waits without blocking the event loop."""
        while True:
            flight = self._join(generation, context, asynchronous=True)
            if flight is None:
                return
            waiter = flight.async_waiter()
            while not flight.done.is_set():
                try:
                    # shield: a waiter that times out or is cancelled leaves the flight alone.
                    await asyncio.wait_for(asyncio.shield(waiter), remaining(flight))
                except (asyncio.TimeoutError, TimeoutError):
                    self._expire(flight, context)
            flight.raise_if_failed()
            generation = flight.generation

    def _join(
        self, generation: int, context: RecoveryContext, *, asynchronous: bool
    ) -> Flight | None:
        """The flight to wait for, starting it if this caller is first; None if not needed."""
        with self._lock:
            current = self._current
            if current.generation != generation:
                return None
            if self._flight is not None:
                return self._flight
            now = time.monotonic()
            if self._recovered_gen == generation:
                # The key the last recovery produced was rejected too.
                self._recovered_gen = None
                self._count_failure_locked(now)
            if now < self._cooldown_until:
                raise self._cooldown_error(now, context)
            budget = hook_budget(self.hook_timeout, self._hook)
            deadline = math.inf if budget is None else now + budget
            flight = self._flight = Flight(generation, current.key, deadline)
        self._start(flight, context, asynchronous=asynchronous)
        return flight

    def _count_failure_locked(self, now: float) -> None:
        self._streak += 1
        if self._streak >= self.failure_threshold:
            self._cooldown_until = now + self.cooldown

    def _cooldown_error(self, now: float, context: RecoveryContext) -> CooldownError:
        retry_after = max(0.0, self._cooldown_until - now)
        return CooldownError(
            f"RunPod rejected API key {context.fingerprint} ({context.status_code} on "
            f"{context.method} {context.url}), and recovery failed {self._streak} times in a row, "
            f"so it is resting for {retry_after:.0f} more seconds instead of calling "
            f"{hook_name(self._hook)!r} again. Set a working key with Credentials.set_key() "
            f"to resume at once. {NEXT_STEPS}",
            fingerprint=context.fingerprint,
            retry_after=retry_after,
        )

    def _start(self, flight: Flight, context: RecoveryContext, *, asynchronous: bool) -> None:
        hook = self._hook
        started = time.monotonic()
        if asynchronous and is_async_callable(hook):
            task = asyncio.get_running_loop().create_task(
                self._run_async_hook(flight, context, started)
            )
            _background_tasks.add(task)
            task.add_done_callback(_background_tasks.discard)
            return

        def run() -> None:
            try:
                result = hook(context)
                if inspect.isawaitable(result):
                    result = asyncio.run(awaited(result))
            except BaseException as exc:
                self._finish(flight, context, started, error=exc)
            else:
                self._finish(flight, context, started, result=result)

        threading.Thread(target=run, name="resilient-runpod-recovery", daemon=True).start()

    async def _run_async_hook(
        self, flight: Flight, context: RecoveryContext, started: float
    ) -> None:
        try:
            result = await self._hook(context)  # type: ignore[misc]
        except BaseException as exc:
            self._finish(flight, context, started, error=exc)
            if not isinstance(exc, Exception):
                raise
        else:
            self._finish(flight, context, started, result=result)

    def _expire(self, flight: Flight, context: RecoveryContext) -> None:
        error = HookTimeoutError(
            f"recovery hook {hook_name(self._hook)!r} did not answer within "
            f"{self.hook_timeout} seconds and was abandoned"
        )
        self._finish(flight, context, flight.deadline - (self.hook_timeout or 0.0), error=error)

    def _finish(
        self,
        flight: Flight,
        context: RecoveryContext,
        started: float,
        *,
        result: object = None,
        error: BaseException | None = None,
    ) -> None:
        """Settle *flight* once: install the new key, or record why there is none."""
        name = hook_name(self._hook)
        key, source = None, name
        if error is None:
            try:
                key, source = accept(result, name, flight.rejected_key)
            except RecoveryError as exc:
                error = exc
        duration = round(time.monotonic() - started, 4)
        with self._lock:
            if flight.settled:
                return  # expired already, or finished by another path; first answer wins
            flight.settled = True
            now = time.monotonic()
            if key is not None:
                if self._current.generation == flight.generation:
                    remember_key(key)
                    self._install_locked(key, source)
                    self._recovered_gen = self._watch = self._current.generation
                    self._unaccepted = (self._current.generation, RecoveredKey(key, source))
                # else: a newer key was set meanwhile; a late finisher never overwrites it.
            else:
                self._count_failure_locked(now)
                self._watch = flight.generation
                flight.error = give_up_error(context, name, error)
            if self._flight is flight:
                self._flight = None
            new_fingerprint = self.fingerprint
        # Logged before the waiters wake, so the event precedes anything they do next.
        if key is not None:
            logger.info(
                "runpod.auth.recovered",
                hook=name,
                source=source,
                duration=duration,
                rejected=context.fingerprint,
                fingerprint=new_fingerprint,
                method=context.method,
                url=context.url,
            )
        else:
            logger.error(
                "runpod.auth.hook_failed",
                hook=name,
                error=describe(error),
                duration=duration,
                fingerprint=context.fingerprint,
                method=context.method,
                url=context.url,
            )
        flight.resolve()


_background_tasks: set[asyncio.Task[None]] = set()


def _resolve_key(profile: str) -> tuple[str | None, str]:
    """The key RunPod's tools would use: RUNPOD_API_KEY, then the config file."""
    raw = os.environ.get("RUNPOD_API_KEY")
    if raw is not None and raw.strip():
        return _keys.clean(raw), "env:RUNPOD_API_KEY"
    sdk_entry, ctl_entry = keys_in_config(profile)
    for entry in (sdk_entry, ctl_entry):
        if entry is not None and entry.key.strip():
            return _keys.clean(entry.key), f"config:{entry.entry}"
    return None, "none"
