"""What a spurious 401 and a rotation cost, for this engine and the one before it, side by side.

Two measurements, each as a ratio of something measured in the same run:

a. A spurious 401: a ``GET /health`` that gets one injected 401, on a key RunPod accepted
   before, against the same request without it (interleaved, pair by pair), with
   ``recovery.from_file``. Reported: extra round trips per spurious 401 (the emulator's
   counters), requests the library made of its own (the emulator's count less the
   client's sends: a GraphQL ``myself``), source reads (hook calls), and the extra time as
   a ratio of one plain round trip. Goal: one extra round trip, no source read.
b. A rotation: N threads hold a request each in the emulator's latency (the emulator's
   in-flight count proves it) when the file gets the new key and the old one is revoked.
   From the revocation to the last request's completion, less the held latency (until
   the last held answer reached its client), as a ratio of one source read (the hook's
   own time) plus one round trip of N plain requests sent at once from the same threads
   (measured just before, in the same child). Goal: 1 (one read, one resend).

The engine before the rebuild is commit b6afb88. Its measurements run in child processes
whose ``PYTHONPATH`` puts a checkout of it first; this one's in child processes without.
The two alternate round by round, against one emulator in a process of its own (this
engine's emulator, driven over its admin API), so the machine's noise hits both. Make the
checkout once, outside the repository's tree:

    git worktree add --detach /tmp/rr-before b6afb88

(``--before PATH`` names another place; remove it with ``git worktree remove /tmp/rr-before``.)
Without it, this engine is measured alone.

Run: ``python benchmarks/bench_turbulence.py`` (``--quick``: fewer rounds, 16 threads).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import structlog
from _support import Counted, EmulatorProcess, write_secret

from resilient_runpod import Credentials, ResilientTransport, recovery

BEFORE = "b6afb88"
HELD = 0.3  # seconds the emulator holds each request of the rotation


# -- the child: one engine, measured ---------------------------------------------------------


class Timed(Counted):
    """A counted hook that also sums the time spent in it."""

    def __init__(self, hook: Any) -> None:
        super().__init__(hook)
        self.seconds = 0.0

    def __call__(self, context: Any) -> Any:
        start = time.perf_counter()
        try:
            return super().__call__(context)
        finally:
            self.seconds += time.perf_counter() - start


class Sends(httpx.BaseTransport):
    """The real transport, counting sends and noting when each thread's first answer came."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport(limits=httpx.Limits(max_connections=256))
        self.count = 0
        self.first_answer: dict[int, float] = {}
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        now = time.perf_counter()
        with self._lock:
            self.count += 1
            self.first_answer.setdefault(threading.get_ident(), now)
        return response

    def close(self) -> None:
        self.inner.close()


class Admin:
    """The emulator's admin API, as much of it as the child needs."""

    def __init__(self, url: str) -> None:
        self.client = httpx.Client(base_url=f"{url}/_emulator/")

    def add_key(self) -> str:
        key: str = self.client.post("keys", json={}).json()["key"]
        return key

    def revoke(self, key: str) -> None:
        self.client.post("keys/revoke", json={"key": key}).raise_for_status()

    def inject_401(self) -> None:
        self.client.post("faults", json={"status": 401}).raise_for_status()

    def set_latency(self, seconds: float) -> None:
        self.client.post("latency", json={"seconds": seconds}).raise_for_status()

    def total(self) -> int:
        total: int = self.client.get("counters").json()["total"]
        return total

    def in_flight(self) -> int:
        count: int = self.client.get("in_flight").json()["in_flight"]
        return count


class Engine:
    """One client with a fresh key, read back by ``recovery.from_file``."""

    def __init__(self, url: str, admin: Admin, secret: Path) -> None:
        self.key = admin.add_key()
        write_secret(secret, self.key)
        self.hook = Timed(recovery.from_file(secret))
        host = url.removeprefix("http://")
        self.credentials = Credentials(self.key, self.hook, hosts=[host])
        self.sends = Sends()
        self.client = httpx.Client(
            transport=ResilientTransport(self.credentials, self.sends), timeout=60
        )
        self.url = f"{url}/v2/bench/health"

    def get(self) -> float:
        """One request; its wall time."""
        start = time.perf_counter()
        self.client.get(self.url).raise_for_status()
        return time.perf_counter() - start

    def close(self) -> None:
        self.client.close()


def spurious(url: str, admin: Admin, secret: Path, pairs: int) -> dict[str, Any]:
    """Pairs of the same request, plain and with one injected 401, on an accepted key."""
    engine = Engine(url, admin, secret)
    for _ in range(5):  # the key is accepted, the connection open
        engine.get()
    plain, extra = [], []
    round_trips = own = 0
    reads = engine.hook.calls
    for n in range(pairs):
        for injected in (n % 2 == 1, n % 2 == 0):
            before, sends = admin.total(), engine.sends.count
            if injected:
                admin.inject_401()
            seconds = engine.get()
            served = admin.total() - before
            sent = engine.sends.count - sends
            if injected:
                extra.append(seconds)
                round_trips += served - 1
                own += served - sent
            else:
                plain.append(seconds)
                round_trips -= served - 1
                own -= served - sent
    result = {
        "pairs": pairs,
        "extra_round_trips": round_trips,
        "own_requests": own,
        "source_reads": engine.hook.calls - reads,
        "plain_ms": statistics.median(plain) * 1e3,
        # Per pair, the added time over that pair's plain request.
        "ratios": [(e - p) / p for p, e in zip(plain, extra, strict=True)],
    }
    engine.close()
    return result


def rotation(url: str, admin: Admin, secret: Path, count: int) -> dict[str, Any]:
    """A plain burst of *count* requests, then a rotation while *count* requests are held."""
    engine = Engine(url, admin, secret)
    barrier = threading.Barrier(count + 1)
    done: list[float] = []
    failed = 0
    lock = threading.Lock()

    def worker() -> None:
        nonlocal failed
        barrier.wait()
        try:
            engine.get()
        except Exception:
            with lock:
                failed += 1
        with lock:
            done.append(time.perf_counter())

    def burst() -> float:
        """*count* requests at once: from their start to the last one's completion."""
        done.clear()
        pool = [threading.Thread(target=worker) for _ in range(count)]
        for t in pool:
            t.start()
        barrier.wait()
        start = time.perf_counter()
        for t in pool:
            t.join()
        return max(done) - start

    burst()  # connections open, the key accepted
    round_trip = burst()

    old, new = engine.key, admin.add_key()
    engine.sends.first_answer.clear()
    sends, reads, hook_seconds = engine.sends.count, engine.hook.calls, engine.hook.seconds
    served = admin.total()
    admin.set_latency(HELD)
    pool = [threading.Thread(target=worker) for _ in range(count)]
    done.clear()
    for t in pool:
        t.start()
    barrier.wait()
    deadline = time.monotonic() + 10
    while admin.in_flight() < count and time.monotonic() < deadline:
        time.sleep(0.005)
    in_flight = admin.in_flight()
    write_secret(secret, new)
    revoked = time.perf_counter()
    admin.revoke(old)
    admin.set_latency(0)  # the held requests keep theirs; the resends are not held
    for t in pool:
        t.join()
    held_until = max(engine.sends.first_answer.values())
    reads = engine.hook.calls - reads
    result = {
        "threads": count,
        "in_flight": in_flight,
        "failed": failed,
        "source_reads": reads,
        "sends": engine.sends.count - sends,
        "own_requests": admin.total() - served - (engine.sends.count - sends),
        "held_ms": (held_until - revoked) * 1e3,
        "drain_ms": (max(done) - held_until) * 1e3,
        "hook_ms": (engine.hook.seconds - hook_seconds) / max(reads, 1) * 1e3,
        "round_trip_ms": round_trip * 1e3,
    }
    engine.close()
    return result


def child(url: str, pairs: int, threads: int) -> None:
    """Measure the engine this interpreter imports; print the figures as one line of JSON."""
    import resilient_runpod  # noqa: PLC0415 -- only to say which engine this is

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(50))
    admin = Admin(url)
    with tempfile.TemporaryDirectory() as tmp:
        secret = Path(tmp) / "key"
        figures = {
            "engine": str(Path(resilient_runpod.__file__).parent.parent),
            "spurious": spurious(url, admin, secret, pairs),
            "rotation": rotation(url, admin, secret, threads),
        }
    print(json.dumps(figures))


# -- the parent: both engines, alternating ----------------------------------------------------


def run_child(url: str, before: Path | None, pairs: int, threads: int) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if before is not None:
        env["PYTHONPATH"] = str(before)
    argv = [sys.executable, __file__, "--child", url, f"--pairs={pairs}", f"--threads={threads}"]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, env=env)
    figures: dict[str, Any] = json.loads(out.stdout)
    expected = before if before is not None else Path(__file__).resolve().parent.parent
    assert Path(figures["engine"]).resolve() == expected.resolve(), figures["engine"]
    return figures


def summary(runs: list[dict[str, Any]]) -> dict[str, float]:
    """The figures of one engine over its rounds: counts per event, medians of ratios."""
    spurious = [r["spurious"] for r in runs]
    rotations = [r["rotation"] for r in runs]
    pairs = sum(s["pairs"] for s in spurious)
    ratios = [x for s in spurious for x in s["ratios"]]
    drains = [r["drain_ms"] / (r["hook_ms"] + r["round_trip_ms"]) for r in rotations]
    return {
        "round_trips": sum(s["extra_round_trips"] for s in spurious) / pairs,
        "own_requests": sum(s["own_requests"] for s in spurious) / pairs,
        "spurious_reads": sum(s["source_reads"] for s in spurious) / pairs,
        "spurious_time": statistics.median(ratios),
        "plain_ms": statistics.median(s["plain_ms"] for s in spurious),
        "rotation_time": statistics.median(drains),
        "drain_ms": statistics.median(r["drain_ms"] for r in rotations),
        "hook_ms": statistics.median(r["hook_ms"] for r in rotations),
        "burst_ms": statistics.median(r["round_trip_ms"] for r in rotations),
        "held_ms": statistics.median(r["held_ms"] for r in rotations),
        "rotation_reads": statistics.median(r["source_reads"] for r in rotations),
        "rotation_sends": statistics.median(r["sends"] for r in rotations),
        "rotation_own": statistics.median(r["own_requests"] for r in rotations),
        "failed": sum(r["failed"] for r in rotations),
        "in_flight": min(r["in_flight"] for r in rotations),
    }


# Each row: its label, its key in `summary`, how to print it, its goal.
ROWS = [
    ("spurious 401: extra round trips each", "round_trips", "{:.2f}", "1"),
    ("spurious 401: requests of its own each (GraphQL)", "own_requests", "{:.2f}", "0"),
    ("spurious 401: source reads each", "spurious_reads", "{:.2f}", "0"),
    ("spurious 401: extra time / one round trip", "spurious_time", "{:.2f}", "1"),
    ("  one round trip (ms)", "plain_ms", "{:.2f}", ""),
    ("rotation: revoke to last done, less held / (hook + RT)", "rotation_time", "{:.2f}", "1"),
    ("  revoke to last done, less held (ms)", "drain_ms", "{:.1f}", ""),
    ("  hook (ms)", "hook_ms", "{:.2f}", ""),
    ("  one round trip of the N threads at once (ms)", "burst_ms", "{:.1f}", ""),
    ("  held after the revoke (ms)", "held_ms", "{:.1f}", ""),
    ("rotation: source reads", "rotation_reads", "{:g}", "1"),
    ("rotation: sends (the held ones included)", "rotation_sends", "{:g}", "2 x N"),
    ("rotation: requests of its own (GraphQL)", "rotation_own", "{:g}", "0"),
    ("rotation: failed / fewest in flight at the revoke", "failed", "{:g}", "0 / N"),
]


def report(before: dict[str, float] | None, after: dict[str, float], threads: int) -> str:
    lines = [f"{'what':58} {'old engine':>11} {'new engine':>11} {'goal':>6}"]
    goals = {"2 x N": str(2 * threads), "0 / N": f"0 / {threads}"}
    for label, key, form, goal in ROWS:
        old = "-" if before is None else form.format(before[key])
        new = form.format(after[key])
        if key == "failed":
            old = "-" if before is None else f"{before['failed']:g} / {before['in_flight']:g}"
            new = f"{after['failed']:g} / {after['in_flight']:g}"
        lines.append(f"{label:58} {old:>11} {new:>11} {goals.get(goal, goal):>6}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds, 16 threads")
    parser.add_argument("--before", type=Path, default=Path("/tmp/rr-before"))  # noqa: S108
    parser.add_argument("--child", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--pairs", type=int, default=40, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=64, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.pairs, args.threads)
        return
    rounds, pairs, threads = (3, 10, 16) if args.quick else (9, 40, 64)
    before: Path | None = args.before
    if before is None or not (before / "resilient_runpod").is_dir():
        print(
            f"no checkout of {BEFORE} at {args.before} "
            f"(git worktree add --detach {args.before} {BEFORE}): this engine alone"
        )
        before = None
    emulator = EmulatorProcess()
    runs: dict[str, list[dict[str, Any]]] = {"old": [], "new": []}
    try:
        for n in range(rounds):
            order = [("new", None), ("old", before)]
            if n % 2:
                order.reverse()
            for name, path in order:
                if name == "old" and before is None:
                    continue
                runs[name].append(run_child(emulator.url, path, pairs, threads))
    finally:
        emulator.close()
    old = summary(runs["old"]) if runs["old"] else None
    print(f"{rounds} rounds, {pairs} pairs and one rotation of {threads} threads each")
    print(report(old, summary(runs["new"]), threads))


if __name__ == "__main__":
    main()
