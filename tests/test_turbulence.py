"""Riding through turbulence: spurious 401s, stale secret stores, fast rotations, the breaker.

Every test runs against the emulator over real sockets, at default settings unless the
test is about a setting.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest
from structlog.testing import capture_logs

from resilient_runpod import (
    AuthenticationError,
    AuthFailure,
    Breaker,
    CooldownError,
    Credentials,
    RecoveryContext,
    ResilientTransport,
    RetryPolicy,
    StaleSourceError,
    fingerprint,
    recovery,
)
from resilient_runpod.testing import Chaos, Emulator

from .helpers import PATIENCE, Counting, handing_out, make_key, wait_for
from .test_transport import client_for


@pytest.fixture
def secret(tmp_path: Path, runpod_emulator: Emulator) -> Path:
    path = tmp_path / "runpod-key"
    path.write_text(runpod_emulator.api_key + "\n")
    return path


def file_credentials(
    emulator: Emulator, secret: Path, **kwargs: object
) -> tuple[Counting, Credentials]:
    hook = Counting(recovery.from_file(secret))
    credentials = Credentials(
        emulator.api_key,
        hook,
        hosts=[emulator.host],
        **kwargs,  # type: ignore[arg-type]
    )
    return hook, credentials


def test_a_spurious_401_on_a_valid_key_is_ridden_through(runpod_emulator, secret):
    """The first 401 on a key is answered by one resend with it: no source read at all."""
    hook, credentials = file_credentials(runpod_emulator, secret)
    runpod_emulator.inject(401)

    with client_for(runpod_emulator, credentials) as client:
        response = client.get("/health")

    assert (200, 0, 0) == (response.status_code, hook.calls, credentials.generation)
    assert {401: 1, 200: 1} == dict(runpod_emulator.counters().by_status)


def test_two_spurious_401s_in_a_row_cost_one_read_and_a_short_wait(runpod_emulator, secret):
    """Rejected twice, a key RunPod accepted before is read once; nothing new, it is resent."""
    hook, credentials = file_credentials(runpod_emulator, secret)

    with client_for(runpod_emulator, credentials) as client, capture_logs() as events:
        warm = client.get("/health").status_code
        runpod_emulator.inject(401, 2)
        response = client.get("/health")

    unchanged = [e for e in events if e["event"] == "runpod.auth.key_unchanged"]
    assert (200, 200, 1, 0) == (warm, response.status_code, hook.calls, credentials.generation)
    assert [(1, 0.1)] == [(e["round"], e["wait"]) for e in unchanged]
    assert {401: 2, 200: 2} == dict(runpod_emulator.counters().by_status)


def test_spurious_401s_never_open_the_breaker(runpod_emulator, secret):
    """Many spurious 401s in a row on a valid key: every request succeeds, recovery stays closed."""
    hook, credentials = file_credentials(runpod_emulator, secret)

    with client_for(runpod_emulator, credentials) as client:
        statuses = []
        for _ in range(10):
            runpod_emulator.inject(401)
            statuses.append(client.get("/health").status_code)
        for _ in range(5):
            runpod_emulator.inject(401, 2)
            statuses.append(client.get("/health").status_code)

    assert ([200] * 15, Breaker.CLOSED) == (statuses, credentials.breaker)
    assert 5 == hook.calls  # one read per pair in a row, none for a single one


def test_a_stale_source_is_read_once_a_round_until_it_changes(runpod_emulator, secret):
    """Revoked before the store updates: 8 requests wait and resend; one read per round."""
    hook, credentials = file_credentials(runpod_emulator, secret)
    old = runpod_emulator.api_key
    new = runpod_emulator.add_key()
    results: list[int] = []
    errors: list[BaseException] = []
    started = threading.Barrier(9)

    def worker(client: httpx.Client) -> None:
        started.wait()
        try:
            results.append(client.get("/health").status_code)
        except BaseException as exc:
            errors.append(exc)

    with client_for(runpod_emulator, credentials) as client, capture_logs() as logs:
        warm = client.get("/health").status_code  # RunPod accepted the key once
        runpod_emulator.revoke(old)  # the store still holds `old` for a while
        threads = [threading.Thread(target=worker, args=(client,)) for _ in range(8)]
        for t in threads:
            t.start()
        started.wait()
        stale = wait_for(lambda: any(e["event"] == "runpod.auth.key_unchanged" for e in logs))
        secret.write_text(new)  # the store catches up
        for t in threads:
            t.join()

    recovered = [e for e in logs if e["event"] == "runpod.auth.recovered"]
    rounds = [e for e in logs if e["event"] == "runpod.auth.key_unchanged"]
    assert (200, True, [], [200] * 8) == (warm, stale, errors, results)
    assert (1, new) == (len(recovered), credentials.api_key)
    # Each read ended a round (stale) or the episode (recovered): never one per request.
    assert len(rounds) + 1 == hook.calls


def test_a_store_stale_past_the_window_ends_in_an_error_naming_it(runpod_emulator, secret):
    """A key accepted before, revoked, its store never updated: StaleSourceError, bounded."""
    hook, credentials = file_credentials(runpod_emulator, secret, recovery_window=0.5)
    old = runpod_emulator.api_key

    with client_for(runpod_emulator, credentials) as client:
        warm = client.get("/health").status_code
        runpod_emulator.revoke(old)
        with pytest.raises(StaleSourceError) as info:
            client.get("/health")

    error = info.value
    assert 200 == warm
    assert (AuthFailure.STALE_SOURCE, f"file:{secret}") == (error.reason, error.source)
    assert f"file:{secret} still held it" in str(error)
    assert old not in str(error)
    assert 2 <= hook.calls <= 8  # rounds of 0.1, 0.2 s (doubling) within 0.5 s


def test_a_wrong_key_from_the_start_fails_in_two_sends_naming_its_source(runpod_emulator, secret):
    """A key RunPod never accepted, nothing newer in its source: AuthenticationError at once."""
    wrong = make_key()
    secret.write_text(wrong + "\n")
    hook = Counting(recovery.from_file(secret))
    credentials = Credentials(wrong, hook, hosts=[runpod_emulator.host])

    with (
        client_for(runpod_emulator, credentials) as client,
        pytest.raises(AuthenticationError) as info,
    ):
        client.get("/health")

    error = info.value
    assert (AuthFailure.NEVER_ACCEPTED, f"file:{secret}") == (error.reason, error.source)
    assert "has never accepted it" in str(error)
    assert ({401: 2}, 1) == (dict(runpod_emulator.counters().by_status), hook.calls)


def test_a_person_is_not_asked_while_the_key_still_works(runpod_emulator):
    """One or two spurious 401s on a key RunPod accepted: the hook may not ask a person."""
    asked: list[bool] = []

    def person(context: RecoveryContext) -> str | None:
        asked.append(context.may_ask)
        return None  # a prompt told not to ask answers nothing new

    credentials = Credentials(runpod_emulator.api_key, person, hosts=[runpod_emulator.host])

    with client_for(runpod_emulator, credentials) as client:
        warm = client.get("/health").status_code
        runpod_emulator.inject(401, path_prefix="/v2/")
        once = client.get("/health").status_code
        runpod_emulator.inject(401, 2, path_prefix="/v2/")
        twice = client.get("/health").status_code

    assert ([200] * 3, [False]) == ([warm, once, twice], asked)


def test_a_person_is_asked_once_the_key_is_known_bad(runpod_emulator):
    """Revoked, the store stale: the first read may not ask; the next one may, once."""
    old = runpod_emulator.api_key
    new = runpod_emulator.add_key()
    asked: list[bool] = []

    def person(context: RecoveryContext) -> str | None:
        asked.append(context.may_ask)
        return new if context.may_ask else None

    credentials = Credentials(old, person, hosts=[runpod_emulator.host])

    with client_for(runpod_emulator, credentials) as client:
        warm = client.get("/health").status_code
        runpod_emulator.revoke(old)
        response = client.get("/health")

    assert (200, 200, [False, True]) == (warm, response.status_code, asked)
    assert new == credentials.api_key


def test_rotations_made_by_others_cost_a_request_nothing(runpod_emulator, secret):
    """A request rejected with a key two rotations old is sent with the current one, no hook."""
    hook, credentials = file_credentials(runpod_emulator, secret)
    old = runpod_emulator.api_key
    runpod_emulator.set_latency(0.3)
    outcome: list[int] = []

    with client_for(runpod_emulator, credentials) as client:
        thread = threading.Thread(target=lambda: outcome.append(client.get("/health").status_code))
        thread.start()
        in_flight = wait_for(lambda: runpod_emulator.in_flight == 1)
        middle = runpod_emulator.add_key()
        credentials.set_key(middle)
        newest = runpod_emulator.add_key()
        credentials.set_key(newest)
        runpod_emulator.revoke(old)
        runpod_emulator.revoke(middle)
        thread.join()

    by_key = runpod_emulator.counters().by_key_status
    assert (True, [200], 0) == (in_flight, outcome, hook.calls)
    assert ({401: 1}, {200: 1}) == (by_key[fingerprint(old)], by_key[fingerprint(newest)])


def test_the_breaker_opens_fails_fast_and_closes_on_a_new_key(runpod_emulator, secret):
    """3 failed recoveries open it; rejected requests fail at once; a new key closes it."""
    _, credentials = file_credentials(
        runpod_emulator, secret, recovery_window=0, probe_interval=0.2
    )
    old = runpod_emulator.api_key
    runpod_emulator.revoke(old)
    secret.unlink()  # the source fails outright

    with client_for(runpod_emulator, credentials) as client:
        for _ in range(3):
            with pytest.raises(AuthenticationError):
                client.get("/health")
        with pytest.raises(CooldownError):
            client.get("/health")
        state_while_open = credentials.breaker
        new = runpod_emulator.add_key()
        secret.write_text(new)
        time.sleep(0.25)  # the next re-read is due
        response = client.get("/health")

    assert (Breaker.OPEN, 200, Breaker.CLOSED) == (
        state_while_open,
        response.status_code,
        credentials.breaker,
    )


def test_a_route_that_refuses_a_working_key_is_bounded_by_the_ceiling_on_sends(key):
    """401 on every send of one route while other requests get through with the same key.

    Each 401 follows an acceptance elsewhere, so the rule resends the key (row 3) instead
    of reading the source: the request ends after `RetryPolicy.max_sends` sends.
    """
    hook = Counting(lambda _context: key)
    credentials = Credentials(key, hook)

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/flap"):
            # Another request got through with this key meanwhile.
            credentials.accepted(credentials.generation)
            return httpx.Response(401)
        return httpx.Response(200)

    transport = ResilientTransport(credentials, httpx.MockTransport(handler))
    with (
        httpx.Client(transport=transport, base_url="https://api.runpod.ai/v2/ep") as client,
        pytest.raises(AuthenticationError, match="ceiling on sends") as info,
    ):
        client.get("/flap")

    assert (AuthFailure.CEILING, 0) == (info.value.reason, hook.calls)
    assert credentials.retry.max_sends == info.value.attempts
    assert Breaker.CLOSED == credentials.breaker  # a working key is no failed recovery


def test_soak_in_small_loses_nothing_and_duplicates_nothing(runpod_emulator, secret):
    """Rotations, 10 % spurious 401s, 5xx and 429, 8 threads: every job exactly once."""
    _, credentials = file_credentials(runpod_emulator, secret)
    runpod_emulator.chaos(
        Chaos(unauthorized=0.1, server_error=0.02, too_many=0.02, latency=(0, 0.005), seed=7)
    )
    per_thread, threads = 40, 8
    done: list[int] = []
    lost: list[BaseException] = []
    stop = threading.Event()

    def rotate() -> None:
        while not stop.wait(0.3):
            old = credentials.api_key or ""
            new = runpod_emulator.add_key()
            secret.write_text(new)
            runpod_emulator.revoke(old)

    def worker(client: httpx.Client, base: int) -> None:
        for n in range(base, base + per_thread):
            try:
                job = _submit(client, n)
                status = client.get(f"/status/{job}").json()["status"]
                assert status in {"IN_QUEUE", "IN_PROGRESS", "COMPLETED"}
                done.append(n)
            except BaseException as exc:
                lost.append(exc)

    rotator = threading.Thread(target=rotate)
    with client_for(runpod_emulator, credentials) as client:
        rotator.start()
        workers = [
            threading.Thread(target=worker, args=(client, i * per_thread)) for i in range(threads)
        ]
        for t in workers:
            t.start()
        for t in workers:
            t.join()
        stop.set()
        rotator.join()

    created = runpod_emulator.job_inputs()
    assert ([], list(range(threads * per_thread))) == (lost, sorted(done))
    assert sorted(done) == sorted(i["n"] for i in created)  # no job created twice


def _submit(client: httpx.Client, n: int) -> str:
    """POST /run; a 5xx before the job exists is resubmitted here, as the caller must."""
    from resilient_runpod import TransientError

    for _ in range(5):
        try:
            response = client.post("/run", json={"input": {"n": n}})
        except TransientError as exc:
            if exc.reason != "unsafe":
                raise
            continue
        job: str = response.json()["id"]
        return job
    raise AssertionError("POST /run kept failing")


def _recovery_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "resilient-runpod-recovery"]


def test_a_pushed_key_answers_the_recovery_already_waiting(runpod_emulator):
    """set_key during a slow recovery: the waiting request goes out with the pushed key.

    The set-aside recovery's late failure is not counted (with ``failure_threshold=1`` it
    would open the breaker), and a 401 for the pushed key gets a recovery of its own.
    """
    rejected = runpod_emulator.api_key
    entered, release = threading.Event(), threading.Event()
    third = runpod_emulator.add_key()

    def store(context: RecoveryContext) -> str:
        if not entered.is_set():
            entered.set()
            assert release.wait(PATIENCE)
            raise RuntimeError("the secret store is down")
        return third

    hook = Counting(store)
    credentials = Credentials(rejected, hook, hosts=[runpod_emulator.host], failure_threshold=1)
    runpod_emulator.revoke(rejected)
    statuses: list[int] = []

    def request() -> None:
        with client_for(runpod_emulator, credentials) as client:
            statuses.append(client.get("/health").status_code)

    waiting = threading.Thread(target=request)
    waiting.start()
    assert entered.wait(PATIENCE)
    pushed = runpod_emulator.add_key()
    credentials.set_key(pushed)
    waiting.join(PATIENCE)
    answered_while_the_hook_ran = not waiting.is_alive()
    release.set()
    assert wait_for(lambda: not _recovery_threads())
    breaker_after_the_late_failure = credentials.breaker
    runpod_emulator.revoke(pushed)
    request()

    assert answered_while_the_hook_ran
    assert Breaker.CLOSED is breaker_after_the_late_failure
    assert [200, 200] == statuses
    assert (2, third) == (hook.calls, credentials.api_key)


def test_a_pushed_key_ends_the_wait_for_a_stale_source(runpod_emulator):
    """A request waiting for a store that still holds the revoked key goes out with the key
    set_key pushed, and the store is not read again."""
    stale = runpod_emulator.api_key
    hook = Counting(lambda context: stale)  # the store was not updated
    credentials = Credentials(stale, hook, hosts=[runpod_emulator.host])
    statuses: list[int] = []

    def request() -> None:
        with client_for(runpod_emulator, credentials) as client:
            statuses.append(client.get("/health").status_code)

    request()  # RunPod accepted the key once
    runpod_emulator.revoke(stale)
    waiting = threading.Thread(target=request)
    waiting.start()
    assert wait_for(lambda: hook.calls >= 2)  # read, a round of waiting, read again
    pushed = runpod_emulator.add_key()
    credentials.set_key(pushed)
    reads_when_pushed = hook.calls
    waiting.join(PATIENCE)

    assert (False, [200, 200]) == (waiting.is_alive(), statuses)
    assert reads_when_pushed == hook.calls
    assert 1 == runpod_emulator.counters().by_key_status[fingerprint(pushed)][200]


def test_a_transient_failure_while_waiting_for_a_stale_store_costs_the_request_nothing(key):
    """A 429 on a resend made while the store is stale is retried free of the request's
    transient budget: with transient retries off (attempts=1), the request still succeeds.
    """
    new = make_key()
    answers = iter([200, 401, 401, 429, 401, 200])
    keys: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        keys.append(request.headers.get("Authorization", "").removeprefix("Bearer "))
        status = next(answers)
        headers = {"Retry-After": "0"} if status == 429 else {}
        return httpx.Response(status, headers=headers)

    hook = handing_out(key, new)  # the store shows the new key at its second read
    credentials = Credentials(key, hook, retry=RetryPolicy(attempts=1))
    transport = ResilientTransport(credentials, httpx.MockTransport(handler))
    with httpx.Client(transport=transport, base_url="https://api.runpod.ai/v2/ep") as client:
        warm = client.get("/health").status_code
        response = client.get("/health")

    assert (200, 200, 2) == (warm, response.status_code, hook.calls)
    # warm; the 401, its probe; the stale resend (429), its retry (401); the new key.
    assert [key, key, key, key, key, new] == keys
