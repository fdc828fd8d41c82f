"""The engine's edges: hosts outside the policy, faithful transports, honest timeouts."""

from __future__ import annotations

import threading

import httpx
import pytest
from structlog.testing import capture_logs
from typing_extensions import Self

from resilient_runpod import (
    AsyncResilientTransport,
    AuthenticationError,
    Credentials,
    HookTimeoutError,
    ResilientTransport,
    _engine,
    _hooks,
)


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """This module's async tests run on both of httpx's event loops."""
    return str(request.param)


@pytest.fixture
def fresh_warning(monkeypatch):
    """The foreign-host warning is once per process: start each test before it."""
    monkeypatch.setattr(_engine, "_warned", False)


def test_a_401_from_an_api_outside_the_policy_is_explained_once(runpod_emulator, fresh_warning):
    """The emulator's host was not allowed: one warning names the fix; the key never went there."""
    credentials = Credentials(runpod_emulator.api_key, lambda c: None)  # no hosts=[...]

    with capture_logs() as logs, httpx.Client(transport=ResilientTransport(credentials)) as client:
        statuses = [
            client.get(f"{runpod_emulator.serverless_url}/e/health").status_code for _ in range(3)
        ]

    warnings = [e for e in logs if e["event"] == "runpod.auth.foreign_host"]
    assert ([401] * 3, 1) == (statuses, len(warnings))
    assert f"'{runpod_emulator.host}'" in warnings[0]["hint"]
    assert {"<no key>": 3} == dict(runpod_emulator.counters().by_key)


def test_a_401_from_an_unrelated_site_says_nothing(fresh_warning):
    """Only RunPod-looking paths (/v2/..., /graphql) are worth the hint."""
    transport = httpx.MockTransport(lambda request: httpx.Response(401))
    credentials = Credentials("rpa_" + "A" * 46, lambda c: None)

    with (
        capture_logs() as logs,
        httpx.Client(transport=ResilientTransport(credentials, transport)) as client,
    ):
        status = client.get("https://example.com/login").status_code

    assert (401, []) == (status, [e for e in logs if e["event"] == "runpod.auth.foreign_host"])


class _Tracked(httpx.BaseTransport):
    def __init__(self) -> None:
        self.entered = self.exited = 0

    def __enter__(self) -> Self:
        self.entered += 1
        return self

    def __exit__(self, *args: object) -> None:
        self.exited += 1

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(200)


class _AsyncTracked(httpx.AsyncBaseTransport):
    def __init__(self) -> None:
        self.entered = self.exited = 0

    async def __aenter__(self) -> Self:
        self.entered += 1
        return self

    async def __aexit__(self, *args: object) -> None:
        self.exited += 1

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(200)


def test_the_transport_passes_with_on_to_the_one_it_wraps():
    """`with httpx.Client(transport=...)` enters and exits the wrapped transport too."""
    inner = _Tracked()
    credentials = Credentials("rpa_" + "A" * 46, lambda c: None)

    with httpx.Client(transport=ResilientTransport(credentials, inner)):
        entered = inner.entered

    assert (1, 1) == (entered, inner.exited)


@pytest.mark.anyio
async def test_the_async_transport_passes_async_with_on():
    """`async with httpx.AsyncClient(transport=...)` enters and exits the wrapped transport."""
    inner = _AsyncTracked()
    credentials = Credentials("rpa_" + "A" * 46, lambda c: None)

    async with httpx.AsyncClient(transport=AsyncResilientTransport(credentials, inner)):
        entered = inner.entered

    assert (1, 1) == (entered, inner.exited)


def test_a_stretched_hook_timeout_is_reported_as_waited(runpod_emulator, monkeypatch):
    """hook_timeout=0.05, a hook declaring 0.2 s (+0.1 s grace): the error says 0.3 s."""
    monkeypatch.setattr(_hooks, "_HOOK_GRACE", 0.1)
    never = threading.Event()

    def slow(context: object) -> str:
        never.wait()
        raise AssertionError  # pragma: no cover

    slow.timeout = 0.2  # type: ignore[attr-defined]
    credentials = Credentials(
        runpod_emulator.api_key, slow, hosts=[runpod_emulator.host], hook_timeout=0.05
    )
    runpod_emulator.revoke(runpod_emulator.api_key)

    with (
        httpx.Client(transport=ResilientTransport(credentials)) as client,
        pytest.raises(AuthenticationError) as info,
    ):
        client.get(f"{runpod_emulator.serverless_url}/e/health")
    never.set()

    cause = info.value.__cause__
    assert isinstance(cause, HookTimeoutError)
    assert "within 0.3 seconds" in str(cause)


def test_hosts_are_judged_by_origin_for_text_and_parsed_urls():
    """The same verdict for a URL as text or parsed, whatever its path."""
    credentials = Credentials("rpa_" + "A" * 46, lambda c: None, hosts=["127.0.0.1:8000"])
    urls = [
        "http://127.0.0.1:8000/v2/e/health",
        "http://127.0.0.1:8000/graphql?x=1",
        "http://127.0.0.1:8001/v2/e/health",
        "https://api.runpod.ai/v2/e/run",
        "http://api.runpod.ai/v2/e/run",
    ]

    verdicts = [credentials.hosts.allows(u) for u in urls]
    parsed = [credentials.hosts.allows(httpx.URL(u)) for u in urls]

    assert ([True, True, False, True, False], verdicts) == (parsed, verdicts)
