"""The recovery, shown end to end on the embedded emulator: ``resilient-runpod demo``.

A small worker submits serverless jobs to a RunPod emulator on 127.0.0.1: through
`ResilientTransport` (httpx, sync), through `AsyncResilientTransport` (httpx, asyncio,
many jobs at once) and, with the ``sdk`` extra, through a wrapped ``runpod.Endpoint``.
Part-way through each stage the key is revoked and the new one written to a secret
file, as Kubernetes or a Vault agent would; the recovery hook reads it from there.
structlog prints every step in the order it happens, the library's own events
included, shortened for the console (``--json`` keeps every field); the summary's
counts come from the emulator's request counters, a count of hook calls, and the jobs'
results, and the timeline from the emulator's per-second counts.

Needs the ``emulator`` extra; no network, no RunPod account.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import os
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import httpx
import structlog

from .._credentials import Credentials
from .._errors import ResilientRunPodError
from .._hooks import hook_name
from .._keys import fingerprint
from .._logging import scrub_secrets
from ..adapters._httpx import AsyncResilientTransport, ResilientTransport
from ._common import use_color

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, MutableMapping

    from ..testing import Emulator
    from ..typing import RecoveryContext, RecoveryHook

__all__ = ["MAX_JOBS", "DemoSummary", "run_demo"]

_log = structlog.get_logger("resilient_runpod.demo")
# No pool timeout: with thousands of jobs at once, waiting for a connection is not a failure.
_TIMEOUT = httpx.Timeout(30.0, pool=None)
# Async jobs in flight at once: httpx's default connection pool size.
_IN_FLIGHT = 100
# Status checks before a job counts as lost; the emulator finishes jobs at the first one.
_MAX_POLLS = 50
_SDK_DEFAULT_BASE = "https://api.runpod.ai/v2"
# A sane cap for `--jobs`: big enough to watch a storm, small enough to finish in a minute.
MAX_JOBS = 10_000
# The fields each library event keeps on the console; the rest (URLs with hosts, hook
# sources, methods) are in --json output. Events not listed keep every field.
_CONSOLE_FIELDS = {
    "runpod.auth.rejected": ("status", "fingerprint", "path"),
    "runpod.auth.recovered": ("rejected", "fingerprint", "source", "ms"),
    "demo.hook.called": ("hook",),
    "demo.secret.updated": ("fingerprint",),
}


@dataclass(frozen=True, slots=True)
class DemoSummary:
    """What the demo did, counted, not assumed.

    Attributes:
        submitted: Jobs the worker submitted.
        completed: Jobs that came back ``COMPLETED``.
        lost: Jobs that did not (must be 0).
        rejected: 401 answers the emulator sent.
        recoveries: Times a new key was put in use.
        hook_calls: Times the recovery hook ran.
        stages: The client stacks the jobs went through.
        timeline: One row per wall-clock second from the first request to the last:
            ``(second, requests, 401s, recoveries)``.

    """

    submitted: int
    completed: int
    lost: int
    rejected: int
    recoveries: int
    hook_calls: int
    stages: tuple[str, ...] = field(default=())
    timeline: tuple[tuple[int, int, int, int], ...] = field(default=())

    @property
    def ok(self) -> bool:
        """Whether every submitted job completed."""
        return self.lost == 0 and self.completed == self.submitted


class _CountingHook:
    """Wrap a recovery hook to count its calls (the summary's "hook calls")."""

    def __init__(self, inner: RecoveryHook) -> None:
        self._inner = inner
        self.name = hook_name(inner)
        self.calls = 0
        self.recovered_at: list[int] = []
        self._lock = threading.Lock()

    def __call__(self, context: RecoveryContext) -> Any:
        with self._lock:
            self.calls += 1
        _log.info("demo.hook.called", hook=self.name, rejected=context.fingerprint)
        found = self._inner(context)
        if found is not None:
            with self._lock:
                self.recovered_at.append(int(time.time()))
        return found


@dataclass
class _Tally:
    submitted: int = 0
    completed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, *, submitted: int = 0, completed: int = 0) -> None:
        with self.lock:
            self.submitted += submitted
            self.completed += completed


def _write_secret(path: Path, key: str) -> None:
    # Written beside, then renamed over, the way a kubelet or Vault agent updates a
    # mounted secret: a reader sees the old key or the new one, never half of one.
    fresh = path.with_name(path.name + ".new")
    fd = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as file:
        file.write(key + "\n")
    fresh.replace(path)


def _for_console(secret: Path) -> Any:
    """A processor that keeps console lines short: the fields that tell the story, no hosts.

    The emulator's origin and the secret file's directory are said once at the start; the
    events repeat only what changes.
    """
    directory = f"{secret.parent}{os.sep}"

    def processor(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> Any:
        keep = _CONSOLE_FIELDS.get(event_dict.get("event", ""))
        if keep is None:
            return event_dict
        if "url" in event_dict:
            event_dict["path"] = httpx.URL(str(event_dict["url"])).path
        if "duration" in event_dict:
            event_dict["ms"] = round(float(event_dict["duration"]) * 1000, 1)
        if event_dict.get("source") == event_dict.get("hook"):
            # A file hook's source is the hook's own path: said once, in the hook line.
            event_dict.pop("source", None)
        if "hook" in event_dict:
            event_dict["hook"] = str(event_dict["hook"]).replace(directory, "")
        fixed = {"event", "level", "timestamp"}
        return {k: v for k, v in event_dict.items() if k in fixed or k in keep}

    return processor


@contextmanager
def _console_logging(out: TextIO, secret: Path, *, quiet: bool, as_json: bool) -> Iterator[None]:
    """Route structlog to *out* for the demo only, then put the caller's setup back."""
    previous = structlog.get_config()
    # The runpod SDK turns on INFO logging for the root logger when imported, which would
    # add httpx's one line per request, on stderr, to the story told here.
    quieted = {name: logging.getLogger(name).level for name in ("httpx", "httpcore")}
    for name in quieted:
        logging.getLogger(name).setLevel(logging.WARNING)
    renderer: list[Any] = (
        [structlog.processors.JSONRenderer()]
        if as_json
        else [_for_console(secret), structlog.dev.ConsoleRenderer(colors=use_color(out))]
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso" if as_json else "%H:%M:%S"),
            scrub_secrets,
            *renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.WARNING if quiet else logging.INFO
        ),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    try:
        yield
    finally:
        structlog.configure(**previous)
        for name, level in quieted.items():
            logging.getLogger(name).setLevel(level)


class _Stage:
    """What each stage shares: the emulator, the key's secret file, the tally."""

    def __init__(
        self,
        emulator: Emulator,
        credentials: Credentials,
        secret: Path,
        tally: _Tally,
        *,
        interactive: bool,
    ) -> None:
        self.emulator = emulator
        self.credentials = credentials
        self.secret = secret
        self.tally = tally
        self.interactive = interactive
        self.base = f"{emulator.serverless_url}/{emulator.endpoint_id}"

    def revoke(self) -> None:
        """Revoke the key in use, and put its successor where the hook will look."""
        old = self.credentials.api_key
        if old is None:  # pragma: no cover -- the demo always starts with a key
            return
        new = self.emulator.rotate(old)
        _log.warning("demo.key.revoked", fingerprint=fingerprint(old))
        _write_secret(self.secret, new)
        if self.interactive:
            _log.info(
                "demo.key.created",
                fingerprint=fingerprint(new),
                file=str(self.secret),
                note="paste it at the prompt below (e.g. from `cat` in another terminal)",
            )
        else:
            _log.info("demo.secret.updated", fingerprint=fingerprint(new), file=str(self.secret))

    def lost(self, job: int, via: str, error: BaseException) -> None:
        _log.error("demo.job.lost", job=job, via=via, error=f"{type(error).__name__}: {error}")


def _job_input(number: int) -> dict[str, Any]:
    return {"input": {"prompt": f"job {number}", "steps": number}}


def _sync_stage(stage: _Stage, jobs: int, revoke_at: int) -> None:
    via = "httpx.Client"
    transport = ResilientTransport(stage.credentials)
    with httpx.Client(transport=transport, base_url=stage.base, timeout=_TIMEOUT) as client:
        for number in range(1, jobs + 1):
            if number == revoke_at:
                stage.revoke()
            stage.tally.add(submitted=1)
            # Logged before sending: a 401 and its recovery are part of this submission.
            _log.info("demo.job.submitted", job=number, via=via)
            try:
                response = client.post("/run", json=_job_input(number))
                job_id = response.raise_for_status().json()["id"]
                status = _poll_sync(client, job_id)
            except (ResilientRunPodError, httpx.HTTPError, KeyError, ValueError) as exc:
                stage.lost(number, via, exc)
                continue
            _finish(stage, number, via, status)


def _poll_sync(client: httpx.Client, job_id: str) -> str:
    status = ""
    for _ in range(_MAX_POLLS):
        status = str(client.get(f"/status/{job_id}").raise_for_status().json()["status"])
        if status not in ("IN_QUEUE", "IN_PROGRESS"):
            break
    return status


def _finish(stage: _Stage, number: int, via: str, status: str) -> None:
    if status == "COMPLETED":
        stage.tally.add(completed=1)
        _log.info("demo.job.completed", job=number, via=via)
    else:
        _log.error("demo.job.lost", job=number, via=via, status=status)


async def _async_stage(stage: _Stage, jobs: int, first: int) -> None:
    via = "httpx.AsyncClient"
    transport = AsyncResilientTransport(stage.credentials)
    async with httpx.AsyncClient(
        transport=transport, base_url=stage.base, timeout=_TIMEOUT
    ) as client:
        # Jobs beyond httpx's pool size would queue inside httpcore, whose queue costs
        # time per waiting request on every change: thousands at once then crawl.
        in_flight = asyncio.Semaphore(_IN_FLIGHT)

        async def one(number: int) -> None:
            async with in_flight:
                await submit(number)

        async def submit(number: int) -> None:
            stage.tally.add(submitted=1)
            _log.info("demo.job.submitted", job=number, via=via)
            try:
                response = await client.post("/run", json=_job_input(number))
                job_id = response.raise_for_status().json()["id"]
                status = ""
                for _ in range(_MAX_POLLS):
                    answer = await client.get(f"/status/{job_id}")
                    status = str(answer.raise_for_status().json()["status"])
                    if status not in ("IN_QUEUE", "IN_PROGRESS"):
                        break
            except (ResilientRunPodError, httpx.HTTPError, KeyError, ValueError) as exc:
                stage.lost(number, via, exc)
                return
            _finish(stage, number, via, status)

        await asyncio.gather(*(one(first + i) for i in range(jobs)))


def _sdk_available() -> bool:
    # Asked without importing runpod: it reads RUNPOD_ENDPOINT_BASE_URL at import, which
    # must point at the emulator first.
    return all(importlib.util.find_spec(name) is not None for name in ("runpod", "requests"))


@contextmanager
def _sdk_pointed_at(emulator: Emulator) -> Iterator[Any]:
    """Import runpod aimed at *emulator*; put the environment and its base URL back after."""
    saved = {name: os.environ.get(name) for name in emulator.sdk_env}
    # RUNPOD_ENDPOINT_BASE_URL is read when runpod is first imported; if it already was,
    # the module attribute is what new endpoints read.
    previous = sys.modules.get("runpod")
    os.environ.update(emulator.sdk_env)
    import runpod  # noqa: PLC0415 -- optional dependency, imported only when used

    # What the SDK would hold had it been imported without the emulator's variables.
    base = getattr(previous, "endpoint_url_base", None) or (
        saved["RUNPOD_ENDPOINT_BASE_URL"] or _SDK_DEFAULT_BASE
    )
    runpod.endpoint_url_base = emulator.serverless_url
    try:
        yield runpod
    finally:
        runpod.endpoint_url_base = base
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _sdk_stage(stage: _Stage, jobs: int, first: int, revoke_at: int) -> None:
    with _sdk_pointed_at(stage.emulator) as runpod:
        _sdk_jobs(stage, runpod, jobs, first, revoke_at)


def _sdk_jobs(stage: _Stage, runpod: Any, jobs: int, first: int, revoke_at: int) -> None:
    from ..sdk import wrap  # noqa: PLC0415 -- imports runpod

    via = "runpod.Endpoint"
    endpoint = wrap(
        runpod.Endpoint(stage.emulator.endpoint_id, api_key=stage.credentials.api_key),
        stage.credentials,
    )
    for number in range(first, first + jobs):
        if number == revoke_at:
            stage.revoke()
        stage.tally.add(submitted=1)
        _log.info("demo.job.submitted", job=number, via=via)
        try:
            job = endpoint.run(_job_input(number)["input"])
            status = ""
            for _ in range(_MAX_POLLS):
                status = str(job.status())
                if status not in ("IN_QUEUE", "IN_PROGRESS"):
                    break
        except Exception as exc:  # whatever the SDK raises, the job is lost
            stage.lost(number, via, exc)
            continue
        _finish(stage, number, via, status)


def _sdk_skipped_because(sdk: bool | None) -> str | None:
    """Why the SDK stage is skipped, or None when it runs."""
    if sdk is False:
        return "skipped as asked (--no-sdk)"
    if not _sdk_available():
        if sdk:
            raise ImportError(
                "the runpod.Endpoint stage needs the SDK: pip install 'resilient-runpod[sdk]'"
            )
        return "skipped: the runpod SDK is not installed (pip install 'resilient-runpod[sdk]')"
    return None


def run_demo(
    *,
    jobs: int = 4,
    interactive: bool = False,
    sdk: bool | None = None,
    quiet: bool = False,
    as_json: bool = False,
    out: TextIO | None = None,
) -> DemoSummary:
    """Run the demo and return its counts; the narration goes to *out* (default stdout).

    Args:
        jobs: Jobs per stage (at least 2: the key is revoked before the last ones).
        interactive: Ask the person at the terminal for the new key instead of reading
            the secret file (`resilient_runpod.recovery.prompt`).
        sdk: Include the ``runpod.Endpoint`` stage; ``None``: if the SDK is installed.
        quiet: Show only warnings and errors, not every job.
        as_json: Write one JSON object per event, then the summary as one JSON object,
            instead of text.
        out: Where the narration goes.

    Raises:
        ValueError: *jobs* is less than 2 or more than `MAX_JOBS`.
        ImportError: the ``emulator`` extra (or, with ``sdk=True``, the ``sdk`` extra)
            is missing.

    """
    if not 2 <= jobs <= MAX_JOBS:  # noqa: PLR2004
        raise ValueError(f"the demo runs 2 to {MAX_JOBS} jobs per stage, not {jobs}")
    from .. import recovery  # noqa: PLC0415 -- recovery imports _credentials lazily too
    from ..testing import Emulator  # noqa: PLC0415 -- the emulator extra is optional

    stream = out if out is not None else sys.stdout
    skipped = _sdk_skipped_because(sdk)

    def say(text: str = "") -> None:
        if not as_json:
            stream.write(text + "\n")
            stream.flush()

    tally = _Tally()
    with (
        tempfile.TemporaryDirectory(prefix="resilient-runpod-demo-") as tmp,
        Emulator() as emulator,
    ):
        secret = Path(tmp) / "runpod-api-key"
        _write_secret(secret, emulator.api_key)
        inner = recovery.prompt() if interactive else recovery.from_file(secret)
        hook = _CountingHook(inner)
        credentials = Credentials(
            emulator.api_key,
            hook,
            hosts=[emulator.host],
            hook_timeout=None if interactive else 10.0,
        )
        stage = _Stage(emulator, credentials, secret, tally, interactive=interactive)
        say(f"RunPod emulator on {emulator.url}, key {credentials.fingerprint}")
        say(f"Recovery hook: {'the prompt' if interactive else f'reads the secret file {secret}'}")
        say(f"The key will be revoked {2 if skipped else 3} times while jobs run.")
        with _console_logging(stream, secret, quiet=quiet, as_json=as_json):
            _run_stages(stage, jobs, say, skipped)
            counters = emulator.counters()
        summary = DemoSummary(
            submitted=tally.submitted,
            completed=tally.completed,
            lost=tally.submitted - tally.completed,
            rejected=counters.by_status.get(401, 0),
            recoveries=credentials.generation,
            hook_calls=hook.calls,
            stages=("httpx.Client", "httpx.AsyncClient")
            + (() if skipped else ("runpod.Endpoint",)),
            timeline=_timeline(counters.by_second, hook.recovered_at),
        )
    if as_json:
        stream.write(json.dumps({"summary": _summary_json(summary)}) + "\n")
        stream.flush()
    else:
        say()
        say(_summary_text(summary))
    return summary


def _run_stages(stage: _Stage, jobs: int, say: Any, skipped: str | None) -> None:
    say()
    say(
        f"1/3 httpx.Client + ResilientTransport: {jobs} jobs, "
        f"key revoked before job {jobs // 2 + 1}"
    )
    _sync_stage(stage, jobs, revoke_at=jobs // 2 + 1)
    say()
    say(
        f"2/3 httpx.AsyncClient + AsyncResilientTransport: {jobs} jobs at once "
        f"{'' if jobs <= _IN_FLIGHT else f'(up to {_IN_FLIGHT} in flight) '}"
        "after a revocation; the hook runs once"
    )
    stage.revoke()
    asyncio.run(_async_stage(stage, jobs, first=jobs + 1))
    say()
    if skipped is not None:
        say(f"3/3 runpod.Endpoint: {skipped}")
        return
    first = 2 * jobs + 1
    say(
        f"3/3 runpod.Endpoint wrapped by resilient_runpod.wrap: {jobs} jobs, key revoked "
        f"before job {first + jobs // 2}"
    )
    say("    loading the runpod SDK (its import takes a few seconds)...")
    _sdk_stage(stage, jobs, first, revoke_at=first + jobs // 2)


def _timeline(
    by_second: Mapping[int, Mapping[int, int]], recovered_at: list[int]
) -> tuple[tuple[int, int, int, int], ...]:
    """One row per second from the first request to the last, quiet seconds included."""
    if not by_second:
        return ()
    recoveries: dict[int, int] = {}
    for second in recovered_at:
        recoveries[second] = recoveries.get(second, 0) + 1
    rows = []
    for second in range(min(by_second), max(by_second) + 1):
        codes = by_second.get(second, {})
        rows.append((second, sum(codes.values()), codes.get(401, 0), recoveries.get(second, 0)))
    return tuple(rows)


def _summary_json(summary: DemoSummary) -> dict[str, Any]:
    return {
        "ok": summary.ok,
        "submitted": summary.submitted,
        "completed": summary.completed,
        "lost": summary.lost,
        "rejected": summary.rejected,
        "recoveries": summary.recoveries,
        "hook_calls": summary.hook_calls,
        "stages": list(summary.stages),
        "timeline": [
            {"second": s, "requests": n, "rejected": r, "recoveries": k}
            for s, n, r, k in summary.timeline
        ],
    }


def _timeline_text(timeline: tuple[tuple[int, int, int, int], ...]) -> list[str]:
    if not timeline:
        return []
    widest = max(n for _, n, _, _ in timeline) or 1
    lines = ["", "Timeline (one line per second)", "  time      requests  401s  recoveries"]
    for second, requests, rejected, recoveries in timeline:
        clock = time.strftime("%H:%M:%S", time.localtime(second))
        bar = "#" * max(1 if requests else 0, round(20 * requests / widest))
        lines.append(f"  {clock}  {requests:>8}  {rejected:>4}  {recoveries:>10}  {bar}".rstrip())
    return lines


def _summary_text(summary: DemoSummary) -> str:
    lines = [
        "Summary",
        f"  jobs submitted   {summary.submitted}",
        f"  jobs completed   {summary.completed}",
        f"  401s seen        {summary.rejected}",
        f"  recoveries       {summary.recoveries}",
        f"  hook calls       {summary.hook_calls}",
        f"  jobs lost        {summary.lost}",
        f"  through          {', '.join(summary.stages)}",
        *_timeline_text(summary.timeline),
    ]
    verdict = (
        "Every job completed although the key was revoked mid-run."
        if summary.ok
        else "Some jobs were lost: see the errors above."
    )
    return "\n".join([*lines, "", verdict])
