"""One rotation, one recovery: many requests in flight when the key rotates."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from resilient_runpod import AsyncResilientTransport, Credentials, ResilientTransport, recovery

from .conftest import EmulatorProcess
from .test_transport import Counting

THREADS = 256
TASKS = 1000


@dataclass
class Rotation:
    """An emulator in its own process, its key in a secret file, and credentials reading it."""

    emulator: EmulatorProcess
    secret: Path
    old: str
    hook: Counting
    credentials: Credentials


@pytest.fixture
def rotation(emulator_process: EmulatorProcess, tmp_path: Path) -> Rotation:
    secret = tmp_path / "key"
    old = emulator_process.key
    secret.write_text(old)
    hook = Counting(recovery.from_file(secret))
    credentials = Credentials(old, hook, hosts=[emulator_process.host])
    return Rotation(emulator_process, secret, old, hook, credentials)


def test_threads_share_one_recovery(rotation):
    """256 threads on one client, all in flight at a rotation: one hook call, 256 successes."""
    emulator, secret, old = rotation.emulator, rotation.secret, rotation.old
    hook, credentials = rotation.hook, rotation.credentials
    emulator.set_latency(0.5)
    barrier = threading.Barrier(THREADS + 1)
    statuses: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    limits = httpx.Limits(max_connections=THREADS)
    client = httpx.Client(
        transport=ResilientTransport(credentials, httpx.HTTPTransport(limits=limits)),
        base_url=f"{emulator.url}/v2/storm",
        # Generous: a loaded CI machine may be slow to accept 256 connections at once.
        timeout=120,
    )

    def worker(n: int) -> None:
        barrier.wait()
        try:
            response = client.post("/runsync", json={"input": {"n": n}})
            with lock:
                statuses.append(response.status_code)
        except BaseException as exc:
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(THREADS)]
    for t in threads:
        t.start()
    barrier.wait()
    time.sleep(0.2)  # the requests are now parked in the emulator's latency
    new = emulator.add_key()
    secret.write_text(new)
    emulator.revoke(old)
    for t in threads:
        t.join()
    client.close()
    counts = emulator.status_counts()

    assert ([], [200] * THREADS, 1, new) == (errors, statuses, hook.calls, credentials.api_key)
    # At most one rejected attempt per request in flight, however the race went.
    assert counts.get(401, 0) <= THREADS
    assert THREADS == counts[200]


@pytest.mark.anyio
async def test_tasks_share_one_recovery(rotation):
    """1,000 tasks on one async client, in flight at a rotation: one hook call, no loss."""
    emulator, secret, old = rotation.emulator, rotation.secret, rotation.old
    hook, credentials = rotation.hook, rotation.credentials
    # A small pool: httpcore's async pool slows down sharply as queued requests times
    # connections grows, and queued requests are just as much in flight for our purpose:
    # each already took its key generation when it entered the transport.
    limits = httpx.Limits(max_connections=10)
    emulator.set_latency(0.3)

    async with httpx.AsyncClient(
        transport=AsyncResilientTransport(credentials, httpx.AsyncHTTPTransport(limits=limits)),
        base_url=f"{emulator.url}/v2/storm",
        timeout=120,
    ) as client:
        requests = [
            asyncio.ensure_future(client.post("/runsync", json={"input": {"n": n}}))
            for n in range(TASKS)
        ]
        await asyncio.sleep(0.1)  # every task has started; the first wave sits in the latency
        new = emulator.add_key()
        secret.write_text(new)
        emulator.revoke(old)
        emulator.set_latency(0)
        results = await asyncio.gather(*requests, return_exceptions=True)

    errors = [r for r in results if isinstance(r, BaseException)]
    outputs = sorted(
        r.json()["output"]["echo"]["n"] for r in results if not isinstance(r, BaseException)
    )
    assert ([], list(range(TASKS)), 1, new) == (errors, outputs, hook.calls, credentials.api_key)
    assert emulator.status_counts().get(401, 0) <= TASKS
