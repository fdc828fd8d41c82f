"""One rotation, one recovery, measured: many requests in flight when the key rotates.

Reports, for 256 threads sharing one client and 1,000 tasks sharing one async client:
hook calls for the rotation (goal 1), failed requests (goal 0) and 401s the emulator
answered (goal: at most two per request: its held send and its probe), and how many
requests the emulator held in flight just before the rotation (the proof that the storm
was one).

Run: ``python benchmarks/bench_storm.py`` (``--quick``: 64 threads, 200 tasks)
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import threading
import time
from pathlib import Path

import httpx
import structlog
from _support import CountingHook

from resilient_runpod import AsyncResilientTransport, Credentials, ResilientTransport
from resilient_runpod.testing import Emulator


def _rotate(emulator: Emulator, secret: Path, old: str) -> int:
    """Rotate the key; return how many requests were in flight at the emulator just before."""
    in_flight = emulator.in_flight
    secret.write_text(emulator.add_key())
    emulator.revoke(old)
    return in_flight


def threads(emulator: Emulator, secret: Path, count: int = 256) -> dict[str, int]:
    old = emulator.api_key
    secret.write_text(old)
    hook = CountingHook(secret)
    credentials = Credentials(old, hook, hosts=[emulator.host])
    limits = httpx.Limits(max_connections=count)
    client = httpx.Client(
        transport=ResilientTransport(credentials, httpx.HTTPTransport(limits=limits)),
        base_url=f"{emulator.serverless_url}/{emulator.endpoint_id}",
        timeout=120,
    )
    failed = 0
    lock = threading.Lock()
    barrier = threading.Barrier(count + 1)

    def worker() -> None:
        nonlocal failed
        barrier.wait()
        try:
            client.post("/runsync", json={"input": {}}).raise_for_status()
        except Exception:
            with lock:
                failed += 1

    emulator.set_latency(0.5)
    pool = [threading.Thread(target=worker) for _ in range(count)]
    for t in pool:
        t.start()
    barrier.wait()
    # Rotate once every request is parked in the emulator's latency (or after 10 s).
    deadline = time.monotonic() + 10
    while emulator.in_flight < count and time.monotonic() < deadline:
        time.sleep(0.01)
    in_flight = _rotate(emulator, secret, old)
    for t in pool:
        t.join()
    client.close()
    emulator.set_latency(0)
    return {
        "requests": count,
        "hook_calls": hook.calls,
        "failed": failed,
        "responses_401": emulator.counters().by_status.get(401, 0),
        "in_flight": in_flight,
    }


async def tasks(emulator: Emulator, secret: Path, count: int = 1000) -> dict[str, int]:
    old = emulator.api_key
    secret.write_text(old)
    hook = CountingHook(secret)
    credentials = Credentials(old, hook, hosts=[emulator.host])
    limits = httpx.Limits(max_connections=10)
    emulator.set_latency(0.3)
    async with httpx.AsyncClient(
        transport=AsyncResilientTransport(credentials, httpx.AsyncHTTPTransport(limits=limits)),
        base_url=f"{emulator.serverless_url}/{emulator.endpoint_id}",
        timeout=120,
    ) as client:
        pending = [
            asyncio.ensure_future(client.post("/runsync", json={"input": {}})) for _ in range(count)
        ]
        # Rotate once the pool's worth of requests is parked in the emulator's latency.
        deadline = time.monotonic() + 10
        while emulator.in_flight < min(count, 10) and time.monotonic() < deadline:  # noqa: ASYNC110 -- polls another thread's counter
            await asyncio.sleep(0.01)
        in_flight = _rotate(emulator, secret, old)
        emulator.set_latency(0)
        results = await asyncio.gather(*pending, return_exceptions=True)
    failed = sum(1 for r in results if isinstance(r, BaseException) or r.status_code != 200)
    return {
        "requests": count,
        "hook_calls": hook.calls,
        "failed": failed,
        "responses_401": emulator.counters().by_status.get(401, 0),
        "in_flight": in_flight,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="64 threads and 200 tasks")
    args = parser.parse_args()
    thread_count, task_count = (64, 200) if args.quick else (256, 1000)
    # One line per 401 would drown the table; the counts are what matter here.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    with tempfile.TemporaryDirectory() as tmp:
        secret = Path(tmp) / "key"
        rows = []
        with Emulator() as emulator:
            rows.append(
                (f"{thread_count} threads, one client", threads(emulator, secret, thread_count))
            )
        with Emulator() as emulator:
            rows.append(
                (
                    f"{task_count:,} tasks, one async client",
                    asyncio.run(tasks(emulator, secret, task_count)),
                )
            )
    heads = f"{'requests':>8} {'hook calls':>10} {'failed':>6} {'401s':>5}"
    print(f"{'scenario':32} {heads} {'in flight at rotation':>22}")
    for name, row in rows:
        print(
            f"{name:32} {row['requests']:>8} {row['hook_calls']:>10} {row['failed']:>6} "
            f"{row['responses_401']:>5} {row['in_flight']:>22}"
        )


if __name__ == "__main__":
    main()
