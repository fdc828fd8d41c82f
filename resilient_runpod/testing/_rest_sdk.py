"""The rest of REST v2 that the ``runpod`` SDK's 2.x API functions call, answered lightly.

Pod actions, the GPU catalog, templates, serverless endpoints, container registry
credentials and SSH keys: enough for every 2.x API function to get a success, with
the same key rules as ``/v2/pods`` (Bearer only; read-only keys may only read).
Imported with `_rest` on first use, and tried ahead of ``/v2/pods`` and the serverless routes.
"""

from __future__ import annotations

import json
import secrets
from typing import TYPE_CHECKING, Any

from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from ._auth import REST_PODS_PATH, problem
from ._pods import GPU_TYPES
from ._rest import _Pods

if TYPE_CHECKING:
    from starlette.requests import Request

    from ._state import EmulatorState

__all__ = ["routes"]

_ACTIONS = {"stop": "EXITED", "start": "RUNNING", "restart": "RUNNING"}


def _new_id() -> str:
    return secrets.token_hex(7)


def _gpu(gpu: dict[str, Any]) -> dict[str, Any]:
    return {**gpu, "availability": {"stockStatus": "HIGH"}}


async def _body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def routes(state: EmulatorState) -> list[BaseRoute]:
    """Return the routes, answering from *state* (pods) or echoing what was created."""
    guarded = _Pods(state).guarded

    async def pod_action(request: Request) -> Response:
        action = (await _body(request)).get("action")
        if action not in _ACTIONS:
            return problem(400, f"unknown action {action!r}")
        pod = state.pods.set_status(request.path_params["pod_id"], _ACTIONS[action])
        return JSONResponse(pod.rest()) if pod else problem(404, "pod not found")

    async def gpus(_request: Request) -> Response:
        return JSONResponse({"gpus": [_gpu(gpu) for gpu in GPU_TYPES]})

    async def gpu(request: Request) -> Response:
        found = [g for g in GPU_TYPES if g["id"] == request.path_params["gpu_id"]]
        return JSONResponse(_gpu(found[0])) if found else problem(404, "GPU type not found")

    async def created(request: Request) -> Response:
        # Templates, endpoints and registry credentials: the body back, with an id.
        return JSONResponse({**(await _body(request)), "id": _new_id()}, 201)

    async def item(request: Request) -> Response:
        if request.method == "DELETE":
            return Response(status_code=204)
        return JSONResponse({**(await _body(request)), "id": request.path_params["item_id"]})

    async def endpoints(_request: Request) -> Response:
        return JSONResponse({"endpoints": []})

    async def ssh_keys(request: Request) -> Response:
        return JSONResponse({"keys": (await _body(request)).get("keys", [])})

    table: list[tuple[str, Any, list[str]]] = [
        (REST_PODS_PATH + "/{pod_id}/action", pod_action, ["POST"]),
        ("/v2/catalog/gpus", gpus, ["GET"]),
        ("/v2/catalog/gpus/{gpu_id:path}", gpu, ["GET"]),
        ("/v2/templates", created, ["POST"]),
        ("/v2/templates/{item_id}", item, ["GET"]),
        ("/v2/serverless", endpoints, ["GET"]),
        ("/v2/serverless", created, ["POST"]),
        ("/v2/serverless/{item_id}", item, ["PATCH"]),
        ("/v2/registries", created, ["POST"]),
        ("/v2/registries/{item_id}", item, ["DELETE"]),
        ("/v2/account/ssh-keys", ssh_keys, ["PUT"]),
    ]
    return [Route(path, guarded(handler), methods=methods) for path, handler, methods in table]
