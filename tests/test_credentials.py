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
from structlog.testing import capture_logs

from resilient_runpod import (
    AuthenticationError,
    Breaker,
    CooldownError,
    Credentials,
    HookTimeoutError,
    InvalidKeyError,
    RecoveredKey,
    RecoveryContext,
    RecoveryError,
    SourceError,
    _credentials,
    _flight,
    scrub_secrets,
)
from resilient_runpod._flight import Flight, Mode, Outcome, on_asyncio
from resilient_runpod._hooks import is_async_callable

from .helpers import PATIENCE, Counting, handing_out, make_key, wait_for


def context_for(credentials: Credentials, attempt: int = 1) -> RecoveryContext:
    return RecoveryContext(
        credentials.fingerprint, attempt, 401, "GET", "https://api.runpod.ai/v2/e/health"
    )


def recover_in_threads(credentials: Credentials, count: int) -> list[BaseException]:
    """Report generation 0 as rejected from *count* threads at once; return what they raised."""
    context = context_for(credentials)
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker() -> None:
        barrier.wait()
        try:
            credentials.recover(0, context)
        except BaseException as exc:  # every outcome is the caller's to judge
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=worker, name=f"recover-{n}") for n in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


class Clock:
    """The `time` module as the engine sees it, but its monotonic clock moves only when
    the test says: hook timeouts, cooldowns and probe intervals then pass by steps, not
    by scheduling. It also notes which threads read it, a waiter on a flight among them.
    """

    def __init__(self) -> None:
        self.now = time.monotonic()
        self.readers: set[str] = set()

    def monotonic(self) -> float:
        self.readers.add(threading.current_thread().name)
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def __getattr__(self, name: str) -> object:
        return getattr(time, name)  # sleep and the rest stay real


@pytest.fixture
def clock(monkeypatch) -> Clock:
    """A `Clock` standing in for `time` in the credentials and their flights."""
    fake = Clock()
    monkeypatch.setattr(_credentials, "time", fake)
    monkeypatch.setattr(_flight, "time", fake)
    return fake


@contextlib.contextmanager
def hook_running() -> Iterator[Credentials]:
    """Credentials whose hook is running, blocked until the ``with`` body ends."""
    started = threading.Event()
    release = threading.Event()

    def slow_hook(context: RecoveryContext) -> str:
        started.set()
        assert release.wait(PATIENCE)
        return make_key()

    credentials = Credentials(make_key(), slow_hook)
    waiter = threading.Thread(target=credentials.recover, args=(0, context_for(credentials)))
    waiter.start()
    assert started.wait(PATIENCE)
    try:
        yield credentials
    finally:
        release.set()
        waiter.join()


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
        from resilient_runpod import ConfigError

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

    def test_recovered_key_repr_hides_the_key(self):
        """A RecoveredKey shows where it came from, not what it is."""
        key = make_key()

        assert key not in repr(RecoveredKey(key, "vault"))


class TestSingleFlight:
    def test_one_hook_call_for_many_threads(self):
        """256 threads reporting the same rejected generation cause exactly one hook call."""
        new = make_key()
        hook = handing_out(new, delay=0.05)
        credentials = Credentials(make_key(), hook)

        errors = recover_in_threads(credentials, 256)

        assert (1, [], new, 1) == (hook.calls, errors, credentials.api_key, credentials.generation)

    @pytest.mark.anyio
    async def test_one_hook_call_for_many_tasks(self):
        """1,000 tasks reporting the same rejected generation cause exactly one hook call."""
        new = make_key()
        calls = 0

        async def hook(context: RecoveryContext) -> str:
            nonlocal calls
            calls += 1
            await asyncio.sleep(0.05)
            return new

        credentials = Credentials(make_key(), hook)
        context = context_for(credentials)

        await asyncio.gather(*(credentials.arecover(0, context) for _ in range(1000)))

        assert (1, new) == (calls, credentials.api_key)

    def test_one_hook_call_across_event_loops_in_threads(self):
        """Tasks on four loops in four threads, plus plain threads, share one flight."""
        new = make_key()
        hook = handing_out(new, delay=0.1)
        credentials = Credentials(make_key(), hook)
        context = context_for(credentials)
        barrier = threading.Barrier(8)

        async def many() -> None:
            barrier.wait()
            await asyncio.gather(*(credentials.arecover(0, context) for _ in range(50)))

        def blocking() -> None:
            barrier.wait()
            credentials.recover(0, context)

        threads = [threading.Thread(target=asyncio.run, args=(many(),)) for _ in range(4)]
        threads += [threading.Thread(target=blocking) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

        assert (1, new) == (hook.calls, credentials.api_key)

    def test_old_generation_returns_without_hook(self):
        """A request rejected with a key that was already replaced just retries."""
        hook = handing_out(make_key())
        credentials = Credentials(make_key(), hook)
        credentials.set_key(make_key())

        credentials.recover(0, context_for(credentials))

        assert 0 == hook.calls

    def test_late_finisher_does_not_overwrite_a_newer_key(self):
        """A key set by the application while the hook ran is kept; the hook's is dropped."""
        pushed = make_key()

        with hook_running() as credentials:
            credentials.set_key(pushed)

        assert (pushed, 1) == (credentials.api_key, credentials.generation)

    def test_the_hook_runs_in_a_daemon_thread_of_its_own(self):
        """The hook runs in a daemon thread named for it: a hung hook never keeps the
        program from exiting, and thread dumps say what the thread is.
        """
        ran_in: list[threading.Thread] = []

        def hook(context: RecoveryContext) -> str:
            ran_in.append(threading.current_thread())
            return make_key()

        credentials = Credentials(make_key(), hook)
        credentials.recover(0, context_for(credentials))

        assert [("resilient-runpod-recovery", True)] == [(t.name, t.daemon) for t in ran_in]

    def test_hook_does_not_hold_the_lock(self):
        """While the hook runs, others read the key, set one, and pass a stale 401 through.

        The hook stays blocked until the ``with`` body ends. Another thread reads the
        fingerprint, sets a new key, and reports the rejected generation, which is now
        stale and returns NEW at once. If the hook ran under the credentials' lock, that
        thread would block until the hook returned, so ``done.wait`` would return False.
        """
        pushed = make_key()
        done = threading.Event()
        seen: list[object] = []

        def meanwhile(credentials: Credentials) -> None:
            seen.append(credentials.fingerprint)
            credentials.set_key(pushed)
            seen.append(credentials.recover(0, context_for(credentials)))
            done.set()

        with hook_running() as credentials:
            rejected = credentials.fingerprint
            threading.Thread(target=meanwhile, args=(credentials,), daemon=True).start()
            finished_while_the_hook_ran = done.wait(PATIENCE / 2)
            key_while_the_hook_ran = credentials.api_key

        assert finished_while_the_hook_ran
        assert [rejected, Outcome.NEW] == seen
        assert pushed == key_while_the_hook_ran
        # The recovery that finished after set_key did not overwrite the pushed key.
        assert pushed == credentials.api_key


class TestSettings:
    @pytest.mark.parametrize(
        ("settings", "error", "fragment"),
        [
            ({"recovery": "from_env"}, TypeError, "must be a hook"),
            ({"max_recoveries": 0}, ValueError, "max_recoveries"),
            ({"failure_threshold": 0}, ValueError, "failure_threshold"),
            ({"hook_timeout": -5}, ValueError, "hook_timeout"),
            ({"hook_timeout": 0}, ValueError, "hook_timeout"),
            ({"probe_interval": -1}, ValueError, "cannot be negative"),
            ({"cooldown": -1}, ValueError, "cannot be negative"),
            ({"recovery_window": -1}, ValueError, "cannot be negative"),
            ({"hosts": "127.0.0.1:8000"}, TypeError, r"\['127.0.0.1:8000'\]"),
            ({"hosts": [""]}, ValueError, "names no host"),
            ({"hosts": ["http://"]}, ValueError, "names no host"),
        ],
    )
    def test_bad_settings_are_refused_at_once(self, settings, error, fragment):
        """A setting that could only fail later, or silently, is refused when it is given."""
        with pytest.raises(error, match=fragment):
            Credentials(make_key(), **settings)

    def test_edge_settings_are_accepted(self):
        """No hook timeout, cooldown, polling window or pause between probes are valid choices."""
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


class TestBadHooks:
    @pytest.mark.parametrize(
        ("answer", "fragment"),
        [
            (None, "found no key"),
            ("", "empty"),
            ("   \n", "empty"),
            (42, "returned a int, not a key"),
            ("rps_" + "A" * 46, "S3"),
            (RecoveredKey(None, "vault"), "found no key in 'vault'"),  # type: ignore[arg-type]
            (RecoveredKey(42, "vault"), "int, not a key"),  # type: ignore[arg-type]
        ],
    )
    def test_unusable_answers_fail_once_with_a_reason(self, answer, fragment):
        """None, empty, whitespace, non-str and S3 answers, bare or in a RecoveredKey, end in
        AuthenticationError.

        The reason names what was wrong: a non-str answer is named by its type.
        """
        credentials = Credentials(make_key(), lambda context: answer)

        with pytest.raises(AuthenticationError, match=fragment) as info:
            credentials.recover(0, context_for(credentials))

        assert 0 == credentials.generation
        assert info.value.hooks == (
            "TestBadHooks.test_unusable_answers_fail_once_with_a_reason.<locals>.<lambda>",
        )

    def test_same_key_is_sent_once_more_then_polled_within_the_window(self):
        """A hook that returns the rejected key: first "unchanged", then polled, then refused."""
        key = make_key()
        hook = handing_out(*([key] * 10))
        credentials = Credentials(key, hook, recovery_window=0)

        first = credentials.recover(0, context_for(credentials))
        with pytest.raises(AuthenticationError, match="still holds the rejected key"):
            credentials.recover(0, context_for(credentials))

        assert (Outcome.UNCHANGED, 2, 0) == (first, hook.calls, credentials.generation)

    def test_a_hook_object_without_a_name_is_named_by_its_class(self):
        """A hook object with no ``name`` (and no ``__qualname__``) is named by its class."""

        class Keyless:
            def __call__(self, context: RecoveryContext) -> None:
                return None

        credentials = Credentials(make_key(), Keyless())

        with pytest.raises(AuthenticationError) as info:
            credentials.recover(0, context_for(credentials))

        assert ("Keyless",) == info.value.hooks
        assert "recovery hook 'Keyless' found no key" in str(info.value)

    def test_hook_error_is_the_cause(self):
        """The hook's own exception is chained as __cause__ and its message is quoted."""

        def broken(context: RecoveryContext) -> str:
            raise OSError("vault sealed")

        credentials = Credentials(make_key(), broken)

        with pytest.raises(AuthenticationError) as info:
            credentials.recover(0, context_for(credentials))

        assert "found no replacement: OSError: vault sealed. " in str(info.value)
        assert isinstance(info.value.__cause__, OSError)

    def test_hanging_hook_times_out(self, clock):
        """A hook that never answers is abandoned after hook_timeout, for every waiter; the
        cause names the hook and the budget, and the abandoned flight counts as a failure.
        """
        never = threading.Event()
        hook = Counting(lambda context: never.wait(), name="stuck")
        credentials = Credentials(make_key(), hook, hook_timeout=0.2, failure_threshold=1)
        results: list[list[BaseException]] = []
        runner = threading.Thread(target=lambda: results.append(recover_in_threads(credentials, 8)))

        runner.start()
        # A waiter reads the clock for how long to wait: all 8 wait on the one flight
        # before its hook_timeout passes, however late each thread was scheduled.
        assert wait_for(lambda: {f"recover-{n}" for n in range(8)} <= clock.readers)
        clock.advance(0.2)
        runner.join(PATIENCE)
        [errors] = results
        with pytest.raises(CooldownError):
            credentials.recover(0, context_for(credentials))
        never.set()

        assert 8 == len(errors)
        assert all(isinstance(e, AuthenticationError) for e in errors)
        assert all(isinstance(e.__cause__, HookTimeoutError) for e in errors)
        assert {"recovery hook 'stuck' did not answer within 0.2 seconds and was abandoned"} == {
            str(e.__cause__) for e in errors
        }
        assert 1 == hook.calls

    def test_a_callers_deadline_ends_its_wait_not_the_flight(self):
        """A caller whose deadline passes while the hook runs gets AuthenticationError
        naming the hook, its cause saying the deadline passed; the flight runs on and a
        caller without a deadline gets its key.
        """
        release = threading.Event()
        new = make_key()

        def slow(context: RecoveryContext) -> str:
            assert release.wait(PATIENCE)
            return new

        # No hook_timeout: the flight has no deadline of its own, only the caller has.
        credentials = Credentials(make_key(), Counting(slow, name="slow"), hook_timeout=None)
        context = context_for(credentials)
        patient = threading.Thread(target=credentials.recover, args=(0, context))
        patient.start()

        with pytest.raises(AuthenticationError) as info:
            credentials.recover(0, context, deadline=time.monotonic() + 0.1)
        release.set()
        patient.join()

        assert isinstance(info.value.__cause__, RecoveryError)
        assert "the request's deadline passed while recovery was running" == str(
            info.value.__cause__
        )
        assert ("slow",) == info.value.hooks
        assert new == credentials.api_key

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
        patient = asyncio.ensure_future(credentials.arecover(0, context))
        await asyncio.sleep(0)

        with pytest.raises(AuthenticationError) as info:
            await credentials.arecover(0, context, deadline=time.monotonic() + 0.1)
        release.set()

        assert Outcome.NEW == await patient
        assert [context.fingerprint] == asked  # the hook ran once, on this loop, with the context
        assert "the request's deadline passed while recovery was running" == str(
            info.value.__cause__
        )
        assert new == credentials.api_key

    @pytest.mark.anyio
    async def test_hanging_async_hook_times_out(self):
        """An async hook that never answers is abandoned too, without blocking the loop."""

        async def hook(context: RecoveryContext) -> str:
            await asyncio.sleep(3600)
            return make_key()

        credentials = Credentials(make_key(), hook, hook_timeout=0.2)

        with pytest.raises(AuthenticationError) as info:
            await credentials.arecover(0, context_for(credentials))

        assert isinstance(info.value.__cause__, HookTimeoutError)

    def test_followers_get_their_own_exception_objects(self):
        """Each waiter raises a fresh error (shared exception objects corrupt tracebacks)."""
        hook = handing_out(None, delay=0.1)
        credentials = Credentials(make_key(), hook)

        errors = recover_in_threads(credentials, 4)

        assert all(isinstance(e, AuthenticationError) for e in errors)
        assert (1, 4, 4) == (hook.calls, len(errors), len({id(e) for e in errors}))

    def test_failure_is_logged_once_with_the_hook_name(self):
        """One failed flight is one hook_failed event, naming the hook, not the key."""
        key = make_key()
        credentials = Credentials(key, handing_out(None))

        with capture_logs() as logs, pytest.raises(AuthenticationError):
            credentials.recover(0, context_for(credentials))

        failed = [e for e in logs if e["event"] == "runpod.auth.hook_failed"]
        assert 1 == len(failed)
        assert "handing_out" == failed[0]["hook"]
        assert isinstance(failed[0]["duration"], float)  # seconds, not rounded to whole ones
        assert key not in repr(logs)


class TestCooldown:
    def test_three_failures_rest_the_hook(self):
        """After 3 failed recoveries in a row, rejections fail fast without the hook."""
        hook = handing_out()  # always None
        credentials = Credentials(make_key(), hook, cooldown=60)
        context = context_for(credentials)

        for _ in range(3):
            with pytest.raises(AuthenticationError):
                credentials.recover(0, context)
        with pytest.raises(CooldownError) as info:
            credentials.recover(0, context)

        assert 3 == hook.calls
        assert 0 < info.value.retry_after <= 60
        assert context.fingerprint == info.value.fingerprint
        assert "recovery failed 3 times in a row" in str(info.value)
        assert "instead of calling 'handing_out' again" in str(info.value)

    def test_open_breaker_rereads_a_cheap_source_and_closes_on_a_new_key(self, clock):
        """While open, a source is re-read at most every probe_interval; a new key closes it."""
        new = make_key()
        hook = handing_out(None, None, None, None, new)
        credentials = Credentials(make_key(), hook, cooldown=3600, probe_interval=60)
        calls: list[int] = []
        for _ in range(3):
            with pytest.raises(AuthenticationError):
                credentials.recover(0, context_for(credentials))
        with pytest.raises(CooldownError):
            credentials.recover(0, context_for(credentials))  # at once: no read
        calls.append(hook.calls)
        clock.advance(59)
        with pytest.raises(CooldownError):
            credentials.recover(0, context_for(credentials))  # still too soon: no read
        calls.append(hook.calls)
        clock.advance(1)
        context = context_for(credentials)
        with pytest.raises(CooldownError) as probed:
            credentials.recover(0, context)  # read: still nothing
        calls.append(hook.calls)
        clock.advance(60)

        outcome = credentials.recover(0, context_for(credentials))  # read: a new key

        assert ([3, 3, 4], 5, Outcome.NEW, new) == (
            calls,
            hook.calls,
            outcome,
            credentials.api_key,
        )
        credentials._confirm(credentials.generation)
        assert Breaker.CLOSED == credentials.breaker
        # The re-read that found nothing says how long the rest lasts, like any CooldownError.
        assert pytest.approx(3600 - 60) == probed.value.retry_after
        assert context.fingerprint == probed.value.fingerprint
        assert "so it is resting for" in str(probed.value)

    def test_a_person_is_not_asked_while_the_breaker_is_open(self):
        """An interactive hook is never re-read while the breaker is open."""
        hook = handing_out()
        hook.interactive = True  # type: ignore[attr-defined]
        credentials = Credentials(make_key(), hook, cooldown=60, probe_interval=0)
        for _ in range(3):
            with pytest.raises(AuthenticationError):
                credentials.recover(0, context_for(credentials))
        for _ in range(3):
            with pytest.raises(CooldownError):
                credentials.recover(0, context_for(credentials))

        assert (3, Breaker.OPEN) == (hook.calls, credentials.breaker)

    def test_an_accepted_key_resets_the_count(self):
        """Once a request succeeds with the current key, earlier failures are forgotten.

        Two failures, an accepted key, two more failures: the breaker stays closed (it
        opens at three in a row), so the hook is asked a fifth time.
        """
        hook = handing_out(None, None, None, None, make_key())
        credentials = Credentials(make_key(), hook)
        for _ in range(2):
            with pytest.raises(AuthenticationError):
                credentials.recover(0, context_for(credentials))
        credentials._confirm(0)
        for _ in range(2):
            with pytest.raises(AuthenticationError):
                credentials.recover(0, context_for(credentials))

        credentials.recover(0, context_for(credentials))

        assert (5, 1) == (hook.calls, credentials.generation)

    def test_set_key_ends_the_cooldown(self):
        """Pushing a key from the application resumes recovery at once."""
        hook = handing_out(None, None, None, make_key())
        credentials = Credentials(make_key(), hook)
        for _ in range(3):
            with pytest.raises(AuthenticationError):
                credentials.recover(0, context_for(credentials))

        credentials.set_key(make_key())
        credentials.recover(1, context_for(credentials))

        assert (4, 2) == (hook.calls, credentials.generation)


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

    def test_a_key_set_by_the_application_is_named_and_scrubbed(self):
        """set_key names its source "set_key" unless told; its key leaves no trace in events.

        A legacy key has no prefix to match, so it is scrubbed only because it was held.
        """
        legacy = secrets.token_hex(16)
        credentials = Credentials(make_key(), handing_out())

        credentials.set_key(legacy)
        scrubbed = scrub_secrets(None, "info", {"event": f"token is {legacy}"})

        assert ("set_key", False) == (credentials.source, legacy in scrubbed["event"])

    def test_a_recovered_key_is_scrubbed_and_its_hook_told_once_accepted(self):
        """A key a hook found leaves no trace in events, even a legacy one with no prefix
        to match; once RunPod accepts it, the hook hears of it with its source.
        """
        legacy = secrets.token_hex(16)

        class Vault:
            def __init__(self) -> None:
                self.accepted_keys: list[RecoveredKey] = []

            def __call__(self, context: RecoveryContext) -> RecoveredKey:
                return RecoveredKey(legacy, "vault")

            def accepted(self, found: RecoveredKey) -> None:
                self.accepted_keys.append(found)

        hook = Vault()
        credentials = Credentials(make_key(), hook)
        credentials.recover(0, context_for(credentials))
        scrubbed = scrub_secrets(None, "info", {"event": f"token is {legacy}"})
        credentials._confirm(credentials.generation)

        assert False is (legacy in scrubbed["event"])
        assert [("vault", legacy)] == [(f.source, f.key) for f in hook.accepted_keys]

    def test_bad_key_changes_nothing(self):
        """A refused key leaves the current one in place."""
        key = make_key()
        credentials = Credentials(key, handing_out())

        with pytest.raises(InvalidKeyError):
            credentials.set_key(" " + make_key())

        assert (key, 0) == (credentials.api_key, credentials.generation)


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
    waiter = threading.Thread(target=credentials.recover, args=(0, context_for(credentials)))
    waiter.start()
    assert started.wait(PATIENCE)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the parent's flight does not exist here
        try:
            credentials.recover(0, context_for(credentials))
            ok = credentials.api_key == child_key and credentials._lock.acquire(timeout=1)
            os.write(write_end, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(write_end)
    verdict = os.read(read_end, 1)
    os.waitpid(pid, 0)
    release.set()
    waiter.join()

    assert b"1" == verdict


def test_a_recovery_error_from_the_hook_is_quoted_as_is_and_read_once():
    """A hook raising RecoveryError (not a SourceError) is asked once, its message is
    quoted without the exception's type name, and it is the cause.

    Other exceptions are quoted as ``Type: message`` (see test_hook_error_is_the_cause);
    only a failing source is read a second time.
    """

    def hook(context: RecoveryContext) -> str:
        raise RecoveryError("nobody home.")

    counting = Counting(hook)
    credentials = Credentials(make_key(), counting)
    context = context_for(credentials, attempt=2)

    with pytest.raises(AuthenticationError) as info:
        credentials.recover(0, context)

    assert 1 == counting.calls
    assert "found no replacement: nobody home. " in str(info.value)  # one full stop
    assert (context.fingerprint, 2) == (info.value.fingerprint, info.value.attempts)
    assert isinstance(info.value.__cause__, RecoveryError)


def test_a_cancelled_prompt_is_said_so():
    """A hook interrupted by Ctrl-C ends recovery with an error saying the person cancelled."""

    def hook(context: RecoveryContext) -> str:
        raise KeyboardInterrupt

    credentials = Credentials(make_key(), hook)

    with pytest.raises(AuthenticationError) as info:
        credentials.recover(0, context_for(credentials))

    assert "found no replacement: the person cancelled the prompt. " in str(info.value)


class TestFailingSources:
    def test_a_source_failing_once_is_read_again(self):
        """A source that fails (SourceError) is read once more before recovery fails."""
        new = make_key()
        answers: list[BaseException | str] = [SourceError("file is being rewritten"), new]

        def source(context: RecoveryContext) -> str:
            answer = answers.pop(0)
            if isinstance(answer, BaseException):
                raise answer
            return answer

        hook = Counting(source)
        credentials = Credentials(make_key(), hook)

        outcome = credentials.recover(0, context_for(credentials))

        assert (Outcome.NEW, new, 2) == (outcome, credentials.api_key, hook.calls)

    def test_a_source_that_fails_then_has_no_key_is_named(self):
        """A source read again after failing, then finding no key, is named in the error."""
        answers: list[SourceError | None] = [SourceError("file is being rewritten"), None]

        def source(context: RecoveryContext) -> None:
            answer = answers.pop(0)
            if answer is not None:
                raise answer

        credentials = Credentials(make_key(), Counting(source, name="vault-file"))

        with pytest.raises(AuthenticationError) as info:
            credentials.recover(0, context_for(credentials))

        assert "recovery hook 'vault-file' found no key" in str(info.value)

    def test_a_polled_source_that_fails_for_a_moment_is_polled_on(self):
        """While polling a source that still held the rejected key, a failing read is
        waited out and the source polled again, until it has a new key.
        """
        key, new = make_key(), make_key()
        failure = SourceError("file is being rewritten")
        # Read 1 (the 401): the same key. Then, polling: a failing read, read once more
        # (failing again), a pause, and a read with the new key.
        answers: list[SourceError | str] = [key, failure, failure, new]

        def source(context: RecoveryContext) -> str:
            answer = answers.pop(0)
            if isinstance(answer, SourceError):
                raise answer
            return answer

        hook = Counting(source)
        credentials = Credentials(key, hook, hook_timeout=5, recovery_window=5)
        first = credentials.recover(0, context_for(credentials))

        second = credentials.recover(0, context_for(credentials))

        assert (Outcome.UNCHANGED, Outcome.NEW, new, 4) == (
            first,
            second,
            credentials.api_key,
            hook.calls,
        )

    def test_a_recovery_error_caused_by_a_failing_source_is_read_again(self):
        """A RecoveryError raised from a SourceError counts as a failing source: read twice."""

        def source(context: RecoveryContext) -> str:
            raise RecoveryError("the vault file is missing") from SourceError("no such file")

        hook = Counting(source)
        credentials = Credentials(make_key(), hook)

        with pytest.raises(AuthenticationError):
            credentials.recover(0, context_for(credentials))

        assert 2 == hook.calls

    def test_a_person_is_asked_once_even_when_the_prompt_fails(self):
        """An interactive hook whose source fails is not asked again: a person is asked once."""

        def prompt(context: RecoveryContext) -> str:
            raise SourceError("no terminal")

        hook = Counting(prompt)
        hook.interactive = True  # type: ignore[attr-defined]
        # No key to probe: the rejected key is None, so nothing is sent before asking.
        credentials = Credentials(None, hook)

        with pytest.raises(AuthenticationError):
            credentials.recover(0, context_for(credentials))

        assert 1 == hook.calls


def test_a_blocking_caller_awaits_an_async_hook_on_a_loop_of_its_own():
    """A caller that blocks (`recover`, no running loop) still gets an async hook's key."""
    new = make_key()
    hook = AsyncHookObject(new)
    credentials = Credentials(make_key(), hook)

    outcome = credentials.recover(0, context_for(credentials))

    assert (Outcome.NEW, new, 1) == (outcome, credentials.api_key, len(hook.loops))


class TestFlight:
    def test_without_asyncio_loaded_no_asyncio_loop_runs(self, monkeypatch):
        """Before asyncio is imported, async code runs on trio: no asyncio waiter is made."""
        monkeypatch.delitem(sys.modules, "asyncio")

        assert False is on_asyncio()

    def test_a_waiter_on_asyncio_sees_a_flight_settled_before_it_waits(self):
        """A flight resolved before its task waits wakes that task (True), with no timeout."""
        flight = Flight(0, None, 0.0, math.inf, Mode.READ)

        async def wait() -> bool:
            waiter = flight.async_waiter()
            flight.resolve()
            return await waiter.wait(None)

        assert True is asyncio.run(wait())

    def test_resolving_after_a_waiters_loop_closed_wakes_the_others(self):
        """A task whose loop has closed (it gave up) does not stop the flight waking the rest.

        The first waiter's loop is closed before the flight resolves; the second waiter,
        on a live loop in another thread, is still woken.
        """
        flight = Flight(0, None, 0.0, math.inf, Mode.READ)
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


class AsyncHookObject:
    """A hook object whose ``__call__`` is async; it records the loop each call runs on."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.loops: list[asyncio.AbstractEventLoop] = []

    async def __call__(self, context: RecoveryContext) -> str:
        self.loops.append(asyncio.get_running_loop())
        return self.key


def test_an_async_hook_object_runs_on_the_callers_loop():
    """A hook object with an async ``__call__`` is awaited on the waiting task's own loop.

    Like an async function, so a hook may use what lives on that loop (a client
    session, a lock).
    """
    new = make_key()
    hook = AsyncHookObject(new)
    credentials = Credentials(make_key(), hook)

    async def main() -> tuple[Outcome, asyncio.AbstractEventLoop]:
        outcome = await credentials.arecover(0, context_for(credentials))
        return outcome, asyncio.get_running_loop()

    outcome, loop = asyncio.run(main())

    assert (Outcome.NEW, new, [loop]) == (outcome, credentials.api_key, hook.loops)


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
