"""`Credentials`: the current key, its generation, single-flight recovery and the breaker.

Every adapter holds one `Credentials` and asks it two things: "which key now?"
(`current`, lock-free) and "key generation *g* was rejected: what now?" (`recover` /
`arecover`). The rule that decides what to do with the answer lives in `_engine`.

Recovery is single-flight. The first caller to report generation *g* starts a *flight*
that runs the hook in a thread of its own (an async hook runs on the caller's event
loop); everyone else who reports *g* while it runs waits for that same flight. A
caller reporting a generation that is already old returns at once: a newer key is there
to retry with. A flight ends in one of three ways (`Outcome`):

- NEW: the hook found a different key, now current.
- UNCHANGED: the source still holds the rejected key. The first time, that may be a
  spurious 401 on a key RunPod still accepts, so the request is sent once more with it.
  If that key is rejected again, the next flight *polls* the source with backoff until it
  changes, a request with the key is accepted after all, or `recovery_window` runs out:
  a Kubernetes Secret volume shows a rotation only after the kubelet's next sync.
- FAILED: the hook raised, returned nothing usable, timed out, or the window ran out.

Failed flights in a row open a circuit *breaker* (`Breaker`): requests rejected while it
is open fail at once with `CooldownError`, and the hook is re-read at most every
`probe_interval` seconds (never a person); a new key there closes it.
"""

from __future__ import annotations

import enum
import inspect
import math
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from . import _keys
from ._config import keys_in_config
from ._errors import (
    NEXT_STEPS,
    CooldownError,
    HookTimeoutError,
    InvalidKeyError,
    RecoveryError,
    SourceError,
)
from ._flight import Flight, Mode, Outcome, on_asyncio, on_event_loop, remaining
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
from ._policy import DEFAULT_POLICY, RetryPolicy
from ._validate import (
    KeyStatus,
    Validation,
    checked_graphql_url,
    probe_url,
    validate,
    validate_async,
)
from .recovery import default
from .typing import RecoveredKey, RecoveryContext, RecoveryHook

if TYPE_CHECKING:
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    import tenacity

__all__ = ["Breaker", "Credentials", "KeyState"]


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


class Breaker(enum.Enum):
    """The recovery circuit breaker's state."""

    CLOSED = "closed"  # recovery runs when a key is rejected
    OPEN = "open"  # recovery failed too often: rejected requests fail at once
    HALF_OPEN = "half_open"  # the rest is over: the next recovery is a trial


_live: weakref.WeakSet[Credentials] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # A lock held, or a flight run, by a thread of the parent does not exist in the child.
    for credentials in list(_live):
        credentials._lock = threading.Lock()  # noqa: SLF001 -- our own class
        credentials._flight = None  # noqa: SLF001
        credentials._teller = None  # noqa: SLF001 -- its thread stayed in the parent


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
        max_recoveries: Recovered keys a request may see rejected before it fails with
            `AuthenticationError`. Rotations made by others, and a source that still holds
            a key RunPod accepts, do not count.
        stop: An extra tenacity stop condition for a request's sends (e.g.
            ``stop_after_delay(30)``); it can end them sooner, never later.
        wait: A tenacity wait strategy before asking for a key again after a recovered key
            was rejected (the first retry after a 401 is immediate).
        hook_timeout: Seconds a hook may run before it is abandoned; ``None`` waits forever.
            Stretched to cover a hook's own declared ``timeout`` (a prompt's 300 s).
        recovery_window: Seconds a source that still holds the rejected key is polled
            before recovery gives up. The default, 150, covers a Kubernetes Secret volume:
            the kubelet's sync period (60 s) plus its secret cache's TTL (60 s), with room
            to spare. ``0`` gives up at once.
        failure_threshold: Failed recoveries in a row that open the breaker.
        cooldown: Seconds the breaker stays open; requests rejected meanwhile fail at once.
        probe_interval: While the breaker is open, how often a hook that reads a source
            (not a person) is read again; a new key there closes the breaker.
        retry: How transient failures (429, 5xx, lost connections) are retried, and the
            per-request ceiling on sends and deadline (see `RetryPolicy`); ``None`` keeps
            the defaults.

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
        recovery_window: float = 150.0,
        failure_threshold: int = 3,
        cooldown: float = 60.0,
        probe_interval: float = 5.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        if recovery is not None and not callable(recovery):
            raise TypeError(
                f"recovery must be a hook: a callable taking a RecoveryContext (such as "
                f"recovery.from_env()), not {type(recovery).__name__}"
            )
        if max_recoveries < 1:
            raise ValueError("max_recoveries must be at least 1")
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if hook_timeout is not None and hook_timeout <= 0:
            raise ValueError("hook_timeout must be positive, or None for no limit")
        if min(recovery_window, cooldown, probe_interval) < 0:
            raise ValueError("recovery_window, cooldown and probe_interval cannot be negative")
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
        self.recovery_window = recovery_window
        self.failure_threshold = failure_threshold
        self.cooldown = cooldown
        self.probe_interval = probe_interval
        self.retry = retry if retry is not None else DEFAULT_POLICY
        self._lock = threading.Lock()
        self._flight: Flight | None = None
        self._breaker = Breaker.CLOSED
        self._failures = 0  # failed recoveries in a row
        self._open_until = 0.0
        self._next_probe = 0.0
        # The generation whose source said "unchanged": rejected again, it is polled.
        self._suspect: int | None = None
        # A request accepted with this generation matters (see `_confirm`).
        self._watch: int | None = None
        # The recovered key RunPod has not accepted yet, and its generation (see `accepted`).
        self._unaccepted: tuple[int, RecoveredKey] | None = None
        # The newest recovered generation RunPod has accepted at least once.
        self._accepted = -1
        # Tells hooks of accepted keys off the event loop, in order (see `_confirm`).
        self._teller: ThreadPoolExecutor | None = None
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

    @property
    def breaker(self) -> Breaker:
        """The recovery breaker's state: `Breaker.OPEN` while recovery rests."""
        with self._lock:
            if self._breaker is Breaker.OPEN and time.monotonic() >= self._open_until:
                return Breaker.HALF_OPEN
            return self._breaker

    def _derive(self, api_key: str) -> Credentials:
        """Credentials for *api_key* with everything else of ours: hook, hosts and policy.

        For objects that bring a key of their own (the SDK's ``Endpoint(..., api_key=K)``).

        Raises:
            InvalidKeyError: *api_key* cannot be sent.
        """
        derived = Credentials(
            api_key,
            self._hook,
            max_recoveries=self.max_recoveries,
            stop=self.stop,
            wait=self.wait,
            hook_timeout=self.hook_timeout,
            recovery_window=self.recovery_window,
            failure_threshold=self.failure_threshold,
            cooldown=self.cooldown,
            probe_interval=self.probe_interval,
            retry=self.retry,
        )
        derived.hosts = self.hosts
        return derived

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
        running the hook. So do those already waiting for a recovery: this key is its
        answer. Ends a recovery cooldown. A recovery still running is set aside: it will
        not overwrite this key, nor count as a failure, when it finishes.

        Raises:
            InvalidKeyError: *api_key* cannot be sent.
        """
        key = _keys.check(api_key)
        remember_key(key)
        with self._lock:
            self._install_locked(key, source)
            self._close_locked()
            self._suspect = self._watch = self._unaccepted = None
            superseded, self._flight = self._flight, None
            if superseded is not None:
                superseded.settled = True
                superseded.outcome = Outcome.NEW
        if superseded is not None:
            # A prompt stays on screen until answered; what is typed there is not used.
            logger.info(
                "runpod.auth.recovery_set_aside",
                hook=hook_name(self._hook),
                rejected=_keys.fingerprint(superseded.rejected_key),
                fingerprint=_keys.fingerprint(key),
            )
            superseded.resolve()

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
            self._watch = None
            self._accepted = max(self._accepted, generation)
            if self._suspect == generation:
                # A spurious 401: the key works. A flight polling for a new one can stop.
                self._suspect = None
                if self._flight is not None and self._flight.generation == generation:
                    self._flight.key_accepted.set()
            self._close_locked()
            found, self._unaccepted = self._unaccepted, None
        if found is not None and found[0] == generation:
            if on_event_loop():
                # `persist` writes a file then: not on the loop, which must not block. One
                # worker keeps the saves in order, and the interpreter waits for it at exit.
                self._tell_later().submit(tell_accepted, self._hook, found[1])
            else:
                tell_accepted(self._hook, found[1])

    def _tell_later(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._teller is None:
                from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415 -- rarely

                self._teller = ThreadPoolExecutor(1, thread_name_prefix="resilient-runpod-told")
            return self._teller

    def _was_accepted(self, generation: int) -> bool:
        """Whether RunPod accepted *generation*'s key at least once since it was recovered."""
        return self._accepted >= generation

    def _close_locked(self) -> None:
        self._breaker, self._failures = Breaker.CLOSED, 0

    # -- recovery ----------------------------------------------------------------------

    def recover(
        self, generation: int, context: RecoveryContext, *, deadline: float | None = None
    ) -> Outcome:
        """Block until there is something to send instead of the rejected *generation*.

        Returns `Outcome.NEW` when a newer key is current, `Outcome.UNCHANGED` when the
        rejected key is worth sending once more (the source still holds it).

        Args:
            generation: The rejected key's generation.
            context: What was rejected, for the hook and the events.
            deadline: A `time.monotonic` time after which this caller stops waiting.

        Raises:
            AuthenticationError: the hook could not produce a usable key (its error is
                the ``__cause__``), the deadline passed, or the breaker is open
                (`CooldownError`).
        """
        flight = self._join(generation, context, asynchronous=False)
        if flight is None:
            return Outcome.NEW
        while not flight.done.wait(remaining(flight, deadline)):
            self._check(flight, context, deadline)
        flight.raise_if_failed()
        return flight.outcome

    async def arecover(
        self, generation: int, context: RecoveryContext, *, deadline: float | None = None
    ) -> Outcome:
        """`recover` for asyncio and trio: waits without blocking the event loop."""
        flight = self._join(generation, context, asynchronous=True)
        if flight is None:
            return Outcome.NEW
        waiter = flight.async_waiter()
        while not flight.done.is_set():
            if not await waiter.wait(remaining(flight, deadline)):
                self._check(flight, context, deadline)
        flight.raise_if_failed()
        return flight.outcome

    def _check(self, flight: Flight, context: RecoveryContext, deadline: float | None) -> None:
        """Woken without an outcome: give up on the flight, or the caller's deadline."""
        now = time.monotonic()
        if deadline is not None and now >= deadline and not flight.done.is_set():
            raise give_up_error(
                context,
                hook_name(self._hook),
                RecoveryError("the request's deadline passed while recovery was running"),
            )
        if now >= flight.deadline:
            self._expire(flight, context)

    def _join(
        self, generation: int, context: RecoveryContext, *, asynchronous: bool
    ) -> Flight | None:
        """The flight to wait for, starting it if this caller is first; None if not needed."""
        hook = self._hook
        interactive = bool(getattr(hook, "interactive", False))
        with self._lock:
            current = self._current
            if current.generation != generation:
                return None
            # A flight, while there is one, is for the current generation: whatever
            # installs a key (`_finish`, `set_key`) also ends or sets aside the flight.
            if self._flight is not None:
                return self._flight
            now = time.monotonic()
            mode = Mode.POLL if self._suspect == generation and not interactive else Mode.READ
            if self._breaker is Breaker.OPEN:
                if now >= self._open_until:
                    self._breaker = Breaker.HALF_OPEN
                elif not interactive and now >= self._next_probe:
                    self._next_probe = now + self.probe_interval
                    mode = Mode.PROBE
                else:
                    raise self._cooldown_error(now, context)
            budget = hook_budget(self.hook_timeout, hook)
            if mode is Mode.POLL:
                budget = None if budget is None else budget + self.recovery_window
            deadline = math.inf if budget is None else now + budget
            flight = self._flight = Flight(generation, current.key, now, deadline, mode)
        self._start(flight, context, asynchronous=asynchronous)
        return flight

    def _cooldown_error(self, now: float, context: RecoveryContext) -> CooldownError:
        retry_after = max(0.0, self._open_until - now)
        return CooldownError(
            f"RunPod rejected API key {context.fingerprint} ({context.status_code} on "
            f"{context.method} {context.url}), and recovery failed {self._failures} times in a "
            f"row, so it is resting for {retry_after:.0f} more seconds instead of calling "
            f"{hook_name(self._hook)!r} again. Set a working key with Credentials.set_key() "
            f"to resume at once. {NEXT_STEPS}",
            fingerprint=context.fingerprint,
            retry_after=retry_after,
        )

    def _start(self, flight: Flight, context: RecoveryContext, *, asynchronous: bool) -> None:
        """Run *flight* in a thread of its own; an async hook runs on an async caller's loop."""
        hook = self._hook
        call: Callable[[], object]
        if not asynchronous or not is_async_callable(hook):
            # A blocking caller may hold its thread's loop: the hook gets a loop of its own.
            call = partial(_call_sync, hook, context)
        elif on_asyncio():
            import asyncio  # noqa: PLC0415 -- loaded already: the caller runs on it

            loop = asyncio.get_running_loop()
            call = partial(_call_on_loop, hook, context, loop)
        else:
            call = partial(_call_on_trio, hook, context, _trio_token())
        threading.Thread(
            target=self._fly,
            args=(flight, context, call),
            name="resilient-runpod-recovery",
            daemon=True,
        ).start()

    def _fly(  # noqa: C901 -- one flight, read top to bottom
        self, flight: Flight, context: RecoveryContext, call: Callable[[], object]
    ) -> None:
        """The flight itself: ask the hook (and, while polling, ask again) for a key."""
        try:
            if (
                flight.mode is Mode.READ
                and getattr(self._hook, "interactive", False)
                and self._probe(flight.rejected_key, context)
            ):
                # Nobody is asked for a key while the current one still works.
                self._finish(flight, context, outcome=Outcome.UNCHANGED, source="probe")
                return
            pause = _FIRST_POLL
            window_end = time.monotonic() + self.recovery_window
            while True:
                if flight.settled:
                    return  # set aside by `set_key`: nobody waits for this answer any more
                try:
                    key, source = self._read(call)
                except RecoveryError:
                    if flight.mode is not Mode.POLL or time.monotonic() + pause > window_end:
                        raise
                    # Polling a source that is being updated: it may fail for a moment.
                    time.sleep(pause)
                    pause = min(pause * 2, _MAX_POLL)
                    continue
                if key != flight.rejected_key:
                    self._finish(flight, context, outcome=Outcome.NEW, key=key, source=source)
                    return
                if flight.mode is Mode.READ:
                    self._finish(flight, context, outcome=Outcome.UNCHANGED, source=source)
                    return
                if flight.mode is Mode.PROBE or time.monotonic() + pause > window_end:
                    raise RecoveryError(  # noqa: TRY301 -- reported like any hook failure
                        f"the source still holds the rejected key ({context.fingerprint}) after "
                        f"{self.recovery_window:g} seconds (Credentials(recovery_window=...))"
                    )
                if flight.key_accepted.wait(pause) or self._probe(flight.rejected_key, context):
                    self._finish(flight, context, outcome=Outcome.UNCHANGED, source=source)
                    return
                pause = min(pause * 2, _MAX_POLL)
        except BaseException as exc:
            self._finish(flight, context, outcome=Outcome.FAILED, error=exc)

    def _read(self, call: Callable[[], object]) -> tuple[str, str]:
        """Ask the hook for a key; a failing source is read once more before it counts.

        A source caught mid-update (a file rewritten in place) fails for a moment.
        """
        name = hook_name(self._hook)
        try:
            return accept(call(), name)
        except RecoveryError as exc:
            source_failed = isinstance(exc, SourceError) or isinstance(exc.__cause__, SourceError)
            if not source_failed or getattr(self._hook, "interactive", False):
                raise
        time.sleep(_REREAD)
        return accept(call(), name)

    def _probe(self, key: str | None, context: RecoveryContext) -> bool:
        """Whether RunPod still accepts *key*: one GraphQL ``myself`` on the same API."""
        if key is None:
            return False  # no key works
        url = probe_url(self.hosts, context.url)
        return url is not None and validate(key, url).status is KeyStatus.ACCEPTED

    def _expire(self, flight: Flight, context: RecoveryContext) -> None:
        budget = flight.deadline - flight.started
        error = HookTimeoutError(
            f"recovery hook {hook_name(self._hook)!r} did not answer within "
            f"{budget:g} seconds and was abandoned"
        )
        self._finish(flight, context, outcome=Outcome.FAILED, error=error)

    def _finish(  # noqa: C901 -- one settlement, three outcomes, each with its event
        self,
        flight: Flight,
        context: RecoveryContext,
        *,
        outcome: Outcome,
        key: str | None = None,
        source: str = "",
        error: BaseException | None = None,
    ) -> None:
        """Settle *flight* once: install the new key, or record why there is none."""
        name = hook_name(self._hook)
        duration = round(time.monotonic() - flight.started, 4)
        with self._lock:
            if flight.settled:
                return  # expired already, or finished by another path; first answer wins
            flight.settled = True
            flight.outcome = outcome
            generation = flight.generation
            if outcome is Outcome.NEW and key is not None:
                if self._current.generation == generation:
                    remember_key(key)
                    self._install_locked(key, source)
                    self._watch = self._current.generation
                    self._unaccepted = (self._watch, RecoveredKey(key, source))
                    self._suspect = None
                    if self._breaker is Breaker.OPEN:
                        self._breaker = Breaker.HALF_OPEN  # closed once RunPod accepts it
                # else: a newer key was set meanwhile; a late finisher never overwrites it.
            elif outcome is Outcome.UNCHANGED:
                self._suspect = self._watch = generation
            elif flight.mode is Mode.PROBE:
                flight.error = self._cooldown_error(time.monotonic(), context)
                flight.error.__cause__ = error
            else:
                self._failures += 1
                if self._breaker is not Breaker.CLOSED or self._failures >= self.failure_threshold:
                    now = time.monotonic()
                    self._breaker = Breaker.OPEN
                    self._open_until = now + self.cooldown
                    self._next_probe = now + self.probe_interval
                self._watch = generation
                flight.error = give_up_error(context, name, error)
            if self._flight is flight:
                self._flight = None
            new_fingerprint = self.fingerprint
        # Logged before the waiters wake, so the event precedes anything they do next.
        if outcome is Outcome.NEW:
            logger.info(
                "runpod.auth.recovered",
                hook=name,
                source=source,
                duration=duration,
                rejected=context.fingerprint,
                fingerprint=new_fingerprint,
            )
        elif outcome is Outcome.UNCHANGED:
            logger.info(
                "runpod.auth.key_unchanged",
                hook=name,
                source=source,
                duration=duration,
                fingerprint=context.fingerprint,
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


# Polling a source that still holds the rejected key: first after this many seconds,
# doubling up to the maximum.
_FIRST_POLL = 0.1
_MAX_POLL = 5.0
# Before reading a failing source once more.
_REREAD = 0.05


def _call_sync(hook: RecoveryHook, context: RecoveryContext) -> object:
    result = hook(context)
    if inspect.isawaitable(result):
        import asyncio  # noqa: PLC0415 -- only for hooks that return a coroutine

        result = asyncio.run(awaited(result))
    return result


def _call_on_loop(
    hook: RecoveryHook, context: RecoveryContext, loop: asyncio.AbstractEventLoop
) -> object:
    # On the caller's loop: an async hook may use what lives there (an aiohttp session).
    import asyncio  # noqa: PLC0415 -- loaded already: the caller runs on it

    result: Any = hook(context)
    return asyncio.run_coroutine_threadsafe(awaited(result), loop).result()


def _trio_token() -> Any:
    import trio  # noqa: PLC0415 -- only where an async hook is recovered outside asyncio

    return trio.lowlevel.current_trio_token()


def _call_on_trio(hook: RecoveryHook, context: RecoveryContext, token: Any) -> object:
    import trio  # noqa: PLC0415

    result: Any = hook(context)
    return trio.from_thread.run(awaited, result, trio_token=token)


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
