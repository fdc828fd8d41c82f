"""What OpenTelemetry costs a request through `ResilientTransport`, side by side with httpx's own.

Every request goes over real loopback sockets to the emulator (in a process of its own)
from an ``httpx.Client`` with default settings, ``GET /health``. OpenTelemetry is the
SDK's, set up as an application would: a ``TracerProvider`` whose spans go to an
``InMemorySpanExporter`` (emptied between rounds) and a ``MeterProvider`` with an
``InMemoryMetricReader``, both the global providers. Nothing is exported.

1. A request RunPod accepts, through six clients, in batches of N, the six batches of
   a round back to back in an order shuffled round by round (the same in every run):

   a. raw httpx: the key in the client's headers;
   a'. the same again, a second client: what two identical clients differ by, the noise;
   b. `ResilientTransport`, no OpenTelemetry (the log its only subscriber): what an
      interpreter without ``opentelemetry-api`` runs;
   c. `ResilientTransport`, the built-in OpenTelemetry subscriber on;
   d. raw httpx, instrumented with ``HTTPXClientInstrumentor.instrument_client``;
   e. `ResilientTransport`, the subscriber on, and the client instrumented.

   Reported per request: wall time and the process's CPU time, and what each client
   adds to (a), the median over rounds of each round's difference. The ratios: what
   (b), (c) and (e) add, to what (d) adds; (c)'s is what the library's OpenTelemetry
   costs an accepted request, against what httpx's instrumentation costs it.

2. A request that meets a 401 and is recovered: before each, the emulator gets a new key,
   the hook's store holds it, and the old key is revoked (none of it timed). The same
   client sends it with the subscriber on and off, alternately, request by request.
   Reported: the ratio on/off and the added time per recovered request, medians over
   rounds; and, counted, the 401s, the spans of the library's tracer and the recovery
   spans (``runpod.auth.recovery``) per recovered request in each arm.

Run: ``python benchmarks/bench_instrumentation.py`` (``--requests N --rounds R
--recoveries P``; ``--quick`` for a small run).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import structlog
from _support import EmulatorProcess
from opentelemetry import metrics, trace
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from resilient_runpod import Credentials, ResilientTransport
from resilient_runpod.instrumentation import _subscribers
from resilient_runpod.instrumentation._otel import OpenTelemetry

SCOPE = "resilient_runpod"  # the library's tracer (README, "Observability")
RECOVERY_SPAN = "runpod.auth.recovery"
WIDTH = 56  # of the clients' column

ARMS = {
    "a": "raw httpx",
    "a'": "raw httpx, a second client (the noise)",
    "b": "ResilientTransport, no OpenTelemetry",
    "c": "ResilientTransport, OpenTelemetry",
    "d": "raw httpx + HTTPXClientInstrumentor",
    "e": "ResilientTransport, OpenTelemetry + instrumentor",
}


@dataclass(frozen=True)
class Arm:
    """One client's request, and whether the built-in subscriber hears it."""

    send: Callable[[], httpx.Response]
    otel: bool


class Subscribers:
    """Switches the library's subscribers between "no OpenTelemetry" and "as installed".

    An interpreter without ``opentelemetry-api`` has the log as its only subscriber and
    no resend spans: `install_defaults` finds nothing to add. Setting the tuple (and
    `resend_span`) so before a batch gives that batch exactly what such an interpreter
    has, and keeps every arm in this one process, interleaved with the others; a second
    interpreter would not share their noise. A recovery's last event is emitted before
    the request it serves returns, so no event of one batch reaches the next.
    """

    def __init__(self) -> None:
        _subscribers.install_defaults()  # what the first `Credentials` does
        self.installed = _subscribers.subscribers
        self.spans = _subscribers.resend_span
        self.without = tuple(s for s in self.installed if not isinstance(s, OpenTelemetry))
        if self.without == self.installed or self.spans is None:
            msg = "no built-in OpenTelemetry subscriber: is opentelemetry-api installed?"
            raise RuntimeError(msg)

    def use(self, *, otel: bool) -> None:
        _subscribers.subscribers = self.installed if otel else self.without
        _subscribers.resend_span = self.spans if otel else None


def telemetry() -> InMemorySpanExporter:
    """The SDK's providers, made global; the spans they record."""
    spans = InMemorySpanExporter()
    tracing = TracerProvider()
    tracing.add_span_processor(SimpleSpanProcessor(spans))
    trace.set_tracer_provider(tracing)
    metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))
    return spans


def _batch(send: Callable[[], httpx.Response], size: int) -> tuple[float, float]:
    """*size* requests: their wall time and the process's CPU time, in seconds."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(size):
        send().raise_for_status()
    return time.perf_counter() - wall, time.process_time() - cpu


def _library_spans(spans: InMemorySpanExporter) -> list[Any]:
    return [
        s
        for s in spans.get_finished_spans()
        if s.instrumentation_scope is not None and s.instrumentation_scope.name == SCOPE
    ]


def accepted(
    emulator: EmulatorProcess,
    switch: Subscribers,
    spans: InMemorySpanExporter,
    *,
    size: int,
    rounds: int,
) -> dict[str, dict[str, float]]:
    """Arms (a) to (e), a batch each per round; per arm, the medians per request."""
    credentials = Credentials(emulator.key, hosts=[emulator.host])
    url = f"{emulator.serverless_url}/bench/health"
    raw = httpx.Client(headers={"Authorization": f"Bearer {emulator.key}"})
    twin = httpx.Client(headers={"Authorization": f"Bearer {emulator.key}"})
    raw_instrumented = httpx.Client(headers={"Authorization": f"Bearer {emulator.key}"})
    HTTPXClientInstrumentor.instrument_client(raw_instrumented)
    quiet = httpx.Client(transport=ResilientTransport(credentials))
    observed = httpx.Client(transport=ResilientTransport(credentials))
    both = httpx.Client(transport=ResilientTransport(credentials))
    # Wraps the client's transport, `ResilientTransport`: one span per request, around
    # its resends. (``instrument()`` would wrap ``httpx.HTTPTransport`` inside it instead,
    # in every client; for a request RunPod accepts, that is one span too.)
    HTTPXClientInstrumentor.instrument_client(both)
    clients = (raw, twin, raw_instrumented, quiet, observed, both)
    arms = {
        "a": Arm(lambda: raw.get(url), otel=False),
        "a'": Arm(lambda: twin.get(url), otel=False),
        "b": Arm(lambda: quiet.get(url), otel=False),
        "c": Arm(lambda: observed.get(url), otel=True),
        "d": Arm(lambda: raw_instrumented.get(url), otel=False),
        "e": Arm(lambda: both.get(url), otel=True),
    }
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in arms}
    counted = {name: {"spans": 0, "library_spans": 0} for name in arms}
    try:
        for arm in arms.values():  # connections open, the key accepted
            switch.use(otel=arm.otel)
            _batch(arm.send, 20)
        spans.clear()
        for n in range(rounds):
            # Shuffled: in a fixed order each client would follow the same one every round,
            # and which code ran just before shows in the figures (a few microseconds).
            for name in random.Random(n).sample(list(arms), len(arms)):
                switch.use(otel=arms[name].otel)
                times[name].append(_batch(arms[name].send, size))
                counted[name]["spans"] += len(spans.get_finished_spans())
                counted[name]["library_spans"] += len(_library_spans(spans))
                spans.clear()
    finally:
        switch.use(otel=True)
        for client in clients:
            client.close()
    out = {}
    for name in arms:
        wall = _added(times["a"], times[name], 0, size)
        cpu = _added(times["a"], times[name], 1, size)
        out[name] = {
            "wall_us": statistics.median(w for w, _ in times[name]) / size * 1e6,
            "cpu_us": statistics.median(c for _, c in times[name]) / size * 1e6,
            "added_wall_us": wall[0],
            "spread_wall_us": wall[1],
            "added_cpu_us": cpu[0],
            "spread_cpu_us": cpu[1],
            "ratio": statistics.median(
                x[0] / r[0] for r, x in zip(times["a"], times[name], strict=True)
            ),
            "spans": counted[name]["spans"] / (size * rounds),
            "library_spans": counted[name]["library_spans"] / (size * rounds),
        }
    return out


def _added(
    raw: list[tuple[float, float]], arm: list[tuple[float, float]], k: int, size: int
) -> tuple[float, float]:
    """Microseconds per request *arm* adds to *raw* (element *k*): median, half the IQR.

    A round's batches ran back to back and met the same load: the median of the rounds'
    differences is steadier than the difference of the medians.
    """
    deltas = [(a[k] - r[k]) / size * 1e6 for r, a in zip(raw, arm, strict=True)]
    if len(deltas) < 2:  # quartiles need two
        return deltas[0], 0.0
    low, _, high = statistics.quantiles(deltas, n=4)
    return statistics.median(deltas), (high - low) / 2


def recovered(
    emulator: EmulatorProcess,
    switch: Subscribers,
    spans: InMemorySpanExporter,
    *,
    size: int,
    rounds: int,
) -> dict[str, Any]:
    """Requests that meet a revoked key and are recovered, the subscriber on and off in turn."""
    store = {"key": emulator.add_key()}
    credentials = Credentials(store["key"], lambda _context: store["key"], hosts=[emulator.host])
    client = httpx.Client(transport=ResilientTransport(credentials))
    url = f"{emulator.serverless_url}/bench/health"

    def rotated() -> Callable[[], httpx.Response]:
        old = store["key"]
        store["key"] = emulator.add_key()
        emulator.revoke(old)
        return lambda: client.get(url)

    times: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    counted = {otel: {"401": 0, "library_spans": 0, "recovery_spans": 0} for otel in (True, False)}
    try:
        for otel in (True, False):  # connections open, the hook's path taken once
            switch.use(otel=otel)
            _batch(rotated(), 1)
        spans.clear()
        for n in range(rounds):
            sums = {True: (0.0, 0.0), False: (0.0, 0.0)}
            for m in range(size):
                for otel in (True, False) if (n + m) % 2 else (False, True):
                    send = rotated()
                    switch.use(otel=otel)
                    before = emulator.by_status().get(401, 0)
                    took = _batch(send, 1)
                    sums[otel] = (sums[otel][0] + took[0], sums[otel][1] + took[1])
                    counted[otel]["401"] += emulator.by_status().get(401, 0) - before
                    library = _library_spans(spans)
                    counted[otel]["library_spans"] += len(library)
                    counted[otel]["recovery_spans"] += sum(s.name == RECOVERY_SPAN for s in library)
                    spans.clear()
            for otel in (True, False):
                times[otel].append(sums[otel])
    finally:
        switch.use(otel=True)
        client.close()
    requests = size * rounds
    wall = _added(times[False], times[True], 0, size)
    cpu = _added(times[False], times[True], 1, size)
    # The recovery span is the built-in subscriber's (README, "Observability"): one per
    # recovery with it on, none with it off, or the switch did not switch.
    if counted[False]["recovery_spans"] or counted[True]["recovery_spans"] < requests:
        msg = f"the subscriber switch did not hold: {counted}"
        raise RuntimeError(msg)
    if min(c["401"] for c in counted.values()) < requests:
        msg = f"a request was not rejected before its recovery: {counted}"
        raise RuntimeError(msg)
    return {
        "off_ms": statistics.median(w for w, _ in times[False]) / size * 1e3,
        "on_ms": statistics.median(w for w, _ in times[True]) / size * 1e3,
        "ratio": statistics.median(
            on[0] / off[0] for off, on in zip(times[False], times[True], strict=True)
        ),
        "added_wall_us": wall[0],
        "spread_wall_us": wall[1],
        "added_cpu_us": cpu[0],
        "spread_cpu_us": cpu[1],
        **{
            f"{what}_{'on' if otel else 'off'}": n / requests
            for otel, kinds in counted.items()
            for what, n in kinds.items()
        },
    }


def report(results: dict[str, Any], size: int, rounds: int, recoveries: int) -> str:
    """The results as plain-text tables."""
    rows = results["accepted"]
    lines = [
        (
            f"accepted requests: median of {rounds} rounds of {size} per client; added to (a): "
            "the median of the rounds' differences +- half their IQR"
        ),
        (
            f"  {'client':{WIDTH}} {'wall us':>8} {'added':>14} {'ratio':>6} "
            f"{'cpu us':>8} {'added':>14} {'spans':>6}"
        ),
    ]
    for name, label in ARMS.items():
        row = rows[name]
        wall = f"{row['added_wall_us']:+.1f} +-{row['spread_wall_us']:.1f}"
        cpu = f"{row['added_cpu_us']:+.1f} +-{row['spread_cpu_us']:.1f}"
        lines.append(
            f"  {'(' + name + ') ' + label:{WIDTH}} {row['wall_us']:8.1f} {wall:>14} "
            f"{row['ratio']:6.3f} {row['cpu_us']:8.1f} {cpu:>14} {row['spans']:6.2f}"
        )
    lines.append("  added to (a), as a ratio of what (d), the httpx instrumentation, adds")
    for name in ("b", "c", "e"):
        wall = rows[name]["added_wall_us"] / rows["d"]["added_wall_us"]
        cpu = rows[name]["added_cpu_us"] / rows["d"]["added_cpu_us"]
        lines.append(f"    ({name}): wall {wall:5.2f}   cpu {cpu:5.2f}")
    rec = results["recovered"]
    lines += [
        f"recovered requests (a 401, then the new key): {rounds} rounds of {recoveries} each way",
        (
            f"  wall per request: subscriber off {rec['off_ms']:.3f} ms, "
            f"on {rec['on_ms']:.3f} ms, ratio on/off {rec['ratio']:.3f}"
        ),
        (
            "  added by the subscriber, per recovered request: "
            f"wall {rec['added_wall_us']:+.1f} +-{rec['spread_wall_us']:.1f} us, "
            f"cpu {rec['added_cpu_us']:+.1f} +-{rec['spread_cpu_us']:.1f} us "
            f"({rec['added_cpu_us'] / rows['d']['added_cpu_us']:.2f} x what (d) adds a request)"
        ),
        (
            f"  per recovered request, off / on: 401s {rec['401_off']:.2f} / {rec['401_on']:.2f}, "
            f"library spans {rec['library_spans_off']:.2f} / {rec['library_spans_on']:.2f}, "
            f"recovery spans {rec['recovery_spans_off']:.2f} / {rec['recovery_spans_on']:.2f}"
        ),
    ]
    return "\n".join(lines)


def main() -> None:
    """Parse the options, measure, print the tables (or JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, help="accepted requests per batch (300)")
    parser.add_argument("--rounds", type=int, help="rounds (21)")
    parser.add_argument("--recoveries", type=int, help="recovered requests each way a round (20)")
    parser.add_argument("--quick", action="store_true", help="a smaller run: 50, 5, 5")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args()
    sizes = (50, 5, 5) if args.quick else (300, 21, 20)
    requests, rounds, recoveries = (
        given if given is not None else default
        for given, default in zip((args.requests, args.rounds, args.recoveries), sizes, strict=True)
    )
    # Recoveries log; below CRITICAL nothing is written, in both arms alike.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(50))
    spans = telemetry()
    emulator = EmulatorProcess()
    try:
        switch = Subscribers()
        results = {
            "accepted": accepted(emulator, switch, spans, size=requests, rounds=rounds),
            "recovered": recovered(emulator, switch, spans, size=recoveries, rounds=rounds),
        }
    finally:
        emulator.close()
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(report(results, requests, rounds, recoveries))


if __name__ == "__main__":
    main()
