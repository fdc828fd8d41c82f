"""What the middleware costs when nothing fails.

Two measurements, each side by side in one run so the machine's noise hits both:

1. Over real sockets: the same requests to the emulator through plain httpx and
   through `ResilientTransport`, in alternating batches; the ratio of their median
   batch times (goal: <= 1.05).
2. In-process: the added time per request with `httpx.MockTransport`, where there
   is no network to hide it (goal: <= 15 microseconds).

Run: ``python benchmarks/bench_overhead.py [--requests 5000]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import httpx
import structlog

from resilient_runpod import Credentials, ResilientTransport
from resilient_runpod.testing import Emulator


def _batch(client: httpx.Client, url: str, size: int) -> float:
    start = time.perf_counter()
    for _ in range(size):
        client.get(url)
    return time.perf_counter() - start


def over_sockets(requests: int, batch: int) -> dict[str, float]:
    with Emulator() as emulator:
        key = emulator.api_key
        url = f"{emulator.serverless_url}/{emulator.endpoint_id}/health"
        plain = httpx.Client(headers={"Authorization": f"Bearer {key}"})
        credentials = Credentials(key, hosts=[emulator.host])
        resilient = httpx.Client(transport=ResilientTransport(credentials))
        for client in (plain, resilient):  # warm both pools
            _batch(client, url, 20)
        plain_times, resilient_times = [], []
        for n in range(requests // (2 * batch)):
            order = (plain, resilient) if n % 2 == 0 else (resilient, plain)
            for client in order:
                elapsed = _batch(client, url, batch)
                (plain_times if client is plain else resilient_times).append(elapsed)
        plain.close()
        resilient.close()
    plain_median = statistics.median(plain_times) / batch
    resilient_median = statistics.median(resilient_times) / batch
    return {
        "requests": float(2 * batch * len(plain_times)),
        "plain_ms_per_request": plain_median * 1e3,
        "resilient_ms_per_request": resilient_median * 1e3,
        "median_ratio": resilient_median / plain_median,
    }


def in_process(requests: int, rounds: int) -> dict[str, float]:
    def ok(_request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"ok": True})

    key = "rpa_" + "B" * 40 + "bench1"
    url = "https://api.runpod.ai/v2/bench/health"
    plain = httpx.Client(transport=httpx.MockTransport(ok), headers={"Authorization": key})
    resilient = httpx.Client(
        transport=ResilientTransport(Credentials(key), httpx.MockTransport(ok))
    )
    deltas = []
    for n in range(rounds):
        order = (plain, resilient) if n % 2 == 0 else (resilient, plain)
        times = {}
        for client in order:
            times[client] = _batch(client, url, requests)
        deltas.append((times[resilient] - times[plain]) / requests)
    return {
        "requests_per_round": float(requests),
        "added_us_per_request": statistics.median(deltas) * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000, help="over sockets, in all")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args()
    # Nothing fails here, so nothing would be logged; keep it that way cheaply.
    structlog.configure(cache_logger_on_first_use=True)
    results = {
        "over_sockets": over_sockets(args.requests, batch=50),
        "in_process": in_process(requests=2000, rounds=11),
    }
    if args.json:
        print(json.dumps(results, indent=2))
        return
    sockets, local = results["over_sockets"], results["in_process"]
    print(f"over sockets, {int(sockets['requests'])} requests to the emulator, interleaved batches")
    print(f"  plain httpx        {sockets['plain_ms_per_request']:.3f} ms/request (median batch)")
    print(f"  ResilientTransport {sockets['resilient_ms_per_request']:.3f} ms/request")
    print(f"  median ratio       {sockets['median_ratio']:.3f}   (goal <= 1.05)")
    print("in process, httpx.MockTransport")
    print(f"  added per request  {local['added_us_per_request']:.1f} us   (goal <= 15)")


if __name__ == "__main__":
    main()
