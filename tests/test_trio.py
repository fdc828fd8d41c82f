"""The async adapters under trio: the same single flight, waits and retries as on asyncio.

httpx runs on trio as well as asyncio; so does everything async here. Real trio runs,
real sockets to the emulator.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path

import httpx
import pytest
import tenacity
import trio

from resilient_runpod import (
    AsyncResilientTransport,
    AuthenticationError,
    Credentials,
    HookTimeoutError,
    RecoveryContext,
    RetryPolicy,
    RunPodAuth,
    fingerprint,
    recovery,
)
from resilient_runpod._flight import Flight
from resilient_runpod.testing import Emulator

from .helpers import PATIENCE, Counting
from .test_sources import WRAPPERS

TASKS = 50


@pytest.fixture
def secret(tmp_path: Path, runpod_emulator: Emulator) -> Path:
    path = tmp_path / "runpod-key"
    path.write_text(runpod_emulator.api_key)
    return path


def rotate(emulator: Emulator, secret: Path) -> str:
    new = emulator.add_key()
    secret.write_text(new)
    emulator.revoke(emulator.api_key)
    return new


def test_tasks_share_one_recovery_under_trio(runpod_emulator, secret):
    """50 trio tasks rejected with the same key: one hook call, 50 successes.

    Each task's first 401 on the key is answered by one resend (the probe), so RunPod
    sees each task rejected at least once and at most twice.
    """
    hook = Counting(recovery.from_file(secret))
    credentials = Credentials(runpod_emulator.api_key, hook, hosts=[runpod_emulator.host])
    new = rotate(runpod_emulator, secret)
    statuses: list[int] = []

    async def main() -> None:
        async with (
            httpx.AsyncClient(
                transport=AsyncResilientTransport(credentials),
                base_url=f"{runpod_emulator.serverless_url}/e",
            ) as client,
            trio.open_nursery() as nursery,
        ):
            for _ in range(TASKS):
                nursery.start_soon(_get, client, statuses)

    trio.run(main)

    assert ([200] * TASKS, 1, new) == (statuses, hook.calls, credentials.api_key)
    rejected = runpod_emulator.counters().by_status[401]
    assert (True, True) == (TASKS <= rejected, rejected <= 2 * TASKS)


def test_runpod_auth_recovers_under_trio(runpod_emulator, secret):
    """The httpx.Auth flow waits for recovery on trio too."""
    hook = Counting(recovery.from_file(secret))
    credentials = Credentials(runpod_emulator.api_key, hook, hosts=[runpod_emulator.host])
    rotate(runpod_emulator, secret)

    async def main() -> int:
        async with httpx.AsyncClient(auth=RunPodAuth(credentials)) as client:
            response = await client.get(f"{runpod_emulator.serverless_url}/e/health")
            return response.status_code

    assert (200, 1) == (trio.run(main), hook.calls)


def test_an_async_hook_runs_on_the_trio_loop(runpod_emulator):
    """An async hook that awaits trio itself is run on the caller's trio run.

    It is given the context of the 401 it answers: the status and the rejected key's
    fingerprint.
    """
    new = runpod_emulator.add_key()
    rejected = fingerprint(runpod_emulator.api_key)
    seen: list[tuple[int, str]] = []

    async def vault(context: RecoveryContext) -> str:
        await trio.sleep(0.01)  # only works inside trio
        seen.append((context.status_code, context.fingerprint))
        return new

    credentials = Credentials(runpod_emulator.api_key, vault, hosts=[runpod_emulator.host])
    runpod_emulator.revoke(runpod_emulator.api_key)

    async def main() -> int:
        async with httpx.AsyncClient(transport=AsyncResilientTransport(credentials)) as client:
            response = await client.get(f"{runpod_emulator.serverless_url}/e/health")
            return response.status_code

    assert (200, new, [(401, rejected)]) == (trio.run(main), credentials.api_key, seen)


@pytest.mark.parametrize("wrapper", sorted(WRAPPERS))
def test_an_async_hook_in_a_wrapper_runs_on_the_trio_loop(
    wrapper, runpod_emulator, tmp_path, monkeypatch
):
    """chain, callback, persist and shared run an async hook on the caller's trio run too."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    new = runpod_emulator.add_key()

    async def vault(context: RecoveryContext) -> str:
        await trio.sleep(0.01)  # only works inside trio
        return new

    hook = WRAPPERS[wrapper](vault, tmp_path)
    credentials = Credentials(runpod_emulator.api_key, hook, hosts=[runpod_emulator.host])
    runpod_emulator.revoke(runpod_emulator.api_key)

    async def main() -> int:
        async with httpx.AsyncClient(transport=AsyncResilientTransport(credentials)) as client:
            response = await client.get(f"{runpod_emulator.serverless_url}/e/health")
            return response.status_code

    assert (200, new) == (trio.run(main), credentials.api_key)


def test_a_hanging_hook_is_abandoned_under_trio(runpod_emulator):
    """A hook that never answers: the trio task gets HookTimeoutError as the cause, in time."""

    async def never(context: RecoveryContext) -> str:
        await trio.sleep_forever()
        raise AssertionError  # pragma: no cover

    credentials = Credentials(
        runpod_emulator.api_key, never, hosts=[runpod_emulator.host], hook_timeout=0.2
    )
    runpod_emulator.revoke(runpod_emulator.api_key)

    async def main() -> BaseException | None:
        async with httpx.AsyncClient(transport=AsyncResilientTransport(credentials)) as client:
            try:
                await client.get(f"{runpod_emulator.serverless_url}/e/health")
            except AuthenticationError as exc:
                return exc.__cause__
        return None

    assert isinstance(trio.run(main), HookTimeoutError)


def test_transient_retries_sleep_on_trio(runpod_emulator):
    """A 503 on a safe route is retried after a backoff slept with trio."""
    policy = RetryPolicy(backoff=tenacity.wait_fixed(0.01))
    credentials = Credentials(
        runpod_emulator.api_key, lambda c: None, hosts=[runpod_emulator.host], retry=policy
    )
    runpod_emulator.inject(503, count=2)

    async def main() -> int:
        async with httpx.AsyncClient(transport=AsyncResilientTransport(credentials)) as client:
            response = await client.get(f"{runpod_emulator.serverless_url}/e/health")
            return response.status_code

    assert (200, {503: 2, 200: 1}) == (
        trio.run(main),
        dict(runpod_emulator.counters().by_status),
    )


def test_a_trio_waiter_sees_a_flight_settled_before_it_waits():
    """A flight resolved before its trio task waits wakes that task (True), with no timeout."""
    flight = Flight(0, None, 0.0, math.inf, mark=0, may_ask=False, probing=False)

    async def wait() -> bool:
        waiter = flight.async_waiter()
        flight.resolve()
        return await waiter.wait(None)

    assert True is trio.run(wait)


def test_resolving_after_a_trio_run_ended_wakes_the_others():
    """A trio run that has ended (its task gave up) does not stop the flight waking the rest.

    The first waiter's run is over before the flight resolves; the second waiter, in a
    trio run in another thread, is still woken.
    """
    flight = Flight(0, None, 0.0, math.inf, mark=0, may_ask=False, probing=False)
    woken: list[bool] = []
    ready = threading.Event()

    async def gone() -> None:
        flight.async_waiter()

    async def waiting() -> None:
        waiter = flight.async_waiter()
        ready.set()
        woken.append(await waiter.wait(PATIENCE))

    trio.run(gone)
    thread = threading.Thread(target=trio.run, args=(waiting,), daemon=True)
    thread.start()
    assert ready.wait(PATIENCE)

    flight.resolve()
    thread.join()

    assert (True, [True]) == (flight.done.is_set(), woken)


async def _get(client: httpx.AsyncClient, statuses: list[int]) -> None:
    statuses.append((await client.get("/health")).status_code)
