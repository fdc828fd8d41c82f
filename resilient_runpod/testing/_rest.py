"""A slice of RunPod's REST API v2: list, create, read and delete pods under ``/v2/pods``.

Bearer keys only. Every answer that is not a success is ``application/problem+json``.
These routes are imported with the first request under a REST v2 path (see `_app`),
are tried before the serverless ones and claim everything under ``/v2/pods``, so
``pods`` cannot be used as a serverless endpoint id.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from ._auth import REST_PODS_PATH, bearer_key, error_response, problem
from ._pods import GPU_TYPES

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from starlette.requests import Request

    from ._state import EmulatorState

    _Handler = Callable[[Request], Awaitable[Response]]

__all__ = ["routes"]

_READ_METHODS = ("GET", "HEAD")
_ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]


def _create_problems(body: Any) -> list[str]:
    # The checks of CreatePodRequest that a client is likely to trip over.
    if not isinstance(body, dict):
        return ["$: expected an object"]
    problems = []
    if not isinstance(body.get("name"), str) or not body["name"]:
        problems.append("$: missing property 'name'")
    if not body.get("image") and not body.get("templateId"):
        problems.append("$: 'image' is required unless 'templateId' is set")
    # The document lets either be null; null counts as not set.
    if (body.get("gpu") is None) == (body.get("cpu") is None):
        problems.append("$: exactly one of 'gpu' or 'cpu' must be set")
    gpu = body.get("gpu")
    if gpu is not None and (not isinstance(gpu, dict) or not isinstance(gpu.get("id"), str)):
        problems.append("$.gpu: missing property 'id'")
    return problems


def _integer(value: Any, default: int) -> int:
    # Optional integer fields may be omitted or null; both mean the default.
    return value if isinstance(value, int) and not isinstance(value, bool) else default


class _Pods:
    def __init__(self, state: EmulatorState) -> None:
        self._state = state

    def guarded(self, handler: _Handler) -> _Handler:
        async def endpoint(request: Request) -> Response:
            scope = self._state.scope_of(bearer_key(request))
            if scope is None:
                return error_response(401, "rest")
            if request.method not in _READ_METHODS and scope != "all":
                return error_response(403, "rest")
            return await handler(request)

        return endpoint

    async def collection(self, request: Request) -> Response:
        if request.method in _READ_METHODS:
            return JSONResponse({"pods": [pod.rest() for pod in self._state.pods.all()]})
        if request.method == "POST":
            return await self._create(request)
        return problem(405, f"{request.method} is not allowed on {REST_PODS_PATH}")

    async def _create(self, request: Request) -> Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return problem(400, "the request body is not valid JSON")
        if errors := _create_problems(body):
            return problem(422, "the request body does not match the contract", errors=errors)
        gpu = body.get("gpu")
        if gpu is not None and not any(g["id"] == gpu["id"] for g in GPU_TYPES):
            return problem(400, f"no capacity for GPU type {gpu['id']!r}")
        pod = self._state.pods.create(
            body["name"],
            str(body.get("image") or body.get("templateId")),
            gpu_type_id=gpu["id"] if gpu else None,
            gpu_count=_integer(gpu.get("count"), 1) if gpu else 0,
            env={str(k): str(v) for k, v in (body.get("env") or {}).items()},
            ports=tuple(str(p) for p in body.get("ports") or ()),
            disk_gb=_integer(body.get("disk"), 10),
            docker_args=str(body.get("args") or ""),
        )
        # Provisioning is asynchronous at RunPod: the create answer says so, later reads
        # find the pod running.
        return JSONResponse({**pod.rest(), "status": "PROVISIONING", "startedAt": None}, 201)

    async def item(self, request: Request) -> Response:
        pod_id = request.path_params["pod_id"]
        if request.method in _READ_METHODS:
            pod = self._state.pods.get(pod_id)
            return JSONResponse(pod.rest()) if pod else problem(404, "pod not found")
        if request.method == "DELETE":
            deleted = self._state.pods.delete(pod_id)
            return Response(status_code=204) if deleted else problem(404, "pod not found")
        return problem(405, f"{request.method} is not implemented by the emulator")

    async def elsewhere(self, request: Request) -> Response:
        return problem(404, f"the RunPod emulator does not implement {request.url.path}")


def routes(state: EmulatorState) -> list[BaseRoute]:
    """Return the REST v2 pod routes, answering from *state*."""
    api = _Pods(state)
    return [
        Route(REST_PODS_PATH, api.guarded(api.collection), methods=_ALL_METHODS),
        Route(REST_PODS_PATH + "/{pod_id}", api.guarded(api.item), methods=_ALL_METHODS),
        Route(REST_PODS_PATH + "/{rest:path}", api.guarded(api.elsewhere), methods=_ALL_METHODS),
    ]
