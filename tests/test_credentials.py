"""`Credentials`: the key, what a rejected request does next, one flight per read, the breaker.

Driven through `Credentials.rejected` / `arejected` / `accepted` as the engine drives
them, with no sockets: each test plays the requests RunPod rejects. A request's first
401 on a key is answered by one resend (the probe); a resend rejected too reads the
source. `keep_rejecting` plays a request whose every send with the key is rejected.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import secrets
import sys
import threading
import time
from collections.abc import Iterator

import pytest
import trio
from structlog.testing import capture_logs

from resilient_runpod import (
    AuthenticationError,
    AuthFailure,
    Breaker,
    ConfigError,
    CooldownError,
    Credentials,
    HookTimeoutError,
    InvalidKeyError,
    NonInteractiveError,
    RecoveredKey,
    RecoveryContext,
    RecoveryError,
    SourceError,
    StaleSourceError,
    _credentials,
    _flight,
    scrub_secrets,
)
from resilient_runpod._credentials import Next
from resilient_runpod._flight import Flight, on_asyncio
from resilient_runpod._hooks import is_async_callable
from resilient_runpod._rule import Act

from .helpers import PATIENCE, Counting, handing_out, make_key, wait_for


def context_for(credentials: Credentials, attempt: int = 1) -> RecoveryContext:
    return RecoveryContext(
        credentials.fingerprint, attempt, 401, "GET", "https://api.runpod.ai/v2/e/health"
    )


def keep_rejecting(
    credentials: Credentials, generation: int = 0, *, deadline: float | None = None
) -> Next:
    """Play a request whose sends with *generation*'s key are all rejected: report each 401
    (passing the previous mark) until the answer is more than a plain resend.
    """
    context = context_for(credentials)
    mark: int | None = None
    for _ in range(3):
        then = credentials.rejected(generation, context, mark=mark, deadline=deadline)
        if then.act is not Act.RESEND:
            return then
        mark = then.mark
    raise AssertionError("resent three times and never read the source")  # pragma: no cover


async def akeep_rejecting(credentials: Credentials, generation: int = 0) -> Next:
    """`keep_rejecting` for asyncio and trio."""
    context = context_for(credentials)
    mark: int | None = None
    for _ in range(3):
        then = await credentials.arejected(generation, context, mark=mark)
        if then.act is not Act.RESEND:
            return then
        mark = then.mark
    raise AssertionError("resent three times and never read the source")  # pragma: no cover


def fail_recoveries(credentials: Credentials, times: int) -> None:
    """Play *times* requests rejected with generation 0, each ending in AuthenticationError."""
    for _ in range(times):
        with pytest.raises(AuthenticationError):
            keep_rejecting(credentials)


def _caller() -> object:
    """Who is running: the thread, and the asyncio or trio task if any."""
    task: object = None
    if on_asyncio():
        task = asyncio.current_task()
    elif trio.lowlevel.in_trio_run():
        task = trio.lowlevel.current_task()
    return (threading.current_thread(), task)


class Clock:
    """The `time` module as the credentials and their flights see it, but its monotonic
    clock moves only when the test says: hook timeouts, pauses, windows and cooldowns
    pass by steps, not by scheduling.

    It also notes every caller (thread, or task on a loop) that read it from `_flight`:
    a caller does so just before it waits on a flight, so `waiting` proves how many
    requests share one.
    """

    def __init__(self) -> None:
        self.now = time.monotonic()
        self._callers: set[object] = set()
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    @property
    def waiting(self) -> int:
        """How many distinct callers have waited on a flight."""
        with self._lock:
            return len(self._callers)

    def note(self) -> None:
        caller = _caller()
        with self._lock:
            self._callers.add(caller)

    def __getattr__(self, name: str) -> object:
        return getattr(time, name)  # sleep and the rest stay real


class _FlightTime:
    """`time` as `_flight` sees it: the test's clock, noting who reads it."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def monotonic(self) -> float:
        self.clock.note()
        return self.clock.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """A `Clock` standing in for `time` in the credentials (and their breaker and ledger,
    which take the time from them) and in their flights.
    """
    fake = Clock()
    monkeypatch.setattr(_credentials, "time", fake)
    monkeypatch.setattr(_flight, "time", _FlightTime(fake))
    return fake


def blocked_hook(answer: object = None) -> tuple[Counting, threading.Event, threading.Event]:
    """A counting hook that blocks until released, then returns *answer*; and its two events:
    set when it started, and the one that releases it.
    """
    started, release = threading.Event(), threading.Event()

    def hook(context: RecoveryContext) -> object:
        started.set()
        assert release.wait(PATIENCE)
        return answer

    return Counting(hook, name="blocked"), started, release


@contextlib.contextmanager
def hook_running(answer: object = None) -> Iterator[tuple[Credentials, list[object]]]:
    """Credentials whose hook is running (reading the source for generation 0), blocked
    until the ``with`` body ends; and the list the waiting request's outcome lands in.
    """
    hook, started, release = blocked_hook(make_key() if answer is None else answer)
    credentials = Credentials(make_key(), hook)
    outcome: list[object] = []

    def request() -> None:
        try:
            outcome.append(keep_rejecting(credentials))
        except AuthenticationError as exc:
            outcome.append(exc)

    waiter = threading.Thread(target=request)
    waiter.start()
    assert started.wait(PATIENCE)
    try:
        yield credentials, outcome
    finally:
        release.set()
        waiter.join()


def answering(*answers: BaseException | str | None) -> Counting:
    """A counting hook named "vault-file" that raises or returns *answers* in order."""
    queue = list(answers)

    def source(context: RecoveryContext) -> str | None:
        answer = queue.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    return Counting(source, name="vault-file")


def idle_flight() -> Flight:
    """A flight nobody started, for the waiters alone."""
    return Flight(0, None, 0.0, math.inf, mark=0, may_ask=False, probing=False)


class TestResolution:
    def test_explicit_key_wins(self, monkeypatch):
        """A key passed in is used as it is, whatever the environment says."""
        key = make_key()
        monkeypatch.setenv("RUNPOD_API_KEY", make_key())

        credentials = Credentials(key)

        assert (key, "argument") == (credentials.api_key, credentials.source)

    def test_environment_then_config(self, monkeypatch, tmp_path):
        """With no key given: RUNPOD_API_KEY first, then [default].api_key, then apiKey."""
        env_key, sdk_key, ctl_key = make_key(), make_key(), make_key()
        config = tmp_path / "home" / ".runpod" / "config.toml"
        config.parent.mkdir()
        config.write_text(f'apiKey = "{ctl_key}"\n[default]\napi_key = "{sdk_key}"\n')

        monkeypatch.setenv("RUNPOD_API_KEY", env_key)
        from_env = Credentials()
        monkeypatch.delenv("RUNPOD_API_KEY")
        from_sdk_entry = Credentials()
        config.write_text(f'apiKey = "{ctl_key}"\n')
        from_ctl_entry = Credentials()

        assert [
            (env_key, "env:RUNPOD_API_KEY"),
            (sdk_key, "config:[default].api_key"),
            (ctl_key, "config:apiKey"),
        ] == [(c.api_key, c.source) for c in (from_env, from_sdk_entry, from_ctl_entry)]

    def test_environment_key_with_trailing_newline_is_cleaned(self, monkeypatch):
        """A variable set from a file keeps its newline; the key is used without it."""
        key = make_key()
        monkeypatch.setenv("RUNPOD_API_KEY", key + "\n")

        assert key == Credentials().api_key

    def test_no_key_anywhere_is_allowed(self):
        """Without any key, requests go out without one and the first 401 runs recovery."""
        credentials = Credentials()

        assert (None, "<no key>", "none") == (
            credentials.api_key,
            credentials.fingerprint,
            credentials.source,
        )

    def test_padded_explicit_key_is_refused(self):
        """A key handed over in code is never altered: padding is an error that says so."""
        with pytest.raises(InvalidKeyError, match="whitespace"):
            Credentials(make_key() + "\n")

    def test_config_that_is_not_toml_is_a_clear_error(self, tmp_path):
        """A broken config file names the file, and nothing of its content."""
        config = tmp_path / "home" / ".runpod" / "config.toml"
        config.parent.mkdir()
        secret = make_key()
        config.write_text(f"[default\napi_key = {secret}\n")

        with pytest.raises(ConfigError) as info:
            Credentials()

        assert str(config) in str(info.value)
        assert secret not in str(info.value)


class TestRepr:
    def test_repr_and_str_show_only_the_fingerprint(self):
        """Neither repr() nor str() contains the key."""
        key = make_key()
        credentials = Credentials(key)

        assert key not in repr(credentials)
        assert key not in str(credentials)
        assert credentials.fingerprint in repr(credentials)

    def test_repr_names_the_generation_and_the_hook(self):
        """repr() says which generation is current and which hook recovers it."""
        credentials = Credentials(make_key(), handing_out())
        credentials.set_key(make_key())

        assert "generation=1 recovery='handing_out'>" in repr(credentials)

    def test_the_current_state_hides_the_key(self):
        """`current` (key, generation and source read together) shows a fingerprint only."""
        key = make_key()
        credentials = Credentials(key)

        assert key not in repr(credentials.current)
        assert credentials.fingerprint in repr(credentials.current)

    def test_recovered_key_repr_hides_the_key(self):
        """A RecoveredKey shows where it came from, not what it is."""
        key = make_key()

        assert key not in repr(RecoveredKey(key, "vault"))


class TestSettings:
    @pytest.mark.parametrize(
        ("settings", "fragment"),
        [
            ({"recovery": "from_env"}, "recovery must be a hook"),
            ({"max_recoveries": 0}, r"max_recoveries=0\): max_recoveries must be a whole"),
            ({"max_recoveries": 1.5}, "max_recoveries must be a whole number"),
            ({"failure_threshold": 0}, "failure_threshold must be a whole number"),
            ({"failure_threshold": True}, "failure_threshold must be a whole number"),
            ({"hook_timeout": -5}, "hook_timeout must be a positive number"),
            ({"hook_timeout": 0}, "hook_timeout must be a positive number"),
            ({"probe_interval": -1}, "probe_interval must be a number of seconds, 0 or more"),
            ({"probe_interval": "5"}, r"probe_interval=str\)"),
            ({"cooldown": -1}, "cooldown must be a number of seconds"),
            ({"cooldown": math.inf}, "cooldown must be a number of seconds"),
            ({"recovery_window": -1}, "recovery_window must be a number of seconds"),
            ({"recovery_window": math.nan}, "recovery_window must be a number of seconds"),
            ({"stop": 3}, "stop must be a tenacity strategy"),
            ({"wait": "1s"}, "wait must be a tenacity strategy"),
            ({"retry": 3}, "retry must be a RetryPolicy"),
        ],
    )
    def test_bad_settings_are_refused_at_once_naming_the_setting(self, settings, fragment):
        """A setting that could only fail later, or silently, is refused when it is given,
        with a ConfigError (a ValueError) that names it and says what it may be.
        """
        with pytest.raises(ConfigError, match=fragment) as info:
            Credentials(make_key(), **settings)

        assert isinstance(info.value, ValueError)

    @pytest.mark.parametrize(
        ("hosts", "error", "fragment"),
        [
            ("127.0.0.1:8000", ConfigError, r"\['127.0.0.1:8000'\]"),
            ([""], ValueError, "names no host"),
            (["http://"], ValueError, "names no host"),
        ],
    )
    def test_bad_hosts_are_refused_at_once(self, hosts, error, fragment):
        """A string where a list of hosts belongs, or a host that names nothing, is refused."""
        with pytest.raises(error, match=fragment):
            Credentials(make_key(), hosts=hosts)

    def test_edge_settings_are_accepted(self):
        """No hook timeout, no cooldown, no window and no pause between probes are valid."""
        credentials = Credentials(
            make_key(),
            hook_timeout=None,
            cooldown=0,
            recovery_window=0,
            probe_interval=0,
            hosts=["h:1"],
        )

        assert (None, 0, 0, 0) == (
            credentials.hook_timeout,
            credentials.cooldown,
            credentials.recovery_window,
            credentials.probe_interval,
        )

    def test_derived_credentials_keep_the_hook_hosts_and_settings(self):
        """Credentials derived for another key (an Endpoint's own) keep everything but the key."""
        hook = handing_out()
        credentials = Credentials(
            make_key(), hook, hosts=["h:1"], max_recoveries=5, recovery_window=7, cooldown=9
        )
        other = make_key()

        derived = credentials._derive(other)

        assert (other, "argument", 0, hook) == (
            derived.api_key,
            derived.source,
            derived.generation,
            derived.recovery,
        )
        assert (credentials.settings, credentials.hosts) == (derived.settings, derived.hosts)

    def test_a_derived_key_is_checked(self):
        """A key brought by an SDK object is checked like any other."""
        with pytest.raises(InvalidKeyError):
            Credentials(make_key())._derive(" " + make_key())


class TestAfter401:
    def test_a_first_401_is_answered_by_one_resend_and_no_read(self):
        """The first 401 on a key is answered by sending the same key again: the resend is
        the probe. The source is not read and nothing is counted.
        """
        hook = handing_out(make_key())
        credentials = Credentials(make_key(), hook)

        then = credentials.rejected(0, context_for(credentials))

        assert (Act.RESEND, False, 0, 0) == (
            then.act,
            then.recovered,
            hook.calls,
            credentials.generation,
        )

    def test_a_resend_rejected_too_reads_the_source_once(self):
        """The resend's 401, with nothing accepted meanwhile, reads the source: a new key is
        adopted, and the request resends with it, marked as a recovered key.
        """
        new = make_key()
        hook = handing_out(new)
        credentials = Credentials(make_key(), hook)
        first = credentials.rejected(0, context_for(credentials))

        then = credentials.rejected(0, context_for(credentials), mark=first.mark)

        assert (Act.RESEND_CURRENT, True, 1) == (then.act, then.recovered, hook.calls)
        assert (new, 1, "handing_out") == (
            credentials.api_key,
            credentials.generation,
            credentials.source,
        )

    def test_a_key_accepted_since_the_401_is_resent_again(self):
        """If RunPod accepted the key after a request's 401 (another request got through),
        the request's next 401 resends the same key again: that 401 was spurious.
        """
        hook = handing_out(make_key())
        credentials = Credentials(make_key(), hook)
        first = credentials.rejected(0, context_for(credentials))
        credentials.accepted(0)

        then = credentials.rejected(0, context_for(credentials), mark=first.mark)

        assert (Act.RESEND, 0) == (then.act, hook.calls)

    def test_a_replaced_key_is_resent_with_the_current_one_without_a_read(self):
        """A request rejected with a key already replaced just sends the current one."""
        hook = handing_out(make_key())
        credentials = Credentials(make_key(), hook)
        credentials.set_key(make_key())

        then = credentials.rejected(0, context_for(credentials))

        assert (Act.RESEND_CURRENT, 0) == (then.act, hook.calls)

    def test_a_request_that_cannot_be_resent_reads_at_its_first_401(self):
        """A request that cannot be sent again cannot probe: its first 401 reads the source."""
        new = make_key()
        hook = handing_out(new)
        credentials = Credentials(make_key(), hook)

        then = credentials.rejected(0, context_for(credentials), resendable=False)

        assert (Act.RESEND_CURRENT, 1, new) == (then.act, hook.calls, credentials.api_key)

    def test_marks_grow_with_each_401(self):
        """Each 401 gets a new mark, for the request to hand back with its next one."""
        credentials = Credentials(make_key(), handing_out())
        context = context_for(credentials)

        marks = [credentials.rejected(0, context).mark for _ in range(3)]

        assert [1, 2, 3] == marks

    def test_once_known_rejected_another_requests_first_401_gets_no_free_resend(self, clock):
        """After one request's resend was rejected too, another request's first 401 is not
        answered by a free resend: it waits for the stale store like the first.
        """
        hook = handing_out()  # nothing new
        credentials = Credentials(make_key(), hook)
        credentials.accepted(0)
        first = keep_rejecting(credentials)

        other = credentials.rejected(0, context_for(credentials))

        assert (Act.WAIT, Act.WAIT, 1) == (first.act, other.act, hook.calls)


class TestNeverAccepted:
    def test_a_key_never_accepted_with_nothing_new_fails_at_once_naming_its_source(
        self, monkeypatch
    ):
        """A wrong key: RunPod never accepted it and the hook has nothing else. The request
        fails after two sends and one read, saying the key was never accepted and where it is.
        """
        key = make_key()
        monkeypatch.setenv("RUNPOD_API_KEY", key)
        hook = handing_out()
        credentials = Credentials(recovery=hook)

        with pytest.raises(AuthenticationError) as info:
            keep_rejecting(credentials)

        assert (AuthFailure.NEVER_ACCEPTED, "env:RUNPOD_API_KEY", 1) == (
            info.value.reason,
            info.value.source,
            hook.calls,
        )
        assert "has never accepted it: env:RUNPOD_API_KEY holds it" in str(info.value)
        assert "'handing_out' found no other key" in str(info.value)
        assert key not in str(info.value)

    def test_the_rejected_key_again_names_the_source_the_hook_gave(self):
        """A hook answering the rejected key as a RecoveredKey names the source holding it."""
        key = make_key()
        credentials = Credentials(key, lambda context: RecoveredKey(key, "vault:runpod"))

        with pytest.raises(AuthenticationError) as info:
            keep_rejecting(credentials)

        assert (AuthFailure.NEVER_ACCEPTED, "vault:runpod") == (
            info.value.reason,
            info.value.source,
        )

    def test_nobody_to_ask_means_nothing_new(self):
        """A hook raising NonInteractiveError (a prompt with nobody there) has nothing new:
        the key never accepted fails as never accepted, not as a failed hook.
        """

        def prompt(context: RecoveryContext) -> str:
            raise NonInteractiveError("no terminal; set RUNPOD_API_KEY")

        credentials = Credentials(make_key(), prompt)

        with pytest.raises(AuthenticationError) as info:
            keep_rejecting(credentials)

        assert AuthFailure.NEVER_ACCEPTED == info.value.reason
        assert "NonInteractiveError: no terminal" in str(info.value)

    def test_a_failing_hook_on_a_key_never_accepted_is_a_failed_hook(self):
        """The hook raised: the request fails (reason hook_failed), its cause the hook's error."""

        def broken(context: RecoveryContext) -> str:
            raise OSError("vault sealed")

        credentials = Credentials(make_key(), broken)

        with pytest.raises(AuthenticationError) as info:
            keep_rejecting(credentials)

        assert (AuthFailure.HOOK_FAILED, "argument") == (info.value.reason, info.value.source)
        assert "found no replacement: OSError: vault sealed. " in str(info.value)
        assert isinstance(info.value.__cause__, OSError)

    def test_a_new_key_never_accepted_either_fails_the_same_way(self):
        """A recovered key RunPod rejects twice, with nothing newer, fails as never accepted too."""
        new = make_key()
        hook = handing_out(new)
        credentials = Credentials(make_key(), hook)
        keep_rejecting(credentials)

        with pytest.raises(AuthenticationError) as info:
            keep_rejecting(credentials, 1)

        assert (AuthFailure.NEVER_ACCEPTED, "handing_out", 2) == (
            info.value.reason,
            info.value.source,
            hook.calls,
        )


class TestStaleStore:
    def test_a_stale_store_is_waited_for_in_rounds_with_growing_pauses(self, clock):
        """A key RunPod accepted before, now rejected, whose store still holds it: each read
        finding nothing new is a round; the request waits the round's pause (0.1 s, doubling
        up to 5 s) and resends; the next 401 reads again once due.
        """
        hook = handing_out()
        credentials = Credentials(make_key(), hook, recovery_window=3600)
        credentials.accepted(0)
        pauses: list[float] = []

        then = keep_rejecting(credentials)
        for _ in range(7):
            pauses.append(then.wait)
            clock.advance(then.wait)
            then = credentials.rejected(0, context_for(credentials), mark=then.mark)

        assert Act.WAIT == then.act
        assert pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0]) == pauses
        assert (8, 0) == (hook.calls, credentials.generation)

    def test_a_401_before_the_next_read_is_due_waits_the_rest_without_a_read(self, clock):
        """While a round's pause runs, more 401s wait out what is left of it; none reads."""
        hook = handing_out()
        credentials = Credentials(make_key(), hook)
        credentials.accepted(0)
        first = keep_rejecting(credentials)
        clock.advance(0.04)

        again = credentials.rejected(0, context_for(credentials), mark=first.mark)
        other = credentials.rejected(0, context_for(credentials))

        assert (Act.WAIT, Act.WAIT) == (again.act, other.act)
        assert pytest.approx((0.06, 0.06)) == (again.wait, other.wait)
        assert 1 == hook.calls

    def test_a_store_that_catches_up_ends_the_rounds(self, clock):
        """A new key in the store at a later round is adopted: the request sends it."""
        new = make_key()
        hook = handing_out(None, None, new)
        credentials = Credentials(make_key(), hook)
        credentials.accepted(0)
        then = keep_rejecting(credentials)
        clock.advance(then.wait)
        then = credentials.rejected(0, context_for(credentials), mark=then.mark)
        clock.advance(then.wait)

        last = credentials.rejected(0, context_for(credentials), mark=then.mark)

        assert (Act.RESEND_CURRENT, True, new, 3) == (
            last.act,
            last.recovered,
            credentials.api_key,
            hook.calls,
        )

    def test_a_store_stale_past_the_window_fails_naming_its_source(self, clock):
        """A store still holding the rejected key after recovery_window: StaleSourceError,
        reason stale_source, naming the source; it counts as a failed recovery.
        """
        hook = handing_out()
        credentials = Credentials(make_key(), hook, recovery_window=10, failure_threshold=1)
        credentials.accepted(0)
        then = keep_rejecting(credentials)
        clock.advance(9.99)
        then = credentials.rejected(0, context_for(credentials), mark=then.mark)
        assert Act.WAIT == then.act  # within the window: still waiting
        clock.advance(then.wait)

        with pytest.raises(StaleSourceError) as info:
            credentials.rejected(0, context_for(credentials), mark=then.mark)

        assert (AuthFailure.STALE_SOURCE, "argument", 3) == (
            info.value.reason,
            info.value.source,
            hook.calls,
        )
        assert "still held it after 10 seconds" in str(info.value)
        assert Breaker.OPEN == credentials.breaker

    def test_a_zero_window_gives_up_at_the_first_stale_read(self):
        """With recovery_window 0, the store of a key RunPod accepted before is not waited for."""
        hook = handing_out()
        credentials = Credentials(make_key(), hook, recovery_window=0)
        credentials.accepted(0)

        with pytest.raises(StaleSourceError):
            keep_rejecting(credentials)

        assert 1 == hook.calls

    def test_an_acceptance_during_the_read_resends_at_once(self):
        """RunPod accepted the key while its source was read (another request got through):
        the 401 was spurious, the request resends at once and no stale round is counted.
        """
        credentials: Credentials

        def hook(context: RecoveryContext) -> None:
            credentials.accepted(0)

        credentials = Credentials(make_key(), hook)
        credentials.accepted(0)

        then = keep_rejecting(credentials)

        assert (Act.WAIT, 0.0, 0) == (then.act, then.wait, credentials._ledger.stale_rounds)

    def test_a_source_failing_during_a_stale_episode_is_waited_for(self, clock):
        """A hook that fails while its store is already known stale (a file caught mid-update)
        is one more round, read only once, not a failed recovery.
        """
        answers: list[SourceError | None] = [None, SourceError("file is being rewritten")]

        def source(context: RecoveryContext) -> None:
            answer = answers.pop(0)
            if answer is not None:
                raise answer

        hook = Counting(source)
        credentials = Credentials(make_key(), hook, failure_threshold=1)
        credentials.accepted(0)
        then = keep_rejecting(credentials)
        clock.advance(then.wait)

        then = credentials.rejected(0, context_for(credentials), mark=then.mark)

        assert (Act.WAIT, 2, Breaker.CLOSED) == (then.act, hook.calls, credentials.breaker)

    def test_a_failing_hook_outside_a_stale_episode_fails_even_for_a_key_accepted_before(self):
        """A hook that raises at the first read fails the request (hook_failed), even for a
        key RunPod accepted before: there is no stale store to wait for yet.
        """

        def broken(context: RecoveryContext) -> str:
            raise OSError("vault sealed")

        credentials = Credentials(make_key(), broken)
        credentials.accepted(0)

        with pytest.raises(AuthenticationError) as info:
            keep_rejecting(credentials)

        assert AuthFailure.HOOK_FAILED == info.value.reason


class TestMayAsk:
    @staticmethod
    def asking_hook(*answers: str | None) -> tuple[Counting, list[bool]]:
        """A hook handing out *answers* (then None) that notes `may_ask` at each call."""
        asked: list[bool] = []
        queue = list(answers)

        def hook(context: RecoveryContext) -> str | None:
            asked.append(context.may_ask)
            return queue.pop(0) if queue else None

        return Counting(hook), asked

    def test_a_key_never_accepted_may_be_asked_about(self):
        """A key RunPod never accepted is known bad: the hook may ask a person."""
        hook, asked = self.asking_hook()
        credentials = Credentials(make_key(), hook)

        with pytest.raises(AuthenticationError):
            keep_rejecting(credentials)

        assert [True] == asked

    def test_a_person_is_asked_once_per_key(self):
        """A second read for the same key never accepted does not ask again."""
        hook, asked = self.asking_hook()
        credentials = Credentials(make_key(), hook)
        fail_recoveries(credentials, 2)

        assert [True, False] == asked

    def test_a_new_key_may_be_asked_about_again(self):
        """Once per key: a recovered key, never accepted and rejected, may be asked about."""
        hook, asked = self.asking_hook(make_key())
        credentials = Credentials(make_key(), hook)
        keep_rejecting(credentials)

        with pytest.raises(AuthenticationError):
            keep_rejecting(credentials, 1)

        assert [True, True] == asked

    def test_a_key_accepted_before_is_asked_about_only_after_a_stale_round(self, clock):
        """For a key RunPod accepted before, the first read only reads the store (no person);
        the read after a stale round may ask, once; later rounds do not.
        """
        hook, asked = self.asking_hook()
        credentials = Credentials(make_key(), hook)
        credentials.accepted(0)

        then = keep_rejecting(credentials)
        for _ in range(3):
            clock.advance(then.wait)
            then = credentials.rejected(0, context_for(credentials), mark=then.mark)

        assert [False, True, False, False] == asked

    def test_an_acceptance_ends_the_episode_but_not_the_ask(self, clock):
        """After RunPod accepts the key again, a new 401 starts over with no stale round: the
        store is read without asking, and a person already asked is not asked again.
        """
        hook, asked = self.asking_hook()
        credentials = Credentials(make_key(), hook)
        credentials.accepted(0)
        then = keep_rejecting(credentials)
        clock.advance(then.wait)
        then = credentials.rejected(0, context_for(credentials), mark=then.mark)
        credentials.accepted(0)

        keep_rejecting(credentials)

        assert [False, True, False] == asked

    def test_the_breakers_probe_never_asks(self, clock):
        """The breaker's periodic re-read calls the hook with may_ask False, even about a key
        RunPod never accepted.
        """
        hook, asked = self.asking_hook()
        credentials = Credentials(make_key(), hook, failure_threshold=1, probe_interval=5)
        fail_recoveries(credentials, 1)
        clock.advance(5)

        with pytest.raises(CooldownError):
            keep_rejecting(credentials)

        assert ([True, False], Breaker.OPEN) == (asked, credentials.breaker)

    def test_a_hooks_own_timeout_is_granted_only_when_it_may_ask(self, clock):
        """A hook declaring a timeout of its own (a prompt) is waited for that long only when
        it may ask; a read that may not ask is held to hook_timeout.
        """
        never = threading.Event()

        def prompt(context: RecoveryContext) -> str:
            never.wait(PATIENCE)
            return make_key()

        hook = Counting(prompt, name="prompt")
        hook.timeout = 100  # type: ignore[attr-defined]
        credentials = Credentials(make_key(), hook, hook_timeout=0.1)
        credentials.accepted(0)
        results: list[BaseException] = []

        def request() -> None:
            try:
                keep_rejecting(credentials)
            except AuthenticationError as exc:
                results.append(exc)

        waiter = threading.Thread(target=request)
        waiter.start()
        assert wait_for(lambda: clock.waiting == 1)
        clock.advance(0.1)
        waiter.join(PATIENCE)
        never.set()

        assert ["recovery hook 'prompt' did not answer within 0.1 seconds and was abandoned"] == [
            str(e.__cause__) for e in results
        ]


class TestSingleFlight:
    def test_one_hook_call_for_many_threads(self, clock):
        """64 threads rejected with the same key all wait on one flight: one hook call, and
        every request resends with the new key.
        """
        count = 64
        new = make_key()
        hook, _, release = blocked_hook(new)
        credentials = Credentials(make_key(), hook)
        results: list[Next] = []

        threads = [
            threading.Thread(target=lambda: results.append(keep_rejecting(credentials)))
            for _ in range(count)
        ]
        for t in threads:
            t.start()
        all_waiting = wait_for(lambda: clock.waiting == count)
        release.set()
        for t in threads:
            t.join()

        assert all_waiting
        assert (1, new, 1) == (hook.calls, credentials.api_key, credentials.generation)
        assert [Act.RESEND_CURRENT] * count == [r.act for r in results]

    @pytest.mark.anyio
    async def test_one_hook_call_for_many_tasks(self, clock):
        """1,000 asyncio tasks rejected with the same key wait on one flight: one hook call."""
        count = 1000
        new = make_key()
        hook, _, release = blocked_hook(new)
        credentials = Credentials(make_key(), hook)

        def release_when_all_wait() -> bool:
            waiting = wait_for(lambda: clock.waiting == count)
            release.set()
            return waiting

        releaser = asyncio.ensure_future(asyncio.to_thread(release_when_all_wait))
        results = await asyncio.gather(*(akeep_rejecting(credentials) for _ in range(count)))

        assert True is await releaser
        assert (1, new) == (hook.calls, credentials.api_key)
        assert {Act.RESEND_CURRENT} == {r.act for r in results}

    def test_one_hook_call_across_threads_and_asyncio_and_trio_loops(self, clock):
        """Plain threads, asyncio tasks on two loops and trio tasks in two runs, each in a
        thread of its own, all rejected with the same key, share one flight.
        """
        tasks, new = 25, make_key()
        hook, _, release = blocked_hook(new)
        credentials = Credentials(make_key(), hook)
        acts: list[Act] = []

        async def on_asyncio_loop() -> None:
            done = await asyncio.gather(*(akeep_rejecting(credentials) for _ in range(tasks)))
            acts.extend(r.act for r in done)

        async def on_trio() -> None:
            async def one() -> None:
                acts.append((await akeep_rejecting(credentials)).act)

            async with trio.open_nursery() as nursery:
                for _ in range(tasks):
                    nursery.start_soon(one)

        def blocking() -> None:
            acts.append(keep_rejecting(credentials).act)

        threads = [threading.Thread(target=asyncio.run, args=(on_asyncio_loop(),)) for _ in "ab"]
        threads += [threading.Thread(target=trio.run, args=(on_trio,)) for _ in "ab"]
        threads += [threading.Thread(target=blocking) for _ in "abcd"]
        for t in threads:
            t.start()
        all_waiting = wait_for(lambda: clock.waiting == 4 * tasks + 4)
        release.set()
        for t in threads:
            t.join()

        assert all_waiting
        assert (1, new) == (hook.calls, credentials.api_key)
        assert [Act.RESEND_CURRENT] * (4 * tasks + 4) == acts

    def test_the_hook_runs_in_a_daemon_thread_of_its_own(self):
        """The hook runs in a daemon thread named for it: a hung hook never keeps the
        program from exiting, and thread dumps say what the thread is.
        """
        ran_in: list[threading.Thread] = []

        def hook(context: RecoveryContext) -> str:
            ran_in.append(threading.current_thread())
            return make_key()

        credentials = Credentials(make_key(), hook)
        keep_rejecting(credentials)

        assert [("resilient-runpod-recovery", True)] == [(t.name, t.daemon) for t in ran_in]

    def test_the_hook_does_not_hold_the_lock(self):
        """While the hook runs, another thread reads the key, sets one and gets its answer
        to a 401 on the old key, all before the hook returns.
        """
        pushed = make_key()
        done = threading.Event()
        seen: list[object] = []

        def meanwhile(credentials: Credentials) -> None:
            seen.append(credentials.fingerprint)
            credentials.set_key(pushed)
            seen.append(credentials.rejected(0, context_for(credentials)).act)
            done.set()

        with hook_running() as (credentials, _):
            rejected = credentials.fingerprint
            threading.Thread(target=meanwhile, args=(credentials,), daemon=True).start()
            finished_while_the_hook_ran = done.wait(PATIENCE)

        assert finished_while_the_hook_ran
        assert [rejected, Act.RESEND_CURRENT] == seen
        assert pushed == credentials.api_key


class TestSetKey:
    def test_rotation_pushed_from_outside(self):
        """set_key installs a new generation and names its source."""
        credentials = Credentials(make_key(), handing_out())
        new = make_key()

        credentials.set_key(new, source="vault-agent")

        assert (new, 1, "vault-agent") == (
            credentials.api_key,
            credentials.generation,
            credentials.source,
        )

    def test_set_key_answers_the_requests_waiting_and_sets_the_flight_aside(self):
        """A key set while the hook runs answers the requests waiting on it; the hook's answer,
        when it comes, is dropped, and the set-aside flight counts as no failure.
        """
        pushed, found = make_key(), make_key()

        with capture_logs() as logs, hook_running(found) as (credentials, outcome):
            credentials.set_key(pushed)
            answered = wait_for(lambda: outcome)

        assert answered
        assert [Act.RESEND_CURRENT] == [o.act for o in outcome]  # type: ignore[attr-defined]
        assert (pushed, 1, 0) == (
            credentials.api_key,
            credentials.generation,
            credentials._breaker.failures,
        )
        assert ["runpod.auth.recovery_set_aside"] == [
            e["event"] for e in logs if e["event"].startswith("runpod.auth.recover")
        ]

    def test_a_key_set_by_the_application_is_named_and_scrubbed(self):
        """set_key names its source "set_key" unless told; its key leaves no trace in events.

        A legacy key has no prefix to match, so it is scrubbed only because it was held.
        """
        legacy = secrets.token_hex(16)
        credentials = Credentials(make_key(), handing_out())

        credentials.set_key(legacy)
        scrubbed = scrub_secrets(None, "info", {"event": f"token is {legacy}"})

        assert ("set_key", False) == (credentials.source, legacy in scrubbed["event"])

    def test_bad_key_changes_nothing(self):
        """A refused key leaves the current one in place."""
        key = make_key()
        credentials = Credentials(key, handing_out())

        with pytest.raises(InvalidKeyError):
            credentials.set_key(" " + make_key())

        assert (key, 0) == (credentials.api_key, credentials.generation)


class Vault:
    """A hook that finds a key in a vault, and notes the keys it is told RunPod accepted."""

    name = "vault"

    def __init__(self, key: str) -> None:
        self.key = key
        self.told: list[tuple[RecoveredKey, str, bool]] = []

    def __call__(self, context: RecoveryContext) -> RecoveredKey:
        return RecoveredKey(self.key, "vault")

    def accepted(self, found: RecoveredKey) -> None:
        thread = threading.current_thread().name
        self.told.append((found, thread, _flight.on_event_loop()))


class TestAccepted:
    def test_a_recovered_key_is_scrubbed_and_its_hook_told_once_accepted(self):
        """A key a hook found leaves no trace in events, even a legacy one; once RunPod
        accepts it, the hook hears of it once, with its source, on the caller's thread.
        """
        legacy = secrets.token_hex(16)
        hook = Vault(legacy)
        credentials = Credentials(make_key(), hook)
        keep_rejecting(credentials)
        scrubbed = scrub_secrets(None, "info", {"event": f"token is {legacy}"})
        told_before = list(hook.told)

        credentials.accepted(1)
        credentials.accepted(1)

        assert (False, [], True) == (
            legacy in scrubbed["event"],
            told_before,
            credentials.was_accepted(1),
        )
        here = threading.current_thread().name
        assert [(RecoveredKey(legacy, "vault"), here, False)] == hook.told

    def test_on_an_event_loop_the_hook_is_told_in_a_worker_thread(self):
        """Accepted on an event loop, the hook (persist writes a file) is told off the loop."""
        hook = Vault(make_key())
        credentials = Credentials(make_key(), hook)

        async def main() -> None:
            await akeep_rejecting(credentials)
            credentials.accepted(1)
            credentials.accepted(1)

        asyncio.run(main())

        assert wait_for(lambda: hook.told)
        assert [(True, False)] == [
            (t.startswith("resilient-runpod-told"), loop) for _, t, loop in hook.told
        ]

    def test_a_key_set_by_the_application_is_not_told(self):
        """A key from set_key was not found by the hook: its acceptance tells the hook nothing."""
        hook = Vault(make_key())
        credentials = Credentials(make_key(), hook)
        keep_rejecting(credentials)
        credentials.set_key(make_key())

        credentials.accepted(1)
        credentials.accepted(2)

        assert [] == hook.told

    def test_a_failing_accepted_hook_is_logged_not_raised(self):
        """A hook whose `accepted` raises does not fail the request: a warning names it."""

        class Broken(Vault):
            def accepted(self, found: RecoveredKey) -> None:
                raise OSError("disk full")

        credentials = Credentials(make_key(), Broken(make_key()))
        keep_rejecting(credentials)

        with capture_logs() as logs:
            credentials.accepted(1)

        assert [("vault", "OSError: disk full")] == [
            (e["hook"], e["error"])
            for e in logs
            if e["event"] == "runpod.auth.accepted_hook_failed"
        ]

    def test_an_old_generations_acceptance_is_not_news(self):
        """An acceptance of a key already replaced changes nothing about the current key."""
        credentials = Credentials(make_key(), handing_out())
        credentials.set_key(make_key())

        credentials.accepted(0)

        assert (False, False) == (credentials.was_accepted(0), credentials.was_accepted(1))


class TestTimeouts:
    def test_a_hanging_hook_is_abandoned_for_every_waiter(self, clock):
        """A hook that never answers is abandoned after hook_timeout, for every waiter; the
        cause names the hook and the budget, and the abandoned flight counts as a failure.
        """
        never = threading.Event()
        hook = Counting(lambda context: never.wait(PATIENCE), name="stuck")
        credentials = Credentials(make_key(), hook, hook_timeout=0.2, failure_threshold=1)
        errors: list[BaseException] = []

        def request() -> None:
            try:
                keep_rejecting(credentials)
            except AuthenticationError as exc:
                errors.append(exc)

        threads = [threading.Thread(target=request) for _ in range(8)]
        for t in threads:
            t.start()
        all_waiting = wait_for(lambda: clock.waiting == 8)
        clock.advance(0.2)
        for t in threads:
            t.join(PATIENCE)
        with pytest.raises(CooldownError):
            keep_rejecting(credentials)
        never.set()

        assert all_waiting
        assert 8 == len(errors)
        assert {AuthFailure.HOOK_FAILED} == {e.reason for e in errors}  # type: ignore[attr-defined]
        assert all(isinstance(e.__cause__, HookTimeoutError) for e in errors)
        assert {"recovery hook 'stuck' did not answer within 0.2 seconds and was abandoned"} == {
            str(e.__cause__) for e in errors
        }
        assert 1 == hook.calls

    def test_a_callers_deadline_ends_its_wait_not_the_flight(self):
        """A caller whose deadline passes while the hook runs gets AuthenticationError
        naming the hook, reason deadline; the flight runs on and a patient caller gets its key.
        """
        new = make_key()
        hook, started, release = blocked_hook(new)
        # No hook_timeout: the flight has no deadline of its own, only the caller has.
        credentials = Credentials(make_key(), hook, hook_timeout=None)
        patient: list[Next] = []
        waiter = threading.Thread(target=lambda: patient.append(keep_rejecting(credentials)))
        waiter.start()
        assert started.wait(PATIENCE)

        with pytest.raises(AuthenticationError) as info:
            keep_rejecting(credentials, deadline=time.monotonic() + 0.05)
        release.set()
        waiter.join()

        assert AuthFailure.DEADLINE == info.value.reason
        assert "the request's deadline passed while recovery was running" == str(
            info.value.__cause__
        )
        assert ("blocked",) == info.value.hooks
        assert ([Act.RESEND_CURRENT], new) == ([p.act for p in patient], credentials.api_key)

    @pytest.mark.anyio
    async def test_a_callers_deadline_ends_its_async_wait_not_the_flight(self):
        """The same for asyncio: the deadline ends the wait without blocking the loop."""
        release = asyncio.Event()
        new = make_key()
        asked: list[str] = []

        async def slow(context: RecoveryContext) -> str:
            asked.append(context.fingerprint)
            await release.wait()
            return new

        credentials = Credentials(make_key(), slow)
        context = context_for(credentials)
        first = await credentials.arejected(0, context)
        patient = asyncio.ensure_future(credentials.arejected(0, context, mark=first.mark))
        for _ in range(1000):  # the hook is running once it has noted the context
            if asked:
                break
            await asyncio.sleep(0)
        assert [context.fingerprint] == asked

        with pytest.raises(AuthenticationError) as info:
            await credentials.arejected(0, context, deadline=time.monotonic() + 0.05)
        release.set()

        assert Act.RESEND_CURRENT == (await patient).act
        assert [context.fingerprint] == asked  # the hook ran once, on this loop
        assert AuthFailure.DEADLINE == info.value.reason
        assert new == credentials.api_key

    @pytest.mark.anyio
    async def test_a_hanging_async_hook_is_abandoned(self):
        """An async hook that never answers is abandoned too, without blocking the loop."""

        async def hook(context: RecoveryContext) -> str:
            await asyncio.sleep(3600)
            return make_key()

        credentials = Credentials(make_key(), hook, hook_timeout=0.05)

        with pytest.raises(AuthenticationError) as info:
            await akeep_rejecting(credentials)

        assert isinstance(info.value.__cause__, HookTimeoutError)

    def test_followers_get_their_own_exception_objects(self, clock):
        """Each waiter raises a fresh error (shared exception objects corrupt tracebacks)."""
        hook, _, release = blocked_hook(None)
        credentials = Credentials(make_key(), hook)
        errors: list[BaseException] = []

        def request() -> None:
            try:
                keep_rejecting(credentials)
            except AuthenticationError as exc:
                errors.append(exc)

        threads = [threading.Thread(target=request) for _ in range(4)]
        for t in threads:
            t.start()
        all_waiting = wait_for(lambda: clock.waiting == 4)
        release.set()
        for t in threads:
            t.join()

        assert all_waiting
        assert (1, 4, 4) == (hook.calls, len(errors), len({id(e) for e in errors}))

    def test_a_failure_is_logged_once_with_the_hook_name(self):
        """One failed flight is one event, naming the hook and the reason, not the key."""
        key = make_key()
        credentials = Credentials(key, handing_out())

        with capture_logs() as logs, pytest.raises(AuthenticationError):
            keep_rejecting(credentials)

        failed = [e for e in logs if e["event"] == "runpod.auth.never_accepted"]
        assert 1 == len(failed)
        assert "handing_out" == failed[0]["hook"]
        assert isinstance(failed[0]["duration"], float)  # seconds, not rounded to whole ones
        assert key not in repr(logs)


class TestBadHooks:
    @pytest.mark.parametrize(
        ("answer", "reason", "fragment"),
        [
            (None, AuthFailure.NEVER_ACCEPTED, "'<lambda>' found no other key"),
            (RecoveredKey(None, "vault"), AuthFailure.NEVER_ACCEPTED, "found no other key"),  # type: ignore[arg-type]
            ("", AuthFailure.HOOK_FAILED, "empty"),
            ("   \n", AuthFailure.HOOK_FAILED, "empty"),
            (42, AuthFailure.HOOK_FAILED, "returned a int, not a key"),
            ("rps_" + "A" * 46, AuthFailure.HOOK_FAILED, "S3"),
            (RecoveredKey(42, "vault"), AuthFailure.HOOK_FAILED, "int, not a key"),  # type: ignore[arg-type]
        ],
    )
    def test_unusable_answers_fail_once_with_a_reason(self, answer, reason, fragment):
        """No key (bare or in a RecoveredKey) is nothing new: a key never accepted fails as
        such. Empty, whitespace, non-str and S3 answers are a failed hook, saying why.
        """
        hook = Counting(lambda context: answer, name="<lambda>")
        credentials = Credentials(make_key(), hook)

        with pytest.raises(AuthenticationError, match=fragment) as info:
            keep_rejecting(credentials)

        assert (reason, 0, ("<lambda>",), 1) == (
            info.value.reason,
            credentials.generation,
            info.value.hooks,
            hook.calls,
        )

    def test_a_hook_object_without_a_name_is_named_by_its_class(self):
        """A hook object with no ``name`` (and no ``__qualname__``) is named by its class."""

        class Keyless:
            def __call__(self, context: RecoveryContext) -> None:
                return None

        credentials = Credentials(make_key(), Keyless())

        with pytest.raises(AuthenticationError) as info:
            keep_rejecting(credentials)

        assert ("Keyless",) == info.value.hooks
        assert "'Keyless' found no other key" in str(info.value)

    def test_a_recovery_error_from_the_hook_is_quoted_as_is_and_read_once(self):
        """A hook raising RecoveryError (not a SourceError) is asked once, its message is
        quoted without the exception's type name, and it is the cause.
        """

        def hook(context: RecoveryContext) -> str:
            raise RecoveryError("nobody home.")

        counting = Counting(hook)
        credentials = Credentials(make_key(), counting)
        context = context_for(credentials, attempt=2)
        first = credentials.rejected(0, context)

        with pytest.raises(AuthenticationError) as info:
            credentials.rejected(0, context, mark=first.mark)

        assert 1 == counting.calls
        assert "found no replacement: nobody home. " in str(info.value)  # one full stop
        assert (context.fingerprint, 2) == (info.value.fingerprint, info.value.attempts)
        assert isinstance(info.value.__cause__, RecoveryError)

    def test_a_cancelled_prompt_is_said_so(self):
        """A hook interrupted by Ctrl-C ends recovery with an error saying the person cancelled."""

        def hook(context: RecoveryContext) -> str:
            raise KeyboardInterrupt

        credentials = Credentials(make_key(), hook)

        with pytest.raises(AuthenticationError) as info:
            keep_rejecting(credentials)

        assert "found no replacement: the person cancelled the prompt. " in str(info.value)


class TestFailingSources:
    def test_a_source_failing_once_is_read_again(self):
        """A source that fails (SourceError) is read once more before recovery fails."""
        new = make_key()
        hook = answering(SourceError("file is being rewritten"), new)
        credentials = Credentials(make_key(), hook)

        then = keep_rejecting(credentials)

        assert (Act.RESEND_CURRENT, new, 2) == (then.act, credentials.api_key, hook.calls)

    def test_a_source_that_fails_then_has_no_key_has_nothing_new(self):
        """A source read again after failing, then finding no key, has nothing new: the key
        never accepted fails as such, naming where it is.
        """
        hook = answering(SourceError("file is being rewritten"), None)
        credentials = Credentials(make_key(), hook)

        with pytest.raises(AuthenticationError) as info:
            keep_rejecting(credentials)

        assert (AuthFailure.NEVER_ACCEPTED, 2) == (info.value.reason, hook.calls)
        assert "'vault-file' found no other key" in str(info.value)

    def test_a_recovery_error_caused_by_a_failing_source_is_read_again(self):
        """A RecoveryError raised from a SourceError counts as a failing source: read twice."""

        def source(context: RecoveryContext) -> str:
            raise RecoveryError("the vault file is missing") from SourceError("no such file")

        hook = Counting(source)
        credentials = Credentials(make_key(), hook)

        with pytest.raises(AuthenticationError) as info:
            keep_rejecting(credentials)

        assert (AuthFailure.HOOK_FAILED, 2) == (info.value.reason, hook.calls)


class TestBreaker:
    def test_three_failures_rest_the_hook(self):
        """After 3 failed recoveries in a row, rejections fail fast without the hook."""
        hook = handing_out()
        credentials = Credentials(make_key(), hook, cooldown=60)
        context = context_for(credentials)
        fail_recoveries(credentials, 3)

        with pytest.raises(CooldownError) as info:
            credentials.rejected(0, context)

        assert (3, Breaker.OPEN, AuthFailure.COOLDOWN) == (
            hook.calls,
            credentials.breaker,
            info.value.reason,
        )
        assert 0 < info.value.retry_after <= 60
        assert context.fingerprint == info.value.fingerprint
        assert "recovery failed 3 times in a row" in str(info.value)
        assert "instead of calling 'handing_out' again" in str(info.value)

    def test_an_open_breaker_rereads_every_probe_interval_and_a_new_key_closes_it(self, clock):
        """While open, the source is re-read at most every probe_interval (a probe finding
        nothing is a CooldownError, and counts nothing); a new key makes it half open, and
        RunPod accepting that key closes it.
        """
        new = make_key()
        hook = handing_out(None, None, None, None, new)
        credentials = Credentials(make_key(), hook, cooldown=3600, probe_interval=60)
        fail_recoveries(credentials, 3)
        calls: list[int] = []
        with pytest.raises(CooldownError):
            keep_rejecting(credentials)  # at once: no read
        calls.append(hook.calls)
        clock.advance(59)
        with pytest.raises(CooldownError):
            keep_rejecting(credentials)  # still too soon: no read
        calls.append(hook.calls)
        clock.advance(1)
        with pytest.raises(CooldownError) as probed:
            keep_rejecting(credentials)  # read: still nothing
        calls.append(hook.calls)
        failures = credentials._breaker.failures
        clock.advance(60)

        then = keep_rejecting(credentials)  # read: a new key
        half_open = credentials.breaker
        credentials.accepted(1)

        assert ([3, 3, 4], 3) == (calls, failures)
        assert (Act.RESEND_CURRENT, new, 5) == (then.act, credentials.api_key, hook.calls)
        assert (Breaker.HALF_OPEN, Breaker.CLOSED) == (half_open, credentials.breaker)
        assert pytest.approx(3600 - 60) == probed.value.retry_after
        assert "so it is resting for" in str(probed.value)

    def test_past_the_cooldown_a_failed_trial_opens_it_again(self, clock):
        """After the cooldown the next recovery is a trial: its failure reopens at once."""
        hook = handing_out()
        credentials = Credentials(make_key(), hook, cooldown=60, probe_interval=3600)
        fail_recoveries(credentials, 3)
        clock.advance(60)
        seen = credentials.breaker

        fail_recoveries(credentials, 1)

        assert (Breaker.HALF_OPEN, Breaker.OPEN, 4) == (seen, credentials.breaker, hook.calls)

    def test_an_accepted_key_resets_the_count(self):
        """Once a request succeeds with the current key, earlier failures are forgotten:
        two failures, an acceptance, two more: still closed, and the hook is asked a fifth time.
        """
        new = make_key()
        hook = answering(*[OSError("vault sealed")] * 4, new)
        credentials = Credentials(make_key(), hook)
        credentials.accepted(0)
        fail_recoveries(credentials, 2)
        credentials.accepted(0)
        fail_recoveries(credentials, 2)

        then = keep_rejecting(credentials)

        assert (Act.RESEND_CURRENT, 5, new) == (then.act, hook.calls, credentials.api_key)

    def test_set_key_ends_the_cooldown(self):
        """Pushing a key from the application closes the breaker: recovery runs again."""
        hook = handing_out(None, None, None, make_key())
        credentials = Credentials(make_key(), hook)
        fail_recoveries(credentials, 3)

        credentials.set_key(make_key())
        closed = credentials.breaker
        then = keep_rejecting(credentials, 1)

        assert (Breaker.CLOSED, Act.RESEND_CURRENT, 4, 2) == (
            closed,
            then.act,
            hook.calls,
            credentials.generation,
        )


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX-only")
def test_fork_child_starts_with_fresh_lock_and_no_flight():
    """A child forked while a recovery is in flight can recover on its own."""
    started = threading.Event()
    release = threading.Event()
    child_key = make_key()
    answers = iter([make_key(), child_key])

    def hook(context: RecoveryContext) -> str:
        answer = next(answers)
        if not started.is_set():
            started.set()
            assert release.wait(PATIENCE)
        return answer

    credentials = Credentials(make_key(), hook)
    waiter = threading.Thread(target=keep_rejecting, args=(credentials,))
    waiter.start()
    assert started.wait(PATIENCE)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the parent's flight does not exist here
        try:
            then = keep_rejecting(credentials)
            ok = (
                then.act is Act.RESEND_CURRENT
                and credentials.api_key == child_key
                and credentials._lock.acquire(timeout=1)
            )
            os.write(write_end, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(write_end)
    verdict = os.read(read_end, 1)
    os.waitpid(pid, 0)
    release.set()
    waiter.join()

    assert b"1" == verdict


class AsyncHookObject:
    """A hook object whose ``__call__`` is async; it records the loop each call runs on."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.loops: list[object] = []

    async def __call__(self, context: RecoveryContext) -> str:
        self.loops.append(asyncio.get_running_loop())
        return self.key


class TestAsyncHooks:
    def test_an_async_hook_object_runs_on_the_callers_loop(self):
        """A hook object with an async ``__call__`` is awaited on the waiting task's own loop,
        so it may use what lives there (a client session, a lock).
        """
        new = make_key()
        hook = AsyncHookObject(new)
        credentials = Credentials(make_key(), hook)

        async def main() -> tuple[Next, asyncio.AbstractEventLoop]:
            return await akeep_rejecting(credentials), asyncio.get_running_loop()

        then, loop = asyncio.run(main())

        assert (Act.RESEND_CURRENT, new, [loop]) == (then.act, credentials.api_key, hook.loops)

    def test_an_async_hook_runs_on_the_callers_trio_run(self):
        """Under trio, an async hook runs in the caller's trio run: it may await trio."""
        new = make_key()
        ran_in_trio: list[bool] = []

        async def hook(context: RecoveryContext) -> str:
            await trio.lowlevel.checkpoint()  # only works inside trio
            ran_in_trio.append(trio.lowlevel.in_trio_run())
            return new

        credentials = Credentials(make_key(), hook)

        then = trio.run(akeep_rejecting, credentials)

        assert (Act.RESEND_CURRENT, new, [True]) == (then.act, credentials.api_key, ran_in_trio)

    def test_a_blocking_caller_awaits_an_async_hook_on_a_loop_of_its_own(self):
        """A caller that blocks (`rejected`, no running loop) still gets an async hook's key."""
        new = make_key()
        hook = AsyncHookObject(new)
        credentials = Credentials(make_key(), hook)

        then = keep_rejecting(credentials)

        assert (Act.RESEND_CURRENT, new, 1) == (then.act, credentials.api_key, len(hook.loops))


async def _async_function(context: RecoveryContext) -> str:
    return make_key()


@pytest.mark.parametrize(
    ("hook", "expected"),
    [
        (_async_function, True),
        (AsyncHookObject(make_key()), True),
        (handing_out(), False),
        (object(), False),
    ],
    ids=["async function", "async __call__", "sync __call__", "not callable"],
)
def test_what_counts_as_an_async_hook(hook, expected):
    """An async function or an object with an async ``__call__`` is async; others are not."""
    assert expected == is_async_callable(hook)


class TestFlight:
    def test_without_asyncio_loaded_no_asyncio_loop_runs(self, monkeypatch):
        """Before asyncio is imported, async code runs on trio: no asyncio waiter is made."""
        monkeypatch.delitem(sys.modules, "asyncio")

        assert False is on_asyncio()

    def test_a_waiter_on_asyncio_sees_a_flight_settled_before_it_waits(self):
        """A flight resolved before its task waits wakes that task (True), with no timeout."""
        flight = idle_flight()

        async def wait() -> bool:
            waiter = flight.async_waiter()
            flight.resolve()
            return await waiter.wait(None)

        assert True is asyncio.run(wait())

    def test_resolving_after_a_waiters_loop_closed_wakes_the_others(self):
        """A task whose loop has closed (it gave up) does not stop the flight waking the rest."""
        flight = idle_flight()
        woken: list[bool] = []
        ready = threading.Event()

        async def gone() -> None:
            flight.async_waiter()

        async def waiting() -> None:
            waiter = flight.async_waiter()
            ready.set()
            woken.append(await waiter.wait(PATIENCE))

        asyncio.run(gone())
        thread = threading.Thread(target=asyncio.run, args=(waiting(),), daemon=True)
        thread.start()
        assert ready.wait(PATIENCE)

        flight.resolve()
        thread.join()

        assert (True, [True]) == (flight.done.is_set(), woken)
