"""`Credentials`: the key a program sends, and one recovery for every request RunPod rejects.

Adapters (through `_engine`) ask it two things and tell it one:

- `current`: which key to send now (its generation and source with it), lock-free;
- `rejected` / `arejected`: "RunPod answered 401 to generation *g*: what now?";
- `accepted`: "RunPod accepted generation *g*" (one comparison, unless that is news).

To answer, it gathers facts under one lock from its key ledger (`_ledger.Ledger`: which
key, accepted or not, rejected twice, its store stale since when) and its circuit breaker
(`_breaker.CircuitBreaker`), and asks the rule (`_rule.after_401`). The answer is one of:

- send again at once: with the current key if it was replaced meanwhile, or with the
  same key (the first 401 on a key is answered by one resend: that resend is the probe);
- wait until the stale store's next read is due, then send the same key again;
- read the source: a *flight* (`_flight.Flight`). The first request to need it starts
  it: the hook runs once, in a thread of its own (an async hook on the caller's event
  loop), and every request rejected with that key meanwhile waits for the same flight.
  `_rule.after_read` turns what the hook found into the outcome they all see: a new
  key, a stale store (wait, resend), or an error (never accepted, stale too long, the
  hook failed), which also counts toward opening the breaker;
- fail at once with `CooldownError` while the breaker is open.

No connection of its own is ever opened to RunPod: every check of a key is a request's
own resend, through the caller's transport.
"""

from __future__ import annotations

import inspect
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from . import _keys
from ._breaker import Breaker, CircuitBreaker, Gate
from ._config import keys_in_config
from ._errors import (
    NEXT_STEPS,
    AuthenticationError,
    AuthFailure,
    ConfigError,
    CooldownError,
    HookTimeoutError,
    InvalidKeyError,
    NonInteractiveError,
    RecoveryError,
    SourceError,
    StaleSourceError,
)
from ._flight import Flight, on_asyncio, on_event_loop, remaining
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
from ._ledger import KeyState, Ledger
from ._logging import logger, remember_key
from ._policy import RetryPolicy
from ._redact import scrubbed_exception
from ._rule import Act, Found, Outcome, Read, after_401, after_read, may_ask
from ._settings import Settings
from ._validate import Validation, checked_graphql_url, validate, validate_async
from .instrumentation import _subscribers as _instrumented
from .instrumentation._data import (
    BreakerChanged,
    RecoveryEnded,
    RecoveryOutcome,
    RecoveryStarted,
)
from .typing import RecoveredKey, RecoveryContext, RecoveryHook

if TYPE_CHECKING:
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    import httpx
    import tenacity

__all__ = ["Credentials", "Next"]


@dataclass(frozen=True, slots=True)
class Next:
    """What a request RunPod rejected does next (`Credentials.rejected`).

    Attributes:
        act: `Act.RESEND_CURRENT` (send with the current key), `Act.RESEND` (send the
            same key again) or `Act.WAIT` (wait *wait* seconds, then send the same key).
        mark: This 401's mark in the ledger: hand it back with the request's next 401
            on the same key, so the ledger can tell what happened in between.
        wait: Seconds to wait before `Act.WAIT`'s resend.
        recovered: The key to send was found by a recovery (counted against
            ``max_recoveries`` if RunPod rejects it before ever accepting it).
        recovery: The number of the recovery flight the request waited for, if it did
            (instrumentation: its resend links to that flight's span).
    """

    act: Act
    mark: int
    wait: float = 0.0
    recovered: bool = False
    recovery: int | None = None


T = TypeVar("T")


class _Setting(Generic[T]):
    """A setting of `Credentials`, read from its `Settings` under the same name."""

    __slots__ = ("name",)

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, credentials: Credentials, owner: type | None = None) -> T:
        value: T = getattr(credentials.settings, self.name)
        return value


_live: weakref.WeakSet[Credentials] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # A lock held, or a flight run, by a thread of the parent does not exist in the child.
    for credentials in list(_live):
        credentials._after_fork()  # noqa: SLF001 -- our own class


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
        recovery_window: Seconds a source that still holds a key RunPod accepted before,
            and now rejects, is read again (with backoff, resending the key each time)
            before recovery gives up with `StaleSourceError`. The default, 150, covers
            a Kubernetes Secret volume: the kubelet's sync period (60 s) plus its secret
            cache's TTL (60 s), with room to spare. ``0`` gives up at once.
        failure_threshold: Failed recoveries in a row that open the breaker.
        cooldown: Seconds the breaker stays open; requests rejected meanwhile fail at once.
        probe_interval: While the breaker is open, how often the sources that cost
            nothing (not a person) are read again; a new key there closes the breaker.
        retry: How transient failures (429, 5xx, lost connections) are retried, and the
            per-request ceiling on sends and deadline (see `RetryPolicy`); ``None`` keeps
            the defaults.

    Raises:
        InvalidKeyError: *api_key* (or the resolved key) cannot be sent.
        ConfigError: a setting is out of range or of the wrong type (the message names
            it), or the key had to come from a config file that is not TOML.
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
            raise ConfigError(
                f"Credentials(recovery=...): recovery must be a hook, a callable taking a "
                f"RecoveryContext (such as recovery.from_env()), not {type(recovery).__name__}"
            )
        settings = Settings(
            max_recoveries=max_recoveries,
            stop=stop,
            wait=wait,
            hook_timeout=hook_timeout,
            recovery_window=recovery_window,
            failure_threshold=failure_threshold,
            cooldown=cooldown,
            probe_interval=probe_interval,
            retry=retry if retry is not None else RetryPolicy(),
        )
        self.hosts = HostPolicy(hosts)
        if recovery is None:
            from .recovery import default  # noqa: PLC0415 -- the hooks need not load otherwise

            recovery = default(profile=profile)
        if api_key is None:
            key, source = _resolve_key(profile)
        else:
            key, source = _keys.check(api_key), "argument"
        remember_key(key)
        self._init(key, source, recovery, settings)

    def _init(self, key: str | None, source: str, hook: RecoveryHook, settings: Settings) -> None:
        self._hook: RecoveryHook = hook
        self.settings = settings
        self._ledger = Ledger(key, source)
        self._breaker = CircuitBreaker(
            settings.failure_threshold, settings.cooldown, settings.probe_interval
        )
        self._lock = threading.Lock()
        self._flight: Flight | None = None
        # Tells hooks of accepted keys off the event loop, in order (see `accepted`).
        self._teller: ThreadPoolExecutor | None = None
        _live.add(self)
        self._subscribe(hook)
        _instrumented.install_defaults()

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        self._flight = None
        self._teller = None  # its thread stayed in the parent

    # -- settings, read through (each documented in the class docstring) -------------

    max_recoveries = _Setting[int]()
    stop = _Setting["tenacity.stop.stop_base | None"]()
    wait = _Setting["tenacity.wait.wait_base | None"]()
    hook_timeout = _Setting["float | None"]()
    recovery_window = _Setting[float]()
    retry = _Setting[RetryPolicy]()
    failure_threshold = _Setting[int]()
    cooldown = _Setting[float]()
    probe_interval = _Setting[float]()

    # -- what callers read -------------------------------------------------------------

    @property
    def current(self) -> KeyState:
        """The key, its generation and its source, as one consistent snapshot."""
        return self._ledger.current

    @property
    def api_key(self) -> str | None:
        """The current key itself. Handle with care: never log or print it."""
        return self._ledger.current.key

    @property
    def fingerprint(self) -> str:
        """The current key's fingerprint, e.g. ``rpa_…9XQ2``: safe to show anywhere."""
        return _keys.fingerprint(self._ledger.current.key)

    @property
    def generation(self) -> int:
        """How many times the key has changed since this object was made."""
        return self._ledger.current.generation

    @property
    def source(self) -> str:
        """Where the current key came from (``env:RUNPOD_API_KEY``, ``argument``, ...)."""
        return self._ledger.current.source

    @property
    def recovery(self) -> RecoveryHook:
        """The hook run when RunPod rejects the key."""
        return self._hook

    @property
    def breaker(self) -> Breaker:
        """The recovery breaker's state: `Breaker.OPEN` while recovery rests."""
        with self._lock:
            return self._breaker.seen(time.monotonic())

    def was_accepted(self, generation: int) -> bool:
        """Whether RunPod accepted *generation*'s key at least once."""
        return self._ledger.was_accepted(generation)

    def _derive(self, api_key: str) -> Credentials:
        """Credentials for *api_key* with everything else of ours: hook, hosts and settings.

        For objects that bring a key of their own (the SDK's ``Endpoint(..., api_key=K)``).

        Raises:
            InvalidKeyError: *api_key* cannot be sent.
        """
        key = _keys.check(api_key)
        remember_key(key)
        derived = Credentials.__new__(Credentials)
        derived.hosts = self.hosts
        derived._init(key, "argument", self._hook, self.settings)  # noqa: SLF001 -- our class
        return derived

    def __repr__(self) -> str:
        return (
            f"<Credentials {self.fingerprint} source={self.source!r} "
            f"generation={self.generation} recovery={hook_name(self._hook)!r}>"
        )

    __str__ = __repr__

    # -- checking the key, when asked ---------------------------------------------------

    def validate(
        self,
        api_url: str | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> Validation:
        """Ask RunPod (GraphQL ``myself { id }``) whether the current key works.

        Tells an accepted key from a rejected one (401), one without permission (403),
        no key at all, and a failure to reach RunPod. Runs no recovery; never raises
        for HTTP or network failures. Only when called: recovery never validates.

        Args:
            api_url: RunPod's API base (default: ``RUNPOD_API_BASE_URL`` or RunPod's own);
                an emulator's ``api_url`` in tests.
            transport: The httpx transport to ask through (your proxy, mTLS or mock
                transport); default: a new ``httpx.HTTPTransport``.

        Raises:
            ValueError: *api_url* is not a host this key may be sent to (see *hosts*).
        """
        url = checked_graphql_url(self.hosts, api_url)
        return validate(self._ledger.current.key, url, transport=transport)

    async def avalidate(
        self,
        api_url: str | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> Validation:
        """`validate` for asyncio."""
        url = checked_graphql_url(self.hosts, api_url)
        return await validate_async(self._ledger.current.key, url, transport=transport)

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
            self._ledger.install(key, source, recovered=False)
            breaker = self._breaker.state
            self._breaker.close()
            changed = self._breaker_change(breaker)
            superseded, self._flight = self._flight, None
            if superseded is not None:
                superseded.settled = True
                superseded.outcome = Outcome.NEW
            now = time.monotonic()
        if changed is not None:
            _instrumented.emit(changed)
        if superseded is not None:
            # A prompt stays on screen until answered; what is typed there is not used.
            logger.info(
                "runpod.auth.recovery_set_aside",
                hook=hook_name(self._hook),
                rejected=_keys.fingerprint(superseded.rejected_key),
                fingerprint=_keys.fingerprint(key),
            )
            if _instrumented.subscribers:
                _instrumented.emit(
                    _ended(superseded, "set_aside", self._hook, now, _keys.fingerprint(key))
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

    # -- what requests report ----------------------------------------------------------

    def accepted(self, generation: int) -> None:
        """RunPod accepted a request sent with *generation*'s key (any status but 401).

        The hot path: one comparison, unless the acceptance is news (a new key's first,
        or the first after a 401), which clears what the 401s suggested, closes the
        breaker, and tells the hook that found the key (`persist` saves it then).
        """
        if generation != self._ledger.watching:
            return
        with self._lock:
            if generation != self._ledger.watching:
                return
            found = self._ledger.accepted(generation)
            breaker = self._breaker.state
            self._breaker.close()
            changed = self._breaker_change(breaker)
        if changed is not None:
            _instrumented.emit(changed)
        if found is not None:
            if on_event_loop():
                # `persist` writes a file then: not on the loop, which must not block. One
                # worker keeps the saves in order, and the interpreter waits for it at exit.
                self._tell_later().submit(tell_accepted, self._hook, found)
            else:
                tell_accepted(self._hook, found)

    def _tell_later(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._teller is None:
                from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415 -- rarely

                self._teller = ThreadPoolExecutor(1, thread_name_prefix="resilient-runpod-told")
            return self._teller

    def rejected(
        self,
        generation: int,
        context: RecoveryContext,
        *,
        mark: int | None = None,
        resendable: bool = True,
        deadline: float | None = None,
    ) -> Next:
        """RunPod answered 401 to *generation*'s key: what the request does next.

        Blocks while a recovery it needs (or joins) runs.

        Args:
            generation: The rejected key's generation.
            context: What was rejected, for the hook and the events.
            mark: `Next.mark` from the request's previous 401 on this key, if any.
            resendable: Whether the request can be sent again (a streamed body cannot):
                if not, the source is read at once, as no resend can probe the key.
            deadline: A `time.monotonic` time after which this caller stops waiting.

        Raises:
            AuthenticationError: recovery could not produce a key to send: the key was
                never accepted, its source stayed stale, the hook failed, the deadline
                passed, or the breaker is open (`CooldownError`).
        """
        decided, flight = self._decide(generation, context, mark, resendable, asynchronous=False)
        if flight is None:
            return decided
        while not flight.done.wait(remaining(flight, deadline)):
            self._check(flight, context, deadline)
        return self._after(flight, decided.mark)

    async def arejected(
        self,
        generation: int,
        context: RecoveryContext,
        *,
        mark: int | None = None,
        resendable: bool = True,
        deadline: float | None = None,
    ) -> Next:
        """`rejected` for asyncio and trio: waits without blocking the event loop."""
        decided, flight = self._decide(generation, context, mark, resendable, asynchronous=True)
        if flight is None:
            return decided
        waiter = flight.async_waiter()
        while not flight.done.is_set():
            if not await waiter.wait(remaining(flight, deadline)):
                self._check(flight, context, deadline)
        return self._after(flight, decided.mark)

    def _decide(
        self,
        generation: int,
        context: RecoveryContext,
        mark: int | None,
        resendable: bool,
        *,
        asynchronous: bool,
    ) -> tuple[Next, Flight | None]:
        """Gather the facts, ask the rule, and start or join a flight if it says so."""
        with self._lock:
            now = time.monotonic()
            ledger = self._ledger
            facts, mark = ledger.rejected(generation, mark, resendable=resendable)
            if not facts.replaced:
                facts = replace(
                    facts,
                    recovering=self._flight is not None,
                    cooling=self._breaker.would_refuse(now),
                    waiting=ledger.waiting(now) > 0,
                )
            act = after_401(facts)
            if act is Act.JOIN:
                return Next(act, mark), self._joined()
            if act is Act.COOLDOWN:
                raise self._cooldown_error(now, context)
            if act is Act.WAIT:
                return Next(act, mark, wait=ledger.waiting(now)), None
            if act is not Act.READ:
                return Next(act, mark, recovered=act is Act.RESEND_CURRENT), None
            breaker = self._breaker.state
            gate = self._breaker.gate(now)
            changed = self._breaker_change(breaker)
            if gate is Gate.REFUSE:  # pragma: no cover -- `cooling` said so first
                raise self._cooldown_error(now, context)
            probing = gate is Gate.PROBE
            asking = may_ask(
                accepted_before=ledger.was_accepted(generation),
                stale_rounds=ledger.stale_rounds,
                asked=ledger.asked,
                probing=probing,
            )
            if asking:
                ledger.note_asked()
            budget = hook_budget(self.settings.hook_timeout, self._hook) if asking else None
            if not asking:
                budget = self.settings.hook_timeout
            deadline = float("inf") if budget is None else now + budget
            flight = self._flight = Flight(
                generation,
                ledger.current.key,
                now,
                deadline,
                mark=mark,
                may_ask=asking,
                probing=probing,
            )
        self._started(flight, context, changed)
        self._start(flight, replace(context, may_ask=asking), asynchronous=asynchronous)
        return Next(Act.READ, mark), flight

    def _joined(self) -> Flight | None:
        """The flight running now, counted as one more request waits for it (under the lock)."""
        flight = self._flight
        if flight is not None:
            flight.waiters += 1
        return flight

    def _started(
        self, flight: Flight, context: RecoveryContext, changed: BreakerChanged | None
    ) -> None:
        """Tell subscribers a flight starts (and the breaker's trial, if it moved to one)."""
        if changed is not None:
            _instrumented.emit(changed)
        if _instrumented.subscribers:
            _instrumented.emit(
                RecoveryStarted(hook_name(self._hook), context.fingerprint, flight.number)
            )

    def _after(self, flight: Flight, mark: int) -> Next:
        """What a request that waited for *flight* does next."""
        flight.raise_if_failed()
        if flight.outcome is Outcome.STALE:
            return Next(Act.WAIT, mark, wait=flight.wait, recovery=flight.number)
        return Next(Act.RESEND_CURRENT, mark, recovered=True, recovery=flight.number)

    def _check(self, flight: Flight, context: RecoveryContext, deadline: float | None) -> None:
        """Woken without an outcome: give up on the flight, or the caller's deadline."""
        now = time.monotonic()
        if deadline is not None and now >= deadline and not flight.done.is_set():
            error = give_up_error(
                context,
                hook_name(self._hook),
                RecoveryError("the request's deadline passed while recovery was running"),
            )
            error.reason = AuthFailure.DEADLINE
            raise error
        if now >= flight.deadline:
            self._expire(flight, context)

    def _cooldown_error(self, now: float, context: RecoveryContext) -> CooldownError:
        retry_after = self._breaker.retry_after(now)
        return CooldownError(
            f"RunPod rejected API key {context.fingerprint} ({context.status_code} on "
            f"{context.method} {context.url}), and recovery failed {self._breaker.failures} "
            f"times in a row, so it is resting for {retry_after:.0f} more seconds instead of "
            f"calling {hook_name(self._hook)!r} again. Set a working key with "
            f"Credentials.set_key() to resume at once. {NEXT_STEPS}",
            fingerprint=context.fingerprint,
            retry_after=retry_after,
        )

    # -- one flight: one read of the source ---------------------------------------------

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

    def _fly(self, flight: Flight, context: RecoveryContext, call: Callable[[], object]) -> None:
        """The flight itself: ask the hook once, and settle what it found."""
        try:
            found = self._read(flight, call, stale=self._ledger.stale is not None)
        except NonInteractiveError as exc:
            # Nobody to ask: the same as a source with nothing newer.
            self._finish(flight, context, Found.NOTHING_NEW, error=exc)
        except BaseException as exc:  # the hook's failure is everyone's answer
            self._finish(flight, context, Found.FAILED, error=exc)
        else:
            if found is None or found.key == flight.rejected_key:
                source = found.source if found is not None else ""
                self._finish(flight, context, Found.NOTHING_NEW, source=source)
            else:
                self._finish(flight, context, Found.NEW, found=found)

    def _read(
        self, flight: Flight, call: Callable[[], object], *, stale: bool
    ) -> RecoveredKey | None:
        """Ask the hook for a key (None: it had none); a failing source is read once more.

        A source caught mid-update (a file rewritten in place) fails for a moment.
        """
        name = hook_name(self._hook)
        flight.reads += 1
        try:
            return _found(call(), name)
        except RecoveryError as exc:
            source_failed = isinstance(exc, SourceError) or isinstance(exc.__cause__, SourceError)
            if not source_failed or stale:
                raise
        time.sleep(_REREAD)
        flight.reads += 1
        return _found(call(), name)

    def _expire(self, flight: Flight, context: RecoveryContext) -> None:
        budget = flight.deadline - flight.started
        error = HookTimeoutError(
            f"recovery hook {hook_name(self._hook)!r} did not answer within "
            f"{budget:g} seconds and was abandoned"
        )
        self._finish(flight, context, Found.FAILED, error=error)

    def _finish(
        self,
        flight: Flight,
        context: RecoveryContext,
        what: Found,
        *,
        found: RecoveredKey | None = None,
        source: str = "",
        error: BaseException | None = None,
    ) -> None:
        """Settle *flight* once: install a new key, or decide what nothing new means."""
        name = hook_name(self._hook)
        with self._lock:
            if flight.settled:
                return  # expired already, or set aside by `set_key`: first answer wins
            flight.settled = True
            now = time.monotonic()
            ledger = self._ledger
            breaker = self._breaker.state
            if what is Found.NEW and found is not None:
                outcome = Outcome.NEW
                if ledger.current.generation == flight.generation:
                    remember_key(found.key)
                    ledger.install(found.key, found.source, recovered=True)
                    self._breaker.recovered()
            elif flight.probing:
                outcome = Outcome.FAILED  # the breaker stays open; nothing is counted
                flight.error = self._cooldown_error(now, context)
                flight.error.__cause__ = scrubbed_exception(error) if error else None
            elif ledger.accepted_since(flight.mark):
                outcome = Outcome.STALE  # RunPod accepted the key meanwhile: resend at once
            else:
                window = self.settings.recovery_window
                outcome = after_read(
                    Read(
                        what,
                        accepted_before=ledger.was_accepted(flight.generation),
                        window_open=window > 0 and ledger.stale_for(now) < window,
                        stale_episode=ledger.stale is not None,
                    )
                )
                if outcome is Outcome.STALE:
                    flight.wait = ledger.stale_round(now)
                else:
                    self._breaker.failed(now)
                    where = source or ledger.current.source
                    flight.error = _failure(
                        outcome,
                        context=context,
                        name=name,
                        where=where,
                        error=error,
                        window=window,
                        no_key=flight.rejected_key is None,
                    )
            flight.outcome = outcome
            if self._flight is flight:
                self._flight = None
            rounds = ledger.stale_rounds
            new_fingerprint = self.fingerprint
            changed = self._breaker_change(breaker)
        # Logged before the waiters wake, so the event precedes anything they do next.
        ended = _log_settled(
            flight,
            context,
            outcome,
            name=name,
            found=found,
            source=source,
            error=error,
            now=now,
            rounds=rounds,
            new_fingerprint=new_fingerprint,
        )
        if _instrumented.subscribers:
            _instrumented.emit(_ended(flight, ended, self._hook, now, new_fingerprint))
        if changed is not None:
            _instrumented.emit(changed)
        flight.resolve()

    def _breaker_change(self, before: Breaker) -> BreakerChanged | None:
        """The event for the breaker's move from *before*, if it moved and anyone listens.

        Called under the lock; the event is emitted after it is released.
        """
        state = self._breaker.state
        if state is before or not _instrumented.subscribers:
            return None
        return BreakerChanged(state, self._breaker.failures, before)


# How a failed flight is told, by outcome: its log event and its `RecoveryEnded.outcome`.
_FAILURES: dict[Outcome, RecoveryOutcome] = {
    Outcome.NEVER_ACCEPTED: "never_accepted",
    Outcome.STALE_TOO_LONG: "source_stale",
}
# Before reading a failing source once more.
_REREAD = 0.05


def _log_settled(
    flight: Flight,
    context: RecoveryContext,
    outcome: Outcome,
    *,
    name: str,
    found: RecoveredKey | None,
    source: str,
    error: BaseException | None,
    now: float,
    rounds: int,
    new_fingerprint: str,
) -> RecoveryOutcome:
    """Log how *flight* ended; return that as a `RecoveryEnded.outcome`."""
    duration = round(now - flight.started, 4)
    ended: RecoveryOutcome
    if outcome is Outcome.NEW:
        ended = "recovered"
        logger.info(
            "runpod.auth.recovered",
            hook=name,
            source=found.source if found is not None else "",
            duration=duration,
            rejected=context.fingerprint,
            fingerprint=new_fingerprint,
        )
    elif outcome is Outcome.STALE:
        ended = "key_unchanged"
        logger.info(
            "runpod.auth.key_unchanged",
            hook=name,
            source=source,
            duration=duration,
            fingerprint=context.fingerprint,
            round=rounds,
            wait=round(flight.wait, 3),
        )
    else:
        ended = _FAILURES.get(outcome, "hook_failed")
        logger.error(
            f"runpod.auth.{ended}",
            hook=name,
            error=describe(error),
            duration=duration,
            fingerprint=context.fingerprint,
            method=context.method,
            url=context.url,
        )
    return ended


def _ended(
    flight: Flight, outcome: RecoveryOutcome, hook: RecoveryHook, now: float, new: str
) -> RecoveryEnded:
    """The `RecoveryEnded` event of *flight*, settled at *now* with *outcome*."""
    return RecoveryEnded(
        outcome,
        hook_name(hook),
        round(now - flight.started, 4),
        flight.reads,
        flight.waiters,
        _keys.fingerprint(flight.rejected_key),
        new,
        flight.number,
    )


def _found(result: object, name: str) -> RecoveredKey | None:
    """A hook's answer as a key and its source; None when it had none."""
    if result is None or (isinstance(result, RecoveredKey) and result.key is None):
        return None
    key, source = accept(result, name)
    return RecoveredKey(key, source)


def _failure(
    outcome: Outcome,
    *,
    context: RecoveryContext,
    name: str,
    where: str,
    error: BaseException | None,
    window: float,
    no_key: bool,
) -> AuthenticationError:
    """The error every request waiting on a failed flight raises."""
    rejected = (
        f"RunPod rejected API key {context.fingerprint} ({context.status_code} on "
        f"{context.method} {context.url})"
    )
    failure: AuthenticationError
    if outcome is Outcome.NEVER_ACCEPTED:
        note = f" ({describe(error)})" if error is not None else ""
        found = (
            f"and has never accepted it: {where} holds it, and {name!r} found no other key"
            f"{note}. Is the key wrong or misspelled?"
            if not no_key
            else f"as no key was sent, and {name!r} found none{note}."
        )
        failure = AuthenticationError(
            f"{rejected} {found} {NEXT_STEPS}",
            fingerprint=context.fingerprint,
            attempts=context.attempt,
            hooks=(name,),
            reason=AuthFailure.NEVER_ACCEPTED,
            source=where,
        )
    elif outcome is Outcome.STALE_TOO_LONG:
        failure = StaleSourceError(
            f"{rejected}, a key it accepted before, and {where} still held it after "
            f"{window:g} seconds of reading it again (Credentials(recovery_window=...)). "
            f"Write the new key there, or set it with Credentials.set_key(). {NEXT_STEPS}",
            fingerprint=context.fingerprint,
            attempts=context.attempt,
            hooks=(name,),
            reason=AuthFailure.STALE_SOURCE,
            source=where,
        )
    else:
        failure = give_up_error(context, name, error)
        failure.reason = AuthFailure.HOOK_FAILED
        failure.source = where
        return failure
    failure.__cause__ = scrubbed_exception(error) if error is not None else None
    return failure


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
