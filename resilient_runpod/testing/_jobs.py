"""Serverless jobs: a queue per endpoint with RunPod's job states, and their JSON shapes.

A job's output is ``{"echo": input}``; an input with ``"fail": true`` ends FAILED. Time
moves jobs along only when somebody looks at them (a status or stream check), which
lets a test see every state without sleeping:

- ``job_seconds == 0``: ``/run`` answers IN_QUEUE and the first check finds COMPLETED.
- ``job_seconds > 0``: checks find IN_PROGRESS until that many seconds have passed.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

__all__ = ["ACTIVE_STATES", "Job", "JobQueue", "wait_seconds"]

ACTIVE_STATES = ("IN_QUEUE", "IN_PROGRESS")
_RETRYABLE_STATES = ("FAILED", "TIMED_OUT")
_WORKER_ID = "emulator-worker-1"


@dataclass(slots=True)
class Job:
    """One serverless job; mutated only under the queue's lock."""

    id: str
    endpoint_id: str
    input: Any
    created: float
    status: str = "IN_QUEUE"
    output: Any = None
    error: str | None = None
    finished: float | None = None
    streamed: bool = False
    retries: int = 0

    def body(self) -> dict[str, Any]:
        """Return the job as ``/status`` shows it."""
        body: dict[str, Any] = {"id": self.id, "status": self.status}
        if self.finished is not None:
            execution_ms = round((self.finished - self.created) * 1000)
            body.update(delayTime=0, executionTime=execution_ms, workerId=_WORKER_ID)
        if self.status == "COMPLETED":
            body["output"] = self.output
        elif self.status == "FAILED":
            body["error"] = self.error
        return body


class JobQueue:
    """Every endpoint's jobs. Endpoints need no creating: any id works on first use."""

    def __init__(self, job_seconds: float) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[tuple[str, str], Job] = {}
        self.job_seconds = job_seconds

    def reset(self, job_seconds: float) -> None:
        """Forget every job and set how long new checks take to see one finish."""
        with self._lock:
            self._jobs.clear()
            self.job_seconds = job_seconds

    def inputs(self) -> list[Any]:
        """The input of every job ever submitted (and not purged), in submission order."""
        with self._lock:
            return [job.input for job in sorted(self._jobs.values(), key=lambda j: j.created)]

    def submit(self, endpoint_id: str, job_input: Any, *, sync: bool = False) -> dict[str, Any]:
        """Queue a job for *endpoint_id*; return ``{"id", "status"}``."""
        prefix = "sync-" if sync else ""
        job = Job(f"{prefix}{uuid.uuid4()}-e1", endpoint_id, job_input, time.monotonic())
        with self._lock:
            self._jobs[endpoint_id, job.id] = job
        return {"id": job.id, "status": job.status}

    def check(self, endpoint_id: str, job_id: str) -> dict[str, Any] | None:
        """Look at a job (moving it along); return its status body, or None if unknown."""
        with self._lock:
            job = self._jobs.get((endpoint_id, job_id))
            if job is None:
                return None
            self._advance(job, observed=True)
            return job.body()

    def stream(self, endpoint_id: str, job_id: str) -> dict[str, Any] | None:
        """Return ``{"status", "stream"}``: the output once when the job completes, then ``[]``.

        Handing each chunk out once is what lets the SDK's stream loop end: it stops at
        the first answer that is final and has no new chunks.
        """
        with self._lock:
            job = self._jobs.get((endpoint_id, job_id))
            if job is None:
                return None
            self._advance(job, observed=True)
            chunks: list[dict[str, Any]] = []
            if job.status == "COMPLETED" and not job.streamed:
                job.streamed = True
                chunks.append({"output": job.output})
            return {"status": job.status, "stream": chunks}

    def cancel(self, endpoint_id: str, job_id: str) -> dict[str, Any] | None:
        """Cancel a job that has not finished; return ``{"id", "status"}``, None if unknown."""
        with self._lock:
            job = self._jobs.get((endpoint_id, job_id))
            if job is None:
                return None
            self._advance(job, observed=False)
            if job.status in ACTIVE_STATES:
                job.status = "CANCELLED"
                job.finished = time.monotonic()
            return {"id": job.id, "status": job.status}

    def retry(self, endpoint_id: str, job_id: str) -> dict[str, Any] | str | None:
        """Queue a FAILED or TIMED_OUT job again; return its body, an error message, or None."""
        with self._lock:
            job = self._jobs.get((endpoint_id, job_id))
            if job is None:
                return None
            if job.status not in _RETRYABLE_STATES:
                return f"job {job.id} is {job.status}: only FAILED or TIMED_OUT jobs can be retried"
            job.status, job.output, job.error, job.finished = "IN_QUEUE", None, None, None
            job.created = time.monotonic()
            job.streamed = False
            job.retries += 1
            return {"id": job.id, "status": job.status}

    def purge(self, endpoint_id: str) -> int:
        """Remove the endpoint's jobs still waiting in the queue; return how many."""
        with self._lock:
            queued = [
                ids
                for ids, job in self._jobs.items()
                if ids[0] == endpoint_id and self._advance(job, observed=False) == "IN_QUEUE"
            ]
            for ids in queued:
                del self._jobs[ids]
        return len(queued)

    def health(self, endpoint_id: str) -> dict[str, Any]:
        """Return the endpoint's ``/health`` body."""
        with self._lock:
            jobs = [job for (endpoint, _), job in self._jobs.items() if endpoint == endpoint_id]
            states = [self._advance(job, observed=False) for job in jobs]
            retried = sum(job.retries for job in jobs)
        in_progress = states.count("IN_PROGRESS")
        return {
            "jobs": {
                "completed": states.count("COMPLETED"),
                "failed": states.count("FAILED"),
                "inProgress": in_progress,
                "inQueue": states.count("IN_QUEUE"),
                "retried": retried,
            },
            "workers": {
                "idle": 0 if in_progress else 1,
                "running": 1 if in_progress else 0,
                "initializing": 0,
                "ready": 1,
                "throttled": 0,
                "unhealthy": 0,
            },
        }

    def _advance(self, job: Job, *, observed: bool) -> str:
        # With job_seconds == 0 nothing but a look finishes a job: that keeps IN_QUEUE
        # visible after /run and makes a /cancel right after /run deterministic.
        if job.status not in ACTIVE_STATES:
            return job.status
        now = time.monotonic()
        due = now - job.created >= self.job_seconds
        if due and (observed or self.job_seconds > 0):
            _finish(job, now)
        elif observed:
            job.status = "IN_PROGRESS"
        return job.status


def _finish(job: Job, now: float) -> None:
    job.finished = now
    if isinstance(job.input, dict) and job.input.get("fail") is True:
        job.status = "FAILED"
        job.error = "handler raised: the input asked the emulator to fail this job"
    else:
        job.status = "COMPLETED"
        job.output = {"echo": job.input}


def wait_seconds(raw: str | None, default: float) -> float:
    """Parse runsync's ``?wait=`` (milliseconds), falling back to *default* seconds."""
    try:
        return max(0.0, int(raw) / 1000) if raw is not None else default
    except ValueError:
        return default
