"""What the benchmarks share: the emulator in a process of its own, and a counting hook.

Many client threads and the server in one interpreter fight over one GIL; on a loaded
2-core machine that starves the server and measures the fight, not the client. In its
own process the emulator serves as RunPod would: elsewhere.

The parent drives it over the admin API under ``/_emulator/``. That API has no route
for the list of job inputs, which the soak's duplicate check needs, so the child also
answers a line ``jobs`` on its stdin with that list as one line of JSON.

Run as a script, this file is the child.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx

from resilient_runpod import recovery


def serve() -> None:
    """The child: an emulator on a free port; prints its URL and key, then answers ``jobs``."""
    from resilient_runpod.testing import Emulator  # noqa: PLC0415 -- the child only

    with Emulator() as emulator:
        print(json.dumps({"url": emulator.url, "key": emulator.api_key}), flush=True)
        for line in sys.stdin:
            if line.strip() == "jobs":
                print(json.dumps(emulator.job_inputs()), flush=True)


class EmulatorProcess:
    """The parent's handle: the child's URL, its first key, and the admin calls used here."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        hello = json.loads(self.process.stdout.readline())
        self.url: str = hello["url"]
        self.key: str = hello["key"]
        self.host = self.url.removeprefix("http://")
        self.serverless_url = f"{self.url}/v2"
        self.admin = httpx.Client(base_url=f"{self.url}/_emulator/")

    def add_key(self) -> str:
        key: str = self.admin.post("keys", json={}).json()["key"]
        return key

    def revoke(self, key: str) -> None:
        self.admin.post("keys/revoke", json={"key": key}).raise_for_status()

    def chaos(self, chaos: dict[str, Any]) -> None:
        """Random trouble from now on (the fields of `resilient_runpod.testing.Chaos`)."""
        self.admin.post("chaos", json=chaos).raise_for_status()

    def calm(self) -> None:
        """No more chaos, faults or latency."""
        self.admin.delete("faults").raise_for_status()

    def set_latency(self, seconds: float) -> None:
        self.admin.post("latency", json={"seconds": seconds}).raise_for_status()

    def by_status(self) -> dict[int, int]:
        counts = self.admin.get("counters").json()["by_status"]
        return {int(code): n for code, n in counts.items()}

    def job_inputs(self) -> list[Any]:
        """The input of every job the emulator created, in order."""
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write("jobs\n")
        self.process.stdin.flush()
        inputs: list[Any] = json.loads(self.process.stdout.readline())
        return inputs

    def close(self) -> None:
        self.admin.close()
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=30)


class Counted:
    """A hook, counting its calls (source reads) and those that may ask a person.

    Everything else (name, timeout, subscribe, accepted) is the hook's own.
    """

    def __init__(self, hook: Any) -> None:
        self.source = hook
        self.calls = 0
        self.asking = 0  # calls told a person may be asked (`RecoveryContext.may_ask`)
        self._lock = threading.Lock()

    def __call__(self, context: Any) -> Any:
        with self._lock:
            self.calls += 1
            self.asking += bool(getattr(context, "may_ask", False))
        return self.source(context)

    def __getattr__(self, name: str) -> Any:
        # The engine reads a hook's name, timeout, interactive... from the hook itself.
        return getattr(self.source, name)


def CountingHook(path: Path) -> Counted:  # noqa: N802 -- reads like the class it makes
    """``recovery.from_file(path)``, counted."""
    return Counted(recovery.from_file(path))


def write_secret(secret: Path, key: str) -> None:
    """Write *key* atomically, as a Secret volume or a Vault agent does: never half a key."""
    temporary = secret.with_suffix(".new")
    temporary.write_text(key + "\n")
    temporary.replace(secret)


if __name__ == "__main__":
    serve()
