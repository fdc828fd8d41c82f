"""Soak: thousands of logical requests through key rotations, spurious 401s, 5xx and 429.

Each logical request is ``POST /run`` with an input of its own, then ``GET /status/{id}``.
They run on 64 threads sharing one ``httpx.Client`` with `ResilientTransport`, then on
64 tasks sharing one ``httpx.AsyncClient`` with `AsyncResilientTransport`, against the
emulator in a process of its own, with chaos on every request: 10 % spurious 401s on
valid keys, 2 % 502/503/504 (before the job is created), 2 % 429 and 0-10 ms latency.

Meanwhile the key rotates about every second: a new key is written to the secret file
that ``recovery.from_file`` reads, then the old key is revoked. In the stale-store run,
each old key is revoked 1.5 s *before* the file holds the new one (a Kubernetes Secret
volume is that slow, and slower), so recovery reads the rejected key back for a while.

The library absorbs 429s, and 5xx on the status route, under its default `RetryPolicy`.
A 5xx on ``POST /run`` raises ``TransientError(reason="unsafe")`` by design (the job may
exist); this benchmark resubmits those itself and counts them. Duplicates are then
counted from the emulator's own list of job inputs: every input must appear once.

Each run uses one of the configurations users write (``--hook``): ``from_file`` alone,
the README's ``chain(from_file, prompt())``, or ``recovery.default()`` (the rotation is
written to ``RUNPOD_API_KEY`` as well as to the file). The prompt finds nobody to ask.

Goal: 0 lost, 0 duplicated jobs; with a fresh store, at most 2 source reads per
rotation, and the prompt never allowed to ask for a spurious 401. Also reported: 401s
per rotation, transient retries by status, p50/p99 latency per logical request.

Run: ``python benchmarks/soak.py`` (10,000 requests, 64 workers; minutes on 2 cores),
or ``python benchmarks/soak.py --quick`` (1,000 requests, 16 workers).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import structlog
from _support import Counted, CountingHook, EmulatorProcess, write_secret

from resilient_runpod import (
    AsyncResilientTransport,
    Credentials,
    ResilientTransport,
    TransientError,
    recovery,
)

CHAOS: dict[str, Any] = {
    "unauthorized": 0.1,
    "server_error": 0.02,
    "too_many": 0.02,
    "latency": [0, 0.01],
}
ROTATE_EVERY = 1.0  # seconds between rotations
STALE_LAG = 1.5  # seconds between a revocation and the secret file's update, stale run


# -- counting ---------------------------------------------------------------------------


class EventCounter:
    """A structlog processor: counts the retry and rejection events, then drops them."""

    def __init__(self) -> None:
        self.retries: collections.Counter[str] = collections.Counter()
        self.rejected = 0
        # The library's key-recovery errors (a request given up), kept whole: they say why.
        self.errors: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def __call__(self, _logger: Any, method: str, event: dict[str, Any]) -> Any:
        with self._lock:
            if event["event"] == "runpod.transient.retry":
                self.retries[str(event.get("reason"))] += 1
            elif event["event"] == "runpod.auth.rejected":
                self.rejected += 1
            elif (
                method == "error"
                and event["event"].startswith("runpod.auth.")
                and len(self.errors) < 10
            ):
                self.errors.append({k: str(v) for k, v in event.items()})
        raise structlog.DropEvent


# -- one run ----------------------------------------------------------------------------


@dataclass
class Tally:
    """What the workers saw, shared between them."""

    ok: int = 0
    lost: collections.Counter[str] = field(default_factory=collections.Counter)
    resubmitted: int = 0
    latencies: list[float] = field(default_factory=list)
    first_errors: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def done(self, started: float, error: BaseException | None, resubmits: int) -> None:
        elapsed = time.perf_counter() - started
        with self.lock:
            self.resubmitted += resubmits
            if error is None:
                self.ok += 1
                self.latencies.append(elapsed)
            else:
                self.lost[type(error).__name__] += 1
                self.first_errors.setdefault(type(error).__name__, str(error))


def _unsafe(error: TransientError) -> bool:
    return error.reason == "unsafe"


def store(secret: Path, key: str) -> None:
    """Write a rotated key where every configuration reads it: the file and the environment."""
    write_secret(secret, key)
    os.environ["RUNPOD_API_KEY"] = key


def rotator(emulator: EmulatorProcess, secret: Path, *, stale: bool, stop: threading.Event) -> int:
    """Rotate the key about every second until *stop*; return how many rotations were made."""
    rotations = 0
    old = emulator.key
    while not stop.wait(ROTATE_EVERY):
        new = emulator.add_key()
        if stale:
            emulator.revoke(old)
            if stop.wait(STALE_LAG):
                store(secret, new)  # keep the store true for the requests still running
                rotations += 1
                break
            store(secret, new)
        else:
            store(secret, new)
            emulator.revoke(old)
        old = new
        rotations += 1
    return rotations


def run_sync(client: httpx.Client, inputs: range, workers: int, tally: Tally) -> None:
    """Send the logical requests from *workers* threads sharing *client*."""
    todo = iter(inputs)
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                n = next(todo, None)
            if n is None:
                return
            started, resubmits, error = time.perf_counter(), 0, None
            try:
                while True:
                    try:
                        response = client.post("/run", json={"input": {"n": n}})
                        break
                    except TransientError as exc:
                        if not _unsafe(exc):
                            raise
                        resubmits += 1
                response.raise_for_status()
                job = response.json()["id"]
                client.get(f"/status/{job}").raise_for_status()
            except Exception as exc:
                error = exc
            tally.done(started, error, resubmits)

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


async def run_async(client: httpx.AsyncClient, inputs: range, workers: int, tally: Tally) -> None:
    """Send the logical requests from *workers* tasks sharing *client*."""
    todo = iter(inputs)

    async def worker() -> None:
        for n in todo:  # tasks share the iterator; each next() is atomic on one loop
            started, resubmits, error = time.perf_counter(), 0, None
            try:
                while True:
                    try:
                        response = await client.post("/run", json={"input": {"n": n}})
                        break
                    except TransientError as exc:
                        if not _unsafe(exc):
                            raise
                        resubmits += 1
                response.raise_for_status()
                job = response.json()["id"]
                (await client.get(f"/status/{job}")).raise_for_status()
            except Exception as exc:
                error = exc
            tally.done(started, error, resubmits)

    await asyncio.gather(*(worker() for _ in range(workers)))


# The configurations a soak can run with: what users write. The prompt finds no terminal
# here (RESILIENT_RUNPOD_NO_PROMPT), so it never asks; it is counted each time it would
# have been allowed to ask (`RecoveryContext.may_ask`).
HOOKS = ("file", "chain", "default")


def configuration(kind: str, secret: Path) -> tuple[Any, Counted, Counted | None]:
    """The hook for *kind*, its read counter, and the prompt's counter (if it has one)."""
    if kind == "file":
        hook = CountingHook(secret)
        return hook, hook, None
    asker = Counted(recovery.prompt())
    if kind == "chain":  # the README's example
        reads = Counted(recovery.chain(recovery.from_file(secret), asker))
    else:  # recovery.default(): the environment, RunPod's config file, then the prompt
        default = recovery.default()
        reads = Counted(recovery.chain(*default.hooks[:-1], asker))  # type: ignore[attr-defined]
    return reads, reads, asker


def soak(
    mode: str,
    *,
    stale: bool,
    requests: int,
    workers: int,
    seed: int,
    unauthorized: float,
    hook_kind: str = "file",
) -> dict[str, Any]:
    """One soak run against a fresh emulator; returns its figures."""
    emulator = EmulatorProcess()
    emulator.chaos({**CHAOS, "unauthorized": unauthorized, "seed": seed})
    events = EventCounter()
    structlog.configure(processors=[events])
    with tempfile.TemporaryDirectory() as tmp:
        secret = Path(tmp) / "runpod-api-key"
        store(secret, emulator.key)
        os.environ["RESILIENT_RUNPOD_NO_PROMPT"] = "1"
        hook, reads, asker = configuration(hook_kind, secret)
        credentials = Credentials(emulator.key, hook, hosts=[emulator.host])
        limits = httpx.Limits(max_connections=workers, max_keepalive_connections=workers)
        base_url = f"{emulator.url}/v2/soak-endpoint"
        tally = Tally()
        stop = threading.Event()
        rotations: list[int] = []
        turner = threading.Thread(
            target=lambda: rotations.append(rotator(emulator, secret, stale=stale, stop=stop))
        )
        started = time.perf_counter()
        turner.start()
        try:
            if mode == "sync":
                transport = ResilientTransport(credentials, httpx.HTTPTransport(limits=limits))
                with httpx.Client(transport=transport, base_url=base_url, timeout=60) as client:
                    run_sync(client, range(requests), workers, tally)
            else:
                atransport = AsyncResilientTransport(
                    credentials, httpx.AsyncHTTPTransport(limits=limits)
                )

                async def main() -> None:
                    async with httpx.AsyncClient(
                        transport=atransport, base_url=base_url, timeout=60
                    ) as client:
                        await run_async(client, range(requests), workers, tally)

                asyncio.run(main())
        finally:
            stop.set()
            turner.join()
            elapsed = time.perf_counter() - started
            emulator.calm()
            statuses = emulator.by_status()
            inputs = emulator.job_inputs()
            emulator.close()
            structlog.reset_defaults()
    jobs = collections.Counter(json.dumps(i, sort_keys=True) for i in inputs)
    turns = rotations[0] if rotations else 0
    latencies = sorted(tally.latencies) or [0.0]
    return {
        "mode": mode,
        "store": "stale" if stale else "fresh",
        "spurious_401_rate": unauthorized,
        "requests": requests,
        "workers": workers,
        "seconds": round(elapsed, 1),
        "ok": tally.ok,
        "lost": sum(tally.lost.values()),
        "lost_by_error": dict(tally.lost),
        "first_errors": tally.first_errors,
        "error_events": events.errors,
        "jobs": len(inputs),
        "duplicates": sum(n - 1 for n in jobs.values()),
        "missing_jobs": requests - len(jobs),
        "resubmitted_run_5xx": tally.resubmitted,
        "rotations": rotations[0] if rotations else 0,
        "hook": hook_kind,
        "hook_calls": reads.calls,
        "hook_calls_per_rotation": round(reads.calls / turns, 2) if turns else None,
        "prompts_allowed": asker.asking if asker is not None else None,
        "server_401s": statuses.get(401, 0),
        "server_401s_per_rotation": round(statuses.get(401, 0) / turns, 1) if turns else None,
        "rejected_events": events.rejected,
        "retries": {code: events.retries.get(code, 0) for code in ("429", "502", "503", "504")},
        "retries_other": sum(
            n for c, n in events.retries.items() if c not in {"429", "502", "503", "504"}
        ),
        "p50_ms": round(statistics.median(latencies) * 1e3, 1),
        "p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1e3, 1),
    }


# -- the table --------------------------------------------------------------------------


ROWS = [
    ("logical requests ok", lambda r: f"{r['ok']:,} / {r['requests']:,}"),
    ("lost", lambda r: f"{r['lost']}" + (f" {r['lost_by_error']}" if r["lost"] else "")),
    ("jobs created", lambda r: f"{r['jobs']:,}"),
    ("duplicated jobs", lambda r: str(r["duplicates"])),
    ("POST /run 5xx resubmitted", lambda r: str(r["resubmitted_run_5xx"])),
    ("rotations", lambda r: str(r["rotations"])),
    (
        "source reads (per rotation)",
        lambda r: f"{r['hook_calls']} ({r['hook_calls_per_rotation']})",
    ),
    (
        "prompts allowed",
        lambda r: "-" if r["prompts_allowed"] is None else str(r["prompts_allowed"]),
    ),
    ("401s (per rotation)", lambda r: f"{r['server_401s']} ({r['server_401s_per_rotation']})"),
    ("retries 429/502/503/504", lambda r: "/".join(str(v) for v in r["retries"].values())),
    ("p50 / p99 ms", lambda r: f"{r['p50_ms']} / {r['p99_ms']}"),
    ("wall time s", lambda r: str(r["seconds"])),
]


def table(results: list[dict[str, Any]]) -> str:
    """The results as a plain-text table, one column per run."""
    heads = [f"{r['hook']}, {r['mode']}, {r['store']}" for r in results]
    cells = [[fmt(r) for r in results] for _, fmt in ROWS]
    width = max(len(name) for name, _ in ROWS)
    columns = [max(len(h), *(len(row[i]) for row in cells)) for i, h in enumerate(heads)]
    lines = ["  ".join([" " * width, *(h.rjust(w) for h, w in zip(heads, columns, strict=True))])]
    for (name, _), row in zip(ROWS, cells, strict=True):
        lines.append(
            "  ".join([name.ljust(width), *(c.rjust(w) for c, w in zip(row, columns, strict=True))])
        )
    return "\n".join(lines)


def main() -> None:
    """Parse the options, run the soaks, print the table (or JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000, help="logical requests per run")
    parser.add_argument("--workers", type=int, default=64, help="threads, or tasks")
    parser.add_argument("--quick", action="store_true", help="1,000 requests on 16 workers")
    parser.add_argument("--mode", choices=["sync", "async", "both"], default="both")
    parser.add_argument("--store", choices=["fresh", "stale", "both"], default="both")
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument(
        "--unauthorized",
        type=float,
        default=CHAOS["unauthorized"],
        help="rate of spurious 401s on valid keys (0: rotations alone)",
    )
    parser.add_argument(
        "--hook",
        choices=[*HOOKS, "all"],
        default="all",
        help="from_file alone, chain(from_file, prompt()), recovery.default(), or each",
    )
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.workers = 1_000, 16
    modes = ["sync", "async"] if args.mode == "both" else [args.mode]
    stores = [False, True] if args.store == "both" else [args.store == "stale"]
    results = [
        soak(
            mode,
            stale=stale,
            requests=args.requests,
            workers=args.workers,
            seed=args.seed,
            unauthorized=args.unauthorized,
            hook_kind=hook_kind,
        )
        for hook_kind in (HOOKS if args.hook == "all" else (args.hook,))
        for stale in stores
        for mode in modes
    ]
    print(json.dumps(results, indent=2) if args.json else table(results))
    if any(r["lost"] or r["duplicates"] or r["missing_jobs"] > 0 for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
