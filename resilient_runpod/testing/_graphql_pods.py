"""GraphQL's pod fields, imported by `_graphql` the first time a query or mutation names one.

Queries ``pod(input: {podId})`` and ``gpuTypes``; mutations ``podFindAndDeployOnDemand``,
``podStop``, ``podResume`` and ``podTerminate``. A deployment reads only what the pod
shows: its name, image (or template), GPU type and count, and environment.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from starlette.responses import JSONResponse

from ._auth import graphql_error
from ._pods import GPU_TYPES

if TYPE_CHECKING:
    from ._pods import PodStore

__all__ = ["mutate", "query"]

_QUOTED = r'"((?:[^"\\]|\\.)*)"'
_ENV_ITEM = re.compile(r"\{\s*key:\s*" + _QUOTED + r"\s*,\s*value:\s*" + _QUOTED + r"\s*\}")
_POD_FIELD = re.compile(r"\bpod\s*\(")
_GPU_TYPES_FIELD = re.compile(r"\bgpuTypes\b")


def _string_arg(query: str, name: str) -> str | None:
    match = re.search(rf"\b{name}:\s*{_QUOTED}", query)
    return match.group(1) if match else None


def _int_arg(query: str, name: str) -> int | None:
    match = re.search(rf"\b{name}:\s*(\d+)", query)
    return int(match.group(1)) if match else None


def query(text: str, pods: PodStore) -> dict[str, Any]:
    """Return the ``data`` of the pod fields that the query *text* names."""
    data: dict[str, Any] = {}
    if _GPU_TYPES_FIELD.search(text):
        wanted = _string_arg(text, "id")
        data["gpuTypes"] = [gpu for gpu in GPU_TYPES if wanted is None or gpu["id"] == wanted]
    if _POD_FIELD.search(text):
        pod = pods.get(_string_arg(text, "podId") or "")
        data["pod"] = pod.graphql() if pod else None
    return data


def mutate(field: str, text: str, pods: PodStore) -> JSONResponse:
    """Answer the pod mutation *field* of the mutation *text*, changing *pods*."""
    pod_id = _string_arg(text, "podId") or ""
    if field == "podTerminate":
        return JSONResponse({"data": {field: None}}) if pods.delete(pod_id) else _missing(pod_id)
    if field in ("podStop", "podResume"):
        pod = pods.set_status(pod_id, "EXITED" if field == "podStop" else "RUNNING")
        return JSONResponse({"data": {field: pod.graphql()}}) if pod else _missing(pod_id)
    gpu_type_id = _string_arg(text, "gpuTypeId")
    if not any(g["id"] == gpu_type_id for g in GPU_TYPES):
        # RunPod's answer when no machine has the GPU asked for.
        return graphql_error(
            "There are no longer any instances available with the requested specifications."
        )
    name = _string_arg(text, "name")
    image = _string_arg(text, "imageName") or _string_arg(text, "templateId")
    if not name or not image:
        return graphql_error("a pod needs a name and an imageName or templateId")
    pod = pods.create(
        name,
        image,
        gpu_type_id=gpu_type_id,
        gpu_count=_int_arg(text, "gpuCount") or 1,
        env=dict(_ENV_ITEM.findall(text)),
    )
    return JSONResponse({"data": {field: pod.graphql()}})


def _missing(pod_id: str) -> JSONResponse:
    return graphql_error(f"pod {pod_id} not found")
