"""Fixtures shared by every test: each test starts from a clean, predictable world."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import structlog

from resilient_runpod import Credentials, recovery

from .helpers import ISOLATED_VARIABLES, make_key

if TYPE_CHECKING:
    from resilient_runpod.testing import Emulator


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No real ~/.runpod, no inherited keys or CI flags, structlog back to its defaults."""
    for name in ISOLATED_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    yield
    structlog.reset_defaults()


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio, the loop the runpod SDK and aiohttp use."""
    return "asyncio"


@pytest.fixture
def key() -> str:
    """A valid-looking key no server knows."""
    return make_key()


def person_env(home: Path) -> dict[str, str]:
    """The environment of a person's shell: no CI flags, no keys, *home* as HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNPOD_", "RESILIENT_"))}
    for name in ISOLATED_VARIABLES:
        env.pop(name, None)
    # Without this prompt_toolkit waits for a cursor-position reply pexpect never sends.
    env["PROMPT_TOOLKIT_NO_CPR"] = "1"
    env["HOME"] = str(home)
    env["TERM"] = "xterm"
    return env


@pytest.fixture
def child_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a person's shell: no CI flags, no keys, a private HOME."""
    return person_env(tmp_path)


class EmulatorProcess:
    """The emulator CLI in a process of its own, driven over its admin API.

    256 client threads and the server in one interpreter fight over one GIL; on a
    loaded 2-core machine that starves the server. In its own process it serves as a
    real RunPod would: elsewhere.
    """

    def __init__(self, tmp_path: Path) -> None:
        env = {**os.environ, "RUNPOD_API_KEY": make_key()}
        self.key = env["RUNPOD_API_KEY"]
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "resilient_runpod.cli",
                "emulator",
                "--port",
                "0",
                "--key-file",
                str(tmp_path / "emulator-key"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        assert self.process.stdout is not None
        first = self.process.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)", first)
        assert match, first
        self.url = match.group(0)
        self.host = f"127.0.0.1:{match.group(1)}"
        self.admin = httpx.Client(base_url=f"{self.url}/_emulator/")

    def add_key(self) -> str:
        key: str = self.admin.post("keys", json={}).json()["key"]
        return key

    def rotate(self, old: str) -> str:
        key: str = self.admin.post("keys/rotate", json={"key": old}).json()["key"]
        return key

    def revoke(self, key: str) -> None:
        self.admin.post("keys/revoke", json={"key": key}).raise_for_status()

    def set_latency(self, seconds: float) -> None:
        self.admin.post("latency", json={"seconds": seconds}).raise_for_status()

    def status_counts(self) -> dict[int, int]:
        counts = self.admin.get("counters").json()["by_status"]
        return {int(code): n for code, n in counts.items()}

    def in_flight(self) -> int:
        """Requests that arrived and are not answered yet: proof they are in flight."""
        count: int = self.admin.get("in_flight").json()["in_flight"]
        return count

    def close(self) -> None:
        self.admin.close()
        self.process.send_signal(signal.SIGTERM)
        self.process.communicate(timeout=30)


@pytest.fixture
def emulator_process(tmp_path: Path) -> Iterator[EmulatorProcess]:
    """A fresh emulator in its own process, for tests with hundreds of clients."""
    emulator = EmulatorProcess(tmp_path)
    yield emulator
    emulator.close()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect the tests of a surface the installed runpod SDK line does not have.

    A test marked ``runpod_line(2)`` exercises what only 2.x has (its async API functions):
    on 1.12 it is deselected, neither run nor counted as passed or skipped, and CI runs it
    on 2.x. Without the SDK installed, nothing is deselected here.
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        major = int(version("runpod").split(".")[0])
    except PackageNotFoundError:  # no SDK: its tests fail on their own import
        return
    kept, dropped = [], []
    for item in items:
        marker = item.get_closest_marker("runpod_line")
        (dropped if marker is not None and marker.args[0] != major else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """A skipped test fails: every test here runs on a CI machine, and a skip must never
    pass for a pass. Set RESILIENT_RUNPOD_ALLOW_SKIP=1 to allow skips on a machine that
    lacks something (no fork on Windows, no pty).
    """
    outcome = yield
    report = outcome.get_result()
    if (
        os.environ.get("RESILIENT_RUNPOD_ALLOW_SKIP") != "1"
        and report.skipped
        and not hasattr(report, "wasxfail")
    ):
        report.outcome = "failed"
        report.longrepr = f"skips fail here (RESILIENT_RUNPOD_ALLOW_SKIP=1): {report.longrepr}"


class Vault:
    """A recovery hook handing out the key the emulator holds now, counting its calls.

    ``rotate()`` makes the emulator reject the current key and hands out its successor,
    so the next 401 is recovered from; ``calls`` counts how often recovery asked.
    """

    name = "vault"

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator
        self.key: str | None = emulator.api_key
        self.calls = 0
        self._lock = threading.Lock()

    def rotate(self) -> str:
        assert self.key is not None
        self.key = self.emulator.rotate(self.key)
        return self.key

    def __call__(self, _context: object) -> str | None:
        with self._lock:
            self.calls += 1
        return self.key


@pytest.fixture
def vault(runpod_emulator: Emulator) -> Vault:
    """A `Vault` over this test's emulator, holding the emulator's current key."""
    return Vault(runpod_emulator)


@pytest.fixture
def credentials(runpod_emulator: Emulator, vault: Vault) -> Credentials:
    """The emulator's key, recovered through ``vault``, allowed to go to the emulator host."""
    return Credentials(runpod_emulator.api_key, recovery=vault, hosts=[runpod_emulator.host])


@pytest.fixture
def sdk(runpod_emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The real ``runpod`` module pointed at the emulator, holding its key; returns ``runpod``.

    Patches ``runpod.endpoint_url_base`` (copied into each new client), sets the SDK's
    URL variables, sets ``runpod.api_key`` and clears the shared default `wrap` uses.
    ``runpod`` is imported here, not at the top, so modules without the SDK never load it.
    """
    import runpod

    from resilient_runpod.sdk import _wrap

    monkeypatch.setattr(runpod, "endpoint_url_base", runpod_emulator.serverless_url)
    for name, value in runpod_emulator.sdk_env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(runpod, "api_key", runpod_emulator.api_key)
    monkeypatch.setattr(_wrap, "_default", None)
    return runpod


REGION = "us-east-1"


@dataclass
class Aws:
    """moto's server on loopback, and a boto3 client that talks to it."""

    url: str
    client: Any

    def secret(self, value: str) -> str:
        """Create a secret holding *value* under a fresh name; return the name."""
        name = f"runpod/{uuid.uuid4().hex[:8]}"
        self.client.create_secret(Name=name, SecretString=value)
        return name

    def hook(self, name: str, **kwargs: Any) -> Any:
        return recovery.from_aws_secrets_manager(
            name, region_name=REGION, endpoint_url=self.url, **kwargs
        )


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    """moto's real HTTP server (the one `moto_server` runs), on a free loopback port."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws(moto_url, monkeypatch, tmp_path) -> Aws:
    """Fake credentials in the environment only, never a real AWS profile."""
    import boto3

    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ROLE_ARN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    client = boto3.client("secretsmanager", region_name=REGION, endpoint_url=moto_url)
    return Aws(moto_url, client)
