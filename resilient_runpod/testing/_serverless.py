"""The serverless queue API under ``/v2/{endpoint_id}``: run jobs, look at them, manage the queue.

Reads (``status``, ``stream``, ``health``) need any active key; writes (``run``,
``runsync``, ``cancel``, ``retry``, ``purge-queue``) need a full-access one.

RunPod documents only 401 for this API. The 403 ``{"error": "Forbidden"}`` that a
read-only key gets for a write is the emulator's reading of RunPod's key scopes
(inferred, not documented), there so that code can be tested against a key that may
look but not change: do not take it as RunPod's contract.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from ._auth import error_response, header_key
from ._jobs import ACTIVE_STATES, wait_seconds

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from starlette.requests import Request

    from ._state import EmulatorState

    _Handler = Callable[[Request], Awaitable[Response]]

__all__ = ["routes"]

# How long /runsync waits for a job before answering {id, status} (RunPod's default).
_RUNSYNC_WAIT_SECONDS = 90.0


class _Rejected(Exception):  # noqa: N818 (a control-flow signal, not an error to report)
    """Raised inside a handler to answer with *response* instead."""

    def __init__(self, response: Response) -> None:
        self.response = response


def _json_error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message}, status)


class _Serverless:
    def __init__(self, state: EmulatorState) -> None:
        self._state = state
        self._jobs = state.jobs

    def guarded(self, handler: _Handler, *, write: bool) -> _Handler:
        async def endpoint(request: Request) -> Response:
            scope = self._state.scope_of(header_key(request))
            if scope is None:
                return error_response(401, "serverless")
            if write and scope != "all":
                return error_response(403, "serverless")
            try:
                return await handler(request)
            except _Rejected as rejected:
                return rejected.response

        return endpoint

    @staticmethod
    async def _input(request: Request) -> Any:
        try:
            body = json.loads(await request.body() or b"null")
        except ValueError:
            raise _Rejected(_json_error("the request body is not valid JSON", 400)) from None
        if not isinstance(body, dict) or "input" not in body:
            raise _Rejected(_json_error('the request body needs an "input" field', 400))
        return body["input"]

    @staticmethod
    def _ids(request: Request) -> tuple[str, str]:
        return request.path_params["endpoint_id"], request.path_params["job_id"]

    @staticmethod
    def _found(body: dict[str, Any] | None, job_id: str) -> Response:
        if body is None:
            return _json_error(f"job {job_id} does not exist or has expired", 404)
        return JSONResponse(body)

    async def run(self, request: Request) -> Response:
        job_input = await self._input(request)
        return JSONResponse(self._jobs.submit(request.path_params["endpoint_id"], job_input))

    async def runsync(self, request: Request) -> Response:
        job_input = await self._input(request)
        endpoint_id = request.path_params["endpoint_id"]
        submitted = self._jobs.submit(endpoint_id, job_input, sync=True)
        wait = wait_seconds(request.query_params.get("wait"), _RUNSYNC_WAIT_SECONDS)
        await asyncio.sleep(min(self._jobs.job_seconds, wait))
        body = self._jobs.check(endpoint_id, submitted["id"]) or submitted
        if body["status"] in ACTIVE_STATES:
            # Like RunPod: a job still running when the wait ends comes back as {id, status}
            # and the caller polls /status.
            body = {"id": body["id"], "status": body["status"]}
        return JSONResponse(body)

    async def status(self, request: Request) -> Response:
        endpoint_id, job_id = self._ids(request)
        return self._found(self._jobs.check(endpoint_id, job_id), job_id)

    async def stream(self, request: Request) -> Response:
        endpoint_id, job_id = self._ids(request)
        return self._found(self._jobs.stream(endpoint_id, job_id), job_id)

    async def cancel(self, request: Request) -> Response:
        endpoint_id, job_id = self._ids(request)
        return self._found(self._jobs.cancel(endpoint_id, job_id), job_id)

    async def retry(self, request: Request) -> Response:
        endpoint_id, job_id = self._ids(request)
        result = self._jobs.retry(endpoint_id, job_id)
        if isinstance(result, str):
            return _json_error(result, 400)
        return self._found(result, job_id)

    async def purge_queue(self, request: Request) -> Response:
        removed = self._jobs.purge(request.path_params["endpoint_id"])
        return JSONResponse({"removed": removed, "status": "completed"})

    async def health(self, request: Request) -> Response:
        return JSONResponse(self._jobs.health(request.path_params["endpoint_id"]))


def routes(state: EmulatorState) -> list[BaseRoute]:
    """Return the serverless routes, answering from *state*."""
    api = _Serverless(state)
    table: list[tuple[str, str, _Handler, bool]] = [
        ("POST", "/run", api.run, True),
        ("POST", "/runsync", api.runsync, True),
        ("GET", "/status/{job_id}", api.status, False),
        ("GET", "/stream/{job_id}", api.stream, False),
        ("POST", "/cancel/{job_id}", api.cancel, True),
        ("POST", "/retry/{job_id}", api.retry, True),
        ("POST", "/purge-queue", api.purge_queue, True),
        ("GET", "/health", api.health, False),
    ]
    return [
        Route(f"/v2/{{endpoint_id}}{path}", api.guarded(handler, write=write), methods=[method])
        for method, path, handler, write in table
    ]
