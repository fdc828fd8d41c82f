"""What each adapter costs when nothing fails, measured against its raw client in one run.

Every figure is measured side by side, interleaved, so the machine's noise hits both:

1. In process, CPU time per request, where there is no network to hide anything: each
   adapter against its raw client, both sending to a canned local answer. The figure is
   the median over rounds of (adapter - raw) per request: the adapter's own cost.

   - httpx: ``httpx.MockTransport`` under `ResilientTransport`, `AsyncResilientTransport`
     and `RunPodAuth` (sync and async), against a client with the key in its headers.
     At the auth layer the raw side is the flow httpx runs when no ``auth=`` is given
     (``httpx.Auth``'s), driven the same way: `RunPodAuth` takes its place.
   - requests: a ``requests.Session`` whose adapter returns a canned ``Response``, with
     and without `ResilientHTTPAdapter` around that adapter.
   - aiohttp: at the middleware: a real ``aiohttp.ClientRequest`` sent to a handler that
     returns a canned response, through `ResilientMiddleware` and straight.

2. Over real sockets to the emulator (in a process of its own): alternating batches of
   the same request through each adapter and its raw client; the median over rounds of
   the ratio of the two batch times (wall clock).

3. ``import resilient_runpod`` against ``import httpx, structlog, tenacity``: fresh
   interpreters, bytecode cached, alternating; the ratio of the medians.

Goals: the httpx wrapper's own cost <= 3 us; requests and aiohttp <= 5 us in process;
aiohttp over sockets <= 1.03; import <= 1.10.

Run: ``python benchmarks/bench_overhead.py`` (``--quick`` for a smaller run;
``--profile NAME`` prints where one adapter's in-process time goes).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import json
import os
import pstats
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import httpx
import requests
import structlog
from _support import EmulatorProcess
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict

from resilient_runpod import (
    AsyncResilientTransport,
    Credentials,
    ResilientTransport,
    RunPodAuth,
)
from resilient_runpod.adapters import ResilientHTTPAdapter, ResilientMiddleware

KEY = "rpa_" + "B" * 40 + "bench1"
URL = "https://api.runpod.ai/v2/bench/health"
GOALS_US = {
    "httpx transport (sync)": 3.0,
    "httpx transport (async)": 3.0,
    "httpx RunPodAuth (sync)": 3.0,
    "httpx RunPodAuth (async)": 3.0,
    "requests adapter": 5.0,
    "aiohttp middleware": 5.0,
}
SOCKET_GOALS = {"aiohttp middleware": 1.03}
# Over sockets only: what aiohttp's middleware chain costs by itself, the floor of the row above.
NOOP_MIDDLEWARE = "aiohttp no-op middleware"
IMPORT_GOAL = 1.10

Sync = Callable[[], object]
Async = Callable[[], Awaitable[object]]


# -- the raw clients and the adapters, in process ----------------------------------------


def _ok(_request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"ok": True})


class Canned(BaseAdapter):
    """A requests adapter that answers 200 at once, without a network."""

    def send(self, request: Any, *_args: Any, **_kwargs: Any) -> requests.Response:
        response = requests.Response()
        response.status_code = 200
        response._content = b'{"ok": true}'  # noqa: SLF001 -- how requests' own tests do it
        response.headers = CaseInsensitiveDict({"Content-Type": "application/json"})
        response.request = request
        response.url = request.url
        return response

    def close(self) -> None:
        """Nothing to close."""


class CannedAiohttpResponse:
    """What the middleware reads of an aiohttp response: the status and the headers."""

    status = 200
    headers: dict[str, str] = {}  # noqa: RUF012 -- read only

    def release(self) -> None:
        """Nothing to release."""


def sync_pairs() -> dict[str, tuple[Sync, Sync]]:
    """(raw, adapter) callables sending one request each, in process."""
    credentials = Credentials(KEY)
    mock = httpx.MockTransport(_ok)
    bearer = {"Authorization": f"Bearer {KEY}"}
    raw_httpx = httpx.Client(transport=mock, headers=bearer)
    transport = httpx.Client(transport=ResilientTransport(credentials, mock))
    auth = httpx.Client(transport=mock, auth=RunPodAuth(credentials))
    raw_requests = requests.Session()
    raw_requests.headers.update(bearer)
    raw_requests.mount("https://", Canned())
    resilient_requests = requests.Session()
    resilient_requests.mount("https://", ResilientHTTPAdapter(credentials, Canned()))
    return {
        "httpx transport (sync)": (lambda: raw_httpx.get(URL), lambda: transport.get(URL)),
        "httpx RunPodAuth (sync)": (lambda: raw_httpx.get(URL), lambda: auth.get(URL)),
        "requests adapter": (
            lambda: raw_requests.get(URL),
            lambda: resilient_requests.get(URL),
        ),
    }


async def async_pairs() -> dict[str, tuple[Async, Async]]:
    """(raw, adapter) coroutine functions sending one request each, in process."""
    credentials = Credentials(KEY)
    mock = httpx.MockTransport(_ok)
    bearer = {"Authorization": f"Bearer {KEY}"}
    raw_httpx = httpx.AsyncClient(transport=mock, headers=bearer)
    transport = httpx.AsyncClient(transport=AsyncResilientTransport(credentials, mock))
    auth = httpx.AsyncClient(transport=mock, auth=RunPodAuth(credentials))
    request = await _aiohttp_request()
    canned = CannedAiohttpResponse()

    async def handler(_request: Any) -> Any:
        return canned

    middleware = ResilientMiddleware(credentials)
    return {
        "httpx transport (async)": (lambda: raw_httpx.get(URL), lambda: transport.get(URL)),
        "httpx RunPodAuth (async)": (lambda: raw_httpx.get(URL), lambda: auth.get(URL)),
        "aiohttp middleware": (
            lambda: handler(request),
            lambda: middleware(request, handler),  # type: ignore[arg-type]
        ),
    }


def layer_pairs() -> dict[str, tuple[Sync, Sync]]:
    """(raw, adapter) at the adapter's own layer: the transport or adapter, fed a built request.

    The client above it (httpx's ``Client``, requests' ``Session``) does the same work for
    both, 80-250 us of it; leaving it out leaves the adapter's own cost, which is a few
    per cent of that and otherwise hard to tell from noise on a shared machine.
    """
    credentials = Credentials(KEY)
    mock = httpx.MockTransport(_ok)
    request = httpx.Request("GET", URL, headers={"Authorization": f"Bearer {KEY}"})
    transport = ResilientTransport(credentials, mock)
    auth = RunPodAuth(credentials)

    # httpx runs every request through an auth flow: with no ``auth=``, the base class's,
    # which yields the request once. That is the raw side of the auth pair.
    no_auth = httpx.Auth()

    def through(flow_of: Callable[[httpx.Request], Any]) -> Sync:
        def send() -> object:
            # What httpx's client does with an auth flow, less its own bookkeeping.
            flow = flow_of(request)
            response = mock.handle_request(next(flow))
            try:
                flow.send(response)
            except StopIteration:
                pass
            finally:
                flow.close()
            return response

        return send

    canned = Canned()
    adapter = ResilientHTTPAdapter(credentials, canned)
    prepared = requests.Request("GET", URL, headers={"Authorization": f"Bearer {KEY}"}).prepare()
    return {
        "httpx transport (sync)": (
            lambda: mock.handle_request(request),
            lambda: transport.handle_request(request),
        ),
        "httpx RunPodAuth (sync)": (
            through(no_auth.sync_auth_flow),
            through(auth.sync_auth_flow),
        ),
        "requests adapter": (lambda: canned.send(prepared), lambda: adapter.send(prepared)),
    }


def async_layer_pairs() -> dict[str, tuple[Async, Async]]:
    """As `layer_pairs`, for the async transport and auth flow."""
    credentials = Credentials(KEY)
    mock = httpx.MockTransport(_ok)
    request = httpx.Request("GET", URL, headers={"Authorization": f"Bearer {KEY}"})
    transport = AsyncResilientTransport(credentials, mock)
    auth = RunPodAuth(credentials)

    no_auth = httpx.Auth()

    def through(flow_of: Callable[[httpx.Request], Any]) -> Async:
        async def send() -> object:
            flow = flow_of(request)
            response = await mock.handle_async_request(await flow.__anext__())
            try:
                await flow.asend(response)
            except StopAsyncIteration:
                pass
            finally:
                await flow.aclose()
            return response

        return send

    return {
        "httpx transport (async)": (
            lambda: mock.handle_async_request(request),
            lambda: transport.handle_async_request(request),
        ),
        "httpx RunPodAuth (async)": (
            through(no_auth.async_auth_flow),
            through(auth.async_auth_flow),
        ),
    }


class _Captured(Exception):  # noqa: N818 -- a signal, not an error
    pass


async def _aiohttp_request() -> aiohttp.ClientRequest:
    """A real ``ClientRequest`` for URL, as aiohttp builds it, caught before it is sent."""
    caught: list[aiohttp.ClientRequest] = []

    async def catch(request: aiohttp.ClientRequest, _handler: Any) -> aiohttp.ClientResponse:
        caught.append(request)
        raise _Captured

    async with aiohttp.ClientSession(middlewares=(catch,)) as session:
        with contextlib.suppress(_Captured):
            await session.get(URL)
    return caught[0]


# -- measuring ------------------------------------------------------------------------------


def _batches(
    clock: Callable[[], float],
) -> tuple[Callable[[Sync, int], float], Callable[[Async, int], Awaitable[float]]]:
    """Batch timers on *clock*: one for calls, one for coroutine functions."""

    def batch(call: Sync, size: int) -> float:
        start = clock()
        for _ in range(size):
            call()
        return clock() - start

    async def batch_async(call: Async, size: int) -> float:
        start = clock()
        for _ in range(size):
            await call()
        return clock() - start

    return batch, batch_async


# In process there is no network: CPU time, which other work on the machine cannot inflate.
_cpu_batch, _cpu_batch_async = _batches(time.process_time)
# Over sockets the time is spent waiting: wall time.
_wall_batch, _wall_batch_async = _batches(time.perf_counter)


def _interleave(
    pairs: dict[str, tuple[Sync, Sync]], batch: Callable[[Sync, int], float], rounds: int, size: int
) -> dict[str, tuple[list[float], list[float]]]:
    """Per pair, the (raw, adapter) batch times of *rounds* rounds, alternating which goes first."""
    out = {}
    for name, (raw, adapter) in pairs.items():
        for call in (raw, adapter):  # warm up
            batch(call, 20)
        raws, adapters = [], []
        for n in range(rounds):
            if n % 2 == 0:
                raws.append(batch(raw, size))
                adapters.append(batch(adapter, size))
            else:
                adapters.append(batch(adapter, size))
                raws.append(batch(raw, size))
        out[name] = (raws, adapters)
    return out


async def _interleave_async(
    pairs: dict[str, tuple[Async, Async]],
    batch: Callable[[Async, int], Awaitable[float]],
    rounds: int,
    size: int,
) -> dict[str, tuple[list[float], list[float]]]:
    """As `_interleave`, for coroutine functions."""
    out = {}
    for name, (raw, adapter) in pairs.items():
        for call in (raw, adapter):
            await batch(call, 20)
        raws, adapters = [], []
        for n in range(rounds):
            if n % 2 == 0:
                raws.append(await batch(raw, size))
                adapters.append(await batch(adapter, size))
            else:
                adapters.append(await batch(adapter, size))
                raws.append(await batch(raw, size))
        out[name] = (raws, adapters)
    return out


def _added(raw: list[float], adapter: list[float], size: int) -> dict[str, float]:
    deltas = [(a - r) / size for r, a in zip(raw, adapter, strict=True)]
    return {
        "raw_us": statistics.median(raw) / size * 1e6,
        "adapter_us": statistics.median(adapter) / size * 1e6,
        "added_us": statistics.median(deltas) * 1e6,
    }


def in_process(size: int, rounds: int) -> dict[str, dict[str, dict[str, float]]]:
    """The adapters' own CPU cost per request, each interleaved with its raw client.

    ``client``: whole requests through the client; ``layer``: at the adapter's layer.
    """
    client = _interleave(sync_pairs(), _cpu_batch, rounds, size)
    layer = _interleave(layer_pairs(), _cpu_batch, rounds, size)

    async def run_async() -> None:
        pairs = await async_pairs()
        client.update(await _interleave_async(pairs, _cpu_batch_async, rounds, size))
        layer.update(await _interleave_async(async_layer_pairs(), _cpu_batch_async, rounds, size))
        # aiohttp is measured at the middleware already: the same figure for both.
        layer["aiohttp middleware"] = client["aiohttp middleware"]

    asyncio.run(run_async())
    return {
        "client": {name: _added(*client[name], size) for name in GOALS_US},
        "layer": {name: _added(*layer[name], size) for name in GOALS_US if name in layer},
    }


def profile(name: str, size: int) -> str:
    """Where one adapter's in-process time goes, at its own layer: cProfile, by own time."""
    profiler = cProfile.Profile()
    layer = layer_pairs()
    if name in layer:
        profiler.runcall(_cpu_batch, layer[name][1], size)
    else:

        async def run() -> None:
            pairs = {**(await async_pairs()), **async_layer_pairs()}
            profiler.enable()
            await _cpu_batch_async(pairs[name][1], size)
            profiler.disable()

        asyncio.run(run())
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(20)
    return out.getvalue()


def _ratio(raw: list[float], adapter: list[float], batch: int) -> dict[str, float]:
    # Each round's two batches ran back to back, so they met the same load on the machine:
    # the median of the rounds' ratios is steadier than the ratio of the two medians.
    return {
        "raw_ms": statistics.median(raw) / batch * 1e3,
        "adapter_ms": statistics.median(adapter) / batch * 1e3,
        "median_ratio": statistics.median(a / r for r, a in zip(raw, adapter, strict=True)),
    }


def over_sockets(batches: int, batch: int) -> dict[str, dict[str, float]]:
    """Median batch time through each adapter over its raw client's, to the emulator."""
    emulator = EmulatorProcess()
    try:
        key = emulator.key
        url = f"{emulator.serverless_url}/bench/health"
        credentials = Credentials(key, hosts=[emulator.host])
        bearer = {"Authorization": f"Bearer {key}"}
        raw_httpx = httpx.Client(headers=bearer)
        transport = httpx.Client(transport=ResilientTransport(credentials))
        auth = httpx.Client(auth=RunPodAuth(credentials))
        raw_requests = requests.Session()
        raw_requests.headers.update(bearer)
        resilient_requests = requests.Session()
        resilient_requests.mount("http://", ResilientHTTPAdapter(credentials))
        sync: dict[str, tuple[Sync, Sync]] = {
            "httpx transport (sync)": (lambda: raw_httpx.get(url), lambda: transport.get(url)),
            "httpx RunPodAuth (sync)": (lambda: raw_httpx.get(url), lambda: auth.get(url)),
            "requests adapter": (
                lambda: raw_requests.get(url),
                lambda: resilient_requests.get(url),
            ),
        }
        times = _interleave(sync, _wall_batch, batches, batch)
        for client in (raw_httpx, transport, auth):
            client.close()

        async def run_async() -> None:
            async with (
                httpx.AsyncClient(headers=bearer) as raw_async,
                httpx.AsyncClient(transport=AsyncResilientTransport(credentials)) as resilient,
                aiohttp.ClientSession(headers=bearer) as raw_aiohttp,
                aiohttp.ClientSession(
                    middlewares=(ResilientMiddleware(credentials),)
                ) as resilient_aiohttp,
                aiohttp.ClientSession(headers=bearer, middlewares=(_noop,)) as noop_aiohttp,
            ):

                async def aio(session: aiohttp.ClientSession) -> None:
                    async with session.get(url) as response:
                        await response.read()

                pairs: dict[str, tuple[Async, Async]] = {
                    "httpx transport (async)": (
                        lambda: raw_async.get(url),
                        lambda: resilient.get(url),
                    ),
                    "aiohttp middleware": (
                        lambda: aio(raw_aiohttp),
                        lambda: aio(resilient_aiohttp),
                    ),
                    NOOP_MIDDLEWARE: (lambda: aio(raw_aiohttp), lambda: aio(noop_aiohttp)),
                }
                times.update(await _interleave_async(pairs, _wall_batch_async, batches, batch))

        asyncio.run(run_async())
    finally:
        emulator.close()
    return {
        name: _ratio(*times[name], batch) for name in [*GOALS_US, NOOP_MIDDLEWARE] if name in times
    }


async def _noop(
    request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
) -> aiohttp.ClientResponse:
    return await handler(request)


IMPORT_PROBE = "import time; t = time.perf_counter(); {statement}; print(time.perf_counter() - t)"
IMPORTS = {
    "package": "import resilient_runpod",
    # The package loads its parts on first use; this is what a program then loads.
    "in_use": "from resilient_runpod import Credentials, ResilientTransport, recovery",
    "dependencies": "import httpx, structlog, tenacity",
}


def import_time(runs: int) -> dict[str, float]:
    """Milliseconds to import, in fresh interpreters, alternating; ratios to the dependencies."""

    # Bytecode must be written, or every run would compile the package again.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}

    def once(statement: str) -> float:
        out = subprocess.run(
            [sys.executable, "-c", IMPORT_PROBE.format(statement=statement)],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        )
        return float(out.stdout)

    times: dict[str, list[float]] = {name: [] for name in IMPORTS}
    for statement in IMPORTS.values():  # bytecode cached for all
        once(statement)
    names = list(IMPORTS)
    for n in range(runs):
        for name in names[n % len(names) :] + names[: n % len(names)]:
            times[name].append(once(IMPORTS[name]))
    ms = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    return {
        **{f"{name}_ms": value for name, value in ms.items()},
        "ratio": ms["package"] / ms["dependencies"],
        "in_use_ratio": ms["in_use"] / ms["dependencies"],
    }


# -- the report -----------------------------------------------------------------------------


def _verdict(value: float, goal: float | None) -> str:
    if goal is None:
        return ""
    return f"goal <= {goal:g}: {'met' if value <= goal else 'MISSED'}"


def report(results: dict[str, Any]) -> str:
    """The results as plain-text tables."""
    lines = []
    titles = {
        "layer": "in process, the adapter's own layer, CPU time per request (median of rounds)",
        "client": "in process, whole requests through the client, CPU time per request",
    }
    for part in ("layer", "client"):
        lines.append(titles[part])
        lines.append(f"  {'adapter':26} {'raw us':>8} {'adapter us':>11} {'added us':>9}")
        for name, row in results["in_process"][part].items():
            goal = GOALS_US[name] if part == "layer" else None
            lines.append(
                f"  {name:26} {row['raw_us']:8.2f} {row['adapter_us']:11.2f} "
                f"{row['added_us']:9.2f}   {_verdict(row['added_us'], goal)}"
            )
    lines.append("over sockets to the emulator, wall time per request (median batch)")
    lines.append(f"  {'adapter':26} {'raw ms':>8} {'adapter ms':>11} {'ratio':>9}")
    for name, row in results["over_sockets"].items():
        lines.append(
            f"  {name:26} {row['raw_ms']:8.3f} {row['adapter_ms']:11.3f} "
            f"{row['median_ratio']:9.3f}   {_verdict(row['median_ratio'], SOCKET_GOALS.get(name))}"
        )
    imp = results["import"]
    lines.append("import, fresh interpreters, bytecode cached (median)")
    lines.append(f"  {IMPORTS['dependencies']:70} {imp['dependencies_ms']:6.1f} ms")
    lines.append(
        f"  {IMPORTS['package']:70} {imp['package_ms']:6.1f} ms  ratio {imp['ratio']:.3f}   "
        f"{_verdict(imp['ratio'], IMPORT_GOAL)}"
    )
    lines.append(
        f"  {IMPORTS['in_use']:70} {imp['in_use_ms']:6.1f} ms  ratio {imp['in_use_ratio']:.3f}   "
        f"{_verdict(imp['in_use_ratio'], IMPORT_GOAL)}"
    )
    return "\n".join(lines)


def main() -> None:
    """Parse the options, measure, print the tables (or JSON, or a profile)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller run, for development")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    parser.add_argument("--profile", choices=[*GOALS_US], help="profile one adapter in process")
    args = parser.parse_args()
    # Nothing fails here, so nothing would be logged; keep it that way cheaply.
    structlog.configure(cache_logger_on_first_use=True)
    size, rounds = (500, 5) if args.quick else (2000, 15)
    if args.profile:
        print(profile(args.profile, size * 5))
        return
    results = {
        "in_process": in_process(size, rounds),
        "over_sockets": over_sockets(*((6, 50) if args.quick else (30, 100))),
        "import": import_time(5 if args.quick else 21),
    }
    print(json.dumps(results, indent=2) if args.json else report(results))


if __name__ == "__main__":
    main()
