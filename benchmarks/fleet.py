"""A fleet on one host, measured: hook calls per rotation, and 401s per graceful rotation.

1. Hook calls per rotation per host, for 1, 8 and 32 worker processes, each with its own
   `Credentials` and each rejected at every rotation: with the plain hook (one call per
   process) and with ``recovery.shared`` (goal: 1). The hook counts its calls in a file.
2. 401s per graceful rotation (the new key written, the old one revoked a second later),
   for one process sending about 50 requests a second from 5 threads: with
   ``from_file(path)`` (recovery after the 401) and with ``from_file(path, watch=True)``
   (goal: 0).

Run: ``python benchmarks/fleet.py`` (``--quick`` for a smaller run).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import structlog

from resilient_runpod import Credentials, ResilientTransport, recovery
from resilient_runpod.testing import Emulator

ROTATIONS = 3
GRACE_SECONDS = 1.0
RATE_PER_SECOND = 50
SENDERS = 5


class CountingFileHook:
    """Reads the key from a file; appends a line per call to a calls file (shared by processes)."""

    def __init__(self, secret: Path, calls: Path) -> None:
        self.secret, self.calls = secret, calls

    def __call__(self, context: object) -> str:
        with self.calls.open("a") as handle:
            handle.write("call\n")
        return self.secret.read_text().strip()

    def __repr__(self) -> str:
        return f"CountingFileHook({str(self.secret)!r})"


def _quiet() -> None:
    # One line per 401 would drown the table; the counts are what matter here.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))


def _worker(job: dict[str, Any], start: Any, results: Any) -> None:
    _quiet()
    hook = job["hook"]
    credentials = Credentials(
        job["key"], recovery.shared(hook) if job["shared"] else hook, hosts=[job["host"]]
    )
    with httpx.Client(transport=ResilientTransport(credentials), timeout=120) as client:
        for _ in range(job["rounds"]):
            start.wait(300)
            try:
                ok = client.get(job["url"]).status_code == 200
            except Exception:
                ok = False
            results.put(ok)


def processes(emulator: Emulator, tmp: Path, count: int, *, shared: bool) -> dict[str, float]:
    """*count* workers through ROTATIONS hard rotations; hook calls per rotation."""
    secret, calls = tmp / f"key-{count}-{shared}", tmp / f"calls-{count}-{shared}"
    old = emulator.add_key()
    secret.write_text(old)
    context = multiprocessing.get_context("fork")
    start, results = context.Barrier(count + 1), context.Queue()
    job = {
        "url": f"{emulator.serverless_url}/{emulator.endpoint_id}/health",
        "host": emulator.host,
        "key": old,
        "hook": CountingFileHook(secret, calls),
        "shared": shared,
        "rounds": ROTATIONS + 1,
    }
    workers = [context.Process(target=_worker, args=(job, start, results)) for _ in range(count)]
    for worker in workers:
        worker.start()
    failed = 0
    for round_ in range(ROTATIONS + 1):
        if round_:  # round 0 only checks that every worker is up
            new = emulator.add_key()
            secret.write_text(new)
            emulator.revoke(old)
            old = new
        start.wait(300)
        failed += sum(not results.get(timeout=300) for _ in range(count))
    for worker in workers:
        worker.join(60)
    hook_calls = len(calls.read_text().splitlines()) if calls.exists() else 0
    return {"hook_calls_per_rotation": hook_calls / ROTATIONS, "failed": failed}


def graceful(emulator: Emulator, tmp: Path, *, watch: bool) -> dict[str, float]:
    """One process, ~50 requests/s, ROTATIONS graceful rotations; 401s per rotation."""
    secret = tmp / f"graceful-{watch}"
    old = emulator.add_key()
    secret.write_text(old)
    credentials = Credentials(old, recovery.from_file(secret, watch=watch), hosts=[emulator.host])
    emulator.reset_counters()
    stop = threading.Event()
    failed = sent = 0
    lock = threading.Lock()
    url = f"{emulator.serverless_url}/{emulator.endpoint_id}/health"

    def send(client: httpx.Client) -> None:
        nonlocal failed, sent
        while not stop.is_set():
            try:
                ok = client.get(url).status_code == 200
            except Exception:
                ok = False
            with lock:
                sent += 1
                failed += not ok
            stop.wait(SENDERS / RATE_PER_SECOND)

    with httpx.Client(transport=ResilientTransport(credentials), timeout=60) as client:
        senders = [threading.Thread(target=send, args=(client,)) for _ in range(SENDERS)]
        started = time.monotonic()
        for sender in senders:
            sender.start()
        for _ in range(ROTATIONS):
            time.sleep(GRACE_SECONDS)
            new = emulator.add_key()
            secret.write_text(new)
            time.sleep(GRACE_SECONDS)  # the grace period: both keys work
            emulator.revoke(old)
            old = new
        time.sleep(GRACE_SECONDS)
        stop.set()
        for sender in senders:
            sender.join()
        elapsed = time.monotonic() - started
    rejected = emulator.counters().by_status.get(401, 0)
    return {
        "rate": sent / elapsed,
        "responses_401_per_rotation": rejected / ROTATIONS,
        "failed": failed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 and 4 processes only")
    args = parser.parse_args()
    _quiet()
    sizes = (1, 4) if args.quick else (1, 8, 32)
    with tempfile.TemporaryDirectory() as tmp, Emulator() as emulator:
        # Shared answers live in a private directory of this run, not the user's.
        run = Path(tmp) / "run"
        run.mkdir(mode=0o700)
        os.environ["XDG_RUNTIME_DIR"] = str(run)
        print(f"{'worker processes':>16} {'hook':>8} {'hook calls/rotation':>20} {'failed':>7}")
        for count in sizes:
            for shared in (False, True):
                row = processes(emulator, Path(tmp), count, shared=shared)
                print(
                    f"{count:>16} {'shared' if shared else 'plain':>8} "
                    f"{row['hook_calls_per_rotation']:>20.1f} {row['failed']:>7.0f}"
                )
        print()
        print(f"{'from_file':>18} {'requests/s':>10} {'401s/rotation':>14} {'failed':>7}")
        for watch in (False, True):
            row = graceful(emulator, Path(tmp), watch=watch)
            print(
                f"{'watch=True' if watch else 'watch=False':>18} {row['rate']:>10.0f} "
                f"{row['responses_401_per_rotation']:>14.1f} {row['failed']:>7.0f}"
            )


if __name__ == "__main__":
    main()
