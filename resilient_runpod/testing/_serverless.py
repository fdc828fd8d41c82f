"""The serverless queue API under ``/v2/{endpoint_id}``: run jobs, look at them, manage the queue.

Reads (``status``, ``stream``, ``health``) need any active key; writes (``run``,
``runsync``, ``cancel``, ``retry``, ``purge-queue``) need a full-access one.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from ._auth import error_response, header_key
from ._jobs import ACTIVE_STATES, wait_seconds
from ._state import EmulatorState

__all__ = ["routes"]

_Handler = Callable[[Request], Awaitable[Response]]

# How long /runsync waits for a job before answering {id, status} (RunPod's default).
_RUNSYNC_WAIT_SECONDS = 90.0


def _not_found(job_id: str) -> JSONResponse:
    return JSONResponse({"error": f"job {job_id} does not exist or has expired"}, 404)


def routes(state: EmulatorState) -> list[BaseRoute]:
    """Return the serverless routes, answering from *state*."""
    jobs = state.jobs

    def guarded(handler: _Handler, *, write: bool) -> _Handler:
        async def endpoint(request: Request) -> Response:
            scope = state.scope_of(header_key(request))
            if scope is None:
                return error_response(401, "serverless")
            if write and scope != "all":
                return error_response(403, "serverless")
            return await handler(request)

        return endpoint

    async def job_input(request: Request) -> Any:
        # Returns the JSON "input", or a 400 response when the body has none.
        try:
            body = json.loads(await request.body() or b"null")
        except ValueError:
            return JSONResponse({"error": "the request body is not valid JSON"}, 400)
        if not isinstance(body, dict) or "input" not in body:
            return JSONResponse({"error": 'the request body needs an "input" field'}, 400)
        return body["input"]

    async def run(request: Request) -> Response:
        payload = await job_input(request)
        if isinstance(payload, Response):
            return payload
        return JSONResponse(jobs.submit(request.path_params["endpoint_id"], payload))

    async def runsync(request: Request) -> Response:
        payload = await job_input(request)
        if isinstance(payload, Response):
            return payload
        endpoint_id = request.path_params["endpoint_id"]
        submitted = jobs.submit(endpoint_id, payload, sync=True)
        wait = wait_seconds(request.query_params.get("wait"), _RUNSYNC_WAIT_SECONDS)
        await asyncio.sleep(min(jobs.job_seconds, wait))
        body = jobs.check(endpoint_id, submitted["id"]) or submitted
        if body["status"] in ACTIVE_STATES:
            # Like RunPod: a job still running when the wait ends comes back as {id, status}
            # and the caller polls /status.
            body = {"id": body["id"], "status": body["status"]}
        return JSONResponse(body)

    async def status(request: Request) -> Response:
        body = jobs.check(request.path_params["endpoint_id"], request.path_params["job_id"])
        return _not_found(request.path_params["job_id"]) if body is None else JSONResponse(body)

    async def stream(request: Request) -> Response:
        body = jobs.stream(request.path_params["endpoint_id"], request.path_params["job_id"])
        return _not_found(request.path_params["job_id"]) if body is None else JSONResponse(body)

    async def cancel(request: Request) -> Response:
        body = jobs.cancel(request.path_params["endpoint_id"], request.path_params["job_id"])
        return _not_found(request.path_params["job_id"]) if body is None else JSONResponse(body)

    async def retry(request: Request) -> Response:
        result = jobs.retry(request.path_params["endpoint_id"], request.path_params["job_id"])
        if result is None:
            return _not_found(request.path_params["job_id"])
        if isinstance(result, str):
            return JSONResponse({"error": result}, 400)
        return JSONResponse(result)

    async def purge_queue(request: Request) -> Response:
        removed = jobs.purge(request.path_params["endpoint_id"])
        return JSONResponse({"removed": removed, "status": "completed"})

    async def health(request: Request) -> Response:
        return JSONResponse(jobs.health(request.path_params["endpoint_id"]))

    base = "/v2/{endpoint_id}"
    table: list[tuple[str, str, _Handler, bool]] = [
        ("POST", "/run", run, True),
        ("POST", "/runsync", runsync, True),
        ("GET", "/status/{job_id}", status, False),
        ("GET", "/stream/{job_id}", stream, False),
        ("POST", "/cancel/{job_id}", cancel, True),
        ("POST", "/retry/{job_id}", retry, True),
        ("POST", "/purge-queue", purge_queue, True),
        ("GET", "/health", health, False),
    ]
    return [
        Route(base + path, guarded(handler, write=write), methods=[method])
        for method, path, handler, write in table
    ]
