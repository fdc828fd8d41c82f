"""Pods, shared by the GraphQL API and REST v2, each of which shows them in its own shape.

All keys act on one account's pods: RunPod's keys belong to a user, and a rotated key
must still see the pods the old one made. Imported with the REST v2 routes or GraphQL's
pod fields, whichever a request reaches first; serverless traffic and ``myself`` never
load it.
"""

from __future__ import annotations

import secrets
import string
import threading
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

__all__ = ["GPU_TYPES", "Pod", "PodStore"]

GPU_TYPES: tuple[dict[str, Any], ...] = (
    {"id": "NVIDIA GeForce RTX 4090", "displayName": "RTX 4090", "memoryInGb": 24},
    {"id": "NVIDIA A100 80GB PCIe", "displayName": "A100 80GB", "memoryInGb": 80},
    {"id": "NVIDIA H100 80GB HBM3", "displayName": "H100 SXM", "memoryInGb": 80},
)
"""The GPU types the emulator offers; deploying any other GPU type fails."""

_ID_ALPHABET = string.ascii_lowercase + string.digits


@dataclass(frozen=True, slots=True)
class Pod:
    """One pod as the emulator stores it."""

    id: str
    name: str
    image: str
    gpu_type_id: str | None = None
    gpu_count: int = 0
    env: dict[str, str] = field(default_factory=dict)
    ports: tuple[str, ...] = ()
    disk_gb: int = 10
    docker_args: str = ""
    status: str = "RUNNING"
    created_at: str = ""

    def graphql(self) -> dict[str, Any]:
        """Return the pod as GraphQL's ``pod`` and ``myself.pods`` show it."""
        return {
            "id": self.id,
            "name": self.name,
            "imageName": self.image,
            "desiredStatus": self.status,
            "env": [f"{k}={v}" for k, v in self.env.items()],
            "gpuCount": self.gpu_count,
        }

    def rest(self) -> dict[str, Any]:
        """Return the pod as REST v2's ``Pod`` schema shows it."""
        return {
            "id": self.id,
            "name": self.name,
            "image": self.image,
            "args": self.docker_args,
            "disk": self.disk_gb,
            "ports": list(self.ports),
            "env": dict(self.env),
            "registry": None,
            "status": self.status,
            "actions": ["stop", "restart", "terminate"]
            if self.status == "RUNNING"
            else ["start", "terminate"],
            "mounts": {},
            # A GPU pod has `gpu`, a CPU pod `cpu`: the document omits the other, never nulls it.
            **(
                {"gpu": {"id": self.gpu_type_id, "count": self.gpu_count}}
                if self.gpu_type_id
                else {"cpu": {"id": "cpu3c", "vcpuCount": 4, "memory": 16}}
            ),
            "cloud": "SECURE",
            "dataCenterId": "EU-EMU-1",
            "cudaVersion": "12.8" if self.gpu_type_id else None,
            # No machine, no SSH endpoint: the document says both parts are null then.
            "ssh": {"proxy": None, "direct": None},
            "template": None,
            "cost": 0.44 if self.gpu_type_id else 0.06,
            "locked": False,
            "globalNetworking": {"enabled": False},
            "runtime": {},
            "createdAt": self.created_at,
            "startedAt": self.created_at,
        }


class PodStore:
    """The account's pods, safe to use from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pods: dict[str, Pod] = {}

    def reset(self) -> None:
        """Forget every pod."""
        with self._lock:
            self._pods.clear()

    def create(self, name: str, image: str, **details: Any) -> Pod:
        """Store and return a new running pod; *details* are `Pod` fields."""
        pod_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(14))
        created = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        pod = Pod(pod_id, name, image, created_at=created, **details)
        with self._lock:
            self._pods[pod.id] = pod
        return pod

    def get(self, pod_id: str) -> Pod | None:
        """Return the pod with *pod_id*, or None."""
        with self._lock:
            return self._pods.get(pod_id)

    def all(self) -> list[Pod]:
        """Return every pod, oldest first."""
        with self._lock:
            return list(self._pods.values())

    def set_status(self, pod_id: str, status: str) -> Pod | None:
        """Change a pod's status; return the changed pod, or None if there is none."""
        with self._lock:
            pod = self._pods.get(pod_id)
            if pod is None:
                return None
            self._pods[pod_id] = pod = replace(pod, status=status)
            return pod

    def delete(self, pod_id: str) -> bool:
        """Remove a pod; return whether it existed."""
        with self._lock:
            return self._pods.pop(pod_id, None) is not None
