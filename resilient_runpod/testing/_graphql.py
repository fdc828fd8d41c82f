"""RunPod's GraphQL API at ``/graphql``, read lightly: enough for the SDK's calls.

No GraphQL parser: a query is recognised by the fields it names (``myself``, ``pod(``,
``gpuTypes``) and a mutation by its field (``podFindAndDeployOnDemand``, ``deployCpuPod``,
``podStop``, ``podResume``, ``podTerminate``). Answers carry every field the SDK asks
for, whether or not this particular query named it.
"""

from __future__ import annotations

import json
import re
import secrets
from typing import TYPE_CHECKING, Any

from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from ._auth import GRAPHQL_PATH, error_response, presented_key
from ._pods import GPU_TYPES

if TYPE_CHECKING:
    from collections.abc import Callable

    from starlette.requests import Request

    from ._pods import Pod, PodStore
    from ._state import EmulatorState

__all__ = ["routes"]

_MUTATION = re.compile(r"^\s*mutation\b")
_MUTATION_FIELD = re.compile(
    r"\b(podFindAndDeployOnDemand|deployCpuPod|podStop|podResume|podTerminate)\s*\("
)
_POD_FIELD = re.compile(r"\bpod\s*\(")
_QUOTED = r'"((?:[^"\\]|\\.)*)"'
_ENV_ITEM = re.compile(r"\{\s*key:\s*" + _QUOTED + r"\s*,\s*value:\s*" + _QUOTED + r"\s*\}")


def _string_arg(query: str, name: str) -> str | None:
    match = re.search(rf"\b{name}:\s*{_QUOTED}", query)
    return match.group(1) if match else None


def _int_arg(query: str, name: str) -> int | None:
    match = re.search(rf"\b{name}:\s*(\d+)", query)
    return int(match.group(1)) if match else None


def _errors(message: str, status: int = 200) -> JSONResponse:
    return JSONResponse({"errors": [{"message": message}], "data": None}, status)


def _gpu_types(query: str) -> list[dict[str, Any]]:
    wanted = _string_arg(query, "id")
    return [
        {
            **gpu,
            "manufacturer": "Nvidia",
            "maxGpuCount": 8,
            "secureCloud": True,
            "communityCloud": True,
            "securePrice": 0.44,
            "communityPrice": 0.34,
            "lowestPrice": {"minimumBidPrice": 0.2, "uninterruptablePrice": 0.34},
        }
        for gpu in GPU_TYPES
        if wanted is None or gpu["id"] == wanted
    ]


def _mutate(field: str, query: str, pods: PodStore) -> JSONResponse:
    pod_id = _string_arg(query, "podId") or ""
    if field == "podTerminate":
        return JSONResponse({"data": {field: None}} if pods.delete(pod_id) else _missing(pod_id))
    if field in ("podStop", "podResume"):
        pod = pods.set_status(pod_id, "EXITED" if field == "podStop" else "RUNNING")
        return JSONResponse({"data": {field: pod.graphql()}} if pod else _missing(pod_id))
    gpu_type_id = _string_arg(query, "gpuTypeId")
    if field == "podFindAndDeployOnDemand" and not any(g["id"] == gpu_type_id for g in GPU_TYPES):
        # RunPod's answer when no machine has the GPU asked for.
        return _errors(
            "There are no longer any instances available with the requested specifications."
        )
    name = _string_arg(query, "name")
    image = _string_arg(query, "imageName") or _string_arg(query, "templateId")
    if not name or not image:
        return _errors("a pod needs a name and an imageName or templateId")
    ports = _string_arg(query, "ports")
    pod = pods.create(
        name,
        image,
        gpu_type_id=gpu_type_id,
        gpu_count=(_int_arg(query, "gpuCount") or 1) if gpu_type_id else 0,
        env=dict(_ENV_ITEM.findall(query)),
        ports=tuple(ports.split(",")) if ports else (),
        disk_gb=_int_arg(query, "containerDiskInGb") or 10,
        volume_gb=_int_arg(query, "volumeInGb") or 0,
        volume_mount_path=_string_arg(query, "volumeMountPath") or "/workspace",
        docker_args=_string_arg(query, "dockerArgs") or "",
    )
    return JSONResponse({"data": {field: pod.graphql()}})


def _missing(pod_id: str) -> dict[str, Any]:
    return {"errors": [{"message": f"pod {pod_id} not found"}], "data": None}


def _query(query: str, user_id: str, pods: PodStore) -> JSONResponse:
    resolvers: dict[str, Callable[[], Any]] = {
        "myself": lambda: _myself(user_id, pods.all()),
        "gpuTypes": lambda: _gpu_types(query),
    }
    data = {
        name: resolve() for name, resolve in resolvers.items() if re.search(rf"\b{name}\b", query)
    }
    if _POD_FIELD.search(query):
        pod = pods.get(_string_arg(query, "podId") or "")
        data["pod"] = pod.graphql() if pod else None
    if not data:
        return _errors("the RunPod emulator does not implement this query", 400)
    return JSONResponse({"data": data})


def _myself(user_id: str, pods: list[Pod]) -> dict[str, Any]:
    return {
        "id": user_id,
        "email": f"{user_id}@emulator.invalid",
        "pubKey": "",
        "currentSpendPerHr": 0,
        "networkVolumes": [],
        "endpoints": [],
        "pods": [pod.graphql() for pod in pods],
    }


async def _read_query(request: Request) -> str | None:
    if request.method == "GET":
        return request.query_params.get("query")
    try:
        query = json.loads(await request.body()).get("query")
    except (ValueError, AttributeError):
        return None
    return query if isinstance(query, str) else None


def _answer(state: EmulatorState, key: str | None, query: str) -> Response:
    mutation = _MUTATION.match(query) is not None
    if key is None:
        # RunPod answers an anonymous caller as a nobody rather than with a 401.
        anonymous = re.search(r"\bmyself\b", query) and not mutation
        return JSONResponse({"data": {"myself": None}}) if anonymous else _errors("Unauthorized")
    scope = state.scope_of(key)
    if scope is None:
        return error_response(401, "graphql")
    if not mutation:
        return _query(query, state.user_id(key), state.pods)
    if scope != "all":
        # Permission problems come back as a GraphQL error, not as an HTTP status.
        return _errors("Unauthorized")
    field = _MUTATION_FIELD.search(query)
    if field is None:
        return _echo_mutation(query)
    return _mutate(field.group(1), query, state.pods)


_ANY_MUTATION_FIELD = re.compile(r"^\s*mutation\b[^{]*\{\s*(\w+)")


def _echo_mutation(query: str) -> Response:
    """Answer a mutation with no state behind it (templates, registries, ...): an id."""
    field = _ANY_MUTATION_FIELD.match(query)
    if field is None:
        return _errors("the RunPod emulator does not implement this mutation", 400)
    return JSONResponse({"data": {field.group(1): {"id": secrets.token_hex(7)}}})


def routes(state: EmulatorState) -> list[BaseRoute]:
    """Return the ``/graphql`` route, answering from *state*."""

    async def graphql(request: Request) -> Response:
        query = await _read_query(request)
        if query is None:
            return _errors("the request needs a JSON body with a query string", 400)
        return _answer(state, presented_key(request), query)

    return [Route(GRAPHQL_PATH, graphql, methods=["GET", "POST"])]
