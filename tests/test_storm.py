"""One rotation, one recovery: many requests in flight when the key rotates."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from resilient_runpod import AsyncResilientTransport, Credentials, ResilientTransport, recovery

from .conftest import EmulatorProcess
from .helpers import Counting, wait_for

# The full sizes (256 threads, 1,000 tasks) run in benchmarks/; the proof needs only
# "many requests parked in the server at the rotation", which these sizes give.
THREADS = 64
TASKS = 200
# Long enough that every parked request is still parked when the key is revoked, on a
# loaded machine: each one's first send is then rejected.
LATENCY = 1.0
# The async client's pool: at most this many of its requests reach the server at once.
POOL = 10


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
    """Every thread's request is parked in the server when the key rotates: each is
    rejected, probes the old key at most once more, one hook call recovers them all, and
    every request succeeds.

    The emulator's in-flight count proves the precondition: all THREADS requests had
    arrived with the old key, unanswered, before it was revoked.
    """
    emulator, secret, old = rotation.emulator, rotation.secret, rotation.old
    hook, credentials = rotation.hook, rotation.credentials
    emulator.set_latency(LATENCY)
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
    parked = wait_for(lambda: THREADS == emulator.in_flight())
    new = emulator.add_key()
    secret.write_text(new)
    emulator.revoke(old)
    emulator.set_latency(0)  # the retries need not wait
    for t in threads:
        t.join()
    client.close()
    counts = emulator.status_counts()

    assert parked, "not every request was parked in the server at the rotation"
    assert ([], [200] * THREADS, 1, new) == (errors, statuses, hook.calls, credentials.api_key)
    # Each request's first send was rejected. How many probes followed is a race: a
    # request probes (sends once more) only if its first 401 came before any other
    # request's probe was rejected, and a probe sent after the recovery carries the new
    # key. What the rule guarantees: the hook was read only after some probe was
    # rejected (at least one), and no request probed twice (at most one each).
    assert THREADS + 1 <= counts[401] <= 2 * THREADS
    assert {401, 200} == set(counts)
    assert THREADS == counts[200]


@pytest.mark.anyio
async def test_tasks_share_one_recovery(rotation):
    """Tasks on one async client, in flight at a rotation: one hook call, no loss.

    The emulator's in-flight count proves the precondition: the pool's first wave had
    arrived with the old key, unanswered, before it was revoked (the other tasks wait in
    the pool, their old key already set), so at least that wave was rejected, and the
    hook was read only after some request's probe was rejected as well.
    """
    emulator, secret, old = rotation.emulator, rotation.secret, rotation.old
    hook, credentials = rotation.hook, rotation.credentials
    # A small pool: httpcore's async pool slows down sharply as queued requests times
    # connections grows, and queued requests are just as much in flight for our purpose:
    # each already took its key generation when it entered the transport.
    limits = httpx.Limits(max_connections=POOL)
    emulator.set_latency(LATENCY)

    async with httpx.AsyncClient(
        transport=AsyncResilientTransport(credentials, httpx.AsyncHTTPTransport(limits=limits)),
        base_url=f"{emulator.url}/v2/storm",
        timeout=120,
    ) as client:
        requests = [
            asyncio.ensure_future(client.post("/runsync", json={"input": {"n": n}}))
            for n in range(TASKS)
        ]
        # Polled from a thread: a blocking admin call on this loop would stall the tasks.
        parked = await asyncio.to_thread(wait_for, lambda: POOL == emulator.in_flight())
        new = emulator.add_key()
        secret.write_text(new)
        emulator.revoke(old)
        emulator.set_latency(0)
        results = await asyncio.gather(*requests, return_exceptions=True)

    errors = [r for r in results if isinstance(r, BaseException)]
    outputs = sorted(
        r.json()["output"]["echo"]["n"] for r in results if not isinstance(r, BaseException)
    )
    counts = emulator.status_counts()
    assert parked, "the pool's first wave was not parked in the server at the rotation"
    assert ([], list(range(TASKS)), 1, new) == (errors, outputs, hook.calls, credentials.api_key)
    # At least the first wave's 401s and the probe whose 401 led to the read; at most
    # every task's first send and one probe each. Between the two it is a race: a task
    # stamped with the old key may reach the server before or after the recovery, and
    # probes only if no other task's probe was rejected yet.
    assert POOL + 1 <= counts[401] <= 2 * TASKS
    assert TASKS == counts[200]
