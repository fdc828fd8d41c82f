"""The recovery, shown end to end on the embedded emulator: ``resilient-runpod demo``.

A small worker submits serverless jobs to a RunPod emulator on 127.0.0.1: through
`ResilientTransport` (httpx, sync), through `AsyncResilientTransport` (httpx, asyncio,
many jobs at once) and, with the ``sdk`` extra, through a wrapped ``runpod.Endpoint``.
Part-way through each stage the key is revoked and the new one written to a secret
file, as Kubernetes or a Vault agent would; the recovery hook reads it from there.
structlog prints every step, the library's own events included; the summary's counts
come from the emulator's request counters, a count of hook calls, and the jobs' results.

Needs the ``emulator`` extra; no network, no RunPod account.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import sys
import tempfile
import threading
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
from ..recovery._prompt import is_tty

if TYPE_CHECKING:
    from collections.abc import Iterator

    from ..testing import Emulator
    from ..typing import RecoveryContext, RecoveryHook

__all__ = ["DemoSummary", "run_demo"]

_log = structlog.get_logger("resilient_runpod.demo")
_TIMEOUT = httpx.Timeout(30.0)
# Status checks before a job counts as lost; the emulator finishes jobs at the first one.
_MAX_POLLS = 50
_SDK_DEFAULT_BASE = "https://api.runpod.ai/v2"


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

    """

    submitted: int
    completed: int
    lost: int
    rejected: int
    recoveries: int
    hook_calls: int
    stages: tuple[str, ...] = field(default=())

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
        self._lock = threading.Lock()

    def __call__(self, context: RecoveryContext) -> Any:
        with self._lock:
            self.calls += 1
        _log.info("demo.hook.called", hook=self.name, rejected=context.fingerprint)
        return self._inner(context)


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


@contextmanager
def _console_logging(out: TextIO, *, quiet: bool) -> Iterator[None]:
    """Route structlog to *out* for the demo only, then put the caller's setup back."""
    previous = structlog.get_config()
    # The runpod SDK turns on INFO logging for the root logger when imported, which would
    # add httpx's one line per request, on stderr, to the story told here.
    quieted = {name: logging.getLogger(name).level for name in ("httpx", "httpcore")}
    for name in quieted:
        logging.getLogger(name).setLevel(logging.WARNING)
    colors = is_tty(out) and "NO_COLOR" not in os.environ
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="%H:%M:%S"),
            scrub_secrets,
            structlog.dev.ConsoleRenderer(colors=colors),
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
            try:
                response = client.post("/run", json=_job_input(number))
                job_id = response.raise_for_status().json()["id"]
                _log.info("demo.job.submitted", job=number, via=via)
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

        async def one(number: int) -> None:
            stage.tally.add(submitted=1)
            try:
                response = await client.post("/run", json=_job_input(number))
                job_id = response.raise_for_status().json()["id"]
                _log.info("demo.job.submitted", job=number, via=via)
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
        try:
            job = endpoint.run(_job_input(number)["input"])
            _log.info("demo.job.submitted", job=number, via=via)
            status = ""
            for _ in range(_MAX_POLLS):
                status = str(job.status())
                if status not in ("IN_QUEUE", "IN_PROGRESS"):
                    break
        except Exception as exc:  # whatever the SDK raises, the job is lost
            stage.lost(number, via, exc)
            continue
        _finish(stage, number, via, status)


def run_demo(
    *,
    jobs: int = 4,
    interactive: bool = False,
    sdk: bool | None = None,
    quiet: bool = False,
    out: TextIO | None = None,
) -> DemoSummary:
    """Run the demo and return its counts; the narration goes to *out* (default stdout).

    Args:
        jobs: Jobs per stage (at least 2: the key is revoked before the last ones).
        interactive: Ask the person at the terminal for the new key instead of reading
            the secret file (`resilient_runpod.recovery.prompt`).
        sdk: Include the ``runpod.Endpoint`` stage; ``None``: if the SDK is installed.
        quiet: Show only warnings and errors, not every job.
        out: Where the narration goes.

    Raises:
        ValueError: *jobs* is less than 2.
        ImportError: the ``emulator`` extra (or, with ``sdk=True``, the ``sdk`` extra)
            is missing.

    """
    if jobs < 2:  # noqa: PLR2004
        raise ValueError("the demo needs at least 2 jobs per stage")
    from .. import recovery  # noqa: PLC0415 -- recovery imports _credentials lazily too
    from ..testing import Emulator  # noqa: PLC0415 -- the emulator extra is optional

    stream = out if out is not None else sys.stdout
    use_sdk = _sdk_available() if sdk is None else sdk

    def say(text: str = "") -> None:
        stream.write(text + "\n")
        stream.flush()

    tally = _Tally()
    with (
        tempfile.TemporaryDirectory(prefix="resilient-runpod-demo-") as tmp,
        Emulator() as emulator,
        _console_logging(stream, quiet=quiet),
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
        stages = ["httpx.Client", "httpx.AsyncClient"] + (["runpod.Endpoint"] if use_sdk else [])
        say(
            f"RunPod emulator on {emulator.url}; key {credentials.fingerprint}, "
            f"recovery hook {hook.name}"
        )
        say(f"The key will be revoked {len(stages)} times while jobs run.")
        say()
        say(
            f"1/{len(stages)} httpx.Client + ResilientTransport: {jobs} jobs, "
            f"key revoked before job {jobs // 2 + 1}"
        )
        _sync_stage(stage, jobs, revoke_at=jobs // 2 + 1)
        say()
        say(
            f"2/{len(stages)} httpx.AsyncClient + AsyncResilientTransport: {jobs} jobs at once, "
            "just after a revocation: all are rejected, the hook runs once"
        )
        stage.revoke()
        asyncio.run(_async_stage(stage, jobs, first=jobs + 1))
        if use_sdk:
            say()
            first = 2 * jobs + 1
            say(
                f"3/{len(stages)} runpod.Endpoint wrapped by resilient_runpod.wrap: {jobs} jobs, "
                f"key revoked before job {first + jobs // 2}"
            )
            _sdk_stage(stage, jobs, first, revoke_at=first + jobs // 2)
        counters = emulator.counters()
        summary = DemoSummary(
            submitted=tally.submitted,
            completed=tally.completed,
            lost=tally.submitted - tally.completed,
            rejected=counters.by_status.get(401, 0),
            recoveries=credentials.generation,
            hook_calls=hook.calls,
            stages=tuple(stages),
        )
    say()
    say(_summary_text(summary))
    return summary


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
    ]
    verdict = (
        "Every job completed although the key was revoked mid-run."
        if summary.ok
        else "Some jobs were lost: see the errors above."
    )
    return "\n".join([*lines, "", verdict])
