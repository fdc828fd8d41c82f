"""One rotation, one recovery, measured: many requests in flight when the key rotates.

Reports, for 256 threads sharing one client and 1,000 tasks sharing one async client:
hook calls for the rotation (goal 1), failed requests (goal 0) and 401s the emulator
answered (goal: at most one per request in flight).

Run: ``python benchmarks/bench_storm.py``
"""

from __future__ import annotations

import asyncio
import tempfile
import threading
import time
from pathlib import Path

import httpx
import structlog

from resilient_runpod import AsyncResilientTransport, Credentials, ResilientTransport, recovery
from resilient_runpod.testing import Emulator


class _Counting:
    def __init__(self, path: Path) -> None:
        self.source = recovery.from_file(path)
        self.calls = 0
        self.lock = threading.Lock()

    def __call__(self, context: object) -> object:
        with self.lock:
            self.calls += 1
        return self.source(context)  # type: ignore[arg-type]


def _rotate(emulator: Emulator, secret: Path, old: str) -> None:
    secret.write_text(emulator.add_key())
    emulator.revoke(old)


def threads(emulator: Emulator, secret: Path, count: int = 256) -> dict[str, int]:
    old = emulator.api_key
    secret.write_text(old)
    hook = _Counting(secret)
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
    time.sleep(0.2)
    _rotate(emulator, secret, old)
    for t in pool:
        t.join()
    client.close()
    emulator.set_latency(0)
    return {
        "requests": count,
        "hook_calls": hook.calls,
        "failed": failed,
        "responses_401": emulator.counters().by_status.get(401, 0),
    }


async def tasks(emulator: Emulator, secret: Path, count: int = 1000) -> dict[str, int]:
    old = emulator.api_key
    secret.write_text(old)
    hook = _Counting(secret)
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
        await asyncio.sleep(0.1)
        _rotate(emulator, secret, old)
        emulator.set_latency(0)
        results = await asyncio.gather(*pending, return_exceptions=True)
    failed = sum(1 for r in results if isinstance(r, BaseException) or r.status_code != 200)
    return {
        "requests": count,
        "hook_calls": hook.calls,
        "failed": failed,
        "responses_401": emulator.counters().by_status.get(401, 0),
    }


def main() -> None:
    # One line per 401 would drown the table; the counts are what matter here.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    with tempfile.TemporaryDirectory() as tmp:
        secret = Path(tmp) / "key"
        rows = []
        with Emulator() as emulator:
            rows.append(("256 threads, one client", threads(emulator, secret)))
        with Emulator() as emulator:
            rows.append(("1,000 tasks, one async client", asyncio.run(tasks(emulator, secret))))
    print(f"{'scenario':32} {'requests':>8} {'hook calls':>10} {'failed':>6} {'401s':>5}")
    for name, row in rows:
        print(
            f"{name:32} {row['requests']:>8} {row['hook_calls']:>10} {row['failed']:>6} "
            f"{row['responses_401']:>5}"
        )


if __name__ == "__main__":
    main()
